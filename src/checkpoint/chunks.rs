//! Tensors saved in chunks (a distributed checkpoint's shards): where each chunk sits in the
//! whole tensor, the whole tensor assembled by copy on first use, and slices (`narrow`) of any
//! tensor: a view whenever the bytes are in one place, a copy of only the slice's bytes
//! otherwise.

use super::{Checkpoint, Storage, StorageKey, Tensor};
use crate::container::AlignedBuf;
use crate::error::{Error, Result};
use crate::hash::HashMap;
use crate::torch::{Dims, TensorDesc, MAX_NDIM};
use std::ffi::{CStr, CString};

/// One chunk of a tensor: where it starts in the whole tensor (its sizes are its description's
/// shape) and its description (an index into the checkpoint's tensors).
pub(crate) struct Chunk {
    pub offsets: Dims,
    pub tensor: usize,
}

/// The chunks of the tensors saved in several (or none), by the index of the whole tensor's
/// description. A tensor saved as one chunk covering it is not here: its description is the
/// chunk's own (a view into the file).
#[derive(Default)]
pub(crate) struct Chunks {
    by_tensor: HashMap<usize, (usize, usize)>,
    list: Vec<Chunk>,
}

impl Chunks {
    /// Records the chunks of the whole tensor `tensor`.
    pub(crate) fn insert(&mut self, tensor: usize, chunks: Vec<Chunk>) {
        let start = self.list.len();
        self.list.extend(chunks);
        self.by_tensor.insert(tensor, (start, self.list.len()));
    }

    fn of(&self, tensor: usize) -> Option<&[Chunk]> {
        self.by_tensor
            .get(&tensor)
            .map(|&(start, end)| &self.list[start..end])
    }
}

/// Offsets of a tensor that is its own only chunk.
static ZEROS: [i64; MAX_NDIM] = [0; MAX_NDIM];

/// One chunk of a tensor ([`Checkpoint::chunk_at`]): where it starts in the whole tensor and
/// the chunk itself, a tensor of the chunk's sizes (a view into the file whenever its storage
/// is aligned and little-endian).
#[derive(Copy, Clone, Debug)]
pub struct TensorChunk<'a> {
    offsets: &'a [i64],
    tensor: Tensor<'a>,
}

impl<'a> TensorChunk<'a> {
    /// Index of the chunk's first element in the whole tensor, one per dimension.
    pub fn offsets(&self) -> &'a [i64] {
        self.offsets
    }
    /// The chunk's sizes, one per dimension.
    pub fn sizes(&self) -> &'a [i64] {
        self.tensor.shape()
    }
    /// The chunk's elements (named as the whole tensor).
    pub fn tensor(&self) -> Tensor<'a> {
        self.tensor
    }
}

/// A narrowed tensor ([`Checkpoint::slice`]): its own description over the bytes of the tensor
/// it narrows (shared, so it stays valid after the checkpoint is dropped), or over a copy of
/// only its own bytes when they were in several chunks.
pub struct Slice {
    name: CString,
    desc: TensorDesc,
    storage: Storage,
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.tensor(), f)
    }
}

impl Slice {
    /// The slice as a tensor: dtype, shape, strides, bytes, as for any tensor of the table.
    /// [`Tensor::is_mapped`] says whether it is the file's bytes (a view) or a copy.
    pub fn tensor(&self) -> Tensor<'_> {
        Tensor {
            name: &self.name,
            desc: &self.desc,
            storage: &self.storage,
        }
    }
}

/// `base` with another shape, strides, offset and storage: a view of the same elements' type.
fn view_of(
    base: &TensorDesc,
    shape: &[i64],
    strides: &[i64],
    storage_offset: i64,
    storage: usize,
) -> TensorDesc {
    TensorDesc {
        shape: shape.into(),
        strides: strides.into(),
        storage_offset,
        numel: shape.iter().map(|&s| s as u64).product(),
        storage,
        ..base.clone()
    }
}

/// Row-major strides of `shape`, in elements (no overflow: the shape's bytes were checked).
fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![0i64; shape.len()];
    let mut step = 1i64;
    for (stride, &size) in strides.iter_mut().zip(shape).rev() {
        *stride = step;
        step = step.saturating_mul(size.max(1));
    }
    strides
}

/// The description of a whole tensor of `shape`, row-major in storage `storage` (its assembly).
pub(crate) fn whole_tensor(base: &TensorDesc, shape: &[i64], storage: usize) -> TensorDesc {
    view_of(base, shape, &contiguous_strides(shape), 0, storage)
}

/// Checks a `narrow(dim, start, length)` of `shape` as torch does, worded as torch words it;
/// gives the dimension and the start with negative values wrapped.
fn check_narrow(shape: &[i64], dim: i64, start: i64, length: i64) -> Result<(usize, i64)> {
    let ndim = shape.len() as i64;
    if ndim == 0 {
        return Err(Error::invalid_argument(
            "narrow() cannot be applied to a 0-dim tensor.",
        ));
    }
    if dim < -ndim || dim >= ndim {
        return Err(Error::invalid_argument(format!(
            "Dimension out of range (expected to be in range of [{}, {}], but got {dim})",
            -ndim,
            ndim - 1
        )));
    }
    let dim = if dim < 0 { dim + ndim } else { dim } as usize;
    let size = shape[dim];
    if start < -size || start > size {
        return Err(Error::invalid_argument(format!(
            "start out of range (expected to be in range of [{}, {size}], but got {start})",
            -size
        )));
    }
    let start = if start < 0 { start + size } else { start };
    if length < 0 {
        return Err(Error::invalid_argument(
            "narrow(): length must be non-negative.",
        ));
    }
    if start > size - length {
        return Err(Error::invalid_argument(format!(
            "start ({start}) + length ({length}) exceeds dimension size ({size})."
        )));
    }
    Ok((dim, start))
}

/// `desc` narrowed to `[start, start + length)` along `dim`: same strides, offset advanced
/// (not for an empty slice, which reaches no byte: its offset stays inside the storage).
fn narrowed(desc: &TensorDesc, dim: usize, start: i64, length: i64) -> TensorDesc {
    let mut shape = desc.shape.to_vec();
    shape[dim] = length;
    let offset = if shape.contains(&0) {
        desc.storage_offset
    } else {
        desc.storage_offset + start * desc.strides[dim]
    };
    view_of(desc, &shape, &desc.strides, offset, desc.storage)
}

impl Checkpoint {
    /// The description index of entry `index`'s tensor, with its name.
    fn entry(&self, index: usize) -> Result<(usize, &CStr)> {
        let (Some(row), Some(name)) = (self.table.row(index), self.table.name_c(index)) else {
            return Err(Error::not_found(format!(
                "tensor index {index} is out of range (the table has {} tensors)",
                self.table.len()
            )));
        };
        Ok((self.table.tensor(row).map_err(Clone::clone)?, name))
    }

    /// The description of entry `index`'s whole tensor (dtype, global shape), without
    /// assembling a tensor saved in chunks (a tensor-parallel load reads only its share).
    pub(crate) fn whole_desc(&self, index: usize) -> Result<&TensorDesc> {
        let (t, _) = self.entry(index)?;
        Ok(&self.tensors[t])
    }

    /// [`Checkpoint::whole_desc`]'s shape.
    pub(crate) fn whole_shape(&self, index: usize) -> Result<&[i64]> {
        Ok(&self.whole_desc(index)?.shape)
    }

    /// How many chunks entry `index`'s tensor was saved in: 1 for every tensor of a
    /// single-file checkpoint and for a distributed checkpoint's tensor saved whole, the
    /// number of its shards otherwise (0 for an empty tensor no rank saved a chunk of).
    /// `NotFound` past the end, the entry's own error for a tensor mmckpt cannot represent.
    pub fn chunk_count(&self, index: usize) -> Result<usize> {
        let (t, _) = self.entry(index)?;
        Ok(self.chunks.of(t).map_or(1, <[Chunk]>::len))
    }

    /// Chunk `chunk` of entry `index`'s tensor: where it starts in the whole tensor, and its
    /// elements as a tensor of the chunk's sizes, a view into the file (no assembly); for a
    /// tensor saved whole, the tensor itself at offsets 0. `NotFound` past the last chunk.
    pub fn chunk_at(&self, index: usize, chunk: usize) -> Result<TensorChunk<'_>> {
        let (t, name) = self.entry(index)?;
        let Some(chunks) = self.chunks.of(t) else {
            if chunk != 0 {
                return Err(Error::not_found(format!(
                    "tensor '{}' was saved whole: it has 1 chunk, not {}",
                    name.to_str().unwrap_or(""),
                    chunk + 1
                )));
            }
            let tensor = self.tensor_at(index)?;
            return Ok(TensorChunk {
                offsets: &ZEROS[..tensor.shape().len()],
                tensor,
            });
        };
        let c = chunks.get(chunk).ok_or_else(|| {
            Error::not_found(format!(
                "chunk {chunk} of tensor '{}' is out of range (it has {} chunks)",
                name.to_str().unwrap_or(""),
                chunks.len()
            ))
        })?;
        let tensor = self.tensor_of(name, c.tensor)?;
        Ok(TensorChunk {
            offsets: &c.offsets,
            tensor,
        })
    }

    /// The tensor of description `t` (a chunk's), its storage made ready.
    fn tensor_of<'a>(&'a self, name: &'a CStr, t: usize) -> Result<Tensor<'a>> {
        let desc = &self.tensors[t];
        let storage = &self.storages[desc.storage];
        storage
            .make_ready()
            .map_err(|e| e.context(format!("tensor '{}'", name.to_str().unwrap_or(""))))?;
        Ok(Tensor {
            name,
            desc,
            storage,
        })
    }

    /// Entry `index`'s tensor narrowed to `[start, start + length)` along `dim`, as torch's
    /// `narrow` (negative `dim` and `start` count from the end; torch's wording for a bad
    /// argument, `InvalidArgument`). A view (same strides, offset advanced, no byte read) for
    /// every tensor whose bytes are in one place: any single-file format, a distributed
    /// checkpoint's tensor saved whole, one assembled already, or a slice one chunk covers.
    /// Otherwise a copy of only the slice's bytes from the chunks it crosses. The slice shares
    /// the bytes it views and outlives the checkpoint.
    pub fn slice(&self, index: usize, dim: i64, start: i64, length: i64) -> Result<Slice> {
        let (t, name) = self.entry(index)?;
        let whole = &self.tensors[t];
        let shown = || name.to_str().unwrap_or("").to_string();
        let (dim, start) = check_narrow(&whole.shape, dim, start, length)
            .map_err(|e| e.context(format!("slice of tensor '{}'", shown())))?;
        let chunks = self.chunks.of(t);
        let storage = &self.storages[whole.storage];
        if chunks.is_none() || storage.copy_made() {
            let tensor = self.tensor_at(index)?;
            return Ok(Slice {
                name: name.to_owned(),
                desc: narrowed(tensor.desc, dim, start, length),
                storage: Storage::sharing(tensor.storage),
            });
        }
        let chunks = chunks.unwrap_or(&[]);
        // One chunk that holds the whole slice: a view of it.
        let covering = chunks.iter().find(|c| {
            let sizes = &self.tensors[c.tensor].shape;
            (0..whole.shape.len()).all(|d| {
                let (lo, hi) = if d == dim {
                    (start, start + length)
                } else {
                    (0, whole.shape[d])
                };
                c.offsets[d] <= lo && hi <= c.offsets[d] + sizes[d]
            })
        });
        if let Some(c) = covering {
            let tensor = self.tensor_of(name, c.tensor)?;
            return Ok(Slice {
                name: name.to_owned(),
                desc: narrowed(tensor.desc, dim, start - c.offsets[dim], length),
                storage: Storage::sharing(tensor.storage),
            });
        }
        let mut shape = whole.shape.to_vec();
        shape[dim] = length;
        let bytes = shape.iter().map(|&s| s as usize).product::<usize>() * whole.dtype.itemsize();
        let mut buf = AlignedBuf::zeroed(bytes)
            .map_err(|e| e.context(format!("slice of tensor '{}'", shown())))?;
        self.gather_chunks(
            name,
            chunks,
            &whole.shape,
            dim,
            start,
            length,
            buf.as_mut_slice(),
        )?;
        Ok(Slice {
            name: name.to_owned(),
            desc: whole_tensor(whole, &shape, 0),
            storage: Storage::owned(StorageKey::new(&shown()), storage.location.clone(), buf),
        })
    }

    /// Makes the assembled copy of whole tensor `t` (saved in chunks), once.
    pub(crate) fn assemble(&self, t: usize, name: &CStr) -> Result<()> {
        let whole = &self.tensors[t];
        let chunks = self.chunks.of(t).unwrap_or(&[]);
        let storage = &self.storages[whole.storage];
        let dim_len = whole.shape.first().copied().unwrap_or(1);
        storage.assemble_with(|out| {
            if whole.shape.is_empty() {
                // A 0-d tensor in chunks: its one chunk holds its one element.
                if let Some(c) = chunks.first() {
                    let chunk = self.tensor_of(name, c.tensor)?;
                    out.copy_from_slice(&chunk.contiguous_bytes());
                }
                return Ok(());
            }
            self.gather_chunks(name, chunks, &whole.shape, 0, 0, dim_len, out)
        })
    }

    /// Copies the part of `chunks` (of a whole tensor of `shape`) that lies in
    /// `[start, start + length)` along `dim` into `out`, row-major of the narrowed shape.
    #[allow(clippy::too_many_arguments)]
    fn gather_chunks(
        &self,
        name: &CStr,
        chunks: &[Chunk],
        shape: &[i64],
        dim: usize,
        start: i64,
        length: i64,
        out: &mut [u8],
    ) -> Result<()> {
        let mut out_shape = shape.to_vec();
        out_shape[dim] = length;
        let out_strides = contiguous_strides(&out_shape);
        let ndim = shape.len();
        for c in chunks {
            let chunk = self.tensor_of(name, c.tensor)?;
            let itemsize = chunk.dtype().itemsize();
            let sizes = chunk.shape();
            let strides = chunk.strides();
            // The chunk's part of the slice along `dim`, in the chunk's own indices.
            let lo = (start - c.offsets[dim]).max(0);
            let hi = (start + length - c.offsets[dim]).min(sizes[dim]);
            if lo >= hi || sizes.contains(&0) {
                continue;
            }
            let bytes = chunk.bytes();
            let last = ndim - 1;
            // Odometer over every index but the last (iterative: no recursion on input).
            let mut index = vec![0i64; ndim];
            index[dim] = lo;
            loop {
                let mut src = 0i64;
                let mut dst = 0i64;
                for d in 0..ndim {
                    let global = c.offsets[d] + index[d] - if d == dim { start } else { 0 };
                    src += index[d] * strides[d];
                    dst += global * out_strides[d];
                }
                let (run_lo, run_hi) = if last == dim {
                    (lo, hi)
                } else {
                    (0, sizes[last])
                };
                let run = (run_hi - run_lo) as usize;
                if strides[last] == 1 {
                    let s = src as usize * itemsize;
                    let d = dst as usize * itemsize;
                    out[d..d + run * itemsize].copy_from_slice(&bytes[s..s + run * itemsize]);
                } else {
                    for k in 0..run {
                        let s = (src + k as i64 * strides[last]) as usize * itemsize;
                        let d = (dst as usize + k) * itemsize;
                        out[d..d + itemsize].copy_from_slice(&bytes[s..s + itemsize]);
                    }
                }
                // Next index over dimensions 0..last; done after the last one.
                let mut d = last;
                let done = loop {
                    if d == 0 {
                        break true;
                    }
                    d -= 1;
                    index[d] += 1;
                    let (begin, end) = if d == dim { (lo, hi) } else { (0, sizes[d]) };
                    if index[d] < end {
                        break false;
                    }
                    index[d] = begin;
                };
                if done {
                    break;
                }
            }
        }
        Ok(())
    }
}
