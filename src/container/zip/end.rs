//! The end records: the end-of-central-directory record (EOCD), and for zip64 archives the
//! locator before it and the zip64 end record it names. Together they say where the central
//! directory is and how many entries it holds.

use super::fields::{fixed, le16, le32, le64};
use super::zip64::{U16_SENTINEL, U32_SENTINEL};
use crate::error::{Error, Result};

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

const EOCD_LEN: usize = 22;
const ZIP64_EOCD_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: usize = 20;
const MAX_COMMENT: usize = 0xFFFF;

/// Where the central directory is, after zip64 resolution.
pub(super) struct End {
    pub entries: u64,
    pub cd_offset: u64,
    pub cd_size: u64,
    /// First byte of the end records (zip64 end record if present, else the EOCD).
    pub end_start: u64,
}

/// The classic end-of-central-directory record.
struct EndRecord {
    disk: u16,
    cd_disk: u16,
    disk_entries: u16,
    entries: u16,
    cd_size: u32,
    cd_offset: u32,
    comment_len: u16,
}

impl EndRecord {
    fn decode(b: &[u8; EOCD_LEN]) -> EndRecord {
        EndRecord {
            disk: le16(b, 4),
            cd_disk: le16(b, 6),
            disk_entries: le16(b, 8),
            entries: le16(b, 10),
            cd_size: le32(b, 12),
            cd_offset: le32(b, 16),
            comment_len: le16(b, 20),
        }
    }
}

/// The zip64 end-of-central-directory locator, just before the EOCD.
struct Zip64Locator {
    /// The disk holding the zip64 end record.
    end_disk: u32,
    end_offset: u64,
    disks: u32,
}

impl Zip64Locator {
    /// `None` when the bytes do not start with the locator's signature.
    fn decode(b: &[u8; ZIP64_LOCATOR_LEN]) -> Option<Zip64Locator> {
        (le32(b, 0) == ZIP64_LOCATOR_SIG).then(|| Zip64Locator {
            end_disk: le32(b, 4),
            end_offset: le64(b, 8),
            disks: le32(b, 16),
        })
    }
}

/// The zip64 end-of-central-directory record (its fixed part).
struct Zip64EndRecord {
    signature: u32,
    /// Size of the record after this field.
    record_size: u64,
    disk: u32,
    cd_disk: u32,
    disk_entries: u64,
    entries: u64,
    cd_size: u64,
    cd_offset: u64,
}

impl Zip64EndRecord {
    fn decode(b: &[u8; ZIP64_EOCD_LEN]) -> Zip64EndRecord {
        Zip64EndRecord {
            signature: le32(b, 0),
            record_size: le64(b, 4),
            disk: le32(b, 16),
            cd_disk: le32(b, 20),
            disk_entries: le64(b, 24),
            entries: le64(b, 32),
            cd_size: le64(b, 40),
            cd_offset: le64(b, 48),
        }
    }
}

/// Finds the end-of-central-directory record: its comment must reach exactly the end of the
/// file. A second candidate that would also fit is an ambiguous archive and rejected.
fn find_eocd(bytes: &[u8]) -> Result<usize> {
    let len = bytes.len();
    if len < EOCD_LEN {
        return Err(Error::format(format!(
            "{len} bytes is too short to be a zip archive (no end of central directory record)"
        )));
    }
    let last = len - EOCD_LEN;
    let sig = EOCD_SIG.to_le_bytes();
    // An end record without a comment in the last 22 bytes, as torch writes it, is the one
    // torch's reader (miniz scans back from the end) and Python's zipfile (which checks this
    // case first) both use, whatever else the bytes before it hold: take it without scanning
    // the 64 KiB before it, which for a small checkpoint are pages of tensor data.
    if let Some(head) = fixed::<EOCD_LEN>(bytes, last as u64) {
        if head[..4] == sig && EndRecord::decode(head).comment_len == 0 {
            return Ok(last);
        }
    }
    let first = last.saturating_sub(MAX_COMMENT);
    let mut found: Option<usize> = None;
    let mut nearest_misfit: Option<(usize, usize)> = None;
    // Every signature in the window is examined (two that both fit make the file ambiguous),
    // from the end backwards, eight bytes at a time: a word without the signature's first
    // byte is skipped whole.
    let mut end = last + 1;
    while end > first {
        let start = end.saturating_sub(8).max(first);
        if let Ok(word) = <[u8; 8]>::try_from(&bytes[start..end]) {
            if !has_byte(u64::from_le_bytes(word), sig[0]) {
                end = start;
                continue;
            }
        }
        for pos in (start..end).rev() {
            let Some(head) = fixed::<EOCD_LEN>(bytes, pos as u64) else {
                continue;
            };
            if head[..4] != sig {
                continue;
            }
            let comment = usize::from(EndRecord::decode(head).comment_len);
            if pos + EOCD_LEN + comment == len {
                if let Some(other) = found {
                    return Err(Error::format(format!(
                        "ambiguous zip archive: end of central directory records at offsets \
                         {pos} and {other} both reach the end of the file"
                    )));
                }
                found = Some(pos);
            } else if nearest_misfit.is_none() {
                nearest_misfit = Some((pos, comment));
            }
        }
        end = start;
    }
    match (found, nearest_misfit) {
        (Some(pos), _) => Ok(pos),
        (None, Some((pos, comment))) => Err(Error::format(format!(
            "junk after the end of the zip archive: the end of central directory record at \
             offset {pos} (comment of {comment} bytes) ends at offset {}, but the file is {len} \
             bytes",
            pos + EOCD_LEN + comment
        ))),
        (None, None) => Err(Error::format(format!(
            "no end of central directory record in the last {} bytes of the file: not a zip \
             archive, or truncated",
            len - first
        ))),
    }
}

/// True when one of the eight bytes of `word` is `byte` (may also say so for a word that only
/// has the byte's neighbour, never the reverse: the caller then checks byte by byte).
pub(super) fn has_byte(word: u64, byte: u8) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// Reads the end records: the EOCD, and the zip64 records when a locator precedes it.
pub(super) fn read_end(bytes: &[u8]) -> Result<End> {
    let eocd_pos = find_eocd(bytes)?;
    let eocd = fixed::<EOCD_LEN>(bytes, eocd_pos as u64)
        .ok_or_else(|| Error::format("end of central directory record out of range"))?;
    let EndRecord {
        disk,
        cd_disk,
        disk_entries,
        entries,
        cd_size,
        cd_offset,
        ..
    } = EndRecord::decode(eocd);

    let locator = eocd_pos
        .checked_sub(ZIP64_LOCATOR_LEN)
        .and_then(|pos| Some((pos, fixed::<ZIP64_LOCATOR_LEN>(bytes, pos as u64)?)))
        .and_then(|(pos, b)| Some((pos, Zip64Locator::decode(b)?)));

    let Some((locator_pos, locator)) = locator else {
        // Plain archive.
        if disk != 0 || cd_disk != 0 || disk_entries != entries {
            return Err(Error::unsupported(format!(
                "multi-disk zip archives are not supported (end record at offset {eocd_pos}: \
                 disk {disk}, central directory on disk {cd_disk}, {disk_entries} of {entries} \
                 entries on this disk)"
            )));
        }
        return Ok(End {
            entries: u64::from(entries),
            cd_offset: u64::from(cd_offset),
            cd_size: u64::from(cd_size),
            end_start: eocd_pos as u64,
        });
    };

    let Zip64Locator {
        end_disk: z64_disk,
        end_offset: z64_offset,
        disks,
    } = locator;
    if z64_disk != 0 || disks > 1 {
        return Err(Error::unsupported(format!(
            "multi-disk zip archives are not supported (zip64 locator at offset {locator_pos}: \
             {disks} disks, zip64 end record on disk {z64_disk})"
        )));
    }
    let z64_end = z64_offset.checked_add(ZIP64_EOCD_LEN as u64);
    if !z64_end.is_some_and(|end| end <= locator_pos as u64) {
        return Err(Error::format(format!(
            "zip64 end of central directory offset {z64_offset} (from the locator at offset \
             {locator_pos}) does not leave room for the record before the locator"
        )));
    }
    let z64 = fixed::<ZIP64_EOCD_LEN>(bytes, z64_offset).ok_or_else(|| {
        Error::format(format!(
            "zip64 end of central directory record at offset {z64_offset} is out of range"
        ))
    })?;
    let z64 = Zip64EndRecord::decode(z64);
    if z64.signature != ZIP64_EOCD_SIG {
        return Err(Error::format(format!(
            "no zip64 end of central directory signature at offset {z64_offset} (named by the \
             locator at offset {locator_pos})"
        )));
    }
    let record_size = z64.record_size;
    let record_end = z64_offset
        .checked_add(12)
        .and_then(|v| v.checked_add(record_size));
    if record_size < (ZIP64_EOCD_LEN - 12) as u64
        || !record_end.is_some_and(|end| end <= locator_pos as u64)
    {
        return Err(Error::format(format!(
            "zip64 end of central directory record at offset {z64_offset} declares a bad size \
             {record_size}"
        )));
    }
    let Zip64EndRecord {
        disk: z_disk,
        cd_disk: z_cd_disk,
        disk_entries: z_disk_entries,
        entries: z_entries,
        cd_size: z_cd_size,
        cd_offset: z_cd_offset,
        ..
    } = z64;
    if z_disk != 0 || z_cd_disk != 0 || z_disk_entries != z_entries {
        return Err(Error::unsupported(format!(
            "multi-disk zip archives are not supported (zip64 end record at offset {z64_offset}: \
             disk {z_disk}, central directory on disk {z_cd_disk}, {z_disk_entries} of \
             {z_entries} entries on this disk)"
        )));
    }
    // The classic record's fields must be either the "see zip64" sentinel or the same value:
    // two readers must never see two different directories.
    let agree16 = |v: u16, z: u64| v == U16_SENTINEL || u64::from(v) == z;
    let agree32 = |v: u32, z: u64| v == U32_SENTINEL || u64::from(v) == z;
    if !(agree16(disk, u64::from(z_disk))
        && agree16(cd_disk, u64::from(z_cd_disk))
        && agree16(disk_entries, z_disk_entries)
        && agree16(entries, z_entries)
        && agree32(cd_size, z_cd_size)
        && agree32(cd_offset, z_cd_offset))
    {
        return Err(Error::format(format!(
            "the end of central directory record at offset {eocd_pos} ({entries} entries, \
             directory of {cd_size} bytes at offset {cd_offset}) disagrees with the zip64 end \
             record at offset {z64_offset} ({z_entries} entries, directory of {z_cd_size} bytes \
             at offset {z_cd_offset})"
        )));
    }
    Ok(End {
        entries: z_entries,
        cd_offset: z_cd_offset,
        cd_size: z_cd_size,
        end_start: z64_offset,
    })
}
