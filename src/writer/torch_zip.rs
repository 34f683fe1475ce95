//! The `torch.save` zip archive, record for record as torch 2.x writes it
//! (`torch/serialization.py`, `_save`): `data.pkl`, `.format_version`, `.storage_alignment`,
//! `byteorder`, one `data/<key>` per storage, `version`, `.data/serialization_id`, all stored
//! (uncompressed) under one folder, each record's data 64-byte aligned (an extra field pads the
//! local header), so `torch.load(..., mmap=True)` and mmckpt map them in place.

use super::pickle::{tree_pickle, StateDictPickle, TensorRecord};
use super::{check_unique_names, output_dtype, SaveOptions, SaveReport, Sink, Tree};
use crate::checkpoint::Tensor;
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::io::{Seek, Write};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The folder every record is in (torch names it after the file; any name loads).
const ARCHIVE: &str = "archive";
/// torch's `_get_storage_alignment()` and the alignment of every record's data.
const ALIGNMENT: u16 = 64;

/// Where a storage's bytes come from.
enum Bytes {
    /// The whole storage of this tensor, element by element.
    Storage(usize),
    /// This tensor's elements in row-major order.
    RowMajor(usize),
}

struct OutStorage {
    bytes: Bytes,
    from: DType,
    to: DType,
    /// Bytes of the record.
    len: u64,
}

/// A view in the output: storage, offset, strides (in elements).
struct View {
    storage: usize,
    offset: u64,
    strides: Vec<i64>,
}

pub fn write<W: Write + Seek>(
    tensors: &[Tensor<'_>],
    tree: &Tree<'_>,
    options: &SaveOptions,
    out: W,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<SaveReport> {
    let (storages, views) = if options.contiguous {
        plan_contiguous(tensors, options)
    } else {
        plan_shared(tensors, options)?
    };
    let tensor_record = |row: usize| {
        let (t, view) = (&tensors[row], &views[row]);
        let s = &storages[view.storage];
        TensorRecord {
            name: t.name(),
            dtype: s.to,
            storage_key: view.storage,
            storage_bytes: s.len,
            storage_offset: view.offset,
            shape: t.shape(),
            strides: &view.strides,
            requires_grad: t.requires_grad(),
            is_parameter: t.is_parameter(),
        }
    };
    // The whole saved object when torch's weights-only unpickler can read all of it, else the
    // table as a state dict.
    let whole = match &tree.rows {
        Some(rows) => {
            let tensor_of = |node| rows.get(&node).map(|&row| tensor_record(row));
            tree_pickle(tree.arena, tree.root, &tensor_of)
        }
        None => Err(Error::unsupported(
            "the input holds no torch.save object (a safetensors file or a shard index)",
        )),
    };
    let (pickle, values_not_written) = match whole {
        Ok(pickle) => (pickle, None),
        Err(e) if e.kind == ErrorKind::Unsupported => {
            check_unique_names(tensors)?;
            let mut pickle = StateDictPickle::new();
            for row in 0..tensors.len() {
                pickle.add(&tensor_record(row));
            }
            let why = format!("{}; the tensors were written as a state dict", e.message);
            (pickle.finish(), Some(why))
        }
        Err(e) => return Err(e),
    };
    let total = storages.iter().map(|s| s.len).sum();
    let mut zip = ZipWriter::new(out);
    record(&mut zip, "data.pkl", &pickle)?;
    record(&mut zip, ".format_version", b"1")?;
    record(
        &mut zip,
        ".storage_alignment",
        ALIGNMENT.to_string().as_bytes(),
    )?;
    record(&mut zip, "byteorder", b"little")?;
    let mut sink = Sink::new(total, progress);
    for (key, s) in storages.iter().enumerate() {
        start(&mut zip, &format!("data/{key}"), s.len)?;
        match s.bytes {
            Bytes::Storage(i) => {
                let len = tensors[i].storage_nbytes();
                let len = if s.from == s.to {
                    len
                } else {
                    len - len % s.from.itemsize()
                };
                sink.write_storage(&mut zip, &tensors[i], len, s.from, s.to)?;
            }
            Bytes::RowMajor(i) => sink.write_row_major(&mut zip, &tensors[i], s.to)?,
        }
    }
    record(&mut zip, "version", b"3\n")?;
    record(
        &mut zip,
        ".data/serialization_id",
        serialization_id().as_bytes(),
    )?;
    zip.finish().map_err(zip_error)?;
    Ok(SaveReport {
        tensors: tensors.len(),
        storages: storages.len(),
        data_bytes: total,
        dropped: Vec::new(),
        whole_object: values_not_written.is_none(),
        values_not_written,
    })
}

/// Storages as they are: each storage a table tensor uses, once, in order of first use; every
/// view keeps its offset and strides.
fn plan_shared(
    tensors: &[Tensor<'_>],
    options: &SaveOptions,
) -> Result<(Vec<OutStorage>, Vec<View>)> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut storages: Vec<OutStorage> = Vec::new();
    let mut views = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let storage = *index.entry(t.storage_id()).or_insert_with(|| {
            let from = t.dtype();
            let to = output_dtype(from, options);
            let elements = t.storage_nbytes() as u64 / from.itemsize() as u64;
            let len = if from == to {
                t.storage_nbytes() as u64
            } else {
                elements * to.itemsize() as u64
            };
            storages.push(OutStorage {
                bytes: Bytes::Storage(i),
                from,
                to,
                len,
            });
            storages.len() - 1
        });
        let first = &storages[storage];
        if first.from != t.dtype() {
            let Bytes::Storage(first_tensor) = first.bytes else {
                unreachable!("plan_shared makes only whole storages")
            };
            return Err(Error::unsupported(format!(
                "tensors '{}' ({}) and '{}' ({}) view one storage as different dtypes, which \
                 torch.save refuses too; write with contiguous to give each its own",
                tensors[first_tensor].name(),
                first.from,
                t.name(),
                t.dtype()
            )));
        }
        views.push(View {
            storage,
            offset: t.storage_offset() as u64,
            strides: t.strides().to_vec(),
        });
    }
    Ok((storages, views))
}

/// Every tensor its own row-major storage, except that the same view of the same storage
/// (tied weights) is written once and shared.
fn plan_contiguous(tensors: &[Tensor<'_>], options: &SaveOptions) -> (Vec<OutStorage>, Vec<View>) {
    type Key<'a> = (u64, i64, &'a [i64], &'a [i64], DType);
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    let mut storages = Vec::new();
    let mut views = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let key = (
            t.storage_id(),
            t.storage_offset(),
            t.shape(),
            t.strides(),
            t.dtype(),
        );
        let storage = *index.entry(key).or_insert_with(|| {
            let to = output_dtype(t.dtype(), options);
            storages.push(OutStorage {
                bytes: Bytes::RowMajor(i),
                from: t.dtype(),
                to,
                len: t.numel() * to.itemsize() as u64,
            });
            storages.len() - 1
        });
        views.push(View {
            storage,
            offset: 0,
            strides: contiguous_strides(t.shape()),
        });
    }
    (storages, views)
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1].saturating_mul(shape[d + 1].max(1));
    }
    strides
}

fn start<W: Write + Seek>(zip: &mut ZipWriter<W>, name: &str, len: u64) -> Result<()> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment(ALIGNMENT)
        .large_file(len >= u64::from(u32::MAX));
    zip.start_file(format!("{ARCHIVE}/{name}"), options)
        .map_err(zip_error)
}

fn record<W: Write + Seek>(zip: &mut ZipWriter<W>, name: &str, data: &[u8]) -> Result<()> {
    start(zip, name, data.len() as u64)?;
    zip.write_all(data).map_err(super::io_error)
}

fn zip_error(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => super::io_error(e),
        other => Error::io(format!("cannot write the archive: {other}")),
    }
}

/// torch writes a random 40-digit id per save; this one is from the clock and the process.
fn serialization_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mix = nanos ^ (u64::from(std::process::id())).rotate_left(32);
    format!(
        "{:020}{:020}",
        nanos,
        mix.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

#[cfg(test)]
mod tests {
    use super::contiguous_strides;

    #[test]
    fn row_major_strides() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<i64>::new());
        assert_eq!(contiguous_strides(&[0, 3]), vec![3, 1]);
    }
}
