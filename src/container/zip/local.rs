//! Local file headers: the header in front of each record's data. mmckpt reads it only to find
//! where the data starts, and checks it against the central directory entry so that a reader
//! going by either sees the same record.

use super::fields::{fixed, le16, le32, range};
use super::reads::{local_bytes, ReadAt};
use super::zip64::{self, Deferred, U32_SENTINEL};
use super::ENCRYPTION_FLAGS;
use crate::error::{Error, Result};

pub(super) const LOCAL_SIG: u32 = 0x0403_4b50;
pub(super) const LOCAL_LEN: usize = 30;

/// The fixed part of a local file header, as stored.
pub(super) struct LocalHeader {
    pub signature: u32,
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub compressed: u32,
    pub uncompressed: u32,
    pub name_len: u16,
    pub extra_len: u16,
}

impl LocalHeader {
    pub fn decode(b: &[u8; LOCAL_LEN]) -> LocalHeader {
        LocalHeader {
            signature: le32(b, 0),
            flags: le16(b, 6),
            method: le16(b, 8),
            crc: le32(b, 14),
            compressed: le32(b, 18),
            uncompressed: le32(b, 22),
            name_len: le16(b, 26),
            extra_len: le16(b, 28),
        }
    }

    /// Bytes from the header's start to its record's data: the header, name and extra field.
    pub fn total_len(&self) -> u64 {
        LOCAL_LEN as u64 + u64::from(self.name_len) + u64::from(self.extra_len)
    }
}

/// What the central directory says about a record, for the comparison with its local header.
pub(super) struct Expected<'a> {
    pub name: &'a str,
    pub method: u16,
    pub crc: u32,
    /// Uncompressed, compressed.
    pub sizes: [u64; 2],
    pub local_offset: u64,
}

/// Checks the local header against the central directory entry and returns the data offset.
/// With `read_at`, the header is read from the file rather than through `bytes` (a mapping).
pub(super) fn check_local(
    bytes: &[u8],
    cd_offset: u64,
    entry: &Expected<'_>,
    read_at: Option<ReadAt<'_>>,
    buf: &mut Vec<u8>,
) -> Result<u64> {
    let name = entry.name;
    let lh = entry.local_offset;
    let header_fits = lh
        .checked_add(LOCAL_LEN as u64)
        .is_some_and(|end| end <= cd_offset);
    let local = local_bytes(bytes, lh, name.len(), read_at.filter(|_| header_fits), buf);
    let header = fixed::<LOCAL_LEN>(local, 0)
        .filter(|_| header_fits)
        .ok_or_else(|| {
            Error::format(format!(
                "record '{name}': local header offset {lh} is outside the data area (the central \
                 directory starts at offset {cd_offset}, the file is {} bytes)",
                bytes.len()
            ))
        })?;
    let header = LocalHeader::decode(header);
    if header.signature != LOCAL_SIG {
        return Err(Error::format(format!(
            "record '{name}': no local file header signature at offset {lh}"
        )));
    }
    let flags = header.flags;
    let method = header.method;
    let name_len = u64::from(header.name_len);
    let extra_len = u64::from(header.extra_len);
    if flags & ENCRYPTION_FLAGS != 0 {
        return Err(Error::unsupported(format!(
            "record '{name}': the local header at offset {lh} marks it encrypted (flags \
             0x{flags:04x})"
        )));
    }
    if method != entry.method {
        return Err(Error::format(format!(
            "record '{name}': the local header at offset {lh} says compression method {method}, \
             the central directory says {}",
            entry.method
        )));
    }
    let local_name = range(local, LOCAL_LEN as u64, name_len).ok_or_else(|| {
        Error::format(format!(
            "record '{name}': the local header at offset {lh} has a name of {name_len} bytes past \
             the end of the file"
        ))
    })?;
    if local_name != name.as_bytes() {
        return Err(Error::format(format!(
            "record '{name}': the local header at offset {lh} names '{}'",
            String::from_utf8_lossy(local_name).escape_debug()
        )));
    }
    let extra = range(local, LOCAL_LEN as u64 + name_len, extra_len).ok_or_else(|| {
        Error::format(format!(
            "record '{name}': the local header at offset {lh} has an extra field of {extra_len} \
             bytes past the end of the file"
        ))
    })?;
    let crc = header.crc;
    if crc != 0 && crc != entry.crc {
        return Err(Error::format(format!(
            "record '{name}': the local header at offset {lh} has CRC 0x{crc:08x}, the central \
             directory 0x{:08x}",
            entry.crc
        )));
    }
    // Local sizes may be zero (data descriptor). 0xFFFFFFFF defers to a local zip64 field,
    // which holds the uncompressed then the compressed size; without one, the central
    // directory is authoritative and there is nothing to compare.
    let mut uncompressed = u64::from(header.uncompressed);
    let mut compressed = u64::from(header.compressed);
    let deferred = Deferred {
        uncompressed: header.uncompressed == U32_SENTINEL,
        compressed: header.compressed == U32_SENTINEL,
        ..Deferred::default()
    };
    if deferred.any() {
        let what = || format!("record '{name}' (local header at offset {lh})");
        match zip64::resolve(extra, deferred, &what)? {
            Some(values) => {
                uncompressed = values.uncompressed.unwrap_or(uncompressed);
                compressed = values.compressed.unwrap_or(compressed);
            }
            None => {
                if deferred.uncompressed {
                    uncompressed = 0;
                }
                if deferred.compressed {
                    compressed = 0;
                }
            }
        }
    }
    let local_sizes = [
        (uncompressed, "an uncompressed"),
        (compressed, "a compressed"),
    ];
    for ((value, what), expected) in local_sizes.into_iter().zip(entry.sizes) {
        if value != 0 && value != expected {
            return Err(Error::format(format!(
                "record '{name}': the local header at offset {lh} gives a {what} size of {value} \
                 bytes, the central directory {expected} bytes"
            )));
        }
    }
    Ok(lh + header.total_len())
}
