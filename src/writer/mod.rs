//! Writing a checkpoint to a new file: a `torch.save` zip archive ([`torch_zip`]) or a
//! safetensors file ([`safetensors`]).
//!
//! A torch archive holds the whole saved object as torch.load returns it (nested dicts,
//! lists, ints, strings… and the tensors in them), when torch's weights-only unpickler can
//! read all of it; otherwise (an instance of a class, a TorchScript module) it holds the
//! table: a state dict of the table's tensors under the table's names, and the report says
//! why. A safetensors file holds tensors only: the table's, flat, under its names; the
//! non-tensor values are dropped and listed in the report (as the safetensors project's
//! `convert.py` expects a flat dict of tensors: it fails on anything else). Tensors are
//! written one at a time, straight from the checkpoint's storages (converted or gathered
//! through one bounded buffer), so memory stays bounded by one tensor, never by the model.
//! The file is written under a temporary name in the target's folder, fsynced, and renamed
//! over the target: a crash leaves the old target as it was (and at worst a stray
//! `.<name>.mmckpt-tmp-*` file beside it).

mod atomic;
mod pickle;
mod safetensors;
mod torch_zip;

use crate::checkpoint::{Checkpoint, Format, Tensor, ValueLimits};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::module::convert::convert_elements;
use crate::pickle::{Arena, NodeId};
use crate::torch::is_tensor_call;
use crate::tree::{Walk, WalkBounds};
use std::collections::HashMap;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// The output format of [`save`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SaveFormat {
    /// A `torch.save` zip archive (stored records, 64-byte aligned data), loadable with
    /// `torch.load(..., mmap=True, weights_only=True)`; tensors that share a storage still do.
    #[default]
    Torch,
    /// A safetensors file as the safetensors project's `convert.py` produces it: tensors
    /// that start at the same storage byte are written once under the first name, the others
    /// dropped and listed in `__metadata__` (dropped name → kept name) beside
    /// `"format": "pt"`; every tensor row-major, cut to its own bytes.
    Safetensors,
}

impl SaveFormat {
    /// `torch` or `safetensors`.
    pub fn name(self) -> &'static str {
        match self {
            SaveFormat::Torch => "torch",
            SaveFormat::Safetensors => "safetensors",
        }
    }
    /// The format named `torch` or `safetensors`.
    pub fn from_name(name: &str) -> Option<SaveFormat> {
        match name {
            "torch" => Some(SaveFormat::Torch),
            "safetensors" => Some(SaveFormat::Safetensors),
            _ => None,
        }
    }
}

/// How [`save`] writes.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// The output format.
    pub format: SaveFormat,
    /// Convert every floating tensor (float64, float32, float16, bfloat16) to this floating
    /// dtype, as torch's `.to(dtype)` rounds; other tensors are written as they are.
    pub dtype: Option<DType>,
    /// Torch format only (safetensors is always contiguous): write every tensor as its own
    /// row-major storage instead of keeping views of shared storages; tensors that are the
    /// same view of the same storage (tied weights) still share one.
    pub contiguous: bool,
}

/// What [`save`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// Tensors written (names in the output).
    pub tensors: usize,
    /// Storages (torch) or tensor data blocks (safetensors) written.
    pub storages: usize,
    /// Bytes of tensor data written.
    pub data_bytes: u64,
    /// Safetensors only: names dropped because an earlier name starts at the same bytes,
    /// each with the name kept (also in the file's `__metadata__`).
    pub dropped: Vec<(String, String)>,
    /// Torch only: the whole saved object was written (its non-tensor values, containers and
    /// all), not only the table's state dict.
    pub whole_object: bool,
    /// Why the saved object's non-tensor values are not in the output, when it has any: the
    /// value torch's weights-only unpickler cannot read (torch), or how many were dropped and
    /// the first names (safetensors).
    pub values_not_written: Option<String>,
}

/// Writes `ckpt` to `path` (see [`SaveFormat`] and the module docs for what is written),
/// atomically: the target is
/// replaced only once the whole file is written and synced.
///
/// Errors: an entry of the table that cannot be represented (its own error), a tensor the
/// format cannot hold (`Unsupported`: a conjugate or negative view, a dtype safetensors has no
/// name for, a storage viewed as two dtypes), two entries of one name where a flat state dict
/// is written (`InvalidArgument`), a
/// `dtype` that is not floating (`InvalidArgument`), and `Io` for the file.
///
/// Memory: beyond the checkpoint itself, at most one tensor's worth. Storages are written
/// straight from the file's bytes; a big-endian, misaligned or per-tensor-read storage whose
/// copy the checkpoint has not made is swapped through a 1 MiB scratch buffer (no copy is
/// made or kept: the model is never held in memory); a deflated one is inflated for the
/// write and released after it; a strided view of such a storage is gathered from a
/// temporary copy of its span; `dtype` conversion goes through a 4 MiB buffer.
///
/// ```
/// use mmckpt::{save, Checkpoint, OpenOptions, SaveFormat, SaveOptions};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proto4.pt");
/// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
/// let out = std::env::temp_dir().join(format!("mmckpt-doc-{}.safetensors", std::process::id()));
/// let options = SaveOptions { format: SaveFormat::Safetensors, ..SaveOptions::default() };
/// let report = save(&ckpt, &out, &options)?;
/// let again = Checkpoint::open(&out, &OpenOptions::default())?;
/// assert_eq!(again.len(), report.tensors);
/// # std::fs::remove_file(&out).unwrap();
/// # Ok::<(), mmckpt::Error>(())
/// ```
pub fn save(
    ckpt: &Checkpoint,
    path: impl AsRef<Path>,
    options: &SaveOptions,
) -> Result<SaveReport> {
    save_with_progress(ckpt, path, options, &mut |_, _| true)
}

/// [`save`], calling `progress(done, total)` with bytes of tensor data as they are written
/// (`total` is known before the first byte); returning false stops the save with
/// `ErrorKind::Callback` and leaves the target untouched.
pub fn save_with_progress(
    ckpt: &Checkpoint,
    path: impl AsRef<Path>,
    options: &SaveOptions,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<SaveReport> {
    let path = path.as_ref();
    if let Some(dtype) = options.dtype {
        if !dtype.is_floating() {
            return Err(Error::invalid_argument(format!(
                "the output dtype must be float64, float32, float16 or bfloat16, not {dtype}"
            )));
        }
    }
    let tensors = table_tensors(ckpt)?;
    let tree = match options.format {
        SaveFormat::Torch => {
            let (arena, root) = ckpt.tree()?;
            Some(Tree {
                arena,
                root,
                rows: tensor_rows(ckpt),
            })
        }
        SaveFormat::Safetensors => {
            check_unique_names(&tensors)?;
            None
        }
    };
    let mut file = atomic::AtomicFile::create(path)?;
    let mut report = match &tree {
        Some(tree) => torch_zip::write(&tensors, tree, options, file.writer(), progress),
        None => safetensors::write(&tensors, options, file.writer(), progress),
    }
    .map_err(|e| e.context(format!("writing '{}'", path.display())))?;
    let no_object = matches!(&tree, Some(tree) if tree.rows.is_none());
    if options.format == SaveFormat::Safetensors {
        report.values_not_written = dropped_values(ckpt, "safetensors holds tensors only");
    } else if no_object {
        // A safetensors file or shard index has no saved object to keep: its state dict is
        // the whole of it, unless it carried values (safetensors' `__metadata__`).
        report.values_not_written =
            dropped_values(ckpt, "the input holds no torch.save object to keep them in");
    }
    file.commit()?;
    Ok(report)
}

/// The saved object (below the selected root) for the torch format, and which table row each
/// tensor node is the first of (`None` when the input holds no pickled object: a safetensors
/// file, a shard index gathering several files).
struct Tree<'c> {
    arena: &'c Arena,
    root: NodeId,
    rows: Option<HashMap<NodeId, usize>>,
}

/// The first table row of each tensor node: the table's own walk again (rows are the tensor
/// nodes it meets, in its order), checked against the table's names; `None` when the table
/// does not follow the tree.
fn tensor_rows(ckpt: &Checkpoint) -> Option<HashMap<NodeId, usize>> {
    // Only these formats hold a pickled object; the others' trees are made by mmckpt.
    let pickled = matches!(
        ckpt.format(),
        Format::Zip | Format::Legacy | Format::Tar | Format::TorchScript
    );
    if !pickled {
        return None;
    }
    let (arena, root) = ckpt.tree().ok()?;
    let mut rows = HashMap::with_capacity(ckpt.len());
    if is_tensor_call(arena, root) {
        rows.insert(root, 0);
        return (ckpt.len() == 1).then_some(rows);
    }
    // The open walked this tree within its limits; the same walk ends within them.
    let bounds = WalkBounds {
        max_depth: usize::MAX,
        ..WalkBounds::default()
    };
    let mut walk = Walk::new(arena, root, bounds);
    let mut row = 0;
    while let Some(entry) = walk.next().ok()? {
        if is_tensor_call(arena, entry.node) {
            if ckpt.name_at(row) != Some(entry.name) {
                return None;
            }
            rows.entry(entry.node).or_insert(row);
            row += 1;
        } else {
            walk.enter().ok()?;
        }
    }
    (row == ckpt.len()).then_some(rows)
}

/// The non-tensor values an output leaves out (`why`: what could not hold them): how many, and
/// the first few names.
fn dropped_values(ckpt: &Checkpoint, why: &str) -> Option<String> {
    const NAMED: usize = 5;
    let mut names = Vec::new();
    let mut count = 0usize;
    let truncated = ckpt
        .for_each_value_leaf(&ValueLimits::default(), |leaf| {
            if names.len() < NAMED {
                names.push(format!("'{}'", leaf.path()));
            }
            count += 1;
            Ok::<(), Error>(())
        })
        .unwrap_or(true);
    if count == 0 {
        return None;
    }
    let more = if truncated { " or more" } else { "" };
    let rest = if count > names.len() { ", …" } else { "" };
    Some(format!(
        "{count}{more} non-tensor values ({why}): {}{rest}",
        names.join(", ")
    ))
}

/// Two table entries of one name cannot both be in a flat state dict.
fn check_unique_names(tensors: &[Tensor<'_>]) -> Result<()> {
    let mut names = HashSet::with_capacity(tensors.len());
    for t in tensors {
        if !names.insert(t.name()) {
            return Err(Error::invalid_argument(format!(
                "the table names two tensors '{}'; a state dict cannot hold both",
                t.name()
            )));
        }
    }
    Ok(())
}

/// Every tensor of the table, in order; the first entry that cannot be represented, or a
/// conjugate or negative view, is an error.
fn table_tensors(ckpt: &Checkpoint) -> Result<Vec<Tensor<'_>>> {
    let mut tensors = Vec::with_capacity(ckpt.len());
    for index in 0..ckpt.len() {
        // Not made ready: a storage whose copy is pending (big-endian, misaligned, deflated)
        // is streamed when written (see `Sink::write_row_major`), never kept.
        let t = ckpt.tensor_at_unready(index)?;
        if t.is_conj() || t.is_neg() {
            return Err(Error::unsupported(format!(
                "tensor '{}' has its {} bit set; mmckpt writes no such view (resolve it in torch \
                 first)",
                t.name(),
                if t.is_conj() { "conjugate" } else { "negative" }
            )));
        }
        tensors.push(t);
    }
    Ok(tensors)
}

/// The dtype a tensor of `dtype` is written as.
fn output_dtype(dtype: DType, options: &SaveOptions) -> DType {
    match options.dtype {
        Some(to) if dtype.is_floating() => to,
        _ => dtype,
    }
}

/// Bytes per piece when data is gathered or converted: large enough that the per-call cost
/// vanishes, small enough to stay in cache.
const CHUNK: usize = 1 << 20;

/// Writes bytes and counts them for the progress callback.
struct Sink<'p> {
    done: u64,
    total: u64,
    progress: &'p mut dyn FnMut(u64, u64) -> bool,
    /// Conversion output buffer (at most CHUNK × 4 bytes: float16 → float64).
    buffer: Vec<u8>,
}

impl<'p> Sink<'p> {
    fn new(total: u64, progress: &'p mut dyn FnMut(u64, u64) -> bool) -> Sink<'p> {
        Sink {
            done: 0,
            total,
            progress,
            buffer: Vec::new(),
        }
    }

    fn write(&mut self, out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
        out.write_all(bytes).map_err(io_error)?;
        self.done += bytes.len() as u64;
        if !(self.progress)(self.done, self.total) {
            return Err(Error::callback("the progress callback stopped the save"));
        }
        Ok(())
    }

    /// `bytes` (whole `from` elements) written as `to` elements, in pieces.
    fn write_converted(
        &mut self,
        out: &mut dyn Write,
        bytes: &[u8],
        from: DType,
        to: DType,
    ) -> Result<()> {
        if from == to {
            // Large pieces keep the syscall count low; the callback still sees progress.
            for piece in bytes.chunks(64 * CHUNK) {
                self.write(out, piece)?;
            }
            return Ok(());
        }
        let elements = CHUNK / from.itemsize().max(to.itemsize());
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = bytes
            .chunks(elements * from.itemsize())
            .try_for_each(|piece| {
                let n = piece.len() / from.itemsize() * to.itemsize();
                buffer.resize(n, 0);
                convert_elements(piece, from, &mut buffer, to)?;
                self.write(out, &buffer)
            });
        self.buffer = buffer;
        result
    }

    /// `len` bytes of `t`'s storage from its first byte (whole `from` elements), usable
    /// (swapped, inflated) and converted to `to`.
    fn write_storage(
        &mut self,
        out: &mut dyn Write,
        t: &Tensor<'_>,
        len: usize,
        from: DType,
        to: DType,
    ) -> Result<()> {
        t.storage.for_each_usable_piece(0..len, &mut |piece| {
            self.write_converted(out, piece, from, to)
        })
    }

    /// A tensor's elements in row-major order, converted to `to`.
    fn write_row_major(&mut self, out: &mut dyn Write, t: &Tensor<'_>, to: DType) -> Result<()> {
        let from = t.dtype();
        let start = t.storage_offset() as usize * from.itemsize();
        if t.is_contiguous() {
            let len = t.numel() as usize * from.itemsize();
            return t
                .storage
                .for_each_usable_piece(start..start + len, &mut |piece| {
                    self.write_converted(out, piece, from, to)
                });
        }
        if !t.storage.copy_pending() {
            return t.for_each_row_major_chunk(CHUNK, |piece| {
                self.write_converted(out, piece, from, to)
            });
        }
        // A strided view of a storage not usable in place: its span, made usable, is gathered
        // from (memory: the span, at most the storage; released on return).
        let span = t.span_bytes() as usize;
        let mut usable = Vec::new();
        usable.try_reserve_exact(span).map_err(|_| {
            Error::no_memory(format!(
                "out of memory for the {span} bytes of tensor '{}'",
                t.name()
            ))
        })?;
        t.storage
            .for_each_usable_piece(start..start + span, &mut |piece| {
                usable.extend_from_slice(piece);
                Ok(())
            })?;
        crate::strided::for_each_chunk(
            &usable,
            from.itemsize(),
            t.shape(),
            t.strides(),
            CHUNK,
            |piece| self.write_converted(out, piece, from, to),
        )
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::io(format!("cannot write: {e}"))
}
