//! mmckpt: PyTorch checkpoints, memory-mapped and zero-copy, for C and Rust.
//!
//! Layers, bottom up: [`container`] (where the bytes are), [`pickle`] (a restricted pickle
//! machine), [`torch`] (tensor descriptions from the value tree), [`checkpoint`] (the open file),
//! [`module`] (meta modules and load). The C ABI lives in `ffi` and only converts and delegates.

pub mod container;
pub mod dtype;
pub mod error;
mod hash;
pub mod pickle;

pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub mod checkpoint;
pub mod shards;
pub mod strided;
pub mod torch;
pub mod values;

pub use checkpoint::{Checkpoint, OpenOptions, TensorRef};
pub mod ffi;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod module;
