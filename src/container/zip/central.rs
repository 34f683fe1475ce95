//! Central directory file headers: one per record, each giving the record's name, method,
//! sizes and the offset of its local header.

use super::fields::{fixed, le16, le32};
use super::zip64::{self, Deferred, U16_SENTINEL, U32_SENTINEL};
use crate::error::{Error, Result};

pub(super) const CENTRAL_SIG: u32 = 0x0201_4b50;
pub(super) const CENTRAL_LEN: usize = 46;

/// The fixed part of a central directory header, as stored (32-bit fields may be zip64
/// sentinels).
pub(super) struct CentralHeader {
    pub signature: u32,
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub compressed: u32,
    pub uncompressed: u32,
    pub name_len: u16,
    pub extra_len: u16,
    pub comment_len: u16,
    pub disk: u16,
    pub local_offset: u32,
}

impl CentralHeader {
    pub fn decode(b: &[u8; CENTRAL_LEN]) -> CentralHeader {
        CentralHeader {
            signature: le32(b, 0),
            flags: le16(b, 8),
            method: le16(b, 10),
            crc: le32(b, 16),
            compressed: le32(b, 20),
            uncompressed: le32(b, 24),
            name_len: le16(b, 28),
            extra_len: le16(b, 30),
            comment_len: le16(b, 32),
            disk: le16(b, 34),
            local_offset: le32(b, 42),
        }
    }
}

/// One entry of the directory: its header and its variable-length parts.
pub(super) struct CentralEntry<'a> {
    pub header: CentralHeader,
    pub name: &'a [u8],
    pub extra: &'a [u8],
    /// Where the next entry starts, relative to the directory.
    pub next: usize,
}

/// Reads entry `i` at `pos` of the directory `cd` (at file offset `at`), checking that the
/// whole entry lies inside the directory.
pub(super) fn read_entry(cd: &[u8], pos: usize, i: usize, at: u64) -> Result<CentralEntry<'_>> {
    let runs_past = || {
        Error::format(format!(
            "central directory entry {i} at offset {at} runs past the end of the directory"
        ))
    };
    let header = CentralHeader::decode(fixed::<CENTRAL_LEN>(cd, pos as u64).ok_or_else(runs_past)?);
    if header.signature != CENTRAL_SIG {
        return Err(Error::format(format!(
            "no central directory signature at offset {at} (entry {i})"
        )));
    }
    let name_start = pos + CENTRAL_LEN;
    let extra_start = name_start + usize::from(header.name_len);
    let extra_end = extra_start + usize::from(header.extra_len);
    let next = extra_end + usize::from(header.comment_len);
    let (Some(name), Some(extra)) = (
        cd.get(name_start..extra_start),
        cd.get(extra_start..extra_end),
    ) else {
        return Err(runs_past());
    };
    if next > cd.len() {
        return Err(runs_past());
    }
    Ok(CentralEntry {
        header,
        name,
        extra,
        next,
    })
}

/// An entry's sizes, local header offset and disk after zip64 resolution.
pub(super) struct Resolved {
    pub uncompressed: u64,
    pub compressed: u64,
    pub local_offset: u64,
    pub disk: u32,
}

impl CentralEntry<'_> {
    /// Takes every sentinel field from the zip64 extra field, which must then be present.
    /// `name` and `at` identify the entry in messages.
    pub fn resolve(&self, name: &str, at: u64) -> Result<Resolved> {
        let h = &self.header;
        let deferred = Deferred {
            uncompressed: h.uncompressed == U32_SENTINEL,
            compressed: h.compressed == U32_SENTINEL,
            local_offset: h.local_offset == U32_SENTINEL,
            disk: h.disk == U16_SENTINEL,
        };
        let mut resolved = Resolved {
            uncompressed: u64::from(h.uncompressed),
            compressed: u64::from(h.compressed),
            local_offset: u64::from(h.local_offset),
            disk: u32::from(h.disk),
        };
        if !deferred.any() {
            return Ok(resolved);
        }
        let what = || format!("record '{name}' (central directory entry at offset {at})");
        let values = zip64::resolve(self.extra, deferred, &what)?.ok_or_else(|| {
            Error::format(format!(
                "{}: a size or offset is 0xFFFFFFFF but there is no zip64 extra field",
                what()
            ))
        })?;
        resolved.uncompressed = values.uncompressed.unwrap_or(resolved.uncompressed);
        resolved.compressed = values.compressed.unwrap_or(resolved.compressed);
        resolved.local_offset = values.local_offset.unwrap_or(resolved.local_offset);
        resolved.disk = values.disk.unwrap_or(resolved.disk);
        Ok(resolved)
    }
}
