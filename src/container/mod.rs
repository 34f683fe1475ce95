//! Byte access only, below every other layer: the file's bytes (mapped or read in), aligned
//! buffers and the page-mapped vectors built on them, and the zip archive's records (where each record's data starts). What the bytes
//! mean (pickles, storages, formats) is decided above, in `pickle`, `torch` and
//! `checkpoint::formats`.

pub mod aligned;
#[cfg(unix)]
pub mod direct;
pub mod page_vec;
pub mod source;
pub mod zip;

#[cfg(test)]
pub use aligned::BUFFER_ALIGN;
pub use aligned::{copy_threads, AlignedBuf};
pub use page_vec::{PageString, PageVec};
pub use source::{BorrowedBuf, OpenMode, Source};
