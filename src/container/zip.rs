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
use crate::hash::NameTable;

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

/// One record of the archive: its full name and where its bytes are in the file. A view into
/// the [`ZipArchive`] it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZipRecord<'a> {
    /// The full name as stored in the archive, prefix included (`archive/data/0`).
    pub name: &'a str,
    /// Absolute offset of the first data byte in the file.
    pub data_offset: u64,
    /// Number of data bytes in the file (for a compressed record, its compressed size).
    pub size: u64,
    /// Compression method: 0 (stored) for every record mmckpt maps. TorchScript archives
    /// compress their `code/` records, which mmckpt never reads.
    pub method: u16,
}

impl ZipRecord<'_> {
    /// Fails with `Unsupported` naming the record when its bytes are compressed.
    pub fn require_stored(&self) -> Result<()> {
        if self.method == 0 {
            return Ok(());
        }
        Err(Error::unsupported(format!(
            "record '{}' uses compression method {} ({}); only stored (uncompressed) records \
             can be memory-mapped",
            self.name,
            self.method,
            method_name(self.method)
        )))
    }
}

/// What the archive keeps of a record: its name is a range of the archive's name buffer, so
/// that parsing allocates nothing per record.
#[derive(Clone, Debug)]
struct Stored {
    name_start: usize,
    name_end: usize,
    /// Offset of the local header (where the record's bytes in the file begin).
    header_offset: u64,
    data_offset: u64,
    size: u64,
    method: u16,
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
    /// Every record's full name, back to back.
    names: String,
    records: Vec<Stored>,
    /// Records named `data/<n>` (n in canonical decimal, below the record count): record
    /// number + 1 at index n, 0 for none. torch names its storages so; they are found here
    /// without hashing, in the order they are usually read.
    numbered: Vec<u32>,
    /// Every other record, by relative name.
    index: NameTable,
    file_len: u64,
}

impl ZipArchive {
    /// The top-level folder every record lives in, without the trailing slash (`archive`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All records, in central-directory order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = ZipRecord<'_>> + '_ {
        self.records.iter().map(|stored| self.view(stored))
    }

    fn view(&self, stored: &Stored) -> ZipRecord<'_> {
        ZipRecord {
            name: &self.names[stored.name_start..stored.name_end],
            data_offset: stored.data_offset,
            size: stored.size,
            method: stored.method,
        }
    }

    /// The name of record `i` relative to the prefix (`data/0`).
    fn relative_name(&self, i: usize) -> &[u8] {
        let stored = &self.records[i];
        &self.names.as_bytes()[stored.name_start + self.prefix.len() + 1..stored.name_end]
    }

    /// Looks a record up by its name under the prefix (`data.pkl`, `data/0`). O(1).
    pub fn get(&self, relative: &str) -> Option<ZipRecord<'_>> {
        if let Some(n) = relative
            .strip_prefix("data/")
            .and_then(|digits| self.numbered_slot(digits))
        {
            return self.numbered_record(n);
        }
        let relative = relative.as_bytes();
        self.index
            .find(relative, |i| self.relative_name(i) == relative)
            .map(|i| self.view(&self.records[i]))
    }

    /// The record `data/<key>` that holds the bytes of the storage torch saved under `key`.
    pub fn storage_record(&self, key: &str) -> Option<ZipRecord<'_>> {
        match self.numbered_slot(key) {
            Some(n) => self.numbered_record(n),
            None => self.get(&format!("data/{key}")),
        }
    }

    /// The record named `data/<n>`, for an `n` below `numbered.len()`.
    fn numbered_record(&self, n: usize) -> Option<ZipRecord<'_>> {
        self.numbered[n]
            .checked_sub(1)
            .map(|i| self.view(&self.records[i as usize]))
    }

    /// Where `numbered` has the record `data/<digits>`, if it is one of those.
    fn numbered_slot(&self, digits: &str) -> Option<usize> {
        let n = canonical_index(digits)? as usize;
        (n < self.numbered.len()).then_some(n)
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
    pub fn data<'a>(&self, bytes: &'a [u8], record: ZipRecord<'_>) -> Result<&'a [u8]> {
        record.require_stored()?;
        range(bytes, record.data_offset, record.size).ok_or_else(|| {
            Error::format(format!(
                "record '{}' (bytes {}..+{}) is outside the given slice of {} bytes",
                record.name,
                record.data_offset,
                record.size,
                bytes.len()
            ))
        })
    }

    /// A small text record (`byteorder`, `.storage_alignment`, `.format_version`), trimmed of
    /// surrounding whitespace; `None` when the record is absent. Bytes that are not UTF-8 are
    /// replaced (U+FFFD) rather than hidden, so a garbled value is seen, not mistaken for absent.
    /// A record's bytes as stored, compressed or not (for records mmckpt inflates itself).
    pub fn raw_data<'a>(&self, bytes: &'a [u8], record: ZipRecord<'_>) -> Result<&'a [u8]> {
        range(bytes, record.data_offset, record.size).ok_or_else(|| {
            Error::format(format!(
                "record '{}' (bytes {}..+{}) is outside the given slice of {} bytes",
                record.name,
                record.data_offset,
                record.size,
                bytes.len()
            ))
        })
    }

    pub fn text(&self, bytes: &[u8], relative: &str) -> Result<Option<String>> {
        let Some(record) = self.get(relative) else {
            return Ok(None);
        };
        let data = self.data(bytes, record)?;
        Ok(Some(String::from_utf8_lossy(data).trim().to_owned()))
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
    let sig = EOCD_SIG.to_le_bytes();
    // An end record without a comment in the last 22 bytes, as torch writes it, is the one
    // torch's reader (miniz scans back from the end) and Python's zipfile (which checks this
    // case first) both use, whatever else the bytes before it hold: take it without scanning
    // the 64 KiB before it, which for a small checkpoint are pages of tensor data.
    if let Some(head) = fixed::<EOCD_LEN>(bytes, last as u64) {
        if head[..4] == sig && le16(head, 20) == 0 {
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
            let comment = usize::from(le16(head, 20));
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

/// The number `text` is when it is written in canonical decimal (`0`, `17`; not `01`, `+1`),
/// up to 9 digits.
pub fn canonical_index(text: &str) -> Option<u32> {
    let digits = text.as_bytes();
    let canonical = digits == b"0" || !digits.starts_with(b"0");
    if digits.is_empty() || digits.len() > 9 || !canonical {
        return None;
    }
    // Nine digits cannot overflow a u32.
    digits.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// True when one of the eight bytes of `word` is `byte` (may also say so for a word that only
/// has the byte's neighbour, never the reverse: the caller then checks byte by byte).
fn has_byte(word: u64, byte: u8) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
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
    // The substring search is fast; splitting into components is only needed when it hits.
    if name.contains("..") && name.split(['/', '\\']).any(|part| part == "..") {
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
    /// Uncompressed, compressed.
    sizes: [u64; 2],
    local_offset: u64,
}

/// Reads bytes of the file at an offset into a buffer, all or nothing (`pread`).
pub type ReadAt<'r> = &'r dyn Fn(u64, &mut [u8]) -> bool;

/// A [`ReadAt`] over bytes in memory (for tests, and to compare [`parse_with`] with [`parse`]).
pub fn read_from(bytes: &[u8]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
    move |offset, buf| {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| bytes.get(start..start.checked_add(buf.len())?));
        match src {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// How [`parse_with`] may read local headers instead of touching them in `bytes`.
#[derive(Clone, Copy)]
pub struct HeaderReads<'r> {
    pub read_at: ReadAt<'r>,
    /// Used only when the records are at least this many bytes apart on average.
    pub min_spacing: u64,
}

impl HeaderReads<'_> {
    /// Bytes apart at which reading beats faulting: the kernel maps 64 KiB around a fault.
    pub const SPARSE: u64 = 64 << 10;
}

/// The bytes from a local header on, up to its name and extra field: a slice of `bytes`, or a
/// copy read with `read_at` into `buf`. Either way it ends where the file ends, so range
/// checks against it are checks against the file.
fn local_bytes<'a>(
    bytes: &'a [u8],
    lh: u64,
    name_len: usize,
    read_at: Option<ReadAt<'_>>,
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    let Some(rest) = usize::try_from(lh).ok().and_then(|lh| bytes.get(lh..)) else {
        return &[];
    };
    let Some(read_at) = read_at else {
        return rest;
    };
    // The header, the name the central directory gives, and torch's alignment padding.
    let guess = (LOCAL_LEN + name_len + 128).min(rest.len());
    buf.resize(guess, 0);
    if !read_at(lh, buf) {
        return rest;
    }
    let Some(header) = fixed::<LOCAL_LEN>(buf, 0) else {
        return &buf[..];
    };
    let full = LOCAL_LEN + usize::from(le16(header, 26)) + usize::from(le16(header, 28));
    if full > buf.len() {
        buf.resize(full.min(rest.len()), 0);
        if !read_at(lh, buf) {
            return rest;
        }
    }
    &buf[..]
}

/// Checks the local header against the central directory entry and returns the data offset.
/// With `read_at`, the header is read from the file rather than through `bytes` (a mapping).
fn check_local(
    bytes: &[u8],
    cd_offset: u64,
    entry: &Central<'_>,
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
    let extra_start = name_start + name_len;
    let extra = range(local, LOCAL_LEN as u64 + name_len, extra_len).ok_or_else(|| {
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
    let mut local_sizes = [
        (uncompressed, "an uncompressed"),
        (compressed, "a compressed"),
    ]
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
    for ((value, _, what), expected) in local_sizes.into_iter().zip(entry.sizes) {
        if value != 0 && value != expected {
            return Err(Error::format(format!(
                "record '{name}': the local header at offset {lh} gives a {what} size of {value} \
                 bytes, the central directory {expected} bytes"
            )));
        }
    }
    Ok(extra_start + extra_len)
}

/// Parses the archive: end records, central directory, local headers. Never reads record data.
pub fn parse(bytes: &[u8], limits: &ZipLimits) -> Result<ZipArchive> {
    parse_with(bytes, limits, None)
}

/// [`parse`], reading local headers with `reads` when the records are far apart: `bytes` is
/// then a mapping of the file, where touching the header of a record far from the last one
/// would fault in (and map) the 64 KiB of tensor data around it, and a read of ~100 bytes
/// is cheaper. Checkpoints of large tensors (a few records per gigabyte) are such files.
/// The result, errors included, is the same as [`parse`]'s.
pub fn parse_with(
    bytes: &[u8],
    limits: &ZipLimits,
    reads: Option<HeaderReads<'_>>,
) -> Result<ZipArchive> {
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

    if u32::try_from(count).is_err() {
        return Err(Error::limit(format!("{count} zip entries")));
    }

    let mut prefix: Option<String> = None;
    let mut records: Vec<Stored> = Vec::with_capacity(count);
    // The names fit in what the directory holds besides the fixed part of each entry.
    let mut names = String::with_capacity(cd.len() - count * CENTRAL_LEN);
    let mut index = NameTable::with_capacity(count);
    let mut numbered = vec![0u32; count];
    // True while each record starts after the previous one ends (torch writes them so): then
    // no two overlap, and no sort is needed to know it.
    let mut in_order = true;
    let mut previous_end = 0u64;
    let mut pos = 0usize;
    let read_at = reads
        .filter(|r| count > 0 && cd_offset / count as u64 >= r.min_spacing)
        .map(|r| r.read_at);
    let mut local_buf = Vec::new();

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
        if method == 0 && compressed != uncompressed {
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
            sizes: [uncompressed, compressed],
            local_offset,
        };
        let data_offset = check_local(bytes, cd_offset, &central, read_at, &mut local_buf)?;
        let data_end = data_offset.checked_add(compressed);
        if !data_end.is_some_and(|data_end| data_end <= cd_offset) {
            return Err(Error::format(format!(
                "record '{name}': {compressed} bytes of data at offset {data_offset} run past \
                 the start of the central directory at offset {cd_offset} (file is {file_len} \
                 bytes)"
            )));
        }
        let data_end = data_offset + compressed;

        let duplicate = match relative
            .strip_prefix("data/")
            .and_then(canonical_index)
            .filter(|&n| (n as usize) < count)
        {
            Some(n) => std::mem::replace(&mut numbered[n as usize], i as u32 + 1) != 0,
            None => index
                .insert(relative.as_bytes(), i, |j| {
                    let other = &records[j];
                    names.as_bytes()[other.name_start + prefix.len() + 1..other.name_end]
                        == *relative.as_bytes()
                })
                .is_some(),
        };
        if duplicate {
            return Err(Error::format(format!(
                "duplicate record '{name}' (central directory entry at offset {at})"
            )));
        }
        in_order &= previous_end <= local_offset;
        previous_end = data_end;
        let name_start = names.len();
        names.push_str(name);
        records.push(Stored {
            name_start,
            name_end: names.len(),
            header_offset: local_offset,
            data_offset,
            size: compressed,
            method,
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
    let mut spans: Vec<(u64, u64, usize)> = Vec::new();
    if !in_order {
        spans = (records.iter().enumerate())
            .map(|(i, r)| (r.header_offset, r.data_offset + r.size, i))
            .collect();
        spans.sort_unstable();
    }
    for pair in spans.windows(2) {
        let (a_start, a_end, a) = pair[0];
        let (b_start, b_end, b) = pair[1];
        if b_start < a_end {
            return Err(Error::format(format!(
                "records '{}' (bytes {a_start}..{a_end}) and '{}' (bytes {b_start}..{b_end}) \
                 overlap",
                &names[records[a].name_start..records[a].name_end],
                &names[records[b].name_start..records[b].name_end]
            )));
        }
    }

    let prefix = prefix.ok_or_else(|| Error::format("zip archive has no records"))?;
    Ok(ZipArchive {
        prefix,
        names,
        records,
        numbered,
        index,
        file_len,
    })
}

/// Where the first record's bytes would be if it is `<prefix>/<relative>` (torch writes
/// `data.pkl` first): its data offset and size, read from the end record, the first central
/// directory entry and its local header, or `None` for anything unusual (zip64 fields,
/// compression, another name, anything out of range). Only a guess, to start work on the
/// record while [`parse`] checks the archive: use it only if the parsed archive's record
/// has the same offset and size. Also returns the number of entries.
pub fn guess_first_record(bytes: &[u8], relative: &str) -> Option<(u64, u64, u64)> {
    let end = read_end(bytes).ok()?;
    let entry = fixed::<CENTRAL_LEN>(bytes, end.cd_offset)?;
    let (method, size, name_len, local) = (
        le16(entry, 10),
        le32(entry, 20),
        usize::from(le16(entry, 28)),
        le32(entry, 42),
    );
    if le32(entry, 0) != CENTRAL_SIG || method != 0 || size == U32_SENTINEL || local == U32_SENTINEL
    {
        return None;
    }
    let name = range(bytes, end.cd_offset + CENTRAL_LEN as u64, name_len as u64)?;
    let suffix = name.strip_suffix(relative.as_bytes())?;
    if !suffix.ends_with(b"/") || suffix[..suffix.len() - 1].contains(&b'/') {
        return None;
    }
    let header = fixed::<LOCAL_LEN>(bytes, u64::from(local))?;
    if le32(header, 0) != LOCAL_SIG {
        return None;
    }
    let data = u64::from(local)
        + LOCAL_LEN as u64
        + u64::from(le16(header, 26))
        + u64::from(le16(header, 28));
    range(bytes, data, u64::from(size))?;
    Some((data, u64::from(size), end.entries))
}

/// A small zip writer for tests: stored entries, optional zip64 end records and extra fields,
/// optional `FB` alignment padding (as torch writes it) and data descriptors, and knobs to
/// produce broken archives.
#[cfg(test)]
pub(crate) mod writer {
    /// One entry to write.
    #[derive(Clone, Debug)]
    pub struct Entry {
        pub name: String,
        pub data: Vec<u8>,
        /// Compression method written in both headers (the data is never compressed).
        pub method: u16,
        /// Extra general-purpose flag bits.
        pub flags: u16,
        /// Name written in the local header instead of `name`.
        pub local_name: Option<String>,
        /// Size claimed by the central directory instead of `data.len()`.
        pub cd_size: Option<u64>,
        /// Local header offset claimed by the central directory.
        pub cd_offset: Option<u64>,
        /// False: only a central directory entry is written (`cd_offset` must be set).
        pub write_local: bool,
    }

    impl Entry {
        pub fn new(name: &str, data: &[u8]) -> Entry {
            Entry {
                name: name.to_owned(),
                data: data.to_vec(),
                method: 0,
                flags: 0,
                local_name: None,
                cd_size: None,
                cd_offset: None,
                write_local: true,
            }
        }
    }

    #[derive(Clone, Debug, Default)]
    pub struct Writer {
        pub entries: Vec<Entry>,
        /// Data alignment (0 or 1: none), by an `FB` extra field in the local header.
        pub align: u64,
        /// Write a zip64 end record and locator (torch always does).
        pub zip64: bool,
        /// Put every size and offset in zip64 extra fields (central and local headers).
        pub zip64_extras: bool,
        /// Flag bit 3: zero sizes and CRC in local headers, a descriptor after the data.
        pub descriptor: bool,
        pub comment: Vec<u8>,
    }

    pub struct Built {
        pub bytes: Vec<u8>,
        /// Per entry (in order): local header offset and data offset (0 when not written).
        pub local_offsets: Vec<u64>,
        pub data_offsets: Vec<u64>,
        /// Offset of each central directory entry.
        pub cd_entries: Vec<usize>,
        pub cd_offset: usize,
        /// Offset of the classic end of central directory record.
        pub eocd: usize,
    }

    pub fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn p16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn p32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn p64(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn clamp32(v: u64, force: bool) -> u32 {
        if force || v >= 0xFFFF_FFFF {
            0xFFFF_FFFF
        } else {
            v as u32
        }
    }

    /// A bare local header (zero sizes, no extra) for `name`, to plant inside other data.
    pub fn local_header(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        p32(&mut out, 0x0403_4b50);
        p16(&mut out, 20);
        p16(&mut out, 0);
        p16(&mut out, 0);
        p32(&mut out, 0x0021_0000);
        p32(&mut out, 0);
        p32(&mut out, 0);
        p32(&mut out, 0);
        p16(&mut out, name.len() as u16);
        p16(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out
    }

    impl Writer {
        pub fn new(entries: Vec<Entry>) -> Writer {
            Writer {
                entries,
                ..Writer::default()
            }
        }

        pub fn build(&self) -> Built {
            let mut out = Vec::new();
            let mut local_offsets = Vec::new();
            let mut data_offsets = Vec::new();
            let flag_bits = if self.descriptor { 1 << 3 } else { 0 } | (1 << 11);
            for e in &self.entries {
                if !e.write_local {
                    local_offsets.push(0);
                    data_offsets.push(0);
                    continue;
                }
                let lh = out.len() as u64;
                local_offsets.push(lh);
                let name = e.local_name.as_deref().unwrap_or(&e.name);
                let size = e.data.len() as u64;
                let crc = crc32(&e.data);
                let mut extra = Vec::new();
                let local_zip64 = self.zip64_extras && !self.descriptor;
                if local_zip64 {
                    p16(&mut extra, 0x0001);
                    p16(&mut extra, 16);
                    p64(&mut extra, size);
                    p64(&mut extra, size);
                }
                if self.align > 1 {
                    let base = lh + 30 + name.len() as u64 + extra.len() as u64 + 4;
                    let pad = (self.align - base % self.align) % self.align;
                    p16(&mut extra, 0x4246); // "FB"
                    p16(&mut extra, pad as u16);
                    extra.resize(extra.len() + pad as usize, b'Z');
                }
                p32(&mut out, 0x0403_4b50);
                p16(&mut out, if self.zip64_extras { 45 } else { 20 });
                p16(&mut out, flag_bits | e.flags);
                p16(&mut out, e.method);
                p32(&mut out, 0x0021_0000);
                if self.descriptor {
                    p32(&mut out, 0);
                    p32(&mut out, 0);
                    p32(&mut out, 0);
                } else {
                    p32(&mut out, crc);
                    p32(&mut out, clamp32(size, local_zip64));
                    p32(&mut out, clamp32(size, local_zip64));
                }
                p16(&mut out, name.len() as u16);
                p16(&mut out, extra.len() as u16);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&extra);
                data_offsets.push(out.len() as u64);
                out.extend_from_slice(&e.data);
                if self.descriptor {
                    p32(&mut out, 0x0807_4b50);
                    p32(&mut out, crc);
                    if self.zip64_extras {
                        p64(&mut out, size);
                        p64(&mut out, size);
                    } else {
                        p32(&mut out, size as u32);
                        p32(&mut out, size as u32);
                    }
                }
            }

            let cd_offset = out.len();
            let mut cd_entries = Vec::new();
            for (i, e) in self.entries.iter().enumerate() {
                cd_entries.push(out.len());
                let size = e.cd_size.unwrap_or(e.data.len() as u64);
                let offset = e.cd_offset.unwrap_or(local_offsets[i]);
                let force = self.zip64_extras;
                let mut extra = Vec::new();
                let mut z = Vec::new();
                if force || size >= 0xFFFF_FFFF {
                    p64(&mut z, size);
                    p64(&mut z, size);
                }
                if force || offset >= 0xFFFF_FFFF {
                    p64(&mut z, offset);
                }
                if !z.is_empty() {
                    p16(&mut extra, 0x0001);
                    p16(&mut extra, z.len() as u16);
                    extra.extend_from_slice(&z);
                }
                p32(&mut out, 0x0201_4b50);
                p16(&mut out, 0x031e);
                p16(&mut out, if force { 45 } else { 20 });
                p16(&mut out, flag_bits | e.flags);
                p16(&mut out, e.method);
                p32(&mut out, 0x0021_0000);
                p32(&mut out, crc32(&e.data));
                p32(&mut out, clamp32(size, force));
                p32(&mut out, clamp32(size, force));
                p16(&mut out, e.name.len() as u16);
                p16(&mut out, extra.len() as u16);
                p16(&mut out, 0); // comment
                p16(&mut out, 0); // disk
                p16(&mut out, 0); // internal attributes
                p32(&mut out, 0o100644 << 16);
                p32(&mut out, clamp32(offset, force));
                out.extend_from_slice(e.name.as_bytes());
                out.extend_from_slice(&extra);
            }
            let cd_size = (out.len() - cd_offset) as u64;
            let n = self.entries.len() as u64;
            if self.zip64 {
                let z64 = out.len() as u64;
                p32(&mut out, 0x0606_4b50);
                p64(&mut out, 44);
                p16(&mut out, 0x031e);
                p16(&mut out, 45);
                p32(&mut out, 0);
                p32(&mut out, 0);
                p64(&mut out, n);
                p64(&mut out, n);
                p64(&mut out, cd_size);
                p64(&mut out, cd_offset as u64);
                p32(&mut out, 0x0706_4b50);
                p32(&mut out, 0);
                p64(&mut out, z64);
                p32(&mut out, 1);
            } else {
                assert!(n < 0xFFFF, "plain archives hold fewer than 65535 entries");
            }
            let eocd = out.len();
            let n16 = if n >= 0xFFFF { 0xFFFF } else { n as u16 };
            p32(&mut out, 0x0605_4b50);
            p16(&mut out, 0);
            p16(&mut out, 0);
            p16(&mut out, n16);
            p16(&mut out, n16);
            p32(&mut out, clamp32(cd_size, false));
            p32(&mut out, clamp32(cd_offset as u64, false));
            p16(&mut out, self.comment.len() as u16);
            out.extend_from_slice(&self.comment);
            Built {
                bytes: out,
                local_offsets,
                data_offsets,
                cd_entries,
                cd_offset,
                eocd,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::writer::{local_header, Entry, Writer};
    use super::*;
    use crate::error::ErrorKind;

    /// Written with (torch 2.15):
    /// `~/.cache/mmckpt/venv/bin/python -c "import torch;
    ///   torch.save({'a': torch.arange(4.)}, 'tests/data/zip/tiny_torch.pt')"`
    const TINY_TORCH: &[u8] = include_bytes!("../../tests/data/zip/tiny_torch.pt");

    /// `parse`, checked against `parse_with` reading every local header through a reader.
    fn parse_both(bytes: &[u8]) -> Result<ZipArchive> {
        let read_at = read_from(bytes);
        let reads = HeaderReads {
            read_at: &read_at,
            min_spacing: 0,
        };
        let mapped = parse(bytes, &ZipLimits::default());
        let read = parse_with(bytes, &ZipLimits::default(), Some(reads));
        match (&mapped, &read) {
            (Ok(a), Ok(b)) => assert_eq!(
                a.records().collect::<Vec<_>>(),
                b.records().collect::<Vec<_>>()
            ),
            (Err(a), Err(b)) => assert_eq!((a.kind, &a.message), (b.kind, &b.message)),
            _ => panic!("parse and parse_with disagree: {mapped:?} / {read:?}"),
        }
        mapped
    }

    fn ok(bytes: &[u8]) -> ZipArchive {
        match parse_both(bytes) {
            Ok(archive) => archive,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn err(bytes: &[u8]) -> Error {
        match parse_both(bytes) {
            Ok(archive) => panic!(
                "parse succeeded: {:?}",
                archive.records().collect::<Vec<_>>()
            ),
            Err(e) => e,
        }
    }

    fn expect(bytes: &[u8], kind: ErrorKind, needles: &[&str]) -> Error {
        let e = err(bytes);
        assert_eq!(e.kind, kind, "{e}");
        for needle in needles {
            assert!(e.message.contains(needle), "{e} should mention {needle}");
        }
        e
    }

    fn torch_like(prefix: &str) -> Vec<Entry> {
        vec![
            Entry::new(&format!("{prefix}/data.pkl"), b"\x80\x02}q\x00."),
            Entry::new(&format!("{prefix}/.format_version"), b"1"),
            Entry::new(&format!("{prefix}/.storage_alignment"), b"64"),
            Entry::new(&format!("{prefix}/byteorder"), b"little"),
            Entry::new(&format!("{prefix}/data/0"), &[1, 2, 3, 4, 5, 6, 7, 8]),
            Entry::new(&format!("{prefix}/data/1"), &[]),
            Entry::new(&format!("{prefix}/version"), b"3\n"),
        ]
    }

    fn set_u16(bytes: &mut [u8], at: usize, v: u16) {
        bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn prefixes_and_lookup() {
        for prefix in ["archive", "my_model", "x"] {
            for (zip64, descriptor) in [(false, false), (true, true), (true, false)] {
                let mut w = Writer::new(torch_like(prefix));
                w.zip64 = zip64;
                w.descriptor = descriptor;
                let built = w.build();
                let bytes = &built.bytes;
                assert!(looks_like_zip(bytes));
                let a = ok(bytes);
                assert_eq!(a.prefix(), prefix);
                assert_eq!(a.file_len(), bytes.len() as u64);
                let names: Vec<_> = a.records().map(|r| r.name).collect();
                let expected: Vec<_> = w.entries.iter().map(|e| e.name.as_str()).collect();
                assert_eq!(names, expected);
                for (i, e) in w.entries.iter().enumerate() {
                    let rel = &e.name[prefix.len() + 1..];
                    let r = a.get(rel).unwrap();
                    assert_eq!(Some(r), a.records().nth(i));
                    assert_eq!(r.data_offset, built.data_offsets[i]);
                    assert_eq!(a.data(bytes, r).unwrap(), &e.data[..]);
                }
                assert_eq!(
                    a.text(bytes, "byteorder").unwrap().as_deref(),
                    Some("little")
                );
                assert_eq!(
                    a.text(bytes, ".storage_alignment").unwrap().as_deref(),
                    Some("64")
                );
                assert_eq!(a.text(bytes, "version").unwrap().as_deref(), Some("3"));
                assert_eq!(a.text(bytes, "missing").unwrap(), None);
                assert!(a.get("missing").is_none());
                assert!(a.get(&format!("{prefix}/data.pkl")).is_none());
                assert!(a.get("data").is_none());
            }
        }
    }

    #[test]
    fn has_byte_never_misses() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..200_000u64 {
            // xorshift words, half of them with a 0x50 planted somewhere.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut word = x.to_le_bytes();
            if i % 2 == 0 {
                word[(i / 2 % 8) as usize] = 0x50;
            }
            if word.contains(&0x50) {
                assert!(has_byte(u64::from_le_bytes(word), 0x50), "{word:?}");
            }
        }
        assert!(!has_byte(0, 0x50));
        assert!(has_byte(u64::from_le_bytes(*b"\0\0\0\0\0\0\0P"), b'P'));
    }

    #[test]
    fn the_guess_of_the_first_record_is_the_parsed_record_or_nothing() {
        let a = ok(TINY_TORCH);
        let pkl = a.get("data.pkl").unwrap();
        assert_eq!(
            guess_first_record(TINY_TORCH, "data.pkl"),
            Some((pkl.data_offset, pkl.size, a.records().len() as u64))
        );
        assert_eq!(guess_first_record(TINY_TORCH, "version"), None);
        assert_eq!(guess_first_record(TINY_TORCH, "a.pkl"), None);
        for len in 0..TINY_TORCH.len() {
            let cut = &TINY_TORCH[..len];
            if let Some((offset, size, _)) = guess_first_record(cut, "data.pkl") {
                assert!(offset + size <= len as u64);
            }
        }
    }

    #[test]
    fn comment_is_allowed() {
        let mut w = Writer::new(torch_like("archive"));
        w.comment = b"a comment that mentions PK\x05\x06 inside".to_vec();
        let a = ok(&w.build().bytes);
        assert_eq!(a.records().len(), 7);
    }

    #[test]
    fn alignment_is_honoured() {
        for align in [64u64, 4096] {
            for zip64_extras in [false, true] {
                let mut w = Writer::new(torch_like("archive"));
                w.align = align;
                w.zip64 = true;
                w.descriptor = true;
                w.zip64_extras = zip64_extras;
                let built = w.build();
                let a = ok(&built.bytes);
                for (r, e) in a.records().zip(&w.entries) {
                    assert_eq!(r.data_offset % align, 0, "{} at {}", r.name, r.data_offset);
                    assert_eq!(a.data(&built.bytes, r).unwrap(), &e.data[..]);
                }
            }
        }
    }

    #[test]
    fn zip64_extras_in_central_and_local_headers() {
        for descriptor in [false, true] {
            let mut w = Writer::new(torch_like("archive"));
            w.zip64 = true;
            w.zip64_extras = true;
            w.descriptor = descriptor;
            w.align = 64;
            let built = w.build();
            let a = ok(&built.bytes);
            for (i, (r, e)) in a.records().zip(&w.entries).enumerate() {
                assert_eq!(r.data_offset, built.data_offsets[i]);
                assert_eq!(a.data(&built.bytes, r).unwrap(), &e.data[..]);
            }
        }
    }

    #[test]
    fn zip64_many_entries() {
        let n = 70_000usize;
        let mut entries = vec![Entry::new("big/data.pkl", b"pickle")];
        entries.extend(
            (0..n).map(|i| Entry::new(&format!("big/data/{i}"), &(i as u32).to_le_bytes())),
        );
        let mut w = Writer::new(entries);
        w.zip64 = true;
        w.descriptor = true;
        let bytes = w.build().bytes;
        let start = std::time::Instant::now();
        let a = ok(&bytes);
        let elapsed = start.elapsed();
        assert_eq!(a.records().len(), n + 1);
        assert_eq!(a.prefix(), "big");
        for i in [0usize, 1, 65_534, 65_535, 65_536, n - 1] {
            let r = a.get(&format!("data/{i}")).unwrap();
            assert_eq!(a.data(&bytes, r).unwrap(), (i as u32).to_le_bytes());
        }
        // Timing belongs to the benchmarks (shared, noisy machines); here it is only shown.
        eprintln!("parsed {} records in {elapsed:?}", n + 1);

        let limits = ZipLimits { max_records: n };
        let e = parse(&bytes, &limits).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Limit, "{e}");
    }

    #[test]
    fn real_torch_archive() {
        let bytes = TINY_TORCH;
        assert!(looks_like_zip(bytes));
        let a = ok(bytes);
        assert_eq!(a.prefix(), "tiny_torch");
        let names: Vec<_> = a.records().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "tiny_torch/data.pkl",
                "tiny_torch/.format_version",
                "tiny_torch/.storage_alignment",
                "tiny_torch/byteorder",
                "tiny_torch/data/0",
                "tiny_torch/version",
                "tiny_torch/.data/serialization_id",
            ]
        );
        let data0 = a.get("data/0").unwrap();
        assert_eq!(data0.size, 16);
        assert_eq!(data0.data_offset % 64, 0);
        let expected: Vec<u8> = [0f32, 1., 2., 3.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(a.data(bytes, data0).unwrap(), &expected[..]);
        for r in a.records() {
            assert_eq!(r.data_offset % 64, 0, "{}", r.name);
        }
        let pkl = a.data(bytes, a.get("data.pkl").unwrap()).unwrap();
        assert_eq!(&pkl[..2], b"\x80\x02");
        assert_eq!(pkl.last(), Some(&b'.'));
        assert_eq!(
            a.text(bytes, "byteorder").unwrap().as_deref(),
            Some("little")
        );
        assert_eq!(
            a.text(bytes, ".storage_alignment").unwrap().as_deref(),
            Some("64")
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..TINY_TORCH.len() {
            let e = err(&TINY_TORCH[..len]);
            assert_eq!(e.kind, ErrorKind::Format, "length {len}: {e}");
        }
    }

    #[test]
    fn not_a_zip() {
        expect(&[], ErrorKind::Format, &["0 bytes"]);
        assert!(!looks_like_zip(&[]));
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in [1usize, 21, 22, 100, 5000, 70_000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 33) as u8
                })
                .collect();
            assert!(!looks_like_zip(&bytes));
            expect(&bytes, ErrorKind::Format, &[]);
        }
        // An end record alone: no records.
        let w = Writer::new(vec![]);
        expect(&w.build().bytes, ErrorKind::Format, &["no records"]);
    }

    #[test]
    fn compressed_entry_parses_but_its_data_is_unsupported() {
        let mut entries = torch_like("archive");
        entries[4].method = 8;
        let bytes = Writer::new(entries).build().bytes;
        let archive = ok(&bytes);
        let record = archive.get("data/0").unwrap();
        let err = archive.data(&bytes, record).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
        for needle in ["archive/data/0", "method 8", "deflate"] {
            assert!(err.message.contains(needle), "{}", err.message);
        }
        assert!(archive
            .data(&bytes, archive.get("data.pkl").unwrap())
            .is_ok());
    }

    #[test]
    fn encrypted_entry_is_unsupported() {
        let mut entries = torch_like("archive");
        entries[2].flags = 1;
        let bytes = Writer::new(entries).build().bytes;
        expect(
            &bytes,
            ErrorKind::Unsupported,
            &["archive/.storage_alignment", "encrypted"],
        );
    }

    #[test]
    fn duplicate_names() {
        let mut entries = torch_like("archive");
        entries.push(Entry::new("archive/data/0", b"again"));
        let bytes = Writer::new(entries).build().bytes;
        expect(&bytes, ErrorKind::Format, &["duplicate", "archive/data/0"]);
    }

    #[test]
    fn numbered_and_other_data_names_are_distinct_records() {
        // "data/1" is found by number, "data/01", "data/x" and a number past the record count
        // by name; all of them are records of their own.
        let mut entries = torch_like("archive");
        for (name, data) in [
            ("01", b"zero-one"),
            ("x", b"ex-ex-ex"),
            ("99999", b"big-numb"),
        ] {
            entries.push(Entry::new(&format!("archive/data/{name}"), data));
        }
        let bytes = Writer::new(entries).build().bytes;
        let a = ok(&bytes);
        let text = |r: Option<ZipRecord<'_>>| a.data(&bytes, r.unwrap()).unwrap().to_vec();
        assert_eq!(text(a.get("data/0")), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(text(a.storage_record("0")), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(text(a.get("data/1")), b"");
        assert_eq!(text(a.get("data/01")), b"zero-one");
        assert_eq!(text(a.storage_record("01")), b"zero-one");
        assert_eq!(text(a.storage_record("x")), b"ex-ex-ex");
        assert_eq!(text(a.storage_record("99999")), b"big-numb");
        for missing in ["2", "001", "9", "+1", "-0", ""] {
            assert!(a.storage_record(missing).is_none(), "{missing}");
            assert!(a.get(&format!("data/{missing}")).is_none(), "{missing}");
        }
        assert_eq!(canonical_index("0"), Some(0));
        assert_eq!(canonical_index("123456789"), Some(123_456_789));
        for not in ["", "00", "01", "1234567890", "1a", " 1", "+1"] {
            assert_eq!(canonical_index(not), None, "{not}");
        }
    }

    #[test]
    fn local_name_differs() {
        let mut entries = torch_like("archive");
        entries[4].local_name = Some("archive/data/9".into());
        let built = Writer::new(entries).build();
        let at = built.local_offsets[4].to_string();
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["archive/data/0", "archive/data/9", &at],
        );
    }

    #[test]
    fn local_header_disagreements() {
        // Local size (written, no descriptor) differs from the central directory's.
        let mut entries = torch_like("archive");
        entries[4].cd_size = Some(7);
        let bytes = Writer::new(entries).build().bytes;
        expect(&bytes, ErrorKind::Format, &["archive/data/0", "size of 8"]);

        // Local method differs.
        let mut built = Writer::new(torch_like("archive")).build();
        set_u16(&mut built.bytes, built.local_offsets[3] as usize + 8, 8);
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["archive/byteorder", "method 8"],
        );

        // Local CRC differs (non-zero).
        let mut built = Writer::new(torch_like("archive")).build();
        set_u32(
            &mut built.bytes,
            built.local_offsets[3] as usize + 14,
            0xdead_beef,
        );
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["archive/byteorder", "CRC"],
        );

        // Zero local CRC is fine even without a descriptor.
        let mut built = Writer::new(torch_like("archive")).build();
        set_u32(&mut built.bytes, built.local_offsets[3] as usize + 14, 0);
        ok(&built.bytes);

        // Bad local signature.
        let mut built = Writer::new(torch_like("archive")).build();
        built.bytes[built.local_offsets[5] as usize] = b'X';
        let at = built.local_offsets[5].to_string();
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["archive/data/1", &at, "signature"],
        );
    }

    #[test]
    fn offset_past_end_of_file() {
        for offset in [1u64 << 20, 0xFFFF_FFFE, 1 << 40, u64::MAX - 10] {
            let mut w = Writer::new(torch_like("archive"));
            w.zip64 = true;
            w.entries[4].cd_offset = Some(offset);
            let bytes = w.build().bytes;
            expect(
                &bytes,
                ErrorKind::Format,
                &["archive/data/0", &offset.to_string()],
            );
        }
        // A local header offset inside the central directory.
        let mut w = Writer::new(torch_like("archive"));
        let cd = w.build().cd_offset as u64;
        w.entries[1].cd_offset = Some(cd);
        expect(
            &w.build().bytes,
            ErrorKind::Format,
            &["archive/.format_version"],
        );
    }

    #[test]
    fn overlapping_records() {
        // A size that runs into the next local header.
        let mut w = Writer::new(torch_like("archive"));
        w.descriptor = true;
        w.entries[0].cd_size = Some(w.entries[0].data.len() as u64 + 20);
        expect(
            &w.build().bytes,
            ErrorKind::Format,
            &["overlap", "archive/data.pkl", "archive/.format_version"],
        );

        // A central directory entry pointing at a local header planted inside another record.
        let mut entries = torch_like("archive");
        let mut planted = local_header("archive/hidden");
        planted.extend_from_slice(b"12345678");
        entries.push(Entry::new("archive/data/2", &planted));
        let mut hidden = Entry::new("archive/hidden", b"12345678");
        hidden.write_local = false;
        entries.push(hidden);
        let mut w = Writer::new(entries);
        w.descriptor = true;
        let host = w.build().data_offsets[7];
        w.entries[8].cd_offset = Some(host);
        expect(
            &w.build().bytes,
            ErrorKind::Format,
            &["overlap", "archive/data/2", "archive/hidden"],
        );

        // Two entries sharing one local header (and names differing): caught by the name check;
        // same name twice: caught as a duplicate.
        let mut w = Writer::new(torch_like("archive"));
        w.entries
            .push(Entry::new("archive/data/0", &[1, 2, 3, 4, 5, 6, 7, 8]));
        let lh = w.build().local_offsets[4];
        w.entries[7].write_local = false;
        w.entries[7].cd_offset = Some(lh);
        expect(&w.build().bytes, ErrorKind::Format, &["duplicate"]);
    }

    #[test]
    fn junk_after_end_record() {
        for junk in [&b"x"[..], b"\0\0\0\0", &[7u8; 100]] {
            let mut bytes = Writer::new(torch_like("archive")).build().bytes;
            bytes.extend_from_slice(junk);
            expect(&bytes, ErrorKind::Format, &["junk"]);
        }
        let mut bytes = TINY_TORCH.to_vec();
        bytes.push(0);
        expect(&bytes, ErrorKind::Format, &["junk"]);
        // A comment length that claims more than is there.
        let mut built = Writer::new(torch_like("archive")).build();
        set_u16(&mut built.bytes, built.eocd + 20, 5);
        expect(&built.bytes, ErrorKind::Format, &[]);
    }

    #[test]
    fn entry_outside_prefix() {
        let mut entries = torch_like("archive");
        entries.insert(3, Entry::new("other/byteorder", b"big"));
        expect(
            &Writer::new(entries).build().bytes,
            ErrorKind::Format,
            &["other/byteorder", "'archive/'"],
        );
        // A name that only shares the prefix's characters.
        let mut entries = torch_like("archive");
        entries.push(Entry::new("archive2/data/0", b""));
        expect(
            &Writer::new(entries).build().bytes,
            ErrorKind::Format,
            &["archive2/data/0"],
        );
        // First entry with no folder.
        let entries = vec![Entry::new("data.pkl", b"")];
        expect(
            &Writer::new(entries).build().bytes,
            ErrorKind::Format,
            &["top-level folder"],
        );
    }

    #[test]
    fn bad_names() {
        for name in [
            "archive/../etc/passwd",
            "archive/data/..",
            "/archive/data.pkl",
        ] {
            let mut entries = torch_like("archive");
            entries.push(Entry::new(name, b""));
            expect(
                &Writer::new(entries).build().bytes,
                ErrorKind::Format,
                &[name],
            );
        }
        let mut entries = torch_like("archive");
        entries.push(Entry::new("archive/a\0b", b""));
        expect(
            &Writer::new(entries).build().bytes,
            ErrorKind::Format,
            &["NUL"],
        );
        // Invalid UTF-8: patch one byte of a central directory name.
        let mut built = Writer::new(torch_like("archive")).build();
        let at = built.cd_entries[3] + 46 + "archive/".len();
        built.bytes[at] = 0xFF;
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["UTF-8", &built.cd_entries[3].to_string()],
        );
    }

    #[test]
    fn huge_zip64_sizes() {
        for size in [1u64 << 62, (1 << 62) + 12345, u64::MAX, u64::MAX - 100] {
            let mut w = Writer::new(torch_like("archive"));
            w.zip64 = true;
            w.descriptor = true;
            w.zip64_extras = true;
            w.entries[4].cd_size = Some(size);
            expect(&w.build().bytes, ErrorKind::Format, &["archive/data/0"]);
        }
        // A zip64 extra field too short for the fields the sentinels call for.
        let mut w = Writer::new(torch_like("archive"));
        w.zip64 = true;
        w.zip64_extras = true;
        let mut built = w.build();
        let cd = built.cd_entries[2];
        let name_len = "archive/.storage_alignment".len();
        set_u16(&mut built.bytes, cd + 46 + name_len + 2, 8);
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["archive/.storage_alignment"],
        );
        // Sentinel without any zip64 extra.
        let mut built = Writer::new(torch_like("archive")).build();
        set_u32(&mut built.bytes, built.cd_entries[1] + 24, 0xFFFF_FFFF);
        expect(
            &built.bytes,
            ErrorKind::Format,
            &["archive/.format_version", "zip64"],
        );
    }

    #[test]
    fn end_record_checks() {
        // Multi-disk: classic record.
        let mut built = Writer::new(torch_like("archive")).build();
        set_u16(&mut built.bytes, built.eocd + 4, 1);
        expect(&built.bytes, ErrorKind::Unsupported, &["multi-disk"]);
        // Multi-disk: zip64 locator says 2 disks.
        let mut w = Writer::new(torch_like("archive"));
        w.zip64 = true;
        let mut built = w.build();
        set_u32(&mut built.bytes, built.eocd - 4, 2);
        expect(&built.bytes, ErrorKind::Unsupported, &["multi-disk"]);
        // Classic record disagrees with the zip64 record.
        let mut built = w.build();
        set_u32(&mut built.bytes, built.eocd + 16, 3);
        expect(&built.bytes, ErrorKind::Format, &["disagrees"]);
        // Sentinels in the classic record are fine.
        let mut built = w.build();
        set_u16(&mut built.bytes, built.eocd + 8, 0xFFFF);
        set_u16(&mut built.bytes, built.eocd + 10, 0xFFFF);
        set_u32(&mut built.bytes, built.eocd + 12, 0xFFFF_FFFF);
        set_u32(&mut built.bytes, built.eocd + 16, 0xFFFF_FFFF);
        ok(&built.bytes);
        // The zip64 locator pointing nowhere.
        let mut built = w.build();
        let at = built.eocd - 12;
        built.bytes[at..at + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        expect(&built.bytes, ErrorKind::Format, &["zip64"]);
        // Entry count that does not match the directory.
        let mut built = Writer::new(torch_like("archive")).build();
        set_u16(&mut built.bytes, built.eocd + 8, 6);
        set_u16(&mut built.bytes, built.eocd + 10, 6);
        expect(&built.bytes, ErrorKind::Format, &["unexplained"]);
        let mut built = Writer::new(torch_like("archive")).build();
        set_u16(&mut built.bytes, built.eocd + 8, 8);
        set_u16(&mut built.bytes, built.eocd + 10, 8);
        expect(&built.bytes, ErrorKind::Format, &[]);
        // A huge entry count in a tiny directory is not allocated.
        let mut w = Writer::new(torch_like("archive"));
        w.zip64 = true;
        let mut built = w.build();
        let z64 = built.eocd - 20 - 56;
        for field in [24, 32] {
            built.bytes[z64 + field..z64 + field + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        }
        set_u16(&mut built.bytes, built.eocd + 8, 0xFFFF);
        set_u16(&mut built.bytes, built.eocd + 10, 0xFFFF);
        let e = parse(
            &built.bytes,
            &ZipLimits {
                max_records: usize::MAX,
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Format, "{e}");
        assert_eq!(err(&built.bytes).kind, ErrorKind::Limit);
    }

    #[test]
    fn ambiguous_end_records() {
        // A comment that holds a second end record which also reaches the end of the file,
        // with a comment of its own: two candidates, neither of them the plain last 22 bytes.
        let mut w = Writer::new(torch_like("archive"));
        let mut fake = 0x0605_4b50u32.to_le_bytes().to_vec();
        fake.extend_from_slice(&[0; 16]);
        fake.extend_from_slice(&2u16.to_le_bytes());
        fake.extend_from_slice(b"!!");
        w.comment = fake;
        expect(&w.build().bytes, ErrorKind::Format, &["ambiguous"]);

        // A comment that is itself a comment-less end record in the last 22 bytes: torch and
        // Python's zipfile both read that last record (here: an empty directory), so does this.
        let mut w = Writer::new(torch_like("archive"));
        let mut fake = 0x0605_4b50u32.to_le_bytes().to_vec();
        fake.extend_from_slice(&[0; 18]);
        w.comment = fake;
        expect(&w.build().bytes, ErrorKind::Format, &["no records"]);
    }

    #[test]
    fn data_with_the_wrong_slice_is_an_error() {
        let a = ok(TINY_TORCH);
        let r = a.get("data/0").unwrap();
        let err = a.data(&TINY_TORCH[..100], r).unwrap_err();
        assert!(
            err.message.contains("outside the given slice"),
            "{}",
            err.message
        );
    }

    #[test]
    fn directory_entries() {
        let mut entries = torch_like("archive");
        entries.insert(0, Entry::new("archive/", b""));
        entries.insert(1, Entry::new("archive/data/", b""));
        let a = ok(&Writer::new(entries).build().bytes);
        assert_eq!(a.prefix(), "archive");
        assert_eq!(a.get("data/").map(|r| r.size), Some(0));
        let mut entries = torch_like("archive");
        entries.push(Entry::new("archive/dir/", b"data"));
        expect(
            &Writer::new(entries).build().bytes,
            ErrorKind::Format,
            &["directory"],
        );
    }
}
