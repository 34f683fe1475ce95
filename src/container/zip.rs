//! A read-only parser for the zip archives written by `torch.save`.
//!
//! It works on the whole file as a byte slice (normally a memory mapping) and reads only the end
//! records, the central directory and each entry's local header — never the record data. The
//! result is, for every record, its name and the absolute byte range of its data, so that the
//! layers above can point straight into the mapping.
//!
//! Only what torch writes is accepted: stored (uncompressed) entries on a single disk, all under
//! one top-level folder (the prefix). Everything is bounds- and overflow-checked; bad input is a
//! `Format` (or `Unsupported`, or `Limit`) error that names the record and/or the byte offset,
//! never a panic. CRCs are never checked (torch can write all-zero CRCs).

use crate::error::{Error, Result};
use std::collections::HashMap;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

const LOCAL_LEN: usize = 30;
const CENTRAL_LEN: usize = 46;
const EOCD_LEN: usize = 22;
const ZIP64_EOCD_LEN: usize = 56;
const ZIP64_LOCATOR_LEN: usize = 20;
const MAX_COMMENT: usize = 0xFFFF;

const ZIP64_EXTRA_ID: u16 = 0x0001;
const U16_SENTINEL: u16 = 0xFFFF;
const U32_SENTINEL: u32 = 0xFFFF_FFFF;

const FLAG_ENCRYPTED: u16 = 1 << 0;
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
const FLAG_MASKED_HEADERS: u16 = 1 << 13;
const ENCRYPTION_FLAGS: u16 = FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS;

/// One record of the archive: its full name and where its bytes are in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipRecord {
    /// The full name as stored in the archive, prefix included (`archive/data/0`).
    pub name: String,
    /// Absolute offset of the first data byte in the file.
    pub data_offset: u64,
    /// Number of data bytes (stored, so compressed size == uncompressed size).
    pub size: u64,
}

/// Bounds applied while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZipLimits {
    /// Most entries accepted in the central directory; more is a `Limit` error.
    pub max_records: usize,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_records: 1 << 22,
        }
    }
}

/// A parsed archive: the records in central-directory order and an index by relative name.
/// It holds no reference to the bytes; pass the same slice to [`ZipArchive::data`].
#[derive(Clone, Debug)]
pub struct ZipArchive {
    prefix: String,
    records: Vec<ZipRecord>,
    /// Name relative to `prefix/` -> index into `records`.
    index: HashMap<String, usize>,
    file_len: u64,
}

impl ZipArchive {
    /// The top-level folder every record lives in, without the trailing slash (`archive`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All records, in central-directory order.
    pub fn records(&self) -> &[ZipRecord] {
        &self.records
    }

    /// Looks a record up by its name under the prefix (`data.pkl`, `data/0`). O(1).
    pub fn get(&self, relative: &str) -> Option<&ZipRecord> {
        self.index
            .get(relative)
            .and_then(|&index| self.records.get(index))
    }

    /// Length of the file this archive was parsed from.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The record's bytes. Their range was checked against the file at parse time.
    ///
    /// # Panics
    /// If `bytes` is not (at least as long as) the slice given to [`parse`]: that is a bug in
    /// the caller, not bad input.
    pub fn data<'a>(&self, bytes: &'a [u8], record: &ZipRecord) -> &'a [u8] {
        match range(bytes, record.data_offset, record.size) {
            Some(data) => data,
            None => panic!(
                "ZipArchive::data: record '{}' (bytes {}..+{}) is outside the given slice of {} \
                 bytes; pass the slice the archive was parsed from",
                record.name,
                record.data_offset,
                record.size,
                bytes.len()
            ),
        }
    }

    /// A small text record (`byteorder`, `.storage_alignment`, `.format_version`), trimmed of
    /// surrounding whitespace; `None` when the record is absent. Bytes that are not UTF-8 are
    /// replaced (U+FFFD) rather than hidden, so a garbled value is seen, not mistaken for absent.
    pub fn text(&self, bytes: &[u8], relative: &str) -> Option<String> {
        let record = self.get(relative)?;
        let data = range(bytes, record.data_offset, record.size)?;
        Some(String::from_utf8_lossy(data).trim().to_owned())
    }
}

/// True when the bytes start with a zip local file header signature (`PK\x03\x04`).
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(&LOCAL_SIG.to_le_bytes()[..])
}

// ---------------------------------------------------------------------------------------------
// Byte access: everything returns `None` when out of range; callers turn that into a Format
// error with context. Fixed-size headers are read as arrays so field offsets cannot overrun.

fn range(bytes: &[u8], start: u64, len: u64) -> Option<&[u8]> {
    let end = start.checked_add(len)?;
    let start = usize::try_from(start).ok()?;
    let end = usize::try_from(end).ok()?;
    bytes.get(start..end)
}

fn fixed<const N: usize>(bytes: &[u8], start: u64) -> Option<&[u8; N]> {
    range(bytes, start, N as u64)?.try_into().ok()
}

fn le16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Reads consecutive little-endian u64 values from a variable-length field.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u64(&mut self) -> Option<u64> {
        let end = self.pos.checked_add(8)?;
        let v: [u8; 8] = self.bytes.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(u64::from_le_bytes(v))
    }
}

/// The payload of the zip64 extended-information field (id 0x0001) in an extra area, if any.
/// `what` names the owner for error messages.
fn find_zip64_extra<'a>(extra: &'a [u8], what: &dyn Fn() -> String) -> Result<Option<&'a [u8]>> {
    let mut pos = 0usize;
    let mut found = None;
    // Fewer than 4 trailing bytes cannot hold a field header; like other readers, ignore them.
    while extra.len() - pos >= 4 {
        let id = u16::from_le_bytes([extra[pos], extra[pos + 1]]);
        let len = usize::from(u16::from_le_bytes([extra[pos + 2], extra[pos + 3]]));
        let body = extra.get(pos + 4..pos + 4 + len).ok_or_else(|| {
            Error::format(format!(
                "{}: extra field 0x{id:04x} at byte {pos} of the extra area claims {len} bytes, \
                 past the end of the {}-byte extra area",
                what(),
                extra.len()
            ))
        })?;
        if id == ZIP64_EXTRA_ID {
            if found.is_some() {
                return Err(Error::format(format!(
                    "{}: more than one zip64 extra field",
                    what()
                )));
            }
            found = Some(body);
        }
        pos += 4 + len;
    }
    Ok(found)
}

fn method_name(method: u16) -> &'static str {
    match method {
        1 => "shrink",
        6 => "implode",
        8 => "deflate",
        9 => "deflate64",
        12 => "bzip2",
        14 => "lzma",
        93 => "zstd",
        95 => "xz",
        98 => "ppmd",
        99 => "aes",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// End records.

struct End {
    entries: u64,
    cd_offset: u64,
    cd_size: u64,
    /// First byte of the end records (zip64 end record if present, else the EOCD).
    end_start: u64,
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
    let first = last.saturating_sub(MAX_COMMENT);
    let sig = EOCD_SIG.to_le_bytes();
    let mut found: Option<usize> = None;
    let mut nearest_misfit: Option<(usize, usize)> = None;
    for pos in (first..=last).rev() {
        let Some(head) = fixed::<EOCD_LEN>(bytes, pos as u64) else {
            continue;
        };
        if head[..4] != sig {
            continue;
        }
        let comment = usize::from(le16(head, 20));
        if pos + EOCD_LEN + comment == len {
            if let Some(other) = found {
                return Err(Error::format(format!(
                    "ambiguous zip archive: end of central directory records at offsets {pos} \
                     and {other} both reach the end of the file"
                )));
            }
            found = Some(pos);
        } else if nearest_misfit.is_none() {
            nearest_misfit = Some((pos, comment));
        }
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

fn read_end(bytes: &[u8]) -> Result<End> {
    let eocd_pos = find_eocd(bytes)?;
    let eocd = fixed::<EOCD_LEN>(bytes, eocd_pos as u64)
        .ok_or_else(|| Error::format("end of central directory record out of range"))?;
    let disk = le16(eocd, 4);
    let cd_disk = le16(eocd, 6);
    let disk_entries = le16(eocd, 8);
    let entries = le16(eocd, 10);
    let cd_size = le32(eocd, 12);
    let cd_offset = le32(eocd, 16);

    let locator = eocd_pos
        .checked_sub(ZIP64_LOCATOR_LEN)
        .and_then(|pos| Some((pos, fixed::<ZIP64_LOCATOR_LEN>(bytes, pos as u64)?)))
        .filter(|(_, loc)| le32(loc, 0) == ZIP64_LOCATOR_SIG);

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

    let z64_disk = le32(locator, 4);
    let z64_offset = le64(locator, 8);
    let disks = le32(locator, 16);
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
    if le32(z64, 0) != ZIP64_EOCD_SIG {
        return Err(Error::format(format!(
            "no zip64 end of central directory signature at offset {z64_offset} (named by the \
             locator at offset {locator_pos})"
        )));
    }
    let record_size = le64(z64, 4);
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
    let z_disk = le32(z64, 16);
    let z_cd_disk = le32(z64, 20);
    let z_disk_entries = le64(z64, 24);
    let z_entries = le64(z64, 32);
    let z_cd_size = le64(z64, 40);
    let z_cd_offset = le64(z64, 48);
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

// ---------------------------------------------------------------------------------------------
// Names.

fn check_name(name: &str, at: u64) -> Result<()> {
    let bad = |why: &str| {
        Error::format(format!(
            "record '{}' (central directory entry at offset {at}): {why}",
            name.escape_debug()
        ))
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(bad("absolute path"));
    }
    if name.contains('\0') {
        return Err(bad("name contains a NUL byte"));
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err(bad("name contains a '..' component"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The central directory and local headers.

/// What one central directory entry says, after zip64 resolution.
struct Central<'a> {
    name: &'a str,
    method: u16,
    crc: u32,
    size: u64,
    local_offset: u64,
}

/// Checks the local header against the central directory entry and returns the data offset.
fn check_local(bytes: &[u8], cd_offset: u64, entry: &Central<'_>) -> Result<u64> {
    let name = entry.name;
    let lh = entry.local_offset;
    let header_fits = lh
        .checked_add(LOCAL_LEN as u64)
        .is_some_and(|end| end <= cd_offset);
    let header = fixed::<LOCAL_LEN>(bytes, lh)
        .filter(|_| header_fits)
        .ok_or_else(|| {
            Error::format(format!(
                "record '{name}': local header offset {lh} is outside the data area (the central \
                 directory starts at offset {cd_offset}, the file is {} bytes)",
                bytes.len()
            ))
        })?;
    if le32(header, 0) != LOCAL_SIG {
        return Err(Error::format(format!(
            "record '{name}': no local file header signature at offset {lh}"
        )));
    }
    let flags = le16(header, 6);
    let method = le16(header, 8);
    let crc = le32(header, 14);
    let compressed = le32(header, 18);
    let uncompressed = le32(header, 22);
    let name_len = u64::from(le16(header, 26));
    let extra_len = u64::from(le16(header, 28));
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
    let name_start = lh + LOCAL_LEN as u64;
    let local_name = range(bytes, name_start, name_len).ok_or_else(|| {
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
    let extra_start = name_start + name_len;
    let extra = range(bytes, extra_start, extra_len).ok_or_else(|| {
        Error::format(format!(
            "record '{name}': the local header at offset {lh} has an extra field of {extra_len} \
             bytes past the end of the file"
        ))
    })?;
    if crc != 0 && crc != entry.crc {
        return Err(Error::format(format!(
            "record '{name}': the local header at offset {lh} has CRC 0x{crc:08x}, the central \
             directory 0x{:08x}",
            entry.crc
        )));
    }
    // Local sizes may be zero (data descriptor). 0xFFFFFFFF defers to a local zip64 field,
    // which holds the uncompressed then the compressed size.
    let mut local_sizes = [(uncompressed, "uncompressed"), (compressed, "compressed")]
        .map(|(v, what)| (u64::from(v), v == U32_SENTINEL, what));
    if local_sizes.iter().any(|&(_, sentinel, _)| sentinel) {
        let what = || format!("record '{name}' (local header at offset {lh})");
        let zip64 = find_zip64_extra(extra, &what)?;
        let mut cursor = Cursor {
            bytes: zip64.unwrap_or(&[]),
            pos: 0,
        };
        for (value, sentinel, _) in &mut local_sizes {
            if *sentinel {
                // No zip64 field: the central directory is authoritative; nothing to compare.
                *value = if zip64.is_some() {
                    cursor.u64().ok_or_else(|| {
                        Error::format(format!("{}: zip64 extra field too short", what()))
                    })?
                } else {
                    0
                };
            }
        }
    }
    for (value, _, what) in local_sizes {
        if value != 0 && value != entry.size {
            return Err(Error::format(format!(
                "record '{name}': the local header at offset {lh} gives a {what} size of {value} \
                 bytes, the central directory {} bytes",
                entry.size
            )));
        }
    }
    Ok(extra_start + extra_len)
}

/// Parses the archive: end records, central directory, local headers. Never reads record data.
pub fn parse(bytes: &[u8], limits: &ZipLimits) -> Result<ZipArchive> {
    let file_len = bytes.len() as u64;
    let end = read_end(bytes)?;
    if end.entries > limits.max_records as u64 {
        return Err(Error::limit(format!(
            "zip archive has {} entries, more than the limit of {}",
            end.entries, limits.max_records
        )));
    }
    let cd_offset = end.cd_offset;
    let cd_end = cd_offset.checked_add(end.cd_size);
    if !cd_end.is_some_and(|cd_end| cd_end <= end.end_start) {
        return Err(Error::format(format!(
            "central directory of {} bytes at offset {cd_offset} does not end before the end \
             records at offset {}",
            end.cd_size, end.end_start
        )));
    }
    if end.entries > end.cd_size / CENTRAL_LEN as u64 {
        return Err(Error::format(format!(
            "central directory of {} bytes at offset {cd_offset} cannot hold {} entries",
            end.cd_size, end.entries
        )));
    }
    let cd = range(bytes, cd_offset, end.cd_size).ok_or_else(|| {
        Error::format(format!(
            "central directory at offset {cd_offset} is out of range"
        ))
    })?;
    // Bounded by cd_size / 46 above, so this allocation is no bigger than the file allows.
    let count = usize::try_from(end.entries)
        .map_err(|_| Error::limit(format!("{} entries", end.entries)))?;

    let mut prefix: Option<String> = None;
    let mut records = Vec::with_capacity(count);
    let mut index: HashMap<String, usize> = HashMap::with_capacity(count);
    // (start of local header, end of data, record index)
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(count);
    let mut pos = 0usize;

    for i in 0..count {
        let at = cd_offset + pos as u64;
        let header = fixed::<CENTRAL_LEN>(cd, pos as u64).ok_or_else(|| {
            Error::format(format!(
                "central directory entry {i} at offset {at} runs past the end of the directory"
            ))
        })?;
        if le32(header, 0) != CENTRAL_SIG {
            return Err(Error::format(format!(
                "no central directory signature at offset {at} (entry {i})"
            )));
        }
        let flags = le16(header, 8);
        let method = le16(header, 10);
        let crc = le32(header, 16);
        let compressed32 = le32(header, 20);
        let uncompressed32 = le32(header, 24);
        let name_len = usize::from(le16(header, 28));
        let extra_len = usize::from(le16(header, 30));
        let comment_len = usize::from(le16(header, 32));
        let disk16 = le16(header, 34);
        let offset32 = le32(header, 42);

        let name_start = pos + CENTRAL_LEN;
        let extra_start = name_start + name_len;
        let next = extra_start + extra_len + comment_len;
        let (Some(name_bytes), Some(extra)) = (
            cd.get(name_start..extra_start),
            cd.get(extra_start..extra_start + extra_len),
        ) else {
            return Err(Error::format(format!(
                "central directory entry {i} at offset {at} runs past the end of the directory"
            )));
        };
        if next > cd.len() {
            return Err(Error::format(format!(
                "central directory entry {i} at offset {at} runs past the end of the directory"
            )));
        }
        pos = next;

        let name = std::str::from_utf8(name_bytes).map_err(|_| {
            Error::format(format!(
                "record '{}' (central directory entry at offset {at}): name is not valid UTF-8",
                String::from_utf8_lossy(name_bytes).escape_debug()
            ))
        })?;
        check_name(name, at)?;

        if prefix.is_none() {
            match name.split_once('/') {
                Some((first, _)) if !first.is_empty() => prefix = Some(first.to_owned()),
                _ => {
                    return Err(Error::format(format!(
                        "first record '{name}' (offset {at}) is not inside a top-level folder"
                    )))
                }
            }
        }
        let prefix = prefix.as_deref().unwrap_or_default();
        let relative = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| {
                Error::format(format!(
                    "record '{name}' (central directory entry at offset {at}) is outside the \
                     archive's top-level folder '{prefix}/'"
                ))
            })?;

        if flags & ENCRYPTION_FLAGS != 0 {
            return Err(Error::unsupported(format!(
                "record '{name}' is encrypted (flags 0x{flags:04x}); encrypted zip entries are \
                 not supported"
            )));
        }
        if method != 0 {
            return Err(Error::unsupported(format!(
                "record '{name}' uses compression method {method} ({}); only stored \
                 (uncompressed) records can be memory-mapped",
                method_name(method)
            )));
        }

        // zip64: only the fields whose classic value is the sentinel are present, in this order.
        let mut uncompressed = u64::from(uncompressed32);
        let mut compressed = u64::from(compressed32);
        let mut local_offset = u64::from(offset32);
        let mut disk = u32::from(disk16);
        let needs_zip64 = uncompressed32 == U32_SENTINEL
            || compressed32 == U32_SENTINEL
            || offset32 == U32_SENTINEL
            || disk16 == U16_SENTINEL;
        if needs_zip64 {
            let what = || format!("record '{name}' (central directory entry at offset {at})");
            let body = find_zip64_extra(extra, &what)?.ok_or_else(|| {
                Error::format(format!(
                    "{}: a size or offset is 0xFFFFFFFF but there is no zip64 extra field",
                    what()
                ))
            })?;
            let mut cursor = Cursor {
                bytes: body,
                pos: 0,
            };
            let short = || Error::format(format!("{}: zip64 extra field too short", what()));
            if uncompressed32 == U32_SENTINEL {
                uncompressed = cursor.u64().ok_or_else(short)?;
            }
            if compressed32 == U32_SENTINEL {
                compressed = cursor.u64().ok_or_else(short)?;
            }
            if offset32 == U32_SENTINEL {
                local_offset = cursor.u64().ok_or_else(short)?;
            }
            if disk16 == U16_SENTINEL {
                let end = cursor.pos.checked_add(4).ok_or_else(short)?;
                let v: [u8; 4] = body
                    .get(cursor.pos..end)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(short)?;
                disk = u32::from_le_bytes(v);
            }
        }
        if disk != 0 {
            return Err(Error::unsupported(format!(
                "record '{name}' starts on disk {disk}: multi-disk zip archives are not supported"
            )));
        }
        if compressed != uncompressed {
            return Err(Error::format(format!(
                "record '{name}' is stored but its compressed size ({compressed}) differs from \
                 its size ({uncompressed})"
            )));
        }
        if (relative.is_empty() || relative.ends_with('/')) && uncompressed != 0 {
            return Err(Error::format(format!(
                "record '{name}' is a directory but holds {uncompressed} bytes"
            )));
        }

        let central = Central {
            name,
            method,
            crc,
            size: uncompressed,
            local_offset,
        };
        let data_offset = check_local(bytes, cd_offset, &central)?;
        let data_end = data_offset.checked_add(uncompressed);
        if !data_end.is_some_and(|data_end| data_end <= cd_offset) {
            return Err(Error::format(format!(
                "record '{name}': {uncompressed} bytes of data at offset {data_offset} run past \
                 the start of the central directory at offset {cd_offset} (file is {file_len} \
                 bytes)"
            )));
        }
        let data_end = data_offset + uncompressed;

        if index.insert(relative.to_owned(), i).is_some() {
            return Err(Error::format(format!(
                "duplicate record '{name}' (central directory entry at offset {at})"
            )));
        }
        spans.push((local_offset, data_end, i));
        records.push(ZipRecord {
            name: name.to_owned(),
            data_offset,
            size: uncompressed,
        });
    }
    if pos != cd.len() {
        return Err(Error::format(format!(
            "central directory at offset {cd_offset} has {} unexplained bytes after its {count} \
             entries",
            cd.len() - pos
        )));
    }

    // No record's header + data may overlap another's.
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let (a_start, a_end, a) = pair[0];
        let (b_start, b_end, b) = pair[1];
        if b_start < a_end {
            return Err(Error::format(format!(
                "records '{}' (bytes {a_start}..{a_end}) and '{}' (bytes {b_start}..{b_end}) \
                 overlap",
                records[a].name, records[b].name
            )));
        }
    }

    let prefix = prefix.ok_or_else(|| Error::format("zip archive has no records"))?;
    Ok(ZipArchive {
        prefix,
        records,
        index,
        file_len,
    })
}
