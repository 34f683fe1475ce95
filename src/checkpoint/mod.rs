//! The open checkpoint: the mapping (shared by everything that points into it), the storages,
//! the value tree, and the flat tensor table in a stable order. Immutable after open, so any
//! number of threads may read one at once.
//!
//! Opening: a reader in [`formats`] (one per input format) finds the value tree and the
//! storages and hands them, as one `Parsed` form, to `finish`, which every format shares:
//! the strict check, the root selection, the table (`table`) and the storage fix-ups
//! (`storage`).

pub mod formats;
mod limits;
mod storage;
mod table;

pub use limits::{Limits, TableLimits, ValueLimits};
pub use storage::{new_storage_id, Backing, Storage, StorageKey};

use crate::container::{OpenMode, Source};
use crate::error::{Error, Result};
use crate::pickle::{Arena, NodeId, Value};
use crate::torch::{self, TensorDesc};
use crate::tree;
use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;
use storage::{fix_storages, StorageSet};
use table::{build_table, Table};

/// How the file was written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` since 1.6: a zip archive of stored records.
    Zip,
    /// `torch.jit.save`: a zip archive with `code/` and `constants.pkl`.
    TorchScript,
    /// `_use_new_zipfile_serialization=False` (and everything before torch 1.6): a run of
    /// pickles followed by the storages' bytes.
    Legacy,
    /// A Hugging Face shard index (`*.index.json`) over several checkpoint files.
    Sharded,
}

impl Format {
    pub fn name(self) -> &'static str {
        self.name_c().to_str().unwrap_or("")
    }
    pub fn name_c(self) -> &'static CStr {
        match self {
            Format::Zip => c"zip",
            Format::TorchScript => c"torchscript",
            Format::Legacy => c"legacy",
            Format::Sharded => c"sharded",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// How the file's bytes are brought into memory.
    pub mode: OpenMode,
    /// Fail with `Unsafe` on any global outside the allowlist.
    pub strict: bool,
    /// Dotted path of the sub-object whose tensors form the table (`"model"`).
    pub root: Option<String>,
    pub limits: Limits,
}

/// A tensor of the table together with its storage.
#[derive(Copy, Clone)]
pub struct TensorRef<'a> {
    name: &'a CStr,
    pub desc: &'a TensorDesc,
    pub storage: &'a Storage,
}

impl<'a> TensorRef<'a> {
    pub fn name(&self) -> &'a str {
        self.name.to_str().unwrap_or("")
    }
    pub fn name_c(&self) -> &'a CStr {
        self.name
    }
    /// Bytes from element [0, …, 0] to the end of the last reachable element.
    pub fn bytes(&self) -> &'a [u8] {
        let start = self.desc.byte_offset() as usize;
        &self.storage.bytes()[start..start + self.desc.span_bytes() as usize]
    }
    pub fn data_ptr(&self) -> *const u8 {
        self.storage
            .bytes()
            .as_ptr()
            .wrapping_add(self.desc.byte_offset() as usize)
    }
    pub fn file_offset(&self) -> Option<u64> {
        self.storage
            .file_offset()
            .map(|o| o + self.desc.byte_offset())
    }
    /// The elements in row-major order, contiguous (a copy only when the view is strided).
    pub fn contiguous_bytes(&self) -> std::borrow::Cow<'a, [u8]> {
        if self.desc.is_contiguous() {
            std::borrow::Cow::Borrowed(
                &self.bytes()[..self.desc.numel as usize * self.desc.dtype.itemsize()],
            )
        } else {
            let mut out = vec![0u8; self.desc.numel as usize * self.desc.dtype.itemsize()];
            crate::strided::gather(
                self.bytes(),
                self.desc.dtype.itemsize(),
                &self.desc.shape,
                &self.desc.strides,
                &mut out,
            );
            std::borrow::Cow::Owned(out)
        }
    }
}

pub struct Checkpoint {
    source: Arc<Source>,
    format: Format,
    arena: Arena,
    /// The selected root (after `root` in the options).
    root: NodeId,
    storages: Vec<Storage>,
    tensors: Vec<TensorDesc>,
    table: Table,
    byte_order_big: bool,
}

impl Checkpoint {
    /// Opens a checkpoint file, or a Hugging Face shard index (a path ending in `.index.json`,
    /// or a file starting with `{`) as one checkpoint over all its shards.
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Checkpoint> {
        let path = path.as_ref();
        let source = Arc::new(Source::open(path, options.mode)?);
        if formats::sharded::is_index(path, source.bytes()) {
            source.release_file();
            return formats::sharded::open_index(path, source, options);
        }
        Checkpoint::from_source(source, options)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }

    pub fn from_bytes(bytes: &[u8], options: &OpenOptions) -> Result<Checkpoint> {
        Checkpoint::from_source(Arc::new(Source::from_bytes(bytes)?), options)
    }

    pub fn from_source(source: Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
        let result = formats::open(&source, options);
        // Opening is over: the mapping needs no file descriptor.
        source.release_file();
        result
    }

    /// One checkpoint over the tables of several (the shards of an index): `parts` are the
    /// opened shards, each with the indices of the entries to keep, in the order to keep them.
    /// Storages keep their backings (each shard's mapping stays shared, never copied).
    pub(crate) fn concat(
        source: Arc<Source>,
        format: Format,
        parts: Vec<(Checkpoint, Vec<usize>)>,
    ) -> Checkpoint {
        let mut arena = Arena::new();
        let root = arena.push(Value::Dict {
            items: Vec::new(),
            state: None,
        });
        let (mut storages, mut tensors, mut table) = (Vec::new(), Vec::new(), Table::default());
        let mut byte_order_big = false;
        for (part, keep) in parts {
            byte_order_big |= part.byte_order_big;
            let (storage_base, tensor_base) = (storages.len(), tensors.len());
            storages.extend(part.storages);
            tensors.extend(part.tensors.into_iter().map(|mut t| {
                t.storage += storage_base;
                t
            }));
            for index in keep {
                if let Some(row) = part.table.row(index) {
                    let name = part.table.name(index);
                    table.push(
                        std::str::from_utf8(name).unwrap_or_default(),
                        part.table
                            .tensor(row)
                            .map(|t| t + tensor_base)
                            .map_err(Clone::clone),
                    );
                }
            }
        }
        Checkpoint {
            source,
            format,
            arena,
            root,
            storages,
            tensors,
            table,
            byte_order_big,
        }
    }

    /// Test support (module-layer tests build checkpoints without the zip and pickle code): a
    /// checkpoint over a copy of `bytes`, treated as the file's bytes (not mapped). Storage `i`
    /// is the byte range `storages[i]` (offset, length) with file offset = its offset; each
    /// table row is a name and a description whose `storage` indexes `storages`. Views are
    /// bounds-checked (FORMAT error).
    #[doc(hidden)]
    pub fn from_parts(
        bytes: &[u8],
        storages: &[(usize, usize)],
        tensors: Vec<(String, TensorDesc)>,
    ) -> Result<Checkpoint> {
        let source = Arc::new(Source::from_bytes(bytes)?);
        let mut stores = Vec::new();
        for (i, &(start, len)) in storages.iter().enumerate() {
            match start.checked_add(len) {
                Some(end) if end <= bytes.len() => {}
                _ => return Err(Error::format(format!("storage {i} is out of bounds"))),
            }
            stores.push(Storage::in_file(
                StorageKey::new(&i.to_string()),
                "cpu".into(),
                &source,
                start,
                len,
            ));
        }
        let mut descs = Vec::new();
        let mut table = Table::default();
        for (name, desc) in tensors {
            let storage = stores.get(desc.storage).ok_or_else(|| {
                Error::format(format!("tensor '{name}': no storage {}", desc.storage))
            })?;
            if desc.byte_offset() + desc.span_bytes() > storage.len() as u64 {
                return Err(Error::format(format!("tensor '{name}' is out of bounds")));
            }
            table.push(&name, Ok(descs.len()));
            descs.push(desc);
        }
        Ok(Checkpoint {
            source,
            format: Format::Zip,
            arena: Arena::new(),
            root: 0,
            storages: stores,
            tensors: descs,
            table,
            byte_order_big: false,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }
    pub fn source(&self) -> &Arc<Source> {
        &self.source
    }
    pub fn is_big_endian(&self) -> bool {
        self.byte_order_big
    }
    pub fn len(&self) -> usize {
        self.table.len()
    }
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }
    pub fn storages(&self) -> &[Storage] {
        &self.storages
    }
    pub fn arena(&self) -> &Arena {
        &self.arena
    }
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The name of entry `index`, even when the tensor itself cannot be represented.
    pub fn name_at(&self, index: usize) -> Option<&str> {
        self.name_c_at(index).map(|n| n.to_str().unwrap_or(""))
    }
    pub fn name_c_at(&self, index: usize) -> Option<&CStr> {
        self.table.name_c(index)
    }

    pub fn tensor_at(&self, index: usize) -> Result<TensorRef<'_>> {
        let (Some(row), Some(name)) = (self.table.row(index), self.table.name_c(index)) else {
            return Err(Error::not_found(format!(
                "tensor index {index} is out of range (the table has {} tensors)",
                self.table.len()
            )));
        };
        match self.table.tensor(row) {
            Ok(t) => {
                let desc = &self.tensors[t];
                Ok(TensorRef {
                    name,
                    desc,
                    storage: &self.storages[desc.storage],
                })
            }
            Err(e) => Err(e.clone()),
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.table.find(name)
    }

    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let index = self
            .index_of(name)
            .ok_or_else(|| Error::not_found(format!("no tensor named '{name}'")))?;
        self.tensor_at(index)
    }

    /// Every table row: name and tensor (or the reason it cannot be represented).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Result<TensorRef<'_>>)> + '_ {
        (0..self.table.len()).map(|i| (self.name_at(i).unwrap_or(""), self.tensor_at(i)))
    }
}

/// What every single-file format's reader produces: the value tree, where the saved object is
/// in it, and the storages it can resolve. `finish` turns it into a checkpoint.
pub(crate) struct Parsed<S> {
    pub format: Format,
    pub arena: Arena,
    /// The saved object (before `root` in the options selects a part of it).
    pub top: NodeId,
    /// The file stores its data big-endian (every storage the table uses is then copied).
    pub byte_order_big: bool,
    pub storages: S,
}

/// The strict check, select_root, the table, the storage fix-ups: the part of opening shared
/// by every format.
pub(crate) fn finish<S: StorageSet>(
    source: Arc<Source>,
    parsed: Parsed<S>,
    options: &OpenOptions,
) -> Result<Checkpoint> {
    let Parsed {
        format,
        arena,
        top,
        byte_order_big,
        storages: mut resolver,
    } = parsed;
    if options.strict {
        check_globals(&arena)?;
    }
    check_identity_keys(&arena)?;
    let root = select_root(&arena, top, options.root.as_deref())?;
    let (tensors, table) = build_table(&arena, root, &mut resolver, &options.limits.table)?;
    let mut storages = resolver.into_storages();
    fix_storages(&mut storages, &tensors, byte_order_big)?;
    Ok(Checkpoint {
        source,
        format,
        arena,
        root,
        storages,
        tensors,
        table,
        byte_order_big,
    })
}

/// The pickle machine compares opaque keys by identity, Python's default, which is torch's rule
/// for tensors (each rebuild call is a new object). Instances of the other classes torch's
/// weights-only unpickler builds (`torch.device`, `torch.Size`, layouts, storages cached by
/// key) compare by value, which mmckpt does not decide: a dict or set holding such a key next to
/// other keys is refused rather than possibly named differently from torch. Classes torch
/// refuses to load anyway keep the identity rule.
fn check_identity_keys(arena: &Arena) -> Result<()> {
    for &(container, object) in arena.identity_keys() {
        let len = match arena.get(container) {
            Value::Dict { items, .. } => items.len(),
            Value::Set(items) | Value::FrozenSet(items) => items.len(),
            other => other.dict_items().len(),
        };
        if len <= 1 || torch::is_tensor_call(arena, object) {
            continue;
        }
        let what = match arena.get(object) {
            Value::PersistentId(_) => "a storage (persistent id)".to_string(),
            Value::Object { callable, .. } => match arena.global_name(*callable) {
                Some((module, name)) if torch::is_allowed_global(module, name) => {
                    format!("a '{module}.{name}' object")
                }
                _ => continue,
            },
            _ => continue,
        };
        return Err(Error::unsupported(format!(
            "a {} has {what} as a key (or in a tuple key) next to other keys: torch compares \
             such keys by value, which mmckpt does not decide",
            if matches!(arena.get(container), Value::Set(_) | Value::FrozenSet(_)) {
                "set"
            } else {
                "dict"
            }
        )));
    }
    Ok(())
}

fn check_globals(arena: &Arena) -> Result<()> {
    for id in 0..arena.len() as NodeId {
        match arena.get(id) {
            Value::Global { module, name } if !torch::is_allowed_global(module, name) => {
                return Err(Error::unsafe_global(format!(
                    "global '{module}.{name}' is not on the allowlist of a strict open"
                )));
            }
            // torch.load rejects every persistent id that is not a ('storage', …) tuple; a
            // strict open does too, rather than keep an unknown reference in the tree.
            Value::PersistentId(pid) => {
                let tag = arena.as_seq(*pid).and_then(|t| t.first().copied());
                if tag.and_then(|t| arena.as_str(t)) != Some("storage") {
                    return Err(Error::unsafe_global(
                        "a persistent id is not a ('storage', …) tuple; a strict open allows \
                         only storage references",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn select_root(arena: &Arena, top: NodeId, root: Option<&str>) -> Result<NodeId> {
    match root.filter(|p| !p.is_empty()) {
        // Paths are matched against the tree, so dict keys that contain dots work too.
        Some(path) => {
            tree::lookup(arena, top, path).map_err(|e| e.context(format!("root '{path}'")))
        }
        None => Ok(top),
    }
}
