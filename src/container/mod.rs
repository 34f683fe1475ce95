//! Finds the bytes: which format a file is in, where each record's data starts.

pub mod source;
pub mod zip;

pub use source::{AlignedBuf, BorrowedBuf, LoadMode, Source, BUFFER_ALIGN};
