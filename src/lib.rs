//! mmckpt: PyTorch checkpoints, memory-mapped and zero-copy, for C and Rust.
//!
//! Layers, bottom up (each imports only from layers below it; see `docs/architecture.md`):
//! [`container`] (where the bytes are), [`pickle`] (a restricted pickle machine), [`torch`]
//! (tensor descriptions from the value tree), [`tree`] (names and the one walk over the value
//! tree), [`checkpoint`] (the open file, one reader per format in `checkpoint::formats`) with
//! [`values`], [`module`] (meta modules and load). The C ABI lives in `ffi` and only converts
//! and delegates.

pub mod container;
pub mod dtype;
pub mod error;
mod hash;
pub mod pickle;

pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub mod checkpoint;
pub mod strided;
pub mod torch;
pub mod tree;
pub mod values;

pub use checkpoint::{Checkpoint, OpenOptions, TensorRef};
pub mod ffi;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod module;
