//! Finds the bytes: which format a file is in, where each record's data starts (zip archives,
//! the legacy pickle-stream format).

pub mod legacy;
pub mod source;
pub mod torchscript;
pub mod zip;

pub use source::{AlignedBuf, BorrowedBuf, LoadMode, Source, BUFFER_ALIGN};
