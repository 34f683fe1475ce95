//! A read-only parser for the zip archives written by `torch.save`.
//!
//! It works on the whole file as a byte slice (normally a memory mapping) and reads only the end
//! records, the central directory and each entry's local header — never the record data. The
//! result is, for every record, its name and the absolute byte range of its data, so that the
//! layers above can point straight into the mapping.
//!
//! Only what torch's reader accepts is accepted: stored (uncompressed) or deflated entries on a
//! single disk, all under one top-level folder (the prefix). A deflated record is inflated on
//! request (`inflate.rs`); everything else stays a range of the mapping. Everything is
//! bounds- and overflow-checked; bad input is a
//! `Format` (or `Unsupported`, or `Limit`) error that names the record and/or the byte offset,
//! never a panic. CRCs are kept but not checked here: torch never checks them (and writes
//! zeros under `set_crc32_options(False)`); `checkpoint::verify` checks them on request.
//!
//! # Why not the `zip` crate
//!
//! The `zip` crate is a fine general reader, and the tests use it (its writer makes the test
//! archives, and `tests/zip_differential.rs` checks that every archive this parser accepts is
//! the one the crate reads). It is not the reader here because mmckpt needs three things it
//! does not give:
//! - **Absolute data offsets without reading data**: a tensor is a pointer into the mapping, so
//!   the parse must yield each record's data range from the headers alone, allocating nothing
//!   per record and never touching tensor pages.
//! - **`pread` for far-apart headers** ([`parse_with`]): in a checkpoint of large tensors, each
//!   local header sits in its own stretch of the file, and touching it through the mapping
//!   faults in 64 KiB around it; a 100-byte read is cheaper.
//! - **A strict policy checked against torch**: what torch's reader (miniz) and Python's
//!   `zipfile` would read differently — a local header that disagrees with its central entry,
//!   overlapping or duplicate records (names equal up to ASCII case included: miniz finds
//!   records case-insensitively), junk after the end record, two end records — is refused
//!   rather than resolved one way. `tests/data/differential` (made by
//!   `scripts/make_differentials.py`, checked against torch) holds those cases.
//!
//! # Layout
//! One file per record type: `end.rs` (end of central directory, zip64 locator and record),
//! `central.rs` (central directory headers), `local.rs` (local headers), `zip64.rs` (the zip64
//! extra field, for both header kinds); `index.rs` (name rules and lookup by name), `reads.rs`
//! (`pread` support), `inflate.rs` (deflated records), `archive.rs` (the parsed archive),
//! `parse.rs` (putting them together).

mod archive;
mod central;
mod end;
mod fields;
mod index;
mod inflate;
mod local;
mod parse;
mod reads;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod writer;
mod zip64;

pub use archive::{ZipArchive, ZipLimits, ZipRecord, METHOD_DEFLATE};
pub use index::canonical_index;
pub use inflate::{inflate_into, inflate_to_vec};
pub use parse::{guess_first_record, parse_with};
pub use reads::HeaderReads;
// The whole-slice parse and the reader over a slice serve the fuzz targets and the tests.
#[cfg(any(test, feature = "fuzzing"))]
pub use {parse::parse, reads::read_from};

const FLAG_ENCRYPTED: u16 = 1 << 0;
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
const FLAG_MASKED_HEADERS: u16 = 1 << 13;
/// General-purpose flag bits (in both header kinds) that mark a record encrypted.
const ENCRYPTION_FLAGS: u16 = FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS;

/// Where the central directory is (offset, size), read from the end records in `bytes`; `None`
/// when they cannot be read (the full parse then says why).
pub fn directory_range(bytes: &[u8]) -> Option<(u64, u64)> {
    end::read_end(bytes)
        .ok()
        .map(|end| (end.cd_offset, end.cd_size))
}

/// True when the bytes start with a zip local file header signature (`PK\x03\x04`).
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(&local::LOCAL_SIG.to_le_bytes()[..])
}
