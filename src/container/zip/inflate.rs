//! Deflated records (method 8), which torch's reader (miniz) reads and Python's `zipfile`
//! writes with `ZIP_DEFLATED`. A deflated record cannot be mapped: it is inflated into memory
//! of exactly the size the central directory declares, never past it (a record that inflates
//! to more is refused, so a zip bomb allocates no more than it declares), and its CRC-32 is
//! checked against the directory's.

use super::archive::ZipRecord;
use crate::error::{Error, Result};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// Inflates `record`, whose bytes as stored are `compressed`, into `out`, which holds exactly
/// the record's declared uncompressed size; then checks the CRC-32. `Format` naming the record
/// when the stream is corrupt, truncated, inflates to another size than declared, or has
/// another CRC-32 than the directory records.
pub fn inflate_into(record: ZipRecord<'_>, compressed: &[u8], out: &mut [u8]) -> Result<()> {
    let name = record.name;
    let declared = record.uncompressed_size;
    if out.len() as u64 != declared {
        return Err(Error::format(format!(
            "record '{name}': {} bytes of memory for a record declaring {declared} bytes",
            out.len()
        )));
    }
    let mut decompressor = Box::<DecompressorOxide>::default();
    // The whole stream is given at once, into a buffer that must not wrap: the output can
    // never exceed `out`.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(&mut decompressor, compressed, out, 0, flags);
    match status {
        TINFLStatus::Done if written as u64 == declared => {}
        TINFLStatus::Done => {
            return Err(Error::format(format!(
                "record '{name}' inflates to {written} bytes; the zip directory declares \
                 {declared} bytes"
            )))
        }
        TINFLStatus::HasMoreOutput => {
            return Err(Error::format(format!(
                "record '{name}' inflates to more than the {declared} bytes the zip directory \
                 declares"
            )))
        }
        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
            return Err(Error::format(format!(
                "record '{name}': its deflate stream ends early ({} compressed bytes, {written} \
                 of {declared} bytes inflated)",
                compressed.len()
            )))
        }
        other => {
            return Err(Error::format(format!(
                "record '{name}': corrupt deflate stream ({other:?} after {written} of \
                 {declared} bytes inflated)"
            )))
        }
    }
    let actual = crc32fast::hash(out);
    if actual != record.crc {
        return Err(Error::format(format!(
            "record '{name}': CRC-32 mismatch after inflating (the zip directory records \
             0x{:08x}, the inflated bytes have 0x{actual:08x})",
            record.crc
        )));
    }
    Ok(())
}

/// Inflates a small record (`data.pkl`, `byteorder`) into a new `Vec`, whose size was bounded
/// by the caller. `NoMemory` when it cannot be allocated.
pub fn inflate_to_vec(record: ZipRecord<'_>, compressed: &[u8]) -> Result<Vec<u8>> {
    let len = usize::try_from(record.uncompressed_size).map_err(|_| {
        Error::limit(format!(
            "record '{}' declares {} bytes, more than this machine addresses",
            record.name, record.uncompressed_size
        ))
    })?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        Error::no_memory(format!(
            "out of memory inflating record '{}' ({len} bytes)",
            record.name
        ))
    })?;
    out.resize(len, 0);
    inflate_into(record, compressed, &mut out)?;
    Ok(out)
}
