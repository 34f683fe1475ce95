//! The open checkpoint: the mapping (shared by everything that points into it), the storages,
//! the value tree, and the flat tensor table in a stable order. Immutable after open, so any
//! number of threads may read one at once.
//!
//! Opening: a reader in [`formats`] (one per input format) finds the value tree and the
//! storages and hands them, as one `Parsed` form, to `finish`, which every format shares:
//! the strict check, the root selection, the table (`table`) and the storage fix-ups
//! (`storage`: decided at open, copies made when a storage's tensor is first asked for).

mod chunks;
pub(crate) mod formats;
mod index;
mod limits;
pub(crate) mod plain;
mod prefetch;
mod storage;
mod table;
pub(crate) mod verify;

pub use chunks::{Slice, TensorChunk};
pub use index::TensorRange;
pub use limits::{Limits, TableLimits, ValueLimits};
pub use prefetch::{PrefetchCursor, DEFAULT_PREFETCH_BUDGET};
pub use storage::{new_storage_id, Backing, Storage, StorageKey};
pub use verify::CrcReport;

use crate::container::{OpenMode, PageVec, Source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::{Arena, DictClass, NodeId, Value};
use crate::torch::{self, TensorDesc};
use crate::tree;
use std::ffi::CStr;
use std::path::Path;
use std::sync::Arc;
use storage::{fix_storages, StorageSet};
use table::{build_table, Table};

/// How the file was written ([`Checkpoint::format`]).
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
    /// A safetensors file: a JSON header, then each tensor's bytes.
    Safetensors,
    /// The pre-1.0 `torch.save` format: a tar archive of `sys_info`, `pickle`, `tensors` and
    /// `storages` members.
    Tar,
    /// A `torch.distributed.checkpoint` directory: a `.metadata` file and `.distcp` files.
    Dcp,
}

impl Format {
    /// The lower-case name: `zip`, `torchscript`, `legacy`, `sharded`, `safetensors`, `tar` or
    /// `dcp`.
    pub fn name(self) -> &'static str {
        self.name_c().to_str().unwrap_or("")
    }
    /// [`Format::name`] as a C string (what the C API returns).
    pub fn name_c(self) -> &'static CStr {
        match self {
            Format::Zip => c"zip",
            Format::TorchScript => c"torchscript",
            Format::Legacy => c"legacy",
            Format::Sharded => c"sharded",
            Format::Safetensors => c"safetensors",
            Format::Tar => c"tar",
            Format::Dcp => c"dcp",
        }
    }
}

/// How to open a checkpoint. The default maps the file, allows every global the restricted
/// unpickler can represent, takes the whole saved object as the root, and applies the default
/// [`Limits`].
///
/// ```
/// use mmckpt::{Checkpoint, ErrorKind, OpenMode, OpenOptions};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nested.pt");
/// let options = OpenOptions {
///     mode: OpenMode::Read,         // read the file in: immune to it changing underneath
///     root: Some("model".into()),   // the table holds the tensors under "model"
///     ..OpenOptions::default()
/// };
/// let ckpt = Checkpoint::open(path, &options)?;
/// assert!(ckpt.tensor("fc.weight").is_ok());
/// // This file holds an `argparse.Namespace`: a strict open refuses it.
/// let strict = OpenOptions { strict: true, ..OpenOptions::default() };
/// assert_eq!(Checkpoint::open(path, &strict).unwrap_err().kind, ErrorKind::Unsafe);
/// # Ok::<(), mmckpt::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// How the file's bytes are brought into memory.
    pub mode: OpenMode,
    /// Fail with [`ErrorKind::Unsafe`](crate::ErrorKind::Unsafe) on any global outside the
    /// allowlist.
    pub strict: bool,
    /// Dotted path of the sub-object whose tensors form the table (`"model"`), named as the
    /// table names tensors.
    pub root: Option<String>,
    /// Every bound on the input.
    pub limits: Limits,
    /// Hand out a little-endian storage that is misaligned in the file (a legacy file's
    /// storages, say) as the mapping's own bytes instead of copying it into aligned memory on
    /// first use: its tensors' data may then be misaligned for their dtype (a `*const f32` not
    /// a multiple of 4), which callers that read unaligned (x86 loads, their own copies)
    /// accept. Big-endian storages are still copied (they must be swapped).
    pub accept_unaligned: bool,
    /// Verify the CRC-32 of every zip record the checkpoint uses (the pickle, `byteorder`, each
    /// storage the table views) while opening: a mismatch fails the open with
    /// [`ErrorKind::Format`](crate::ErrorKind::Format) naming the record and both checksums
    /// ([`Checkpoint::crc_report`] says what was checked). Reads every byte of those records.
    /// A legacy file records no checksums: the open is then refused
    /// ([`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported)).
    pub verify_crc: bool,
}

/// The name `TensorRef` had before the public API: crate code written against it still builds.
pub(crate) type TensorRef<'a> = Tensor<'a>;

/// A tensor of a checkpoint's table: its description (dtype, shape, strides, offset) and where
/// its elements are. It borrows the [`Checkpoint`]; its bytes are the mapped file's own bytes
/// whenever the storage is aligned and little-endian ([`Tensor::is_mapped`]); otherwise the
/// storage was copied into aligned memory when one of its tensors was first asked for.
///
/// ```
/// use mmckpt::{Checkpoint, DType, OpenOptions};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forms.pt");
/// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
/// let t = ckpt.tensor("transpose")?;
/// assert_eq!(t.dtype(), DType::Float32);
/// assert_eq!(t.shape().len(), 2);
/// assert!(!t.is_contiguous());
/// // The elements in row-major order: a copy, since this view is strided.
/// let row_major = t.contiguous_bytes();
/// assert_eq!(row_major.len() as u64, t.numel() * 4);
/// # Ok::<(), mmckpt::Error>(())
/// ```
#[derive(Copy, Clone)]
pub struct Tensor<'a> {
    name: &'a CStr,
    pub(crate) desc: &'a TensorDesc,
    pub(crate) storage: &'a Storage,
}

impl std::fmt::Debug for Tensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name())
            .field("dtype", &self.dtype())
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("storage_offset", &self.storage_offset())
            .finish_non_exhaustive()
    }
}

impl<'a> Tensor<'a> {
    /// Its name in the table (dotted, as `state_dict()` names it).
    pub fn name(&self) -> &'a str {
        self.name.to_str().unwrap_or("")
    }
    /// [`Tensor::name`] as a C string.
    pub fn name_c(&self) -> &'a CStr {
        self.name
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.desc.dtype
    }
    /// Sizes, outermost first (empty for a 0-d tensor).
    pub fn shape(&self) -> &'a [i64] {
        &self.desc.shape
    }
    /// Strides in elements, one per dimension (0 in an expanded dimension).
    pub fn strides(&self) -> &'a [i64] {
        &self.desc.strides
    }
    /// Offset of element [0, …, 0] in its storage, in elements.
    pub fn storage_offset(&self) -> i64 {
        self.desc.storage_offset
    }
    /// Number of elements (the product of the shape).
    pub fn numel(&self) -> u64 {
        self.desc.numel
    }
    /// Row-major contiguous (strides of size-1 dimensions do not matter).
    pub fn is_contiguous(&self) -> bool {
        self.desc.is_contiguous()
    }
    /// Saved as an `nn.Parameter`.
    pub fn is_parameter(&self) -> bool {
        self.desc.is_parameter
    }
    /// Saved with `requires_grad=True`.
    pub fn requires_grad(&self) -> bool {
        self.desc.requires_grad
    }
    /// The conjugate bit is set: the stored bytes are the conjugate of the values.
    pub fn is_conj(&self) -> bool {
        self.desc.conj
    }
    /// The negative bit is set: the stored bytes are the negation of the values.
    pub fn is_neg(&self) -> bool {
        self.desc.neg
    }
    /// Bytes from element [0, …, 0] to the end of the last reachable element (the length of
    /// [`Tensor::bytes`]; less than numel × itemsize for an expanded view).
    pub fn span_bytes(&self) -> u64 {
        self.desc.span_bytes()
    }
    /// Bytes from element [0, …, 0] to the end of the last reachable element, in storage order
    /// (strides apply; see [`Tensor::contiguous_bytes`] for row-major order).
    pub fn bytes(&self) -> &'a [u8] {
        let start = self.desc.byte_offset() as usize;
        &self.storage.bytes()[start..start + self.desc.span_bytes() as usize]
    }
    /// Address of element [0, …, 0]; valid while the checkpoint lives.
    pub fn data_ptr(&self) -> *const u8 {
        self.storage
            .bytes()
            .as_ptr()
            .wrapping_add(self.desc.byte_offset() as usize)
    }
    /// Where element [0, …, 0] is in the file, when the storage's bytes are the file's.
    pub fn file_offset(&self) -> Option<u64> {
        self.storage
            .file_offset()
            .map(|o| o + self.desc.byte_offset())
    }
    /// The elements are the mapped file's bytes (zero-copy), not a private copy (a misaligned
    /// or big-endian storage, or a file opened with [`OpenMode::Read`]).
    pub fn is_mapped(&self) -> bool {
        self.storage.is_mapped()
    }
    /// Identifies the storage: tensors that share one (tied weights, views) have equal ids.
    pub fn storage_id(&self) -> u64 {
        self.storage.id
    }
    /// The storage's key in the file (the zip record `data/<key>`, the legacy storage key).
    pub fn storage_key(&self) -> String {
        self.storage.key.to_string()
    }
    /// Bytes of the whole storage.
    pub fn storage_nbytes(&self) -> usize {
        self.storage.len()
    }
    /// The device the storage was saved from (`cpu`, `cuda:0`); the bytes are in the file
    /// whatever it says.
    pub fn location(&self) -> &'a str {
        &self.storage.location
    }
    /// The elements in row-major order, contiguous: borrowed when the view is contiguous, else
    /// a copy of numel × itemsize bytes (for an expanded view that may be far more than the
    /// file holds; [`Tensor::for_each_row_major_chunk`] streams them instead).
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
    /// Numel × itemsize: the bytes of the elements in row-major order (saturating).
    pub fn row_major_bytes(&self) -> u64 {
        self.desc
            .numel
            .saturating_mul(self.desc.dtype.itemsize() as u64)
    }
    /// Calls `f` with the elements in row-major order, in consecutive pieces of at most
    /// `chunk_bytes` bytes (at least one element), without a copy of the whole tensor: runs
    /// that are contiguous in memory are passed straight from the storage, the rest is gathered
    /// through one buffer. The pieces together are [`Tensor::row_major_bytes`] long, so the
    /// work is proportional to that, not to the file's size; bound it before calling for a
    /// tensor from an untrusted file. Stops at the first error `f` returns.
    ///
    /// ```
    /// use mmckpt::{Checkpoint, OpenOptions};
    ///
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forms.pt");
    /// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
    /// let t = ckpt.tensor("transpose")?;
    /// let mut streamed = Vec::new();
    /// t.for_each_row_major_chunk(4096, |piece| {
    ///     streamed.extend_from_slice(piece);
    ///     Ok::<(), ()>(())
    /// })
    /// .unwrap();
    /// assert_eq!(streamed, &*t.contiguous_bytes());
    /// # Ok::<(), mmckpt::Error>(())
    /// ```
    pub fn for_each_row_major_chunk<E>(
        &self,
        chunk_bytes: usize,
        f: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        crate::strided::for_each_chunk(
            self.bytes(),
            self.desc.dtype.itemsize(),
            &self.desc.shape,
            &self.desc.strides,
            chunk_bytes,
            f,
        )
    }
}

/// An open checkpoint: the mapping (shared by everything that points into it), the storages,
/// the value tree, and the flat tensor table in a stable order (the order `torch.load` yields
/// the state dict in). Immutable after open, so any number of threads may read one at once;
/// everything it hands out borrows it.
///
/// ```
/// use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nested.pt");
/// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
/// let weight = ckpt.tensor("model.fc.weight")?;
/// assert_eq!(ckpt.name_at(ckpt.index_of("model.fc.weight").unwrap()), Some(weight.name()));
/// assert_eq!(ckpt.tensor("no.such").unwrap_err().kind, ErrorKind::NotFound);
/// # Ok::<(), mmckpt::Error>(())
/// ```
pub struct Checkpoint {
    source: Arc<Source>,
    format: Format,
    /// The saved object, and the selected root in it (after `root` in the options).
    tree: ValueTree,
    storages: PageVec<Storage>,
    tensors: PageVec<TensorDesc>,
    table: Table,
    byte_order_big: bool,
    /// What the CRC check covered, when the open verified CRCs.
    crc_report: Option<CrcReport>,
    /// The tensors saved in several chunks (a distributed checkpoint's), by description.
    chunks: chunks::Chunks,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("format", &self.format)
            .field("tensors", &self.table.len())
            .field("storages", &self.storages.len())
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Opens a checkpoint file, a Hugging Face shard index (a path ending in `.index.json`,
    /// or a file starting with `{`) as one checkpoint over all its shards, or a
    /// `torch.distributed.checkpoint` directory (the directory, or its `.metadata` file) as
    /// one checkpoint over all its ranks' files.
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Checkpoint> {
        let path = path.as_ref();
        if let Some(dir) = formats::dcp::directory_of(path) {
            return formats::dcp::open_dir(&dir, options);
        }
        let source = Arc::new(Source::open(path, options.mode)?);
        if formats::sharded::is_index(path, source.bytes()) {
            source.release_file();
            return formats::sharded::open_index(path, source, options);
        }
        Checkpoint::from_source(source, options)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }

    /// Opens a checkpoint held in memory (a zip archive, legacy stream or TorchScript
    /// archive; not a shard index, whose shards are files). The bytes are copied once into
    /// aligned memory that the checkpoint owns.
    pub fn from_bytes(bytes: &[u8], options: &OpenOptions) -> Result<Checkpoint> {
        Checkpoint::from_source(Arc::new(Source::from_bytes(bytes)?), options)
    }

    pub(crate) fn from_source(source: Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
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
            class: DictClass::Dict,
        });
        let (mut storages, mut tensors, mut table) =
            (PageVec::new(), PageVec::new(), Table::default());
        let mut byte_order_big = false;
        let mut crc_report: Option<CrcReport> = None;
        for (part, keep) in parts {
            byte_order_big |= part.byte_order_big;
            if let Some(part_report) = part.crc_report {
                crc_report = Some(crc_report.unwrap_or_default().add(part_report));
            }
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
            tree: ValueTree::new(arena, root),
            storages,
            tensors,
            table,
            byte_order_big,
            crc_report,
            chunks: chunks::Chunks::default(),
        }
    }

    /// Test support (module-layer tests build checkpoints without the zip and pickle code): a
    /// checkpoint over a copy of `bytes`, treated as the file's bytes (not mapped). Storage `i`
    /// is the byte range `storages[i]` (offset, length) with file offset = its offset; each
    /// table row is a name and a description whose `storage` indexes `storages`. Views are
    /// bounds-checked (FORMAT error).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn from_parts(
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
            tree: ValueTree::new(Arena::new(), 0),
            storages: stores.into(),
            tensors: descs.into(),
            table,
            byte_order_big: false,
            crc_report: None,
            chunks: chunks::Chunks::default(),
        })
    }

    /// How the file was written.
    pub fn format(&self) -> Format {
        self.format
    }
    /// The whole file's bytes (of a shard index: the index's).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn source(&self) -> &Arc<Source> {
        &self.source
    }
    /// Tells the kernel the mapped file will be read front to back (`MADV_SEQUENTIAL`):
    /// more read-ahead. A hint; nothing for a file read in, or for a shard index's shards.
    pub fn advise_sequential(&self) {
        self.source.advise_sequential();
    }
    /// Tells the kernel the whole mapped file will be read soon (`MADV_WILLNEED`): it starts
    /// reading it in now. A hint; nothing for a file read in, or for a shard index's shards.
    pub fn advise_will_need(&self) {
        self.source.advise_will_need();
    }
    /// The file stores its data big-endian (`byteorder` record): every multi-byte storage is
    /// byte-swapped into owned memory when one of its tensors is first asked for.
    pub fn is_big_endian(&self) -> bool {
        self.byte_order_big
    }
    /// What the CRC-32 check of an open with [`OpenOptions::verify_crc`] covered (records and
    /// bytes checked, records without a CRC); `None` when the open did not verify.
    pub fn crc_report(&self) -> Option<CrcReport> {
        self.crc_report
    }
    /// Bytes read from the file with `pread` after its metadata: in
    /// [`OpenMode::PerTensor`], the storages read so far (each once, when one of its tensors
    /// was first asked for) and what a CRC check read; 0 for a mapped file. A shard index
    /// counts nothing (its shards are files of their own).
    pub fn file_bytes_read(&self) -> u64 {
        self.source.bytes_read()
    }
    /// Storages that will be copied into aligned memory when one of their tensors is first
    /// asked for (misaligned in the file, or big-endian), and are not copied yet.
    pub fn copies_pending(&self) -> usize {
        self.storages.iter().filter(|s| s.copy_pending()).count()
    }
    /// Bytes copied so far into aligned memory for misaligned or big-endian storages (each
    /// storage once, when one of its tensors was first asked for).
    pub fn copied_bytes(&self) -> u64 {
        self.storages
            .iter()
            .filter(|s| s.copy_made())
            .map(|s| s.len() as u64)
            .sum()
    }
    /// Entries in the tensor table (including those that cannot be represented).
    pub fn len(&self) -> usize {
        self.table.len()
    }
    /// The table has no entries.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }
    /// Storages the table's tensors use (tensors that share one count once).
    pub fn storage_count(&self) -> usize {
        self.storages.len()
    }
    #[cfg(test)]
    pub(crate) fn storages(&self) -> &[Storage] {
        &self.storages
    }
    /// The saved object's value tree and the selected root in it. A plain state dict's tree is
    /// built from its pickle now, on first use (see [`ValueTree`]).
    pub(crate) fn tree(&self) -> Result<(&Arena, NodeId)> {
        self.tree.get(&self.source)
    }
    /// Whether the table was read straight from a plain state dict (its value tree built on
    /// first use).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn read_plain(&self) -> bool {
        self.tree.deferred.is_some()
    }
    /// Lets the value tree go (a shard whose table is joined into another checkpoint's).
    pub(crate) fn drop_tree(&mut self) {
        self.tree = ValueTree::new(Arena::new(), 0);
    }

    /// The name of entry `index`, even when the tensor itself cannot be represented.
    pub fn name_at(&self, index: usize) -> Option<&str> {
        // Names hold no NUL (the table writes one as `\x00`): the text is the C name's.
        (index < self.table.len()).then(|| self.table.name_str(index))
    }
    /// [`Checkpoint::name_at`] as a C string.
    pub fn name_c_at(&self, index: usize) -> Option<&CStr> {
        self.table.name_c(index)
    }

    /// The tensor of entry `index` (in table order): `NotFound` past the end, and the entry's
    /// own error (`Unsupported` for a sparse or quantized tensor, say) when it cannot be
    /// represented.
    pub fn tensor_at(&self, index: usize) -> Result<Tensor<'_>> {
        let t = self.tensor_at_unready(index)?;
        // A misaligned or big-endian storage is copied now, on its first use.
        t.storage
            .make_ready()
            .map_err(|e| e.context(format!("tensor '{}'", t.name())))?;
        Ok(t)
    }

    /// [`Checkpoint::tensor_at`] without making its storage's deferred copy: until it is made,
    /// [`Tensor::bytes`] are the file's (misaligned, or big-endian). For the writer, which
    /// streams such storages through [`Storage::for_each_usable_piece`] instead of keeping a
    /// copy of each.
    pub(crate) fn tensor_at_unready(&self, index: usize) -> Result<Tensor<'_>> {
        let (Some(row), Some(name)) = (self.table.row(index), self.table.name_c(index)) else {
            return Err(Error::not_found(format!(
                "tensor index {index} is out of range (the table has {} tensors)",
                self.table.len()
            )));
        };
        match self.table.tensor(row) {
            Ok(t) => {
                let desc = &self.tensors[t];
                let storage = &self.storages[desc.storage];
                // A tensor saved in chunks is assembled now, on its first use (also for the
                // writer: the assembled bytes exist nowhere else).
                if storage.assembly_pending() {
                    self.assemble(t, name).map_err(|e| {
                        e.context(format!("tensor '{}'", name.to_str().unwrap_or("")))
                    })?;
                }
                Ok(Tensor {
                    name,
                    desc,
                    storage,
                })
            }
            Err(e) => Err(e.clone()),
        }
    }

    /// The index of the first entry named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.table.find(name)
    }

    /// The tensor named `name` (the first entry of that name): `NotFound` when there is none.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        let index = self
            .index_of(name)
            .ok_or_else(|| Error::not_found(format!("no tensor named '{name}'")))?;
        self.tensor_at(index)
    }

    /// Every table row: name and tensor (or the reason it cannot be represented).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Result<Tensor<'_>>)> + '_ {
        (0..self.table.len()).map(|i| (self.name_at(i).unwrap_or(""), self.tensor_at(i)))
    }
}

/// The saved object's value tree. Built at open, except for a plain state dict, whose table is
/// read straight from its pickle (`plain`): its tree is built from the same bytes on first use
/// (the values API, the writer), with the limits of the open. Building it then gives what the
/// open would have built; an error says why it could not (the file changed since the open).
pub(crate) struct ValueTree {
    built: std::sync::OnceLock<Result<(Arena, NodeId)>>,
    /// For a tree not built yet: where the pickle is in the source's bytes, and the limits.
    deferred: Option<(std::ops::Range<usize>, crate::pickle::PickleLimits)>,
}

impl ValueTree {
    pub(crate) fn new(arena: Arena, root: NodeId) -> ValueTree {
        ValueTree {
            built: std::sync::OnceLock::from(Ok((arena, root))),
            deferred: None,
        }
    }

    /// A tree to build on first use from `source.bytes()[pickle]` (the saved object is its
    /// root).
    pub(crate) fn deferred(
        pickle: std::ops::Range<usize>,
        limits: crate::pickle::PickleLimits,
    ) -> ValueTree {
        ValueTree {
            built: std::sync::OnceLock::new(),
            deferred: Some((pickle, limits)),
        }
    }

    fn get(&self, source: &Source) -> Result<(&Arena, NodeId)> {
        let built = self.built.get_or_init(|| {
            let (range, limits) = self
                .deferred
                .as_ref()
                .expect("a tree not built is deferred");
            let bytes = source.bytes().get(range.clone()).ok_or_else(|| {
                Error::format("data.pkl is no longer within the file (it changed since the open)")
            })?;
            let mut arena = Arena::new();
            arena.reserve((bytes.len() / 5).min(limits.max_nodes));
            let (root, _) = crate::pickle::load(&mut arena, bytes, limits)
                .map_err(|e| e.context("data.pkl (read again for its values)"))?;
            Ok((arena, root))
        });
        match built {
            Ok((arena, root)) => Ok((arena, *root)),
            Err(e) => Err(e.clone()),
        }
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
    resolver.finish_references(&arena)?;
    let (mut storages, swap_units) = resolver.into_storages();
    fix_storages(
        &mut storages,
        &swap_units,
        &tensors,
        byte_order_big,
        options.accept_unaligned,
    )?;
    Ok(Checkpoint {
        source,
        format,
        tree: ValueTree::new(arena, root),
        storages,
        tensors,
        table,
        byte_order_big,
        crc_report: None,
        chunks: chunks::Chunks::default(),
    })
}

/// Most refused globals a strict open's error names (a file may hold thousands).
const MAX_NAMED_GLOBALS: usize = 4;

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

pub(crate) fn check_globals(arena: &Arena) -> Result<()> {
    // Every refused global is named (up to a few), not only the first: an attack usually
    // reaches its payload (`os.system`) through a helper torch refuses too
    // (`copyreg._reconstructor`), and the payload is what a reader needs to see.
    let mut refused: Vec<String> = Vec::new();
    let mut foreign_pid = false;
    for id in 0..arena.len() as NodeId {
        match arena.get(id) {
            Value::Global { module, name } if !torch::is_allowed_global(module, name) => {
                // Named as the pickle wrote it (`__builtin__.eval`, read as `builtins.eval`).
                let global = match arena.written_name(id) {
                    Some(written) => written.to_string(),
                    None => format!("{module}.{name}"),
                };
                if !refused.contains(&global) && refused.len() < MAX_NAMED_GLOBALS {
                    refused.push(global);
                }
            }
            // torch.load rejects every persistent id that is not a ('storage', …) tuple; a
            // strict open does too, rather than keep an unknown reference in the tree.
            Value::PersistentId(pid) => {
                let tag = arena.as_seq(*pid).and_then(|t| t.first().copied());
                foreign_pid |= tag.and_then(|t| arena.as_str(t)) != Some("storage");
            }
            _ => {}
        }
    }
    match refused.as_slice() {
        [] if foreign_pid => Err(Error::unsafe_global(
            "a persistent id is not a ('storage', …) tuple; a strict open allows only storage \
             references",
        )),
        [] => Ok(()),
        [global] => Err(Error::unsafe_global(format!(
            "global '{global}' is not on the allowlist of a strict open"
        ))),
        globals => {
            let names: Vec<String> = globals.iter().map(|g| format!("'{g}'")).collect();
            Err(Error::unsafe_global(format!(
                "globals {} are not on the allowlist of a strict open",
                names.join(", ")
            )))
        }
    }
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
