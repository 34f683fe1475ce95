//! The offset index: where each tensor's bytes are in its file, for readers that fetch byte
//! ranges themselves (streaming loaders that read safetensors by range can read `.bin`/`.pt`
//! files the same way). Metadata only: nothing here reads, maps or copies a tensor byte.

use super::Checkpoint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::path::Path;

/// Where a tensor's bytes are in its file ([`Checkpoint::tensor_range`]).
///
/// ```
/// use mmckpt::{Checkpoint, OpenOptions};
/// use std::os::unix::fs::FileExt;
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nested.pt");
/// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
/// let index = ckpt.index_of("model.fc.weight").unwrap();
/// let range = ckpt.tensor_range(index)?;
/// assert!(range.exact);
/// let mut bytes = vec![0u8; range.length as usize];
/// std::fs::File::open(range.path.unwrap())?.read_exact_at(&mut bytes, range.offset)?;
/// assert_eq!(bytes, ckpt.tensor_at(index)?.bytes());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRange<'a> {
    /// The file holding the bytes (a shard's file for a sharded checkpoint); `None` for a
    /// checkpoint opened from bytes in memory (the offsets are then into those bytes).
    pub path: Option<&'a Path>,
    /// [`TensorRange::path`] as a C string.
    pub(crate) path_c: Option<&'a std::ffi::CStr>,
    /// Absolute offset of element [0, …, 0] in the file.
    pub offset: u64,
    /// Bytes from element [0, …, 0] to the end of the last reachable element (strides apply:
    /// [`crate::Tensor::span_bytes`]).
    pub length: u64,
    /// The range holds exactly the tensor's elements, in row-major order and little-endian,
    /// as stored (uncompressed) bytes: reading it gives the tensor, nothing to gather, swap,
    /// conjugate or negate. False for a strided or expanded view, a big-endian file, and a
    /// tensor with torch's lazy conjugate or negative bit set.
    pub exact: bool,
    /// The range is the whole of its storage (no other tensor's bytes around it). A tensor
    /// that is a slice of a larger storage can still be `exact`.
    pub whole_storage: bool,
    /// Absolute offset and length of the whole storage the tensor views.
    pub storage_offset: u64,
    /// Bytes of the whole storage.
    pub storage_length: u64,
    /// The file stores the storage big-endian: reverse each run of this many bytes (its
    /// storage class's element size) to get the values; 1 for little-endian bytes.
    pub byte_swap_unit: u8,
    /// Tensors with equal ids share a storage (tied weights, views).
    pub storage_id: u64,
    /// The element type.
    pub dtype: DType,
    /// Sizes, outermost first.
    pub shape: &'a [i64],
    /// Strides in elements.
    pub strides: &'a [i64],
}

impl Checkpoint {
    /// Where the bytes of entry `index` are in its file, from the metadata alone: no tensor
    /// byte is read, and a storage that would be copied on first use (misaligned, big-endian)
    /// is not copied. `NotFound` past the end, the entry's own error for a tensor mmckpt
    /// cannot represent, and `Unsupported` for a tensor whose bytes are not a range of a file.
    pub fn tensor_range(&self, index: usize) -> Result<TensorRange<'_>> {
        let Some(row) = self.table.row(index) else {
            return Err(Error::not_found(format!(
                "tensor index {index} is out of range (the table has {} tensors)",
                self.table.len()
            )));
        };
        let desc = &self.tensors[self.table.tensor(row).map_err(Clone::clone)?];
        let storage = &self.storages[desc.storage];
        let (source, storage_offset, byte_swap_unit) = storage.saved_at().ok_or_else(|| {
            Error::unsupported(format!(
                "tensor '{}': its bytes are not a range of the file",
                self.name_at(index).unwrap_or("")
            ))
        })?;
        let length = desc.span_bytes();
        let row_major = desc.numel.saturating_mul(desc.dtype.itemsize() as u64);
        Ok(TensorRange {
            path: source.path(),
            path_c: source.path_c(),
            offset: storage_offset + desc.byte_offset(),
            length,
            exact: desc.is_contiguous()
                && length == row_major
                && byte_swap_unit == 1
                && !desc.conj
                && !desc.neg,
            whole_storage: desc.byte_offset() == 0 && length == storage.len() as u64,
            storage_offset,
            storage_length: storage.len() as u64,
            byte_swap_unit,
            storage_id: storage.id,
            dtype: desc.dtype,
            shape: &desc.shape,
            strides: &desc.strides,
        })
    }
}
