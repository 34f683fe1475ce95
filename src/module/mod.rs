//! Meta modules: the parameter skeleton of a model (names, dtypes, shapes, parameter or buffer)
//! without data, as `with torch.device('meta'): Model()` builds it, and loading a checkpoint into
//! one (assign / copy / convert) with torch's key matching and torch's report wording.
//!
//! An entry's data is in one of four states ([`Data`]): none (meta), a view into a checkpoint's
//! storage (assign: shares the checkpoint's `Backing`, so the module keeps the mapping alive after
//! the checkpoint is closed), module-owned aligned memory (materialize, conversion), or memory the
//! caller lent (bind). This layer is safe Rust; memory comes from [`crate::container`].

pub(crate) mod convert;
mod layers;
mod load;
mod report;
mod spec;
mod tensor_parallel;

pub use load::{LoadOptions, OnTensor};
pub use report::LoadReport;
pub use spec::{MAX_SPEC_ENTRIES, MAX_SPEC_NAME_BYTES, MAX_SPEC_NODES, MAX_SPEC_VALUES};
pub use tensor_parallel::{SplitRule, TensorParallel};

use crate::checkpoint::{new_storage_id, Backing, Checkpoint};
use crate::container::{AlignedBuf, BorrowedBuf, PageVec};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::hash::NameTable;
use crate::torch::MAX_NDIM;
use std::ffi::{CStr, CString};

/// Parameter or buffer, as `nn.Module` registers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// An `nn.Parameter`.
    Parameter,
    /// A buffer; a non-persistent one is not part of the state dict (never expected in a
    /// checkpoint, never loaded).
    Buffer {
        /// Registered with `persistent=True` (the default): part of the state dict.
        persistent: bool,
    },
}

/// A read-only view into a checkpoint storage's memory, as an assign load binds it.
pub struct View {
    backing: Backing,
    /// Offset of element [0, …, 0] within `backing.bytes()`.
    offset: usize,
    dtype: DType,
    /// The checkpoint tensor's strides when they differ from the contiguous ones.
    strides: Option<Box<[i64]>>,
    storage_offset: i64,
    nbytes: usize,
    storage_id: u64,
    file_offset: Option<u64>,
    mapped: bool,
}

/// Where an entry's elements are.
pub enum Data {
    /// No data (a meta entry).
    Meta,
    /// A view into a checkpoint storage (assign load).
    View(View),
    /// Module-owned, zero-initialised, 64-byte aligned, contiguous (materialize, conversion).
    Owned { buf: AlignedBuf, storage_id: u64 },
    /// The caller's memory (bind), contiguous; at least `nbytes` long.
    Bound { buf: BorrowedBuf, storage_id: u64 },
}

/// One entry of a module: a parameter or buffer.
pub struct Entry {
    name: CString,
    kind: EntryKind,
    /// The declared dtype (what owned and bound storage holds).
    dtype: DType,
    /// Shape, then the contiguous strides of that shape (2 × ndim values).
    dims: Dims,
    numel: u64,
    /// Bytes of the declared dtype × numel.
    nbytes: usize,
    pub(crate) data: Data,
}

impl Entry {
    /// The dotted name (`layers.0.weight`).
    pub fn name(&self) -> &str {
        self.name.to_str().unwrap_or("")
    }
    /// [`Entry::name`] as a C string.
    pub fn name_c(&self) -> &CStr {
        &self.name
    }
    /// Parameter or buffer.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }
    /// A parameter.
    pub fn is_parameter(&self) -> bool {
        self.kind == EntryKind::Parameter
    }
    /// A buffer (persistent or not).
    pub fn is_buffer(&self) -> bool {
        matches!(self.kind, EntryKind::Buffer { .. })
    }
    /// Part of the state dict (parameters and persistent buffers).
    pub fn is_persistent(&self) -> bool {
        !matches!(self.kind, EntryKind::Buffer { persistent: false })
    }
    /// The dtype the module declares (kept by copy loads and converting assign loads).
    pub fn declared_dtype(&self) -> DType {
        self.dtype
    }
    /// The dtype of the current data: the checkpoint's after a plain assign load.
    pub fn dtype(&self) -> DType {
        match &self.data {
            Data::View(v) => v.dtype,
            _ => self.dtype,
        }
    }
    /// Sizes, outermost first.
    pub fn shape(&self) -> &[i64] {
        &self.dims[..self.dims.len() / 2]
    }
    /// Strides in elements: the checkpoint's for views, contiguous otherwise.
    pub fn strides(&self) -> &[i64] {
        match &self.data {
            Data::View(View {
                strides: Some(s), ..
            }) => s,
            _ => &self.dims[self.dims.len() / 2..],
        }
    }
    /// In elements; non-zero only for views.
    pub fn storage_offset(&self) -> i64 {
        match &self.data {
            Data::View(v) => v.storage_offset,
            _ => 0,
        }
    }
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.numel
    }
    /// Has data (loaded, materialized or bound), not meta.
    pub fn has_data(&self) -> bool {
        !matches!(self.data, Data::Meta)
    }
    /// Bytes from element [0, …, 0] to the end of the last reachable element (`None` when meta).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Meta => None,
            Data::View(v) => Some(&v.backing.bytes()[v.offset..v.offset + v.nbytes]),
            Data::Owned { buf, .. } => Some(&buf.as_slice()[..self.nbytes]),
            Data::Bound { buf, .. } => Some(&buf.as_slice()[..self.nbytes]),
        }
    }
    /// Address of element [0, …, 0]; null when meta.
    pub fn data_ptr(&self) -> *const u8 {
        self.bytes().map_or(std::ptr::null(), <[u8]>::as_ptr)
    }
    /// Length of [`Entry::bytes`] (0 when meta).
    pub fn nbytes(&self) -> usize {
        match &self.data {
            Data::Meta => 0,
            Data::View(v) => v.nbytes,
            _ => self.nbytes,
        }
    }
    /// Equal non-zero ids ⇔ same storage; 0 when meta.
    pub fn storage_id(&self) -> u64 {
        match &self.data {
            Data::Meta => 0,
            Data::View(v) => v.storage_id,
            Data::Owned { storage_id, .. } | Data::Bound { storage_id, .. } => *storage_id,
        }
    }
    /// Absolute file offset of element [0, …, 0] when the data is the checkpoint file's bytes.
    pub fn file_offset(&self) -> Option<u64> {
        match &self.data {
            Data::View(v) => v.file_offset,
            _ => None,
        }
    }
    /// True when the data are pages of a checkpoint's file mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(&self.data, Data::View(v) if v.mapped)
    }
    /// The memory a view (an assign load's entry) shares with the checkpoint it came from,
    /// and the offset of element [0, …, 0] in its bytes: holding a clone keeps those bytes
    /// alive after the module and the checkpoint are gone. `None` for meta, owned and bound
    /// entries.
    pub(crate) fn shared_backing(&self) -> Option<(&Backing, usize)> {
        match &self.data {
            Data::View(v) => Some((&v.backing, v.offset)),
            _ => None,
        }
    }
    /// Row-major contiguous (only a view can be strided).
    pub fn is_contiguous(&self) -> bool {
        match &self.data {
            Data::View(View {
                strides: Some(s), ..
            }) => crate::strided::is_contiguous(self.shape(), s),
            _ => true,
        }
    }
    /// The writable bytes of owned or bound storage.
    fn writable(&mut self) -> Option<&mut [u8]> {
        let n = self.nbytes;
        match &mut self.data {
            Data::Owned { buf, .. } => Some(&mut buf.as_mut_slice()[..n]),
            Data::Bound { buf, .. } => Some(&mut buf.as_mut_slice()[..n]),
            _ => None,
        }
    }
}

/// An entry's sizes then contiguous strides: in line up to [`Dims::INLINE`] dimensions (nearly
/// every tensor), so that declaring an entry allocates only its name.
enum Dims {
    Inline {
        ndim: u8,
        values: [i64; 2 * Dims::INLINE],
    },
    Heap(Box<[i64]>),
}

impl Dims {
    const INLINE: usize = 4;

    /// The sizes `shape` and their contiguous strides (saturating: a size whose bytes overflow
    /// was refused before).
    fn contiguous(shape: &[i64]) -> Dims {
        let ndim = shape.len();
        let mut dims = if ndim <= Dims::INLINE {
            Dims::Inline {
                ndim: ndim as u8,
                values: [0; 2 * Dims::INLINE],
            }
        } else {
            Dims::Heap(vec![0; 2 * ndim].into_boxed_slice())
        };
        let values = dims.as_mut_slice();
        values[..ndim].copy_from_slice(shape);
        let mut acc: i64 = 1;
        for d in (0..ndim).rev() {
            values[ndim + d] = acc;
            acc = acc.saturating_mul(shape[d].max(1));
        }
        dims
    }

    fn as_mut_slice(&mut self) -> &mut [i64] {
        match self {
            Dims::Inline { ndim, values } => &mut values[..2 * usize::from(*ndim)],
            Dims::Heap(values) => values,
        }
    }
}

impl std::ops::Deref for Dims {
    type Target = [i64];
    fn deref(&self) -> &[i64] {
        match self {
            Dims::Inline { ndim, values } => &values[..2 * usize::from(*ndim)],
            Dims::Heap(values) => values,
        }
    }
}

/// A module skeleton and, after a load or materialize, its data. `Send` and `Sync`: a shared
/// checkpoint can be loaded into several modules from several threads.
///
/// ```
/// use mmckpt::{Checkpoint, DType, EntryKind, LoadOptions, Module, OpenOptions};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proto4.pt");
/// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
/// // The skeleton `with torch.device('meta'): Model()` would build, declared by hand.
/// let mut module = Module::new("Model");
/// for index in 0..ckpt.len() {
///     let t = ckpt.tensor_at(index)?;
///     module.add(t.name(), t.dtype(), t.shape(), EntryKind::Parameter)?;
/// }
/// // A copy load (torch's default): into owned memory, which `materialize` allocates.
/// module.materialize()?;
/// let report = module.load(&ckpt, &LoadOptions::default())?;
/// assert_eq!(report.message(), "<All keys matched successfully>");
/// assert!(module.entries().iter().all(|e| e.has_data() && !e.is_mapped()));
/// # Ok::<(), mmckpt::Error>(())
/// ```
pub struct Module {
    name: String,
    /// A mapping of its own from a megabyte on (`PageVec`): a 10,000-entry module's 2 MB is one
    /// huge-page fault, not 500 small ones.
    entries: PageVec<Entry>,
    /// Entry indices by name (the names are the entries' own: no copy).
    by_name: NameTable,
    /// Submodule paths declared explicitly (modules without entries): the number of entries
    /// that existed when each was declared (to keep first-seen order) and where its path is in
    /// `declared_paths` (one string for all: a spec declares a path per module).
    declared: Vec<(usize, std::ops::Range<usize>)>,
    declared_paths: String,
}

/// A summary (the name and the number of entries), not every entry: a module may have 100,000.
impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Default for Module {
    fn default() -> Self {
        Module::new("Module")
    }
}

impl Module {
    /// An empty module; `name` appears in load messages (`Error(s) in loading state_dict for
    /// <name>`), as the class name does in torch.
    pub fn new(name: &str) -> Module {
        Module {
            name: name.to_string(),
            entries: PageVec::new(),
            by_name: NameTable::with_capacity(0),
            declared: Vec::new(),
            declared_paths: String::new(),
        }
    }

    /// [`Module::new`] with room for `entries` entries.
    pub fn with_capacity(name: &str, entries: usize) -> Module {
        let mut m = Module::new(name);
        m.entries.reserve(entries);
        let names = &m.entries;
        m.by_name.reserve(entries, |i| names[i].name.as_bytes());
        m
    }

    /// A skeleton mirroring a checkpoint's table: every tensor becomes a parameter with the
    /// checkpoint's name, dtype and shape (state dicts do not record which tensors were buffers).
    /// A tensor mmckpt cannot represent fails the call, naming it.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Module> {
        Module::from_checkpoint_under(ckpt, "")
    }

    /// A skeleton of the checkpoint's tensors under `prefix` (with the prefix stripped, as a
    /// load with that prefix sees them; a missing final '.' is implied; "" = all).
    pub fn from_checkpoint_under(ckpt: &Checkpoint, prefix: &str) -> Result<Module> {
        let mut m = Module::with_capacity("Module", ckpt.len());
        for (index, name) in entries_under(ckpt, prefix) {
            let t = ckpt.tensor_at(index)?;
            m.add_new(
                owned_name(name),
                t.desc.dtype,
                &t.desc.shape,
                EntryKind::Parameter,
                true,
            )?;
        }
        Ok(m)
    }

    /// A skeleton of one tensor-parallel rank's share of the checkpoint's tensors under
    /// `prefix` ([`Module::from_checkpoint_under`] with local shapes): an entry a rule of `tp`
    /// splits is declared with the shape of `torch.chunk(t, world, dim)[rank]`, the others
    /// with the checkpoint's. A distributed checkpoint's tensors are not assembled. Options
    /// that [`TensorParallel::validate`] refuses, and a rule's dim out of range for a tensor,
    /// are `InvalidArgument`; a tensor torch.chunk gives this rank no chunk of is
    /// `ShapeMismatch`, naming it.
    pub fn from_checkpoint_for_rank(
        ckpt: &Checkpoint,
        prefix: &str,
        tp: &TensorParallel,
    ) -> Result<Module> {
        tp.validate()?;
        let mut m = Module::with_capacity("Module", ckpt.len());
        for (index, name) in entries_under(ckpt, prefix) {
            if m.index_of(name).is_some() {
                continue;
            }
            let desc = ckpt.whole_desc(index)?;
            let Some(local) = tp.local_shape(name, &desc.shape)? else {
                let dim = tp.rule_for(name).map_or(0, |r| r.dim);
                return Err(Error::new(
                    crate::error::ErrorKind::ShapeMismatch,
                    format!(
                        "tensor-parallel rank {} of world size {} has no chunk of '{name}': \
                         torch.chunk(t, {}, {dim}) of a tensor of shape {} gives fewer than {} \
                         chunks",
                        tp.rank,
                        tp.world,
                        tp.world,
                        report::torch_size(&desc.shape),
                        tp.world
                    ),
                ));
            };
            m.add(name, desc.dtype, &local, EntryKind::Parameter)?;
        }
        Ok(m)
    }

    /// Builds a meta module from a JSON spec (both forms of docs/module-spec.md). What the spec
    /// expands to (modules, entries, bytes of names, JSON values with `repeat` unrolled) is
    /// counted before anything is built and bounded by the `MAX_SPEC_*` constants (Limit,
    /// naming the node); see LIMITS.md.
    pub fn from_spec(json: &str) -> Result<Module> {
        spec::parse(json)
    }

    /// Reads the text of a spec file for [`Module::from_spec`]. Only a regular file is read: a
    /// FIFO, a device or a directory is an `Io` error naming its type, returned at once
    /// (opening a FIFO would otherwise wait for a writer). Text that is not UTF-8 is
    /// `InvalidArgument`.
    ///
    /// ```
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recipe.spec.json");
    /// let module = mmckpt::Module::from_spec(&mmckpt::Module::read_spec_file(path)?)?;
    /// assert_eq!(module.name(), "SomeModule");
    /// # Ok::<(), mmckpt::Error>(())
    /// ```
    pub fn read_spec_file(path: impl AsRef<std::path::Path>) -> Result<String> {
        let path = path.as_ref();
        let bytes = crate::container::source::read_regular_file(path)?;
        String::from_utf8(bytes).map_err(|e| {
            Error::invalid_argument(format!(
                "spec '{}' is not UTF-8 (byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })
    }

    /// The name given at creation (the spec's `name`, or `"Module"`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Every entry, in the order added (a spec's order).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// Entry `index`.
    pub fn entry_at(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }
    /// The index of the entry named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let entries = &self.entries;
        self.by_name.find(name.as_bytes(), |i| {
            entries[i].name.as_bytes() == name.as_bytes()
        })
    }
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.index_of(name).map(|i| &self.entries[i])
    }
    fn entry_or_not_found(&self, name: &str) -> Result<usize> {
        self.index_of(name).ok_or_else(|| {
            Error::not_found(format!(
                "module '{}' has no entry named '{name}'",
                self.name
            ))
        })
    }

    /// Adds a meta entry (no data). Fails with InvalidArgument for a bad name (empty, empty
    /// segments, a duplicate, or clashing with a submodule path), a negative size, too many
    /// dimensions, or a size whose bytes overflow.
    pub fn add(&mut self, name: &str, dtype: DType, shape: &[i64], kind: EntryKind) -> Result<()> {
        self.add_owned(owned_name(name), dtype, shape, kind)
    }

    /// [`Module::add`] of a name the caller built (a spec's joined path): it becomes the
    /// entry's C name without another copy when it has room for the NUL.
    pub(crate) fn add_owned(
        &mut self,
        owned: String,
        dtype: DType,
        shape: &[i64],
        kind: EntryKind,
    ) -> Result<()> {
        self.add_new(owned, dtype, shape, kind, false)
    }

    /// [`Module::add_owned`]; with `skip_duplicate`, a name the module has is no error: the
    /// entry is not added (a checkpoint's repeated name: the first is the state dict's).
    fn add_new(
        &mut self,
        owned: String,
        dtype: DType,
        shape: &[i64],
        kind: EntryKind,
        skip_duplicate: bool,
    ) -> Result<()> {
        let name = owned.as_str();
        if !is_dotted_name(name) {
            return Err(Error::invalid_argument(format!(
                "entry name '{name}' is not a dotted name (empty segment or NUL)"
            )));
        }
        let index = self.entries.len();
        if index >= u32::MAX as usize - 1 {
            return Err(Error::limit("a module holds fewer than 2^32 - 1 entries"));
        }
        let entries = &self.entries;
        self.by_name
            .reserve(index + 1, |i| entries[i].name.as_bytes());
        let entries = &self.entries;
        let slot = match self.by_name.locate(name.as_bytes(), |i| {
            entries[i].name.as_bytes() == name.as_bytes()
        }) {
            Ok(_) if skip_duplicate => return Ok(()),
            Ok(_) => {
                return Err(Error::invalid_argument(format!(
                    "duplicate entry name '{name}'"
                )))
            }
            Err(slot) => slot,
        };
        if shape.len() > MAX_NDIM {
            return Err(Error::invalid_argument(format!(
                "entry '{name}' has {} dimensions; at most {MAX_NDIM} are supported",
                shape.len()
            )));
        }
        if let Some(&bad) = shape.iter().find(|&&s| s < 0) {
            return Err(Error::invalid_argument(format!(
                "entry '{name}' has a negative size {bad} in shape {shape:?}"
            )));
        }
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &s| acc.checked_mul(s as u64))
            .filter(|&n| n <= i64::MAX as u64);
        let nbytes = numel
            .and_then(|n| n.checked_mul(dtype.itemsize() as u64))
            .and_then(|b| usize::try_from(b).ok())
            .filter(|&b| b <= isize::MAX as usize);
        let (Some(numel), Some(nbytes)) = (numel, nbytes) else {
            return Err(Error::invalid_argument(format!(
                "entry '{name}': shape {shape:?} of {} is too large",
                dtype.name()
            )));
        };
        // `is_dotted_name` refused NUL bytes.
        let name = CString::new(owned).map_err(|_| Error::invalid_argument("NUL in name"))?;
        self.by_name.occupy(slot, index);
        self.entries.push(Entry {
            name,
            kind,
            dtype,
            dims: Dims::contiguous(shape),
            numel,
            nbytes,
            data: Data::Meta,
        });
        Ok(())
    }

    /// Declares a submodule path that may hold no entries (a `ReLU`, a LayerNorm without
    /// affine parameters), so that unexpected keys under it are grouped as torch groups them.
    pub fn declare_submodule(&mut self, path: &str) -> Result<()> {
        if path.is_empty() {
            return Ok(());
        }
        // A byte scan, not `split('.')`: a spec declares a path per module.
        let bytes = path.as_bytes();
        if bytes[0] == b'.'
            || bytes[bytes.len() - 1] == b'.'
            || bytes.windows(2).any(|w| w == b"..")
        {
            return Err(Error::invalid_argument(format!(
                "submodule path '{path}' has an empty segment"
            )));
        }
        let start = self.declared_paths.len();
        self.declared_paths.push_str(path);
        self.declared
            .push((self.entries.len(), start..self.declared_paths.len()));
        Ok(())
    }

    /// Sets the declared dtype of every floating entry (the CLI's `--dtype`). Entries must have
    /// no data yet (State otherwise); `dtype` must be floating.
    pub fn set_floating_dtype(&mut self, dtype: DType) -> Result<()> {
        if !dtype.is_floating() {
            return Err(Error::invalid_argument(format!(
                "{} is not a floating dtype",
                dtype.name()
            )));
        }
        if let Some(e) = self.entries.iter().find(|e| e.has_data()) {
            return Err(Error::state(format!(
                "entry '{}' already has data; change dtypes before materialize, bind or load",
                e.name()
            )));
        }
        for e in self.entries.iter_mut() {
            if e.dtype.is_floating() {
                e.dtype = dtype;
                e.nbytes = e.numel as usize * dtype.itemsize();
            }
        }
        Ok(())
    }

    /// Like `to_empty()`: gives every entry without data owned, zeroed, 64-byte aligned storage
    /// of its declared dtype. Entries that have data keep it. All or nothing: on NoMemory the
    /// module is unchanged.
    pub fn materialize(&mut self) -> Result<()> {
        let mut bufs = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !e.has_data() {
                let buf = AlignedBuf::zeroed(e.nbytes)
                    .map_err(|err| err.context(format!("materializing '{}'", e.name())))?;
                bufs.push((i, buf));
            }
        }
        for (i, buf) in bufs {
            self.entries[i].data = Data::Owned {
                buf,
                storage_id: new_storage_id(),
            };
        }
        Ok(())
    }

    /// Binds caller memory to entry `name` as its (contiguous) storage, replacing any data it
    /// had. `buf` must hold at least numel × itemsize of the declared dtype (BufferTooSmall).
    pub(crate) fn bind(&mut self, name: &str, buf: BorrowedBuf) -> Result<()> {
        let i = self.entry_or_not_found(name)?;
        let e = &mut self.entries[i];
        if buf.len() < e.nbytes {
            return Err(Error::buffer_too_small(format!(
                "entry '{name}' needs {} bytes ({} elements of {}); the buffer has {}",
                e.nbytes,
                e.numel,
                e.dtype.name(),
                buf.len()
            )));
        }
        e.data = Data::Bound {
            buf,
            storage_id: new_storage_id(),
        };
        Ok(())
    }

    /// The submodule tree, built on demand (only reports with missing, unexpected or
    /// mismatched keys need it, so building and assign-loading stay cheap).
    fn tree(&self) -> Tree<'_> {
        let mut tree = Tree::default();
        let mut declared = self
            .declared
            .iter()
            .map(|(at, path)| (*at, &self.declared_paths[path.clone()]))
            .peekable();
        for (i, e) in self.entries.iter().enumerate() {
            while let Some((_, path)) = declared.next_if(|(at, _)| *at <= i) {
                tree.module(path);
            }
            let name = e.name();
            let m = name.rfind('.').map_or(0, |d| tree.module(&name[..d]));
            tree.entry_module.push(m);
        }
        for (_, path) in declared {
            tree.module(path);
        }
        tree.rank_pre_order();
        tree
    }
}

/// The submodule trie: module 0 is the root, every other module is (parent, segment). Flat
/// arrays and a map keyed by one segment, so a name of a million segments costs a million
/// O(segment) steps — no recursion, no hashing of whole prefixes, and no nested boxes whose
/// drop would recurse.
struct Tree<'a> {
    /// (parent module, segment) → module. foldhash's quality variant: with the fast one, a
    /// million keys that differ only in the parent id (`a.a.a.…`) probed markedly longer.
    child: std::collections::HashMap<(u32, &'a str), u32, foldhash::quality::RandomState>,
    /// Each module's parent (the root's is itself). Modules are numbered in first-seen order,
    /// so a parent's children are its first-seen-ordered entries here.
    parent: Vec<u32>,
    entry_module: Vec<u32>,
    /// Pre-order ranks: torch's traversal order in `load`.
    rank: Vec<u32>,
}

impl Default for Tree<'_> {
    fn default() -> Self {
        Tree {
            child: Default::default(),
            parent: vec![0],
            entry_module: Vec::new(),
            rank: Vec::new(),
        }
    }
}

impl<'a> Tree<'a> {
    /// The module at dotted `path` (not empty), created with its missing ancestors.
    fn module(&mut self, path: &'a str) -> u32 {
        let mut m = 0u32;
        for segment in path.split('.') {
            let next = self.parent.len() as u32;
            m = *self.child.entry((m, segment)).or_insert_with(|| {
                self.parent.push(m);
                next
            });
        }
        m
    }

    /// Ranks every module in pre-order, children in first-seen order, with an explicit stack.
    fn rank_pre_order(&mut self) {
        let n = self.parent.len();
        // Children lists in compressed form: `kids[start[p]..start[p + 1]]`, ascending ids.
        let mut start = vec![0u32; n + 1];
        for &p in &self.parent[1..] {
            start[p as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut kids = vec![0u32; n - 1];
        for (m, &p) in self.parent.iter().enumerate().skip(1) {
            kids[fill[p as usize] as usize] = m as u32;
            fill[p as usize] += 1;
        }
        self.rank = vec![0; n];
        let mut next = 0;
        let mut stack = vec![0u32];
        while let Some(m) = stack.pop() {
            self.rank[m as usize] = next;
            next += 1;
            let (lo, hi) = (start[m as usize] as usize, start[m as usize + 1] as usize);
            stack.extend(kids[lo..hi].iter().rev());
        }
    }

    /// The module whose `_load_from_state_dict` torch would find `key` unexpected in: the
    /// deepest submodule reached by following the key's leading segments.
    fn owner_of(&self, key: &str) -> u32 {
        let mut owner = 0;
        let Some((modules, _leaf)) = key.rsplit_once('.') else {
            return 0;
        };
        for segment in modules.split('.') {
            match self.child.get(&(owner, segment)) {
                Some(&m) => owner = m,
                None => break,
            }
        }
        owner
    }
}

/// `name` owned, with room for the NUL its C name adds: one allocation for both.
fn owned_name(name: &str) -> String {
    let mut owned = String::with_capacity(name.len() + 1);
    owned.push_str(name);
    owned
}

/// The checkpoint entries under `prefix` (a missing final '.' implied; "" = all) as a load
/// with that prefix sees them: (table index, name with the prefix stripped), in table order. A
/// name may repeat: the caller keeps its first entry (the state dict's), which it meets first.
fn entries_under<'c>(ckpt: &'c Checkpoint, prefix: &str) -> impl Iterator<Item = (usize, &'c str)> {
    let prefix = match prefix {
        "" => String::new(),
        p if p.ends_with('.') => p.to_string(),
        p => format!("{p}."),
    };
    (0..ckpt.len()).filter_map(move |index| {
        let full = ckpt.name_at(index).unwrap_or("");
        full.strip_prefix(prefix.as_str()).map(|name| (index, name))
    })
}

#[cfg(test)]
mod tests;

/// A name of non-empty segments joined by '.', without NUL: one pass over the bytes (a spec
/// of 100,000 entries checks as many names).
fn is_dotted_name(name: &str) -> bool {
    // `prev` starts as '.', so a leading '.' (and an empty name) is an empty segment.
    let mut prev = b'.';
    for &c in name.as_bytes() {
        if c == 0 || (c == b'.' && prev == b'.') {
            return false;
        }
        prev = c;
    }
    prev != b'.'
}
