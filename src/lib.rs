//! mmckpt: PyTorch checkpoints, memory-mapped and zero-copy, for C and Rust.
//!
//! Open a checkpoint written by `torch.save` (zip or legacy), `torch.jit.save` or a Hugging
//! Face shard index, read its tensors as views into the mapped file, read its other values by
//! path, and load it into a meta [`Module`] as `load_state_dict` would:
//!
//! ```
//! use mmckpt::{Checkpoint, LoadOptions, Module, OpenOptions};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proto4.pt");
//! let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
//! for (name, tensor) in ckpt.iter() {
//!     let tensor = tensor?; // an unsupported kind (sparse, quantized) is an error here
//!     println!("{name}: {} {:?}", tensor.dtype(), tensor.shape());
//! }
//!
//! // A meta module with the checkpoint's own layout, then an assign load: zero-copy views.
//! let mut module = Module::from_checkpoint(&ckpt)?;
//! let assign = LoadOptions { assign: true, ..LoadOptions::default() };
//! let report = module.load(&ckpt, &assign)?;
//! assert_eq!(report.loaded(), ckpt.len());
//! assert!(module.entries().iter().all(|e| e.is_mapped()));
//! # Ok::<(), mmckpt::Error>(())
//! ```
//!
//! The API, by what it does:
//! - opening: [`Checkpoint::open`] with [`OpenOptions`] ([`OpenMode`], [`Limits`] and the
//!   limits of each stage: [`PickleLimits`], [`ZipLimits`], [`TableLimits`], [`ValueLimits`]);
//!   [`Format`] says what the file was;
//! - tensors: [`Tensor`] (dtype [`DType`], shape, strides, bytes, where they are);
//! - other values: [`Checkpoint::value`] gives a [`ValueRef`] of a [`ValueKind`];
//!   [`Checkpoint::value_leaves`] lists them all;
//! - modules: [`Module`] of [`Entry`]s ([`EntryKind`]), loaded with [`LoadOptions`] into a
//!   [`LoadReport`];
//! - element conversion between float dtypes, as torch's `.to()`: [`convert_elements`],
//!   [`can_convert`];
//! - writing: [`save`] the table to a torch.save archive or a safetensors file
//!   ([`SaveOptions`], [`SaveFormat`], [`SaveReport`]);
//! - errors: [`Error`] of an [`ErrorKind`] (one per C status), [`Result`].
//!
//! The C ABI (`include/mmckpt.h`) is built from the same crate and goes through the same
//! types. How the code is divided (layers, what each may import, where a new format goes) is
//! in `docs/architecture.md`.
#![warn(missing_docs)]

// Layers, bottom up (each imports only from layers below it; see `docs/architecture.md`):
// `container` (where the bytes are), `pickle` (a restricted pickle machine), `torch` (tensor
// descriptions from the value tree), `tree` (names and the one walk over the value tree),
// `checkpoint` (the open file, one reader per format in `checkpoint::formats`) with `values`,
// `module` (meta modules and load), `writer` (saving the table as a new file). The C ABI lives in `ffi` and only converts and delegates.
// Every module is private: what users may rely on is re-exported below.
mod checkpoint;
mod container;
mod dtype;
mod error;
mod ffi;
mod hash;
mod module;
mod pickle;
mod strided;
mod torch;
mod tree;
mod values;
mod writer;

pub use checkpoint::{
    Checkpoint, CrcReport, Format, Limits, OpenOptions, PrefetchCursor, Slice, TableLimits, Tensor,
    TensorChunk, TensorRange, ValueLimits, DEFAULT_PREFETCH_BUDGET,
};
pub use container::zip::ZipLimits;
pub use container::OpenMode;
pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub use module::convert::{can_convert, convert_elements};
pub use module::{Entry, EntryKind, LoadOptions, LoadReport, Module, OnTensor};
pub use module::{SplitRule, TensorParallel};
pub use module::{MAX_SPEC_ENTRIES, MAX_SPEC_NAME_BYTES, MAX_SPEC_NODES, MAX_SPEC_VALUES};
pub use pickle::PickleLimits;
pub use tree::ValueKind;
pub use values::{Leaves, ValueRef, MAX_DECIMAL_BYTES};
pub use writer::{save, save_with_progress, SaveFormat, SaveOptions, SaveReport};

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
