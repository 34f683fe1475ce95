//! Chunks and slices: the chunks a tensor was saved in (a distributed checkpoint's shards) and
//! narrowed views of any tensor.

use super::checkpoint::mmckpt_checkpoint;
use super::guard::*;
use super::types::{dims_ptr, mmckpt_tensor};
use crate::checkpoint::Slice;
use crate::error::Error;
use std::ffi::c_char;

/// Number of chunks entry `index`'s tensor was saved in, into `*out`: 1 for a tensor of a
/// single-file checkpoint or one a distributed checkpoint saved whole, the number of its
/// shards otherwise (0 for an empty tensor no rank saved). MMCKPT_ERR_NOT_FOUND past the end,
/// the entry's own error for a tensor mmckpt cannot represent.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_chunk_count(
    ckpt: *const mmckpt_checkpoint,
    index: usize,
    out: *mut usize,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let out = out_ptr(out, "out")?;
        out.write(ckpt.inner.chunk_count(index)?);
        Ok(())
    })
}

/// One chunk of a tensor (mmckpt_checkpoint_chunk_at). Borrowed like mmckpt_tensor: valid
/// while the checkpoint is open.
#[repr(C)]
pub struct mmckpt_chunk {
    /// Dimensions of the whole tensor and of the chunk.
    pub ndim: u32,
    /// ndim entries: index of the chunk's first element in the whole tensor (NULL when
    /// ndim == 0).
    pub offsets: *const i64,
    /// ndim entries: the chunk's sizes (the same array as tensor.shape; NULL when ndim == 0).
    pub sizes: *const i64,
    /// The chunk's elements as a tensor of its sizes, named as the whole tensor: a view into
    /// the file whenever its storage is aligned and little-endian (MMCKPT_TENSOR_MAPPED).
    pub tensor: mmckpt_tensor,
}

/// Describes chunk `chunk` (0-based, in the order the metadata lists them) of entry `index`'s
/// tensor, without assembling the whole tensor: where it starts in the whole tensor, its sizes
/// and its elements. For a tensor saved whole, chunk 0 is the tensor itself at offsets 0.
/// MMCKPT_ERR_NOT_FOUND past the last entry or chunk.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_chunk_at(
    ckpt: *const mmckpt_checkpoint,
    index: usize,
    chunk: usize,
    out: *mut mmckpt_chunk,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let out = out_ptr(out, "out")?;
        let c = ckpt.inner.chunk_at(index, chunk)?;
        out.write(mmckpt_chunk {
            ndim: c.offsets().len() as u32,
            offsets: dims_ptr(c.offsets()),
            sizes: dims_ptr(c.sizes()),
            tensor: mmckpt_tensor::from_checkpoint(&c.tensor()),
        });
        Ok(())
    })
}

/// A narrowed tensor (mmckpt_checkpoint_slice): opaque, owned by the caller, freed with
/// mmckpt_slice_free. It keeps the bytes it views alive: it stays valid after its checkpoint
/// is closed.
pub struct mmckpt_slice {
    inner: Slice,
}

/// The tensor named `name` narrowed to `[start, start + length)` along dimension `dim`, as
/// torch's `tensor.narrow(dim, start, length)` (negative `dim` and `start` count from the end).
/// A view with the tensor's strides and an advanced storage_offset, no byte read, whenever the
/// tensor's bytes are in one place: every single-file format, a distributed checkpoint's
/// tensor saved whole or already assembled, or a slice that one of its chunks covers (then a
/// view of that chunk). Otherwise only the slice's bytes are copied from the chunks it crosses.
/// On success `*out` receives a new handle (describe it with mmckpt_slice_tensor, free it
/// with mmckpt_slice_free); a bad dim, start or length is MMCKPT_ERR_INVALID_ARGUMENT worded
/// as torch words it, an unknown name MMCKPT_ERR_NOT_FOUND.
#[no_mangle]
pub extern "C" fn mmckpt_checkpoint_slice(
    ckpt: *const mmckpt_checkpoint,
    name: *const c_char,
    dim: i64,
    start: i64,
    length: i64,
    out: *mut *mut mmckpt_slice,
) -> mmckpt_status {
    guard(|| {
        let ckpt = arg_ref(ckpt, "ckpt")?;
        let name = arg_str(name, "name")?;
        let out = out_ptr(out, "out")?;
        let index = ckpt
            .inner
            .index_of(name)
            .ok_or_else(|| Error::not_found(format!("no tensor named '{name}'")))?;
        let inner = ckpt.inner.slice(index, dim, start, length)?;
        out.write(Box::into_raw(Box::new(mmckpt_slice { inner })));
        Ok(())
    })
}

/// Describes a slice. Every pointer in `*out` stays valid until mmckpt_slice_free, whether or
/// not its checkpoint is still open.
#[no_mangle]
pub extern "C" fn mmckpt_slice_tensor(
    slice: *const mmckpt_slice,
    out: *mut mmckpt_tensor,
) -> mmckpt_status {
    guard(|| {
        let slice = arg_ref(slice, "slice")?;
        let out = out_ptr(out, "out")?;
        out.write(mmckpt_tensor::from_checkpoint(&slice.inner.tensor()));
        Ok(())
    })
}

/// Frees a slice. NULL is a no-op; freeing twice is undefined behaviour.
#[no_mangle]
pub extern "C" fn mmckpt_slice_free(slice: Option<Box<mmckpt_slice>>) {
    guard_value((), || drop(slice));
}
