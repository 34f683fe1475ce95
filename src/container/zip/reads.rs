//! Reading local headers with `pread` instead of through the mapping: when records are far
//! apart, touching a header faults in (and maps) the 64 KiB of tensor data around it, and a
//! read of ~100 bytes is cheaper.

use super::fields::fixed;
use super::local::{LocalHeader, LOCAL_LEN};

/// Reads bytes of the file at an offset into a buffer, all or nothing (`pread`).
pub type ReadAt<'r> = &'r dyn Fn(u64, &mut [u8]) -> bool;

/// A [`ReadAt`] over bytes in memory (for tests, and to compare [`parse_with`] with [`parse`]).
///
/// [`parse`]: super::parse
/// [`parse_with`]: super::parse_with
#[cfg(any(test, feature = "fuzzing"))]
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

/// How [`parse_with`](super::parse_with) may read local headers instead of touching them in
/// `bytes`.
#[derive(Clone, Copy)]
pub struct HeaderReads<'r> {
    /// Reads bytes of the file at an offset (`pread`).
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
pub(super) fn local_bytes<'a>(
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
    // At most 30 + 2 * 65535 bytes: no overflow.
    let full = LocalHeader::decode(header).total_len() as usize;
    if full > buf.len() {
        buf.resize(full.min(rest.len()), 0);
        if !read_at(lh, buf) {
            return rest;
        }
    }
    &buf[..]
}
