//! safetensors output, laid out as the `safetensors` package's `save_file` lays it out (tensors
//! sorted by dtype, widest first, then by name; the JSON header padded with spaces to a multiple
//! of 8), with the tensors the safetensors project's `convert.py` keeps: of the tensors that
//! start at the same byte of the same storage (tied weights) the first in table order is
//! written, the others are dropped and recorded in `__metadata__` as `dropped → kept` (as
//! `safetensors.torch.save_model` records them), beside `"format": "pt"`. Every tensor is
//! written as its own row-major bytes: strided views made contiguous, views of larger storages
//! cut to their elements.

use super::{output_dtype, SaveOptions, SaveReport, Sink};
use crate::checkpoint::Tensor;
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// The safetensors name of `dtype`, and its rank in the crate's `Dtype` order (which
/// `save_file` sorts by, widest first); `None` for the dtypes safetensors cannot hold.
fn st_dtype(dtype: DType) -> Option<(&'static str, u8)> {
    Some(match dtype {
        DType::Bool => ("BOOL", 0),
        DType::Float4E2M1FnX2 => ("F4", 1),
        DType::UInt8 => ("U8", 4),
        DType::Int8 => ("I8", 5),
        DType::Float8E5M2 => ("F8_E5M2", 6),
        DType::Float8E4M3Fn => ("F8_E4M3", 7),
        DType::Float8E8M0Fnu => ("F8_E8M0", 8),
        DType::Float8E4M3FnUz => ("F8_E4M3FNUZ", 9),
        DType::Float8E5M2FnUz => ("F8_E5M2FNUZ", 10),
        DType::Int16 => ("I16", 11),
        DType::UInt16 => ("U16", 12),
        DType::Float16 => ("F16", 13),
        DType::BFloat16 => ("BF16", 14),
        DType::Int32 => ("I32", 15),
        DType::UInt32 => ("U32", 16),
        DType::Float32 => ("F32", 17),
        DType::Complex64 => ("C64", 18),
        DType::Float64 => ("F64", 19),
        DType::Int64 => ("I64", 20),
        DType::UInt64 => ("U64", 21),
        _ => return None,
    })
}

struct Entry<'t, 'a> {
    tensor: &'t Tensor<'a>,
    dtype: DType,
    st_name: &'static str,
    rank: u8,
    len: u64,
}

pub fn write(
    tensors: &[Tensor<'_>],
    options: &SaveOptions,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<SaveReport> {
    // convert.py's `shared_pointers`: tensors with the same data pointer; the first is kept.
    let mut first_at: HashMap<(u64, u64), usize> = HashMap::new();
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let mut dropped = Vec::new();
    let mut entries = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        // An empty storage has no data pointer to share (torch's is null; convert.py would
        // group every empty tensor together, which drops tensors that share nothing).
        if t.storage_nbytes() > 0 {
            let start = t.storage_offset() as u64 * t.dtype().itemsize() as u64;
            let kept = *first_at.entry((t.storage_id(), start)).or_insert(i);
            if kept != i {
                let kept = tensors[kept].name().to_string();
                metadata.insert(t.name().to_string(), kept.clone());
                dropped.push((t.name().to_string(), kept));
                continue;
            }
        }
        let dtype = output_dtype(t.dtype(), options);
        let (st_name, rank) = st_dtype(dtype).ok_or_else(|| {
            Error::unsupported(format!(
                "tensor '{}' is {dtype}, which safetensors cannot hold",
                t.name()
            ))
        })?;
        entries.push(Entry {
            tensor: t,
            dtype,
            st_name,
            rank,
            len: t.numel() * dtype.itemsize() as u64,
        });
    }
    entries.sort_by(|a, b| {
        b.rank
            .cmp(&a.rank)
            .then(a.tensor.name().as_bytes().cmp(b.tensor.name().as_bytes()))
    });
    let header = header(&entries, &metadata)?;
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(super::io_error)?;
    out.write_all(&header).map_err(super::io_error)?;
    let total = entries.iter().map(|e| e.len).sum();
    let mut sink = Sink::new(total, progress);
    for e in &entries {
        sink.write_row_major(out, e.tensor, e.dtype)?;
    }
    Ok(SaveReport {
        tensors: entries.len(),
        storages: entries.len(),
        data_bytes: total,
        dropped,
        whole_object: false,
        values_not_written: None,
    })
}

/// The JSON header as `serde_json` writes the crate's `Metadata`: `__metadata__` first, then
/// each tensor's dtype, shape and data offsets in data order; spaces up to a multiple of 8.
fn header(entries: &[Entry<'_, '_>], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let json = |e: serde_json::Error| Error::invalid_argument(format!("header: {e}"));
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"__metadata__\":");
    serde_json::to_writer(&mut out, metadata).map_err(json)?;
    let mut offset = 0u64;
    for e in entries {
        out.push(b',');
        serde_json::to_writer(&mut out, e.tensor.name()).map_err(json)?;
        out.extend_from_slice(b":{\"dtype\":\"");
        out.extend_from_slice(e.st_name.as_bytes());
        out.extend_from_slice(b"\",\"shape\":[");
        let mut shape: Vec<i64> = e.tensor.shape().to_vec();
        if e.dtype == DType::Float4E2M1FnX2 {
            // safetensors counts 4-bit values; torch's float4_e2m1fn_x2 packs two per element
            // along the last dimension.
            match shape.last_mut() {
                Some(last) => *last *= 2,
                None => {
                    return Err(Error::unsupported(format!(
                        "tensor '{}' is a 0-d float4_e2m1fn_x2, which safetensors cannot hold",
                        e.tensor.name()
                    )))
                }
            }
        }
        for (d, size) in shape.iter().enumerate() {
            if d > 0 {
                out.push(b',');
            }
            out.extend_from_slice(size.to_string().as_bytes());
        }
        out.extend_from_slice(
            format!("],\"data_offsets\":[{offset},{}]}}", offset + e.len).as_bytes(),
        );
        offset += e.len;
    }
    out.push(b'}');
    out.resize(out.len().next_multiple_of(8), b' ');
    Ok(out)
}
