//! The parsed archive: every record's name and data range, and lookup by name.

use super::fields::range;
use super::index::NameIndex;
use crate::error::{Error, Result};

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
    /// Number of bytes the record holds once inflated, as the central directory declares it
    /// (`size` for a stored record).
    pub uncompressed_size: u64,
    /// Compression method: 0 (stored) for every record mmckpt maps; 8 (deflate) for a record
    /// it inflates into memory on first use. TorchScript archives compress their
    /// `code/` records, which mmckpt never reads.
    pub method: u16,
    /// The CRC-32 of the (uncompressed) data, as the central directory records it; 0 when the
    /// writer computed none (`torch.serialization.set_crc32_options(False)`).
    pub crc: u32,
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

    /// True when the record is deflated (method 8): mmckpt inflates it into memory.
    pub fn is_deflated(&self) -> bool {
        self.method == METHOD_DEFLATE
    }

    /// Fails with `Unsupported` naming the record unless its bytes are stored or deflated: the
    /// two methods torch's reader (miniz) reads; it refuses bzip2, lzma and the rest
    /// ("unsupported method").
    pub fn require_readable(&self) -> Result<()> {
        if self.method == 0 || self.is_deflated() {
            return Ok(());
        }
        Err(Error::unsupported(format!(
            "record '{}' uses compression method {} ({}); torch's reader (miniz) reads only \
             stored and deflated records",
            self.name,
            self.method,
            method_name(self.method)
        )))
    }
}

/// The zip compression method `deflate`.
pub const METHOD_DEFLATE: u16 = 8;

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

/// What the archive keeps of a record: its name is a range of the archive's name buffer, so
/// that parsing allocates nothing per record.
#[derive(Clone, Debug)]
pub(super) struct Stored {
    pub name_start: usize,
    pub name_end: usize,
    /// Offset of the local header (where the record's bytes in the file begin).
    pub header_offset: u64,
    pub data_offset: u64,
    pub size: u64,
    pub uncompressed: u64,
    pub method: u16,
    /// Fits in the padding after `method`: a record takes 56 bytes.
    pub crc: u32,
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
    pub(super) prefix: String,
    /// Every record's full name, back to back.
    pub(super) names: String,
    pub(super) records: Vec<Stored>,
    pub(super) index: NameIndex,
    #[cfg_attr(not(test), allow(dead_code))] // checked by the tests against the input
    pub(super) file_len: u64,
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
            uncompressed_size: stored.uncompressed,
            method: stored.method,
            crc: stored.crc,
        }
    }

    /// The name of record `i` relative to the prefix (`data/0`).
    fn relative_name(&self, i: usize) -> &[u8] {
        let stored = &self.records[i];
        &self.names.as_bytes()[stored.name_start + self.prefix.len() + 1..stored.name_end]
    }

    /// Looks a record up by its name under the prefix (`data.pkl`, `data/0`), ignoring ASCII
    /// case as torch's reader does (`DATA.PKL` is found for `data.pkl`). O(1).
    pub fn get(&self, relative: &str) -> Option<ZipRecord<'_>> {
        self.index
            .find(relative, |i| self.relative_name(i))
            .map(|i| self.view(&self.records[i]))
    }

    /// The record `data/<key>` (up to ASCII case) that holds the bytes of the storage torch
    /// saved under `key`.
    pub fn storage_record(&self, key: &str) -> Option<ZipRecord<'_>> {
        match self.index.numbered_slot(key) {
            Some(n) => self.index.numbered(n).map(|i| self.view(&self.records[i])),
            None => self.get(&format!("data/{key}")),
        }
    }

    /// Length of the file this archive was parsed from.
    #[cfg(test)]
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The record's bytes. Their range was checked against the file at parse time.
    ///
    /// # Panics
    /// If `bytes` is not (at least as long as) the slice given to [`parse`]: that is a bug in
    /// the caller, not bad input.
    ///
    /// [`parse`]: super::parse
    pub fn data<'a>(&self, bytes: &'a [u8], record: ZipRecord<'_>) -> Result<&'a [u8]> {
        record.require_stored()?;
        self.raw_data(bytes, record)
    }

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

    /// A small text record (`byteorder`, `.storage_alignment`, `.format_version`), trimmed of
    /// surrounding whitespace; `None` when the record is absent. Bytes that are not UTF-8 are
    /// replaced (U+FFFD) rather than hidden, so a garbled value is seen, not mistaken for absent.
    #[cfg(any(test, feature = "fuzzing"))] // the open path compares `byteorder` byte for byte
    pub fn text(&self, bytes: &[u8], relative: &str) -> Result<Option<String>> {
        let Some(record) = self.get(relative) else {
            return Ok(None);
        };
        let data = self.data(bytes, record)?;
        Ok(Some(String::from_utf8_lossy(data).trim().to_owned()))
    }
}
