//! `torch.distributed.checkpoint` (DCP) directories, as torch 2.15's `FileSystemWriter`
//! writes them: a `.metadata` file and one or more `.distcp` files (`__<rank>_<n>.distcp`),
//! opened as one checkpoint.
//!
//! `.metadata` is a pickle of `torch.distributed.checkpoint.metadata.Metadata` (torch reads it
//! with plain `pickle.load`, `filesystem.py` `read_metadata`): `state_dict_metadata` maps each
//! item's name to a `TensorStorageMetadata` (`properties.dtype`, the global `size`, `chunks`:
//! `ChunkStorageMetadata(offsets, sizes)`) or a `BytesStorageMetadata`; `storage_data` maps
//! `MetadataIndex(fqn, offset)` to `_StorageInfo(relative_path, offset, length)`. The restricted
//! pickle machine reads it; nothing is constructed: the dataclass NEWOBJ/BUILD nodes are read
//! as they are, at fixed depths (no recursion on the input). A `.distcp` file is the items'
//! records back to back: each tensor chunk a whole `torch.save` zip archive of the chunk
//! (which torch loads with `weights_only=True`), each non-tensor item a `torch.save` archive of
//! the object (`default_planner.py`, `transform_object`; torch loads it with
//! `weights_only=False`).
//!
//! The table holds every tensor once, with its global shape: a tensor saved as one chunk that
//! covers it is that chunk (a view into the mapped file); one saved in several is assembled
//! by copy on first use (`chunks.rs`), and its chunks are views. Non-tensor items are values.
//!
//! Not read (refused, naming what): the safetensors layout (`SerializationFormat.SAFETENSORS`),
//! stream transforms (`_StorageInfo.transform_descriptors`, the experimental extensions),
//! rank-local `__<rank>.metadata` files without a `.metadata`.

use crate::checkpoint::chunks::{whole_tensor, Chunk, Chunks};
use crate::checkpoint::storage::{fix_little_endian_storages, Locations, Storage, StorageKey};
use crate::checkpoint::table::Table;
use crate::checkpoint::{check_globals, Checkpoint, Format, OpenOptions};
use crate::container::zip::{self, ZipArchive};
use crate::container::{OpenMode, Source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::hash::HashMap;
use crate::pickle::{self, Arena, NodeId, Value};
use crate::torch::{self, Interpreted, StorageId, StorageResolver, TensorDesc, MAX_NDIM};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

const METADATA_MODULE: &str = "torch.distributed.checkpoint.metadata";
const FILESYSTEM_MODULE: &str = "torch.distributed.checkpoint.filesystem";

/// The directory to open as a distributed checkpoint, when `path` is one (a directory, or a
/// file named `.metadata`).
pub fn directory_of(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return Some(path.to_path_buf());
    }
    if path.file_name()? == ".metadata" {
        return Some(match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
    }
    None
}

/// The globals a strict open accepts in `.metadata`: torch's weights-only allowlist plus the
/// classes DCP pickles there (its dataclasses, `_StorageInfo`, and `pathlib` paths: a
/// `checkpoint_id` given as a `Path` is pickled in `storage_meta`).
pub fn is_allowed_metadata_global(module: &str, name: &str) -> bool {
    torch::is_allowed_global(module, name)
        || match module {
            METADATA_MODULE => matches!(
                name,
                "Metadata"
                    | "TensorStorageMetadata"
                    | "BytesStorageMetadata"
                    | "ChunkStorageMetadata"
                    | "TensorProperties"
                    | "MetadataIndex"
                    | "StorageMeta"
                    | "_MEM_FORMAT_ENCODING"
            ),
            FILESYSTEM_MODULE => name == "_StorageInfo",
            "pathlib" => matches!(name, "PosixPath" | "PurePosixPath"),
            _ => false,
        }
}

/// Opens the DCP directory `dir`.
pub fn open_dir(dir: &Path, options: &OpenOptions) -> Result<Checkpoint> {
    let shown = dir.display();
    open_dir_inner(dir, options)
        .map_err(|e| e.context(format!("torch.distributed.checkpoint directory '{shown}'")))
}

fn open_dir_inner(dir: &Path, options: &OpenOptions) -> Result<Checkpoint> {
    if options.verify_crc {
        return Err(Error::unsupported(
            "CRC verification of a distributed checkpoint's archives is not supported",
        ));
    }
    if options.root.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err(Error::unsupported(
            "a root is not supported for a distributed checkpoint (its items are flat names)",
        ));
    }
    let mode = match options.mode {
        OpenMode::PerTensor => {
            return Err(Error::unsupported(
                "per-tensor reads (MMCKPT_OPEN_PREAD) are not supported for a distributed \
                 checkpoint",
            ))
        }
        OpenMode::Auto => OpenMode::Map,
        mode => mode,
    };
    let meta_path = dir.join(".metadata");
    if !meta_path.exists() && dir.join("__0.metadata").exists() {
        return Err(Error::unsupported(
            "it has rank-local '__<rank>.metadata' files and no '.metadata' (a save without \
             rank coordination): not supported",
        ));
    }
    let meta = Arc::new(Source::open(&meta_path, OpenMode::Read).map_err(|e| {
        e.context("its '.metadata' file (not a torch.distributed.checkpoint directory?)")
    })?);
    meta.release_file();
    if meta.bytes().len() as u64 > options.limits.max_pickle_bytes {
        return Err(Error::limit(format!(
            "'.metadata' is {} bytes; the limit is {} (max_pickle_bytes)",
            meta.bytes().len(),
            options.limits.max_pickle_bytes
        )));
    }
    let mut arena = Arena::new();
    let (top, _) = pickle::load(&mut arena, meta.bytes(), &options.limits.pickle)
        .map_err(|e| e.context("'.metadata'"))?;
    if options.strict {
        check_metadata_globals(&arena)?;
    }
    let metadata = read_metadata(&arena, top, &options.limits)?;
    let mut reader = Reader {
        dir,
        options,
        mode,
        files: HashMap::default(),
        storages: Vec::new(),
        tensors: Vec::new(),
        table: Table::default(),
        chunks: Chunks::default(),
        locations: Locations::default(),
        values: Arena::new(),
        value_items: Vec::new(),
    };
    let root = reader.values.push(Value::Dict {
        items: Vec::new(),
        state: None,
        class: pickle::DictClass::Dict,
    });
    for item in &metadata.items {
        match &item.kind {
            ItemKind::Tensor {
                dtype,
                size,
                chunks,
            } => reader.add_tensor(&metadata, item.fqn, *dtype, size, chunks)?,
            ItemKind::Bytes => reader.add_bytes(&metadata, item.fqn)?,
        }
    }
    if reader.table.len() > options.limits.table.max_tensors {
        return Err(Error::limit(format!(
            "{} tensors; the limit is {} (max_tensors)",
            reader.table.len(),
            options.limits.table.max_tensors
        )));
    }
    if options.strict {
        check_globals(&reader.values)?;
    }
    let Reader {
        mut storages,
        tensors,
        table,
        chunks,
        mut values,
        value_items,
        ..
    } = reader;
    if let Value::Dict { items, .. } = values.get_mut(root) {
        *items = value_items;
    }
    fix_little_endian_storages(&mut storages, &tensors, options.accept_unaligned)?;
    Ok(Checkpoint {
        source: meta,
        format: Format::Dcp,
        tree: crate::checkpoint::ValueTree::new(values, root),
        storages: storages.into(),
        tensors: tensors.into(),
        table,
        byte_order_big: false,
        crc_report: None,
        chunks,
    })
}

fn check_metadata_globals(arena: &Arena) -> Result<()> {
    for id in 0..arena.len() as NodeId {
        if let Value::Global { module, name } = arena.get(id) {
            if !is_allowed_metadata_global(module, name) {
                return Err(Error::unsafe_global(format!(
                    "'.metadata': global '{module}.{name}' is not on the allowlist of a strict \
                     open (torch's weights-only globals and DCP's metadata classes)"
                )));
            }
        }
    }
    Ok(())
}

/// What `.metadata` says, read out of the pickle's tree.
struct Metadata<'a> {
    items: Vec<Item<'a>>,
    /// `(fqn, chunk offsets)` → where its record is; `None` offsets for a bytes item.
    storage: HashMap<(&'a str, Option<Vec<i64>>), StorageInfo<'a>>,
}

struct Item<'a> {
    fqn: &'a str,
    kind: ItemKind,
}

enum ItemKind {
    Tensor {
        dtype: DType,
        size: Vec<i64>,
        chunks: Vec<(Vec<i64>, Vec<i64>)>,
    },
    Bytes,
}

struct StorageInfo<'a> {
    relative_path: &'a str,
    offset: u64,
    length: u64,
}

/// The class `(module, name)` of an object node.
fn class_of(arena: &Arena, node: NodeId) -> Option<(&str, &str)> {
    match arena.get(node) {
        Value::Object { callable, .. } => arena.global_name(*callable),
        _ => None,
    }
}

/// The BUILD state of an object node: a dict's items (or a `(dict, slots)` tuple's dict).
fn attrs(arena: &Arena, node: NodeId) -> &[(NodeId, NodeId)] {
    let Value::Object {
        state: Some(state), ..
    } = arena.get(node)
    else {
        return &[];
    };
    let state = match arena.get(*state) {
        Value::Tuple(t) if t.len() == 2 => t[0],
        _ => *state,
    };
    match arena.get(state) {
        Value::Dict { items, .. } => items,
        _ => &[],
    }
}

fn attr(arena: &Arena, node: NodeId, name: &str) -> Option<NodeId> {
    attrs(arena, node)
        .iter()
        .find(|&&(k, _)| arena.as_str(k) == Some(name))
        .map(|&(_, v)| v)
}

fn expect_class(arena: &Arena, node: NodeId, module: &str, name: &str, what: &str) -> Result<()> {
    match class_of(arena, node) {
        Some((m, n)) if m == module && n == name => Ok(()),
        Some((m, n)) => Err(Error::format(format!(
            "{what} is a '{m}.{n}', not a '{module}.{name}'"
        ))),
        None => Err(Error::format(format!(
            "{what} is a {}, not a '{module}.{name}'",
            arena.get(node).type_name()
        ))),
    }
}

/// A `torch.Size` (or a plain tuple or list) of ints.
fn ints(arena: &Arena, node: NodeId, what: &str) -> Result<Vec<i64>> {
    let node = match arena.get(node) {
        Value::Object { callable, args, .. }
            if arena.global_name(*callable) == Some(("torch", "Size")) =>
        {
            arena
                .as_seq(*args)
                .and_then(|a| a.first().copied())
                .ok_or_else(|| Error::format(format!("{what}: torch.Size without arguments")))?
        }
        _ => node,
    };
    let items = arena
        .as_seq(node)
        .ok_or_else(|| Error::format(format!("{what} is not a tuple of ints")))?;
    if items.len() > MAX_NDIM {
        return Err(Error::limit(format!(
            "{what} has {} dimensions; the limit is {MAX_NDIM}",
            items.len()
        )));
    }
    items
        .iter()
        .map(|&i| match arena.as_int(i) {
            Some(v) if v >= 0 => Ok(v),
            Some(v) => Err(Error::format(format!("{what} holds a negative value {v}"))),
            None => Err(Error::format(format!(
                "{what} holds a value that is not an int"
            ))),
        })
        .collect()
}

fn read_metadata<'a>(
    arena: &'a Arena,
    top: NodeId,
    limits: &crate::checkpoint::Limits,
) -> Result<Metadata<'a>> {
    expect_class(arena, top, METADATA_MODULE, "Metadata", "'.metadata'")?;
    let sdm = attr(arena, top, "state_dict_metadata")
        .ok_or_else(|| Error::format("'.metadata' has no state_dict_metadata"))?;
    let Value::Dict { items: entries, .. } = arena.get(sdm) else {
        return Err(Error::format(
            "'.metadata': state_dict_metadata is not a dict",
        ));
    };
    let mut total_chunks = 0usize;
    let mut items = Vec::with_capacity(entries.len());
    for &(key, value) in entries {
        let fqn = arena
            .as_str(key)
            .ok_or_else(|| Error::format("'.metadata': a state_dict_metadata key is not a str"))?;
        let what = format!("'.metadata' item '{fqn}'");
        let kind = match class_of(arena, value) {
            Some((METADATA_MODULE, "BytesStorageMetadata")) => ItemKind::Bytes,
            Some((METADATA_MODULE, "TensorStorageMetadata")) => {
                let properties = attr(arena, value, "properties")
                    .ok_or_else(|| Error::format(format!("{what} has no properties")))?;
                let dtype_node = match arena.get(properties) {
                    Value::Object {
                        state: Some(state), ..
                    } => match arena.as_seq(*state) {
                        Some(fields) => fields.first().copied(),
                        None => attr(arena, properties, "dtype"),
                    },
                    _ => None,
                }
                .ok_or_else(|| Error::format(format!("{what}: properties has no dtype")))?;
                let dtype = match arena.global_name(dtype_node) {
                    Some(("torch", name)) => DType::from_name(name).ok_or_else(|| {
                        Error::unsupported(format!("{what} has dtype torch.{name}"))
                    })?,
                    _ => return Err(Error::format(format!("{what}: dtype is not a torch dtype"))),
                };
                let size = ints(
                    arena,
                    attr(arena, value, "size")
                        .ok_or_else(|| Error::format(format!("{what} has no size")))?,
                    &format!("{what}: size"),
                )?;
                let chunk_list = attr(arena, value, "chunks")
                    .and_then(|c| arena.as_seq(c))
                    .ok_or_else(|| Error::format(format!("{what} has no list of chunks")))?;
                if chunk_list.len() > limits.max_chunks_per_tensor {
                    return Err(Error::limit(format!(
                        "{what} has {} chunks; the limit is {} (max_chunks_per_tensor)",
                        chunk_list.len(),
                        limits.max_chunks_per_tensor
                    )));
                }
                total_chunks += chunk_list.len();
                if total_chunks > limits.max_chunks {
                    return Err(Error::limit(format!(
                        "'.metadata' lists more than {} chunks (max_chunks)",
                        limits.max_chunks
                    )));
                }
                let mut chunks = Vec::with_capacity(chunk_list.len());
                for (i, &chunk) in chunk_list.iter().enumerate() {
                    let cwhat = format!("{what} chunk {i}");
                    expect_class(
                        arena,
                        chunk,
                        METADATA_MODULE,
                        "ChunkStorageMetadata",
                        &cwhat,
                    )?;
                    let field = |name: &str| {
                        attr(arena, chunk, name)
                            .ok_or_else(|| Error::format(format!("{cwhat} has no {name}")))
                            .and_then(|n| ints(arena, n, &format!("{cwhat}: {name}")))
                    };
                    chunks.push((field("offsets")?, field("sizes")?));
                }
                ItemKind::Tensor {
                    dtype,
                    size,
                    chunks,
                }
            }
            Some((m, n)) => {
                return Err(Error::unsupported(format!(
                    "{what} is described by a '{m}.{n}'"
                )))
            }
            None => {
                return Err(Error::format(format!(
                    "{what} is described by a {}",
                    arena.get(value).type_name()
                )))
            }
        };
        items.push(Item { fqn, kind });
    }
    let sd = attr(arena, top, "storage_data")
        .ok_or_else(|| Error::format("'.metadata' has no storage_data"))?;
    let Value::Dict { items: infos, .. } = arena.get(sd) else {
        return Err(Error::format(
            "'.metadata': storage_data is not a dict (a storage layout other than \
             FileSystemWriter's)",
        ));
    };
    if infos.len() > limits.max_chunks.saturating_add(items.len()) {
        return Err(Error::limit(format!(
            "'.metadata' lists {} storage records (max_chunks)",
            infos.len()
        )));
    }
    let mut storage = HashMap::default();
    storage.reserve(infos.len());
    for &(key, value) in infos {
        expect_class(
            arena,
            key,
            METADATA_MODULE,
            "MetadataIndex",
            "a storage_data key",
        )?;
        let fqn = attr(arena, key, "fqn")
            .and_then(|f| arena.as_str(f))
            .ok_or_else(|| Error::format("a storage_data key has no fqn"))?;
        let what = format!("'.metadata' storage record of '{fqn}'");
        let offset = match attr(arena, key, "offset") {
            Some(o) if !matches!(arena.get(o), Value::None) => {
                Some(ints(arena, o, &format!("{what}: offset"))?)
            }
            _ => None,
        };
        expect_class(arena, value, FILESYSTEM_MODULE, "_StorageInfo", &what)?;
        if attr(arena, value, "transform_descriptors")
            .and_then(|t| arena.as_seq(t))
            .is_some_and(|t| !t.is_empty())
        {
            return Err(Error::unsupported(format!(
                "{what} was written through stream transforms (transform_descriptors, DCP's \
                 extensions): not supported"
            )));
        }
        let relative_path = attr(arena, value, "relative_path")
            .and_then(|p| arena.as_str(p))
            .ok_or_else(|| Error::format(format!("{what} has no relative_path")))?;
        let int = |name: &str| match attr(arena, value, name).and_then(|n| arena.as_int(n)) {
            Some(v) if v >= 0 => Ok(v as u64),
            _ => Err(Error::format(format!(
                "{what} has no {name} (a non-negative int)"
            ))),
        };
        storage.insert(
            (fqn, offset),
            StorageInfo {
                relative_path,
                offset: int("offset")?,
                length: int("length")?,
            },
        );
    }
    Ok(Metadata { items, storage })
}

/// Checks that `chunks` tile `size` exactly: each inside it, no two overlapping, and together
/// as many elements as the tensor has.
fn check_tiling(fqn: &str, size: &[i64], chunks: &[(Vec<i64>, Vec<i64>)]) -> Result<()> {
    let numel = element_count(size).ok_or_else(|| {
        Error::format(format!(
            "tensor '{fqn}' of shape {size:?} has more than 2^64 elements"
        ))
    })?;
    let mut covered: u128 = 0;
    for (i, (offsets, sizes)) in chunks.iter().enumerate() {
        if offsets.len() != size.len() || sizes.len() != size.len() {
            return Err(Error::format(format!(
                "tensor '{fqn}' of shape {size:?}: chunk {i} (offsets {offsets:?}, sizes \
                 {sizes:?}) has another number of dimensions"
            )));
        }
        if offsets
            .iter()
            .zip(sizes)
            .zip(size)
            .any(|((&o, &s), &g)| o.checked_add(s).map_or(true, |end| end > g))
        {
            return Err(Error::format(format!(
                "tensor '{fqn}' of shape {size:?}: chunk {i} (offsets {offsets:?}, sizes \
                 {sizes:?}) reaches past the tensor"
            )));
        }
        // Inside the tensor: at most its element count, which fits in 64 bits.
        covered += u128::from(element_count(sizes).unwrap_or(u64::MAX));
    }
    for (i, (oi, si)) in chunks.iter().enumerate() {
        let empty = |s: &[i64]| s.contains(&0);
        if empty(si) {
            continue;
        }
        for (j, (oj, sj)) in chunks.iter().enumerate().skip(i + 1) {
            if empty(sj) {
                continue;
            }
            let overlap = (0..size.len()).all(|d| oi[d] < oj[d] + sj[d] && oj[d] < oi[d] + si[d]);
            if overlap {
                return Err(Error::format(format!(
                    "tensor '{fqn}' of shape {size:?}: chunks {i} (offsets {oi:?}, sizes \
                     {si:?}) and {j} (offsets {oj:?}, sizes {sj:?}) overlap"
                )));
            }
        }
    }
    let numel = u128::from(numel);
    if covered != numel {
        return Err(Error::format(format!(
            "the chunks of tensor '{fqn}' do not tile its shape {size:?}: they cover \
             {covered} of its {numel} elements"
        )));
    }
    Ok(())
}

/// The product of non-negative sizes, `None` past 64 bits.
fn element_count(sizes: &[i64]) -> Option<u64> {
    sizes
        .iter()
        .try_fold(1u64, |n, &s| n.checked_mul(u64::try_from(s).ok()?))
}

struct Reader<'d> {
    dir: &'d Path,
    options: &'d OpenOptions,
    mode: OpenMode,
    files: HashMap<String, Arc<Source>>,
    storages: Vec<Storage>,
    tensors: Vec<TensorDesc>,
    table: Table,
    chunks: Chunks,
    locations: Locations,
    values: Arena,
    value_items: Vec<(NodeId, NodeId)>,
}

impl Reader<'_> {
    /// The `.distcp` file `relative_path` (opened once), refusing a path that is not a plain
    /// file name inside the directory.
    fn file(&mut self, relative_path: &str) -> Result<Arc<Source>> {
        if let Some(source) = self.files.get(relative_path) {
            return Ok(source.clone());
        }
        let plain = matches!(
            Path::new(relative_path)
                .components()
                .collect::<Vec<_>>()
                .as_slice(),
            [Component::Normal(_)]
        ) && !relative_path.contains(['/', '\\', '\0']);
        if !plain {
            return Err(Error::format(format!(
                "storage file '{relative_path}' is not a plain file name inside the directory"
            )));
        }
        if self.files.len() == self.options.limits.max_shards {
            return Err(Error::limit(format!(
                "more than {} storage files (max_shards)",
                self.options.limits.max_shards
            )));
        }
        let path = self.dir.join(relative_path);
        let source = Arc::new(Source::open(&path, self.mode).map_err(|e| {
            e.context(format!(
                "storage file '{relative_path}' named by '.metadata' (missing .distcp file?)"
            ))
        })?);
        source.release_file();
        self.files.insert(relative_path.to_string(), source.clone());
        Ok(source)
    }

    /// The record of `(fqn, offsets)`: its file, and its bytes' range checked against it.
    fn record(
        &mut self,
        metadata: &Metadata<'_>,
        fqn: &str,
        offsets: Option<&[i64]>,
        what: &str,
    ) -> Result<(Arc<Source>, usize, usize, String)> {
        let info = metadata
            .storage
            .get(&(fqn, offsets.map(<[i64]>::to_vec)))
            .ok_or_else(|| {
                Error::format(format!("{what}: '.metadata' has no storage record for it"))
            })?;
        let source = self.file(info.relative_path)?;
        let file_len = source.bytes().len() as u64;
        let end = info.offset.checked_add(info.length);
        if end.map_or(true, |end| end > file_len) {
            return Err(Error::format(format!(
                "{what}: its record (offset {}, length {}) lies outside '{}' ({file_len} bytes)",
                info.offset, info.length, info.relative_path
            )));
        }
        let at = format!("'{}' at offset {}", info.relative_path, info.offset);
        Ok((source, info.offset as usize, info.length as usize, at))
    }

    /// The zip archive of one record, and its parsed `data.pkl`.
    fn archive(
        &self,
        source: &Source,
        start: usize,
        len: usize,
        what: &str,
        arena: &mut Arena,
    ) -> Result<(ZipArchive, NodeId)> {
        let bytes = &source.bytes()[start..start + len];
        if !zip::looks_like_zip(bytes) {
            if crate::checkpoint::formats::safetensors::looks_like_safetensors(source.bytes()) {
                return Err(Error::unsupported(format!(
                    "{what}: the file is a safetensors file (DCP's \
                     SerializationFormat.SAFETENSORS layout), which is not supported"
                )));
            }
            return Err(Error::format(format!(
                "{what}: the record is not a torch.save archive"
            )));
        }
        let archive = zip::parse_with(bytes, &self.options.limits.zip, None)
            .map_err(|e| e.context(what.to_string()))?;
        let pkl = archive
            .get("data.pkl")
            .ok_or_else(|| Error::format(format!("{what}: the archive has no data.pkl")))?;
        let pickle_bytes = archive
            .data(bytes, pkl)
            .map_err(|e| e.context(what.to_string()))?;
        let (top, _) = pickle::load(arena, pickle_bytes, &self.options.limits.pickle)
            .map_err(|e| e.context(format!("{what}: data.pkl")))?;
        Ok((archive, top))
    }

    fn add_bytes(&mut self, metadata: &Metadata<'_>, fqn: &str) -> Result<()> {
        let what = format!("item '{fqn}'");
        let (source, start, len, at) = self.record(metadata, fqn, None, &what)?;
        let what = format!("{what} ({at})");
        let mut values = std::mem::take(&mut self.values);
        let loaded = self.archive(&source, start, len, &what, &mut values);
        self.values = values;
        let (_, top) = loaded?;
        let key = self.values.store_str(fqn);
        let key = self.values.push(Value::Str(key));
        self.value_items.push((key, top));
        Ok(())
    }

    fn add_tensor(
        &mut self,
        metadata: &Metadata<'_>,
        fqn: &str,
        dtype: DType,
        size: &[i64],
        chunks: &[(Vec<i64>, Vec<i64>)],
    ) -> Result<()> {
        check_tiling(fqn, size, chunks)?;
        let mut parts = Vec::with_capacity(chunks.len());
        for (offsets, sizes) in chunks {
            let what = format!("tensor '{fqn}' chunk at offsets {offsets:?}");
            let (source, start, len, at) = self.record(metadata, fqn, Some(offsets), &what)?;
            let what = format!("{what} ({at})");
            let desc = self.chunk_tensor(&source, start, len, &what)?;
            if desc.dtype != dtype {
                return Err(Error::format(format!(
                    "{what}: '.metadata' says {}, the saved tensor is {}",
                    dtype.name(),
                    desc.dtype.name()
                )));
            }
            if *desc.shape != **sizes {
                return Err(Error::format(format!(
                    "{what}: '.metadata' says sizes {sizes:?}, the saved tensor has shape {:?}",
                    &*desc.shape
                )));
            }
            parts.push(Chunk {
                offsets: offsets.as_slice().into(),
                tensor: self.tensors.len(),
            });
            self.tensors.push(desc);
        }
        let whole_chunk = match parts.as_slice() {
            [only] if self.tensors[only.tensor].shape[..] == *size => Some(only.tensor),
            _ => None,
        };
        let index = match whole_chunk {
            Some(t) => t,
            None => {
                // Tiling checked the element count fits in 64 bits.
                let bytes = element_count(size)
                    .and_then(|numel| numel.checked_mul(dtype.itemsize() as u64))
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or_else(|| {
                        Error::format(format!("tensor '{fqn}' of shape {size:?} overflows"))
                    })?;
                let location = self.locations.intern("cpu");
                let storage = self.storages.len();
                self.storages
                    .push(Storage::assembled(StorageKey::new(fqn), location, bytes)?);
                let base = parts
                    .first()
                    .map(|c| self.tensors[c.tensor].clone())
                    .unwrap_or_else(|| empty_desc(dtype));
                let t = self.tensors.len();
                self.tensors.push(whole_tensor(&base, size, storage));
                self.chunks.insert(t, parts);
                t
            }
        };
        self.table.push(fqn, Ok(index));
        Ok(())
    }

    /// The tensor one chunk's record holds: its description over storages of the file.
    fn chunk_tensor(
        &mut self,
        source: &Arc<Source>,
        start: usize,
        len: usize,
        what: &str,
    ) -> Result<TensorDesc> {
        let mut arena = Arena::new();
        let (archive, top) = self.archive(source, start, len, what, &mut arena)?;
        if self.options.strict {
            check_globals(&arena).map_err(|e| e.context(what.to_string()))?;
        }
        let mut resolver = ItemStorages {
            source,
            archive: &archive,
            base: start,
            storages: &mut self.storages,
            keys: Vec::new(),
            locations: &mut self.locations,
            what,
        };
        match torch::interpret(&arena, top, &mut resolver) {
            Some(Interpreted::Tensor(desc)) => {
                let storage = &self.storages[desc.storage];
                torch::check_bounds(&desc, storage.len() as u64, &storage.key.to_string())
                    .map_err(|e| e.context(what.to_string()))?;
                Ok(desc)
            }
            Some(Interpreted::Unsupported(e)) => Err(e.context(what.to_string())),
            None => Err(Error::format(format!(
                "{what}: the record holds a {}, not a tensor",
                arena.get(top).type_name()
            ))),
        }
    }
}

/// A description for an empty tensor no rank saved a chunk of (the whole is assembled empty).
fn empty_desc(dtype: DType) -> TensorDesc {
    TensorDesc {
        dtype,
        shape: Vec::new().into(),
        strides: Vec::new().into(),
        storage_offset: 0,
        numel: 1,
        storage: 0,
        requires_grad: false,
        is_parameter: false,
        conj: false,
        neg: false,
    }
}

/// The storages of one record's archive: `data/<key>` records at `base` in the file.
struct ItemStorages<'a> {
    source: &'a Arc<Source>,
    archive: &'a ZipArchive,
    base: usize,
    storages: &'a mut Vec<Storage>,
    keys: Vec<(String, usize)>,
    locations: &'a mut Locations,
    what: &'a str,
}

impl StorageResolver for ItemStorages<'_> {
    fn resolve(&mut self, _persistent: NodeId, id: &StorageId<'_>) -> Result<(usize, u64)> {
        if let Some(&(_, index)) = self.keys.iter().find(|(k, _)| **k == *id.key) {
            return Ok((index, self.storages[index].len() as u64));
        }
        if self.keys.len() >= 64 {
            return Err(Error::limit(format!(
                "{}: more than 64 storages in one chunk's archive",
                self.what
            )));
        }
        let mut record = self.archive.storage_record(&id.key).ok_or_else(|| {
            Error::format(format!(
                "{}: the archive has no record for storage '{}'",
                self.what, id.key
            ))
        })?;
        let declared = id.declared_bytes().unwrap_or(u64::MAX);
        if declared != record.uncompressed_size {
            return Err(Error::format(format!(
                "{}: storage '{}' is referenced as {} of {declared} bytes, but its record \
                 holds {} bytes",
                self.what,
                id.key,
                id.class_name(),
                record.uncompressed_size
            )));
        }
        record.data_offset += self.base as u64;
        let key = StorageKey::Text(format!("{}/{}", self.what, id.key).into());
        let location = self.locations.intern(id.location);
        let index = self.storages.len();
        let size = record.uncompressed_size;
        self.storages
            .push(Storage::of_record(key, location, self.source, record));
        self.keys.push((id.key.to_string(), index));
        Ok((index, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiling() {
        let c = |o: &[i64], s: &[i64]| (o.to_vec(), s.to_vec());
        assert!(check_tiling("t", &[4, 6], &[c(&[0, 0], &[2, 6]), c(&[2, 0], &[2, 6])]).is_ok());
        assert!(check_tiling("t", &[4, 6], &[c(&[0, 0], &[4, 3]), c(&[0, 3], &[4, 3])]).is_ok());
        let gap = check_tiling("t", &[4, 6], &[c(&[0, 0], &[2, 6])]).unwrap_err();
        assert!(
            gap.message.contains("cover 12 of its 24"),
            "{}",
            gap.message
        );
        let overlap =
            check_tiling("t", &[4, 6], &[c(&[0, 0], &[3, 6]), c(&[2, 0], &[2, 6])]).unwrap_err();
        assert!(overlap.message.contains("overlap"), "{}", overlap.message);
        let past = check_tiling("t", &[4, 6], &[c(&[0, 0], &[5, 6])]).unwrap_err();
        assert!(past.message.contains("past the tensor"), "{}", past.message);
        assert!(check_tiling("t", &[0, 3], &[]).is_ok());
        let huge = [1i64 << 40, 1 << 40];
        let e = check_tiling("t", &huge, &[c(&[0, 0], &huge)]).unwrap_err();
        assert!(e.message.contains("2^64"), "{}", e.message);
    }
}
