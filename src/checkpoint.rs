//! The open checkpoint: the mapping (shared by everything that points into it), the storages,
//! the value tree, and the flat tensor table in a stable order. Immutable after open, so any
//! number of threads may read one at once.

use crate::container::legacy::{self, LegacyRecord};
use crate::container::zip::{self, ZipArchive, ZipLimits};
use crate::container::{AlignedBuf, LoadMode, Source};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result};
use crate::hash::{HashMap, NameTable};
use crate::pickle::{self, Arena, NodeId, Value};
use crate::torch::{self, Interpreted, StorageId, StorageResolver, TensorDesc};
use std::ffi::CStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Every bound the parser enforces; defaults fit any real checkpoint (the largest real models
/// have fewer than 100,000 tensors).
#[derive(Clone, Debug)]
pub struct Limits {
    pub pickle: pickle::Limits,
    pub zip: ZipLimits,
    /// Bytes of the `data.pkl` record.
    pub max_pickle_bytes: u64,
    /// Entries in the tensor table.
    pub max_tensors: usize,
    /// Nesting depth of containers on the way to a tensor.
    pub max_depth: usize,
    /// Nodes visited while naming tensors (shared sub-trees are visited once per path).
    pub max_walk_steps: usize,
    /// Bytes of names made while naming tensors: every name segment walked plus every table
    /// entry's full name (a long key shared by many paths would otherwise cost its length each
    /// time). One segment is at most `torch::MAX_SEGMENT_LEN` bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pickle: pickle::Limits::default(),
            zip: ZipLimits::default(),
            max_pickle_bytes: 1 << 30,
            max_tensors: 1 << 22,
            max_depth: 1000,
            max_walk_steps: 1 << 26,
            max_name_bytes: 1 << 28,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    pub mode: LoadMode,
    /// Fail with `Unsafe` on any global outside the allowlist.
    pub strict: bool,
    /// Dotted path of the sub-object whose tensors form the table (`"model"`).
    pub root: Option<String>,
    pub limits: Limits,
}

/// The memory a storage's bytes live in; cloning shares it.
#[derive(Clone)]
pub enum Backing {
    /// The file's bytes (mapped or read in): the zero-copy case.
    File(Arc<Source>),
    /// A private, aligned copy (misaligned or byte-swapped data).
    Owned(Arc<AlignedBuf>),
}

impl Backing {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::File(source) => source.bytes(),
            Backing::Owned(buf) => buf.as_slice(),
        }
    }
}

static NEXT_STORAGE_ID: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique, non-zero storage identity (equal ids ⇔ same storage).
pub fn new_storage_id() -> u64 {
    NEXT_STORAGE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A storage's key in its file: `"0"`, `"17"`, or in principle any string. torch numbers its
/// storages, so a key in canonical decimal is kept as its number (no allocation per storage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageKey {
    Number(u32),
    Text(Box<str>),
}

impl StorageKey {
    pub fn new(key: &str) -> StorageKey {
        match zip::canonical_index(key) {
            Some(n) => StorageKey::Number(n),
            None => StorageKey::Text(key.into()),
        }
    }
}

impl PartialEq<str> for StorageKey {
    fn eq(&self, key: &str) -> bool {
        match self {
            StorageKey::Number(n) => zip::canonical_index(key) == Some(*n),
            StorageKey::Text(text) => **text == *key,
        }
    }
}

impl std::fmt::Display for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageKey::Number(n) => write!(f, "{n}"),
            StorageKey::Text(text) => f.write_str(text),
        }
    }
}

/// One storage: a byte range of its backing.
pub struct Storage {
    pub key: StorageKey,
    pub id: u64,
    /// Where torch saved it from (`cpu`, `cuda:0`): shared by the storages that name it.
    pub location: Arc<str>,
    backing: Backing,
    start: usize,
    len: usize,
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        &self.backing.bytes()[self.start..self.start + self.len]
    }
    pub fn backing(&self) -> &Backing {
        &self.backing
    }
    /// Offset of the first byte within the backing's bytes.
    pub fn start(&self) -> usize {
        self.start
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Absolute file offset of the first byte, when the bytes are the file's.
    pub fn file_offset(&self) -> Option<u64> {
        match self.backing {
            Backing::File(_) => Some(self.start as u64),
            Backing::Owned(_) => None,
        }
    }
    /// True when the bytes are pages of a file mapping (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(&self.backing, Backing::File(s) if s.is_mapped())
    }
}

/// The rows of the tensor table: each a name and the tensor it names. The names are back to
/// back in one buffer, each NUL-terminated for C callers (no allocation per row), and indexed:
/// a name finds its first row in O(1). The index is built by the first lookup by name, not
/// by opening: a caller that walks the table by position never pays for it.
#[derive(Default)]
struct Table {
    names: Vec<u8>,
    rows: Vec<Row>,
    errors: Vec<Error>,
    index: std::sync::OnceLock<NameTable>,
}

struct Row {
    /// The name is `names[name_start..name_end]`, followed by a NUL.
    name_start: usize,
    name_end: usize,
    tensor: RowTensor,
}

/// What a row names: an index into `tensors`, or into the table's `errors` (why this tensor
/// cannot be represented). Rows are kept by the hundred thousand: eight bytes, not an `Error`.
#[derive(Clone, Copy)]
enum RowTensor {
    Tensor(u32),
    Error(u32),
}

impl Table {
    /// Adds a row. A NUL in the name (C could not see past it) is written as `\x00`.
    fn push(&mut self, name: &str, tensor: std::result::Result<usize, Error>) {
        let name_start = self.names.len();
        self.names.extend_from_slice(sanitize(name).as_bytes());
        let name_end = self.names.len();
        self.names.push(0);
        // Tensor and row counts are bounded by `Limits::max_tensors`, far below u32::MAX.
        let tensor = match tensor {
            Ok(t) => RowTensor::Tensor(t as u32),
            Err(e) => {
                self.errors.push(e);
                RowTensor::Error(self.errors.len() as u32 - 1)
            }
        };
        self.rows.push(Row {
            name_start,
            name_end,
            tensor,
        });
    }

    /// The tensor of a row, or why it cannot be represented.
    fn tensor(&self, row: &Row) -> std::result::Result<usize, &Error> {
        match row.tensor {
            RowTensor::Tensor(t) => Ok(t as usize),
            RowTensor::Error(e) => Err(&self.errors[e as usize]),
        }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn name(&self, row: usize) -> &[u8] {
        let row = &self.rows[row];
        &self.names[row.name_start..row.name_end]
    }

    fn name_c(&self, row: usize) -> Option<&CStr> {
        let row = self.rows.get(row)?;
        CStr::from_bytes_with_nul(&self.names[row.name_start..=row.name_end]).ok()
    }

    /// The index by name (the first row of a name wins), built on first use; rows are never
    /// added once a table is in a checkpoint.
    fn index(&self) -> &NameTable {
        self.index.get_or_init(|| {
            let mut index = NameTable::with_capacity(self.rows.len());
            for row in 0..self.rows.len() {
                let name = self.name(row);
                index.insert(name, row, |other| self.name(other) == name);
            }
            index
        })
    }

    fn find(&self, name: &str) -> Option<usize> {
        let name = name.as_bytes();
        self.index().find(name, |row| self.name(row) == name)
    }
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
        if crate::shards::is_index(path, source.bytes()) {
            source.release_file();
            return crate::shards::open_index(path, source, options);
        }
        Checkpoint::from_source(source, options)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }

    pub fn from_bytes(bytes: &[u8], options: &OpenOptions) -> Result<Checkpoint> {
        Checkpoint::from_source(Arc::new(Source::from_bytes(bytes)?), options)
    }

    pub fn from_source(source: Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
        let bytes = source.bytes();
        let result = if zip::looks_like_zip(bytes) {
            Checkpoint::from_zip(source.clone(), options)
        } else if legacy::looks_like_pickle(bytes) {
            Checkpoint::from_legacy(source.clone(), options)
        } else {
            Err(Error::format(describe_unknown_format(bytes)))
        };
        // Opening is over: the mapping needs no file descriptor.
        source.release_file();
        result
    }

    fn from_legacy(source: Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
        let bytes = source.bytes();
        let mut arena = Arena::new();
        let header = legacy::parse(
            &mut arena,
            bytes,
            &options.limits.pickle,
            options.limits.max_pickle_bytes,
        )?;
        let records = legacy::locate_storages(bytes, &header)?;
        let resolver = LegacyStorages {
            source: &source,
            records: &records,
            storages: Vec::with_capacity(records.len()),
            by_key: HashMap::default(),
            locations: Locations::default(),
        };
        let top = header.object;
        finish(
            source.clone(),
            Format::Legacy,
            arena,
            top,
            options,
            false,
            resolver,
            |r| r.storages,
        )
    }

    fn from_zip(source: Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
        let bytes = source.bytes();
        let parse_archive = || {
            let read_at = |offset: u64, buf: &mut [u8]| source.read_at(offset, buf);
            let reads = zip::HeaderReads {
                read_at: &read_at,
                min_spacing: zip::HeaderReads::SPARSE,
            };
            zip::parse_with(bytes, &options.limits.zip, Some(reads))
        };
        // A large archive's directory and its pickle are parsed at once, on two threads,
        // when data.pkl is where torch puts it; the pickle is used only if the directory
        // then names exactly those bytes (otherwise it is parsed again from the record).
        let guess = zip::guess_first_record(bytes, "data.pkl").filter(|&(_, size, entries)| {
            entries >= PARALLEL_MIN_RECORDS && size <= options.limits.max_pickle_bytes
        });
        let (archive, early) = match guess {
            Some((offset, size, _)) => std::thread::scope(|scope| {
                let directory = scope.spawn(parse_archive);
                let pickle_bytes = &bytes[offset as usize..(offset + size) as usize];
                let early = (offset, size, parse_pickle(pickle_bytes, options));
                match directory.join() {
                    Ok(archive) => (archive, Some(early)),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }),
            None => (parse_archive(), None),
        };
        let archive = archive?;
        let format = if archive.get("constants.pkl").is_some() {
            Format::TorchScript
        } else {
            Format::Zip
        };
        let pkl = archive.get("data.pkl").ok_or_else(|| {
            Error::format(if format == Format::TorchScript {
                format!(
                    "TorchScript archive has no '{}/data.pkl' record (the module's state)",
                    archive.prefix()
                )
            } else {
                format!(
                    "zip archive has no '{}/data.pkl' record: not a torch.save checkpoint",
                    archive.prefix()
                )
            })
        })?;
        if pkl.size > options.limits.max_pickle_bytes {
            return Err(Error::limit(format!(
                "data.pkl is {} bytes; the limit is {}",
                pkl.size, options.limits.max_pickle_bytes
            )));
        }
        let byte_order_big = match archive.text(bytes, "byteorder")?.as_deref() {
            None | Some("little") => false,
            Some("big") => true,
            Some(other) => {
                return Err(Error::format(format!(
                    "byteorder record says {other:?}; expected 'little' or 'big'"
                )))
            }
        };
        let pickle_bytes = archive.data(bytes, pkl)?;
        let (mut arena, top) = match early {
            Some((offset, size, parsed)) if (offset, size) == (pkl.data_offset, pkl.size) => parsed,
            _ => parse_pickle(pickle_bytes, options),
        }?;
        if format == Format::TorchScript {
            crate::container::torchscript::ScriptClasses::read(&archive, bytes)?
                .prune_plain_tensor_attributes(&mut arena);
        }
        let resolver = ZipStorages {
            source: &source,
            archive: &archive,
            storages: Vec::with_capacity(archive.records().len()),
            by_key: HashMap::default(),
            locations: Locations::default(),
        };
        finish(
            source.clone(),
            format,
            arena,
            top,
            options,
            byte_order_big,
            resolver,
            |r| r.storages,
        )
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
                if let Some(row) = part.table.rows.get(index) {
                    let name = &part.table.names[row.name_start..row.name_end];
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
            stores.push(Storage {
                key: StorageKey::new(&i.to_string()),
                id: new_storage_id(),
                location: "cpu".into(),
                backing: Backing::File(source.clone()),
                start,
                len,
            });
        }
        let mut descs = Vec::new();
        let mut table = Table::default();
        for (name, desc) in tensors {
            let storage = stores.get(desc.storage).ok_or_else(|| {
                Error::format(format!("tensor '{name}': no storage {}", desc.storage))
            })?;
            if desc.byte_offset() + desc.span_bytes() > storage.len as u64 {
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
        let (Some(row), Some(name)) = (self.table.rows.get(index), self.table.name_c(index)) else {
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

/// Records from which a zip archive's directory is parsed on a thread of its own, beside the
/// pickle (below, a thread costs more than it saves).
const PARALLEL_MIN_RECORDS: u64 = 4096;

/// Parses `data.pkl` into a new arena.
fn parse_pickle(pickle_bytes: &[u8], options: &OpenOptions) -> Result<(Arena, NodeId)> {
    let mut arena = Arena::new();
    // torch's state dicts take about one value per 5 pickle bytes.
    arena.reserve((pickle_bytes.len() / 5).min(options.limits.pickle.max_nodes));
    let (top, _) = pickle::load(&mut arena, pickle_bytes, &options.limits.pickle)
        .map_err(|e| e.context("data.pkl"))?;
    Ok((arena, top))
}

/// select_root, the table, the storage fix-ups: the part of opening shared by every format.
#[allow(clippy::too_many_arguments)]
fn finish<R: StorageResolver>(
    source: Arc<Source>,
    format: Format,
    arena: Arena,
    top: NodeId,
    options: &OpenOptions,
    byte_order_big: bool,
    mut resolver: R,
    into_storages: fn(R) -> Vec<Storage>,
) -> Result<Checkpoint> {
    if options.strict {
        check_globals(&arena)?;
    }
    let root = select_root(&arena, top, options.root.as_deref())?;
    let (tensors, table) = build_table(&arena, root, &mut resolver, &options.limits)?;
    let mut storages = into_storages(resolver);
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

fn describe_unknown_format(bytes: &[u8]) -> String {
    if bytes.len() >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
        format!(
            "file is a pickle of protocol {}; torch.save files use protocol 2 or higher",
            bytes[1]
        )
    } else if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
        "file is a tar archive (the pre-1.0 torch.save format), which is not supported".to_string()
    } else {
        let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "not a PyTorch checkpoint: no zip signature at byte 0 (first bytes: {})",
            shown.join(" ")
        )
    }
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
        Some(path) => crate::values::lookup(arena, top, path)
            .map(|v| v.node())
            .map_err(|e| e.context(format!("root '{path}'"))),
        None => Ok(top),
    }
}

struct ZipStorages<'a> {
    source: &'a Arc<Source>,
    archive: &'a ZipArchive,
    storages: Vec<Storage>,
    by_key: HashMap<String, usize>,
    locations: Locations,
}

/// The distinct location strings of a checkpoint (nearly always one or two): each storage
/// shares its location instead of copying it.
#[derive(Default)]
struct Locations(Vec<Arc<str>>);

impl Locations {
    fn intern(&mut self, location: &str) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|l| &***l == location) {
            return known.clone();
        }
        let new: Arc<str> = location.into();
        // A file may name many locations; only the first few are worth searching.
        if self.0.len() < 8 {
            self.0.push(new.clone());
        }
        new
    }
}

impl StorageResolver for ZipStorages<'_> {
    fn resolve(&mut self, id: &StorageId<'_>) -> Result<(usize, u64)> {
        let key = StorageKey::new(&id.key);
        if let Some(index) = self.lookup(&key, &id.key) {
            return Ok((index, self.storages[index].len as u64));
        }
        if id.legacy_view.is_some() {
            return Err(Error::format(format!(
                "storage '{}' carries legacy view metadata inside a zip archive",
                id.key
            )));
        }
        let record = self.archive.storage_record(&id.key).ok_or_else(|| {
            Error::format(format!(
                "storage '{}' has no record '{}/data/{}'",
                id.key,
                self.archive.prefix(),
                id.key
            ))
        })?;
        record.require_stored()?;
        let declared = id.declared_bytes().ok_or_else(|| {
            Error::format(format!("storage '{}': declared size overflows", id.key))
        })?;
        if declared > record.size {
            return Err(Error::format(format!(
                "storage '{}' declares {} elements of {} ({declared} bytes) but its record holds {} bytes",
                id.key, id.numel, id.class_name(), record.size
            )));
        }
        let index = self.storages.len();
        if key != StorageKey::Number(index as u32) {
            self.by_key.insert(id.key.to_string(), index);
        }
        self.storages.push(Storage {
            key,
            id: new_storage_id(),
            location: self.locations.intern(id.location),
            backing: Backing::File(self.source.clone()),
            start: record.data_offset as usize,
            len: declared as usize,
        });
        Ok((index, declared))
    }

    fn expected_storages(&self) -> usize {
        self.storages.capacity()
    }
}

impl ZipStorages<'_> {
    /// The storage with this key. torch numbers storages "0", "1", … in first-use order, so a
    /// key that is its own index is found without hashing (and never enters `by_key`).
    fn lookup(&self, key: &StorageKey, text: &str) -> Option<usize> {
        if let StorageKey::Number(i) = *key {
            if self.storages.get(i as usize).is_some_and(|s| s.key == *key) {
                return Some(i as usize);
            }
        }
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(text).copied()
    }
}

/// Storages of a legacy file: slices of the file (or, for old torch's storage views, slices
/// of a root storage), located by [`legacy::locate_storages`].
struct LegacyStorages<'a> {
    source: &'a Arc<Source>,
    records: &'a std::collections::HashMap<String, LegacyRecord>,
    storages: Vec<Storage>,
    by_key: HashMap<String, usize>,
    locations: Locations,
}

impl StorageResolver for LegacyStorages<'_> {
    fn resolve(&mut self, id: &StorageId<'_>) -> Result<(usize, u64)> {
        let own_key: &str = id.legacy_view.as_ref().map_or(&id.key, |(view, _, _)| view);
        if let Some(&index) = self.by_key.get(own_key) {
            return Ok((index, self.storages[index].len as u64));
        }
        let record = self.records.get(&*id.key).ok_or_else(|| {
            Error::format(format!(
                "storage '{}' is not in the legacy file's storage key list",
                id.key
            ))
        })?;
        let itemsize = id.dtype.map_or(1, |d| d.itemsize() as u64);
        let overflow = || Error::format(format!("storage '{}': size overflows", id.key));
        let (start, len) =
            match &id.legacy_view {
                None => {
                    let declared = id.declared_bytes().ok_or_else(overflow)?;
                    if declared > record.nbytes {
                        return Err(Error::format(format!(
                            "storage '{}' declares {} elements of {} ({declared} bytes) but the \
                         file holds {} bytes for it at byte {}",
                            id.key,
                            id.numel,
                            id.class_name(),
                            record.nbytes,
                            record.data_offset
                        )));
                    }
                    (record.data_offset, declared)
                }
                Some((view, offset, size)) => {
                    let start = offset.checked_mul(itemsize).ok_or_else(overflow)?;
                    let len = size.checked_mul(itemsize).ok_or_else(overflow)?;
                    let end = start.checked_add(len).ok_or_else(overflow)?;
                    if end > record.nbytes {
                        return Err(Error::format(format!(
                        "storage view '{view}' (elements {offset}..{offset}+{size} of {}) ends at \
                         byte {end} of storage '{}', past its {} bytes",
                        id.class_name(), id.key, record.nbytes
                    )));
                    }
                    (record.data_offset + start, len)
                }
            };
        let index = self.storages.len();
        self.storages.push(Storage {
            key: StorageKey::new(own_key),
            id: new_storage_id(),
            location: self.locations.intern(id.location),
            backing: Backing::File(self.source.clone()),
            start: start as usize,
            len: len as usize,
        });
        self.by_key.insert(own_key.to_string(), index);
        Ok((index, len))
    }

    fn expected_storages(&self) -> usize {
        self.records.len()
    }
}

/// Walks the tree from `root` in pickle order, naming every tensor it reaches.
fn build_table(
    arena: &Arena,
    root: NodeId,
    resolver: &mut dyn StorageResolver,
    limits: &Limits,
) -> Result<(Vec<TensorDesc>, Table)> {
    struct Frame {
        node: NodeId,
        children: Vec<(torch::ChildName, NodeId)>,
        next: usize,
        name_len: usize,
    }
    let mut tensors = Vec::with_capacity(resolver.expected_storages());
    let mut entries = Table::default();
    entries.rows.reserve(resolver.expected_storages());
    // One interpretation per tensor node: a tensor saved under two names is one tensor.
    // `row_of[node]` is the first row naming it (NO_ROW: not interpreted yet).
    const NO_ROW: u32 = u32::MAX;
    let mut row_of = vec![NO_ROW; arena.len()];
    let mut on_path = vec![false; arena.len()];
    let mut name = String::new();
    let mut steps = 0usize;
    let mut name_bytes = 0usize;

    let mut visit = |node: NodeId,
                     name: &str,
                     entries: &mut Table,
                     tensors: &mut Vec<TensorDesc>|
     -> Result<bool> {
        if let Some(row) = entries.rows.get(row_of[node as usize] as usize) {
            let tensor = entries.tensor(row).map_err(Clone::clone);
            entries.push(name, tensor);
            return Ok(true);
        }
        let Some(result) = torch::interpret(arena, node, resolver) else {
            return Ok(false);
        };
        let slot = match result {
            Interpreted::Tensor(desc) => {
                tensors.push(desc);
                Ok(tensors.len() - 1)
            }
            Interpreted::Unsupported(e) if e.kind == ErrorKind::Unsupported => Err(e),
            Interpreted::Unsupported(e) => {
                return Err(e.context(format!("tensor '{name}'")));
            }
        };
        let slot = slot.map_err(|e| e.context(format!("tensor '{name}'")));
        // Rows past u32::MAX - 1 are beyond any table limit; they would only be reinterpreted.
        row_of[node as usize] = u32::try_from(entries.len()).unwrap_or(NO_ROW);
        entries.push(name, slot);
        Ok(true)
    };

    if visit(root, "", &mut entries, &mut tensors)? {
        return Ok((tensors, entries));
    }
    let Some(children) = torch::children(arena, root) else {
        return Ok((tensors, entries));
    };
    on_path[root as usize] = true;
    let mut stack = vec![Frame {
        node: root,
        children,
        next: 0,
        name_len: 0,
    }];
    while let Some(frame) = stack.last_mut() {
        if frame.next == frame.children.len() {
            on_path[frame.node as usize] = false;
            name.truncate(frame.name_len);
            stack.pop();
            continue;
        }
        let (child_name, child) = frame.children[frame.next];
        frame.next += 1;
        steps += 1;
        if steps > limits.max_walk_steps {
            return Err(Error::limit(format!(
                "naming tensors visited more than {} nodes (shared sub-objects repeated too often)",
                limits.max_walk_steps
            )));
        }
        if on_path[child as usize] {
            continue; // a cycle: the object contains itself
        }
        let parent_len = name.len();
        let base_len = frame.name_len;
        name.truncate(base_len);
        if !name.is_empty() {
            name.push('.');
        }
        let segment_start = name.len();
        child_name.push_segment(arena, &mut name);
        let segment_len = name.len() - segment_start;
        if segment_len > torch::MAX_SEGMENT_LEN {
            name.truncate(segment_start);
            return Err(Error::limit(format!(
                "a name segment under '{name}' is longer than {} bytes",
                torch::MAX_SEGMENT_LEN
            )));
        }
        if name[segment_start..].contains('\0') {
            let segment = sanitize(&name[segment_start..]).into_owned();
            name.truncate(segment_start);
            name.push_str(&segment);
        }
        name_bytes = name_bytes.saturating_add(segment_len);
        debug_assert!(parent_len >= base_len);
        let entries_before = entries.len();
        let is_tensor = visit(child, &name, &mut entries, &mut tensors)?;
        if let Some(entry) = entries.rows.get(entries_before) {
            // An entry keeps its name and, for a tensor that cannot be represented, a copy of
            // the error (which names the first path to it): both count.
            let message = entries.tensor(entry).err().map_or(0, |e| e.message.len());
            name_bytes = name_bytes
                .saturating_add(name.len())
                .saturating_add(message);
        }
        if name_bytes > limits.max_name_bytes {
            return Err(Error::limit(format!(
                "naming tensors made more than {} bytes of names (long keys repeated too often)",
                limits.max_name_bytes
            )));
        }
        if is_tensor {
            if entries.len() > limits.max_tensors {
                return Err(Error::limit(format!(
                    "more than {} tensors in the table",
                    limits.max_tensors
                )));
            }
            continue;
        }
        if let Some(grandchildren) = torch::children(arena, child) {
            if stack.len() >= limits.max_depth {
                return Err(Error::limit(format!(
                    "objects nest deeper than {} levels at '{name}'",
                    limits.max_depth
                )));
            }
            on_path[child as usize] = true;
            let name_len = name.len();
            stack.push(Frame {
                node: child,
                children: grandchildren,
                next: 0,
                name_len,
            });
        }
    }
    Ok((tensors, entries))
}

fn sanitize(segment: &str) -> std::borrow::Cow<'_, str> {
    if segment.contains('\0') {
        std::borrow::Cow::Owned(segment.replace('\0', "\\x00"))
    } else {
        std::borrow::Cow::Borrowed(segment)
    }
}

/// Alignment C callers may rely on for a dtype's elements.
fn required_alignment(dtype: DType) -> usize {
    dtype.itemsize().min(8)
}

/// Copies storages that cannot be handed out as they are: misaligned for one of their views'
/// dtypes, or in big-endian byte order.
fn fix_storages(storages: &mut [Storage], tensors: &[TensorDesc], big_endian: bool) -> Result<()> {
    let mut align = vec![1usize; storages.len()];
    let mut swap_size = vec![0usize; storages.len()];
    for t in tensors {
        let a = &mut align[t.storage];
        *a = (*a).max(required_alignment(t.dtype));
        let unit = swap_unit(t.dtype);
        let s = &mut swap_size[t.storage];
        if big_endian && *s != 0 && *s != unit {
            return Err(Error::unsupported(format!(
                "big-endian storage '{}' is viewed with element sizes {} and {}",
                storages[t.storage].key, *s, unit
            )));
        }
        *s = unit;
    }
    for (i, storage) in storages.iter_mut().enumerate() {
        let misaligned = (storage.bytes().as_ptr() as usize) % align[i] != 0;
        let swap = big_endian && swap_size[i] > 1;
        if !misaligned && !swap {
            continue;
        }
        let mut buf = AlignedBuf::from_slice(storage.bytes())?;
        if swap {
            for chunk in buf.as_mut_slice().chunks_exact_mut(swap_size[i]) {
                chunk.reverse();
            }
        }
        storage.backing = Backing::Owned(Arc::new(buf));
        storage.start = 0;
    }
    Ok(())
}

/// The unit whose bytes a big-endian file reverses: the element, or each half of a complex.
fn swap_unit(dtype: DType) -> usize {
    match dtype {
        DType::Complex32 | DType::Complex64 | DType::Complex128 => dtype.itemsize() / 2,
        _ => dtype.itemsize(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::zip::writer::{Entry as ZipEntry, Writer};

    /// A protocol-2 pickle of `{name: float32 tensor of 1 element in storage key}` items.
    fn state_dict_pickle(items: &[(&str, &str)]) -> Vec<u8> {
        fn unicode(out: &mut Vec<u8>, s: &str) {
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut p = b"\x80\x02}(".to_vec();
        for (name, key) in items {
            unicode(&mut p, name);
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            unicode(&mut p, "storage");
            p.extend_from_slice(b"ctorch\nFloatStorage\n");
            unicode(&mut p, key);
            unicode(&mut p, "cpu");
            p.extend_from_slice(b"K\x01tQ"); // numel 1, TUPLE, BINPERSID
            p.extend_from_slice(b"K\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend_from_slice(b"u.");
        p
    }

    #[test]
    fn table_finds_the_first_row_of_a_name_and_keeps_c_names() {
        let mut table = Table::default();
        for name in ["a", "b", "a", "", "nul\0inside"] {
            table.push(name, Err(Error::format("x")));
        }
        assert_eq!(table.find("a"), Some(0), "a duplicate: the first wins");
        assert_eq!(table.find("b"), Some(1));
        assert_eq!(table.find(""), Some(3));
        assert_eq!(table.find("c"), None);
        assert_eq!(table.find("nul\\x00inside"), Some(4));
        let c_names: Vec<_> = (0..table.len()).map(|i| table.name_c(i).unwrap()).collect();
        assert_eq!(c_names[2].to_bytes(), b"a");
        assert_eq!(c_names[3].to_bytes(), b"");
        assert_eq!(c_names[4].to_bytes(), b"nul\\x00inside");
        assert!(table.name_c(5).is_none());
    }

    #[test]
    fn storage_keys_resolve_by_exact_key_dense_or_not() {
        // Keys out of first-use order, a non-canonical "01", and a key used twice.
        let items = [("a", "1"), ("b", "0"), ("c", "01"), ("d", "1"), ("e", "x")];
        let mut entries = vec![ZipEntry::new(
            "archive/data.pkl",
            &state_dict_pickle(&items),
        )];
        for (key, value) in [("0", 0.0f32), ("1", 1.0), ("01", 2.0), ("x", 3.0)] {
            entries.push(ZipEntry::new(
                &format!("archive/data/{key}"),
                &value.to_le_bytes(),
            ));
        }
        let mut writer = Writer::new(entries);
        writer.align = 64;
        let built = writer.build();
        let ckpt = Checkpoint::from_bytes(&built.bytes, &OpenOptions::default()).unwrap();
        let value = |name: &str| {
            let t = ckpt.tensor(name).unwrap();
            (
                f32::from_le_bytes(t.bytes().try_into().unwrap()),
                t.storage.id,
                t.storage.key.to_string(),
            )
        };
        let (a, b, c, d, e) = (value("a"), value("b"), value("c"), value("d"), value("e"));
        assert_eq!((a.0, b.0, c.0, d.0, e.0), (1.0, 0.0, 2.0, 1.0, 3.0));
        assert_eq!((&*a.2, &*b.2, &*c.2, &*e.2), ("1", "0", "01", "x"));
        assert_eq!(a.1, d.1, "the same key is one storage");
        assert_eq!(ckpt.storages().len(), 4);
    }
}
