//! Interprets a pickle's value tree as torch does: rebuild calls become tensor descriptions
//! (storage, dtype, shape, strides, offset), storages are deduplicated by key, and every view
//! is bounds-checked with overflow-checked arithmetic.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::{Arena, NodeId, Value};
use std::borrow::Cow;

/// Most dimensions a tensor may have (torch itself caps at 64).
pub const MAX_NDIM: usize = 64;

/// What a persistent id says about a storage, before its bytes are looked up. Borrows its
/// strings from the arena: parsing one costs no allocation (string keys).
#[derive(Clone, Debug, PartialEq)]
pub struct StorageId<'a> {
    /// The record key (`data/<key>` in zip archives; the legacy format's root key).
    pub key: Cow<'a, str>,
    /// Element type of a typed storage class (`torch.FloatStorage`); `None` for
    /// `torch.storage.UntypedStorage` (bytes) or classes mmckpt cannot represent.
    pub dtype: Option<DType>,
    /// Module and name of the storage class global (see [`StorageId::class_name`]).
    pub class: (&'a str, &'a str),
    /// Elements of the storage class's dtype (bytes for untyped storages).
    pub numel: u64,
    pub location: &'a str,
    /// Legacy view metadata `(view_key, offset, size)`: the tensor's storage is a slice of the
    /// root storage, counted in elements.
    pub legacy_view: Option<(Cow<'a, str>, u64, u64)>,
}

impl StorageId<'_> {
    /// Bytes the storage declares: numel × itemsize (1 for untyped storages).
    pub fn declared_bytes(&self) -> Option<u64> {
        let itemsize = self.dtype.map_or(1, |d| d.itemsize() as u64);
        self.numel.checked_mul(itemsize)
    }

    /// Dotted name of the storage class global (`torch.FloatStorage`), for messages.
    pub fn class_name(&self) -> String {
        format!("{}.{}", self.class.0, self.class.1)
    }
}

/// A tensor's sizes or strides. Up to four dimensions (nearly every tensor) live inline, so
/// describing a tensor allocates nothing for them.
#[derive(Clone, PartialEq, Eq)]
pub enum Dims {
    Inline { len: u8, dims: [i64; 4] },
    Heap(Box<[i64]>),
}

impl Dims {
    pub fn from_slice(dims: &[i64]) -> Dims {
        if dims.len() <= 4 {
            // A fixed-length loop, not copy_from_slice: a variable-length copy compiles to a
            // memcpy call, which for at most 32 bytes costs more than the copy.
            let inline: [i64; 4] = std::array::from_fn(|i| dims.get(i).copied().unwrap_or(0));
            Dims::Inline {
                len: dims.len() as u8,
                dims: inline,
            }
        } else {
            Dims::Heap(dims.into())
        }
    }
}

impl std::ops::Deref for Dims {
    type Target = [i64];
    fn deref(&self) -> &[i64] {
        match self {
            Dims::Inline { len, dims } => &dims[..usize::from(*len)],
            Dims::Heap(dims) => dims,
        }
    }
}

impl From<&[i64]> for Dims {
    fn from(dims: &[i64]) -> Dims {
        Dims::from_slice(dims)
    }
}

impl From<Vec<i64>> for Dims {
    fn from(dims: Vec<i64>) -> Dims {
        Dims::from_slice(&dims)
    }
}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// A tensor as the pickle describes it; offsets and strides count elements.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub dtype: DType,
    pub shape: Dims,
    pub strides: Dims,
    pub storage_offset: i64,
    pub numel: u64,
    /// Index into the storage list returned alongside.
    pub storage: usize,
    pub requires_grad: bool,
    pub is_parameter: bool,
    /// torch's lazy conjugation / negation bits (`metadata` of `_rebuild_tensor_v2`): the stored
    /// bytes are the un-conjugated, un-negated values.
    pub conj: bool,
    pub neg: bool,
}

impl TensorDesc {
    /// Bytes from the storage start to element [0, …, 0].
    pub fn byte_offset(&self) -> u64 {
        self.storage_offset as u64 * self.dtype.itemsize() as u64
    }

    /// Bytes from element [0, …, 0] to the end of the last reachable element (0 when empty).
    pub fn span_bytes(&self) -> u64 {
        match span_elements(&self.shape, &self.strides) {
            Some(Some(span)) => span * self.dtype.itemsize() as u64,
            _ => 0,
        }
    }

    /// Row-major contiguous (strides of size-1 dimensions do not matter).
    pub fn is_contiguous(&self) -> bool {
        crate::strided::is_contiguous(&self.shape, &self.strides)
    }
}

/// `Some(None)` for an empty tensor, `Some(Some(n))` for n elements from the first to the last
/// reachable one inclusive, `None` on overflow or negative values.
fn span_elements(shape: &[i64], strides: &[i64]) -> Option<Option<u64>> {
    let mut last: u64 = 0;
    for (&size, &stride) in shape.iter().zip(strides) {
        if size < 0 || stride < 0 {
            return None;
        }
        if size == 0 {
            return Some(None);
        }
        last = last.checked_add((size as u64 - 1).checked_mul(stride as u64)?)?;
    }
    Some(Some(last.checked_add(1)?))
}

/// What a tree node is, for the tensor walk.
pub enum Interpreted {
    Tensor(TensorDesc),
    /// A rebuild call mmckpt recognises as a tensor but cannot represent (quantized, sparse,
    /// nested, subclass, unknown dtype): an error naming the kind, reported on access.
    Unsupported(Error),
}

/// Resolves persistent ids to storage indices; implemented by the checkpoint, which owns the
/// storages and knows the container.
pub trait StorageResolver {
    /// Returns the index of the storage, creating it on first use. `nbytes_needed` is the
    /// declared size the tensor relies on.
    fn resolve(&mut self, id: &StorageId<'_>) -> Result<(usize, u64)>;
    /// How many storages the file has room for (a capacity hint: torch saves about one
    /// tensor per storage).
    fn expected_storages(&self) -> usize {
        0
    }
}

const TORCH_UTILS: &str = "torch._utils";

/// Longest storage key or location string (torch writes `"0"`, `"cuda:0"`).
pub const MAX_STORAGE_FIELD_LEN: usize = 1024;

/// Parses a persistent id: `('storage', storage_class, key, location, numel[, view_metadata])`.
pub fn parse_storage_pid(arena: &Arena, pid: NodeId) -> Result<StorageId<'_>> {
    let items = arena
        .as_seq(pid)
        .ok_or_else(|| Error::format("a persistent id is not a tuple"))?;
    if items.len() != 5 && items.len() != 6 {
        return Err(Error::format(format!(
            "a persistent id has {} items; a storage id has 5 (or 6 in the legacy format)",
            items.len()
        )));
    }
    let tag = arena.as_str(items[0]);
    if tag != Some("storage") {
        return Err(Error::format(format!(
            "a persistent id is tagged {:?}, not 'storage'",
            tag.unwrap_or("<not a string>")
        )));
    }
    let (module, name) = arena.global_name(items[1]).ok_or_else(|| {
        Error::format("a storage persistent id does not name its storage class as a global")
    })?;
    let dtype = match (module, name) {
        ("torch", n) => DType::from_storage_class(n),
        _ => None,
    };
    let untyped = matches!(
        (module, name),
        ("torch", "UntypedStorage") | ("torch.storage", "UntypedStorage")
    );
    if dtype.is_none() && !untyped {
        return Err(Error::unsupported(format!(
            "storage class {module}.{name} is not one mmckpt can represent"
        )));
    }
    // One persistent id can be shared by any number of tensors, each of which copies its key
    // and location: check their lengths before copying.
    let too_long = |node: NodeId| {
        arena
            .as_str(node)
            .is_some_and(|s| s.len() > MAX_STORAGE_FIELD_LEN)
    };
    let view_key = items
        .get(5)
        .and_then(|&v| arena.as_seq(v))
        .and_then(|view| view.first().copied());
    if too_long(items[2]) || too_long(items[3]) || view_key.is_some_and(too_long) {
        return Err(Error::format(format!(
            "a storage key, view key or location is longer than {MAX_STORAGE_FIELD_LEN} bytes"
        )));
    }
    let key: Cow<'_, str> = match arena.get(items[2]) {
        Value::Str(s) => Cow::Borrowed(arena.str(*s)),
        Value::Int(i) => Cow::Owned(i.to_string()),
        _ => {
            return Err(Error::format(
                "a storage key is neither a string nor an int",
            ))
        }
    };
    let location = arena
        .as_str(items[3])
        .ok_or_else(|| Error::format(format!("storage '{key}': location is not a string")))?;
    let numel = arena.as_int(items[4]).filter(|&n| n >= 0).ok_or_else(|| {
        Error::format(format!(
            "storage '{key}': element count is not a non-negative int"
        ))
    })? as u64;
    let legacy_view = match items.get(5).map(|&v| arena.get(v)) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(view)) if view.len() == 3 => {
            let view_key: Cow<'_, str> = match arena.get(view[0]) {
                Value::Str(s) => Cow::Borrowed(arena.str(*s)),
                Value::Int(i) => Cow::Owned(i.to_string()),
                _ => return Err(Error::format(format!("storage '{key}': bad view key"))),
            };
            let offset = arena.as_int(view[1]).filter(|&v| v >= 0);
            let size = arena.as_int(view[2]).filter(|&v| v >= 0);
            match (offset, size) {
                (Some(o), Some(s)) => Some((view_key, o as u64, s as u64)),
                _ => {
                    return Err(Error::format(format!(
                        "storage '{key}': view offset/size are not non-negative ints"
                    )))
                }
            }
        }
        Some(_) => {
            return Err(Error::format(format!(
                "storage '{key}': view metadata is not None or a 3-tuple"
            )))
        }
    };
    Ok(StorageId {
        key,
        dtype: if untyped { None } else { dtype },
        class: (module, name),
        numel,
        location,
        legacy_view,
    })
}

/// If `node` is a call of a tensor rebuild function, returns its interpretation. `None` means
/// the node is not a tensor (walk into it as ordinary data).
pub fn interpret(
    arena: &Arena,
    node: NodeId,
    storages: &mut dyn StorageResolver,
) -> Option<Interpreted> {
    let Value::Object { callable, args, .. } = arena.get(node) else {
        return None;
    };
    let (module, name) = arena.global_name(*callable)?;
    let kind = TensorCall::classify(module, name)?;
    let result = kind.rebuild(arena, *args, storages, 0);
    Some(match result {
        Ok(desc) => Interpreted::Tensor(desc),
        Err(e) => Interpreted::Unsupported(e),
    })
}

/// True when `node` is a call of a tensor rebuild function (supported or not).
pub fn is_tensor_call(arena: &Arena, node: NodeId) -> bool {
    let Value::Object { callable, .. } = arena.get(node) else {
        return false;
    };
    arena
        .global_name(*callable)
        .is_some_and(|(m, n)| TensorCall::classify(m, n).is_some())
}

#[derive(Copy, Clone, Debug)]
enum TensorCall {
    V1,
    V2,
    V3,
    Parameter,
    ParameterWithState,
    FromTypeV2,
    Other(&'static str),
}

impl TensorCall {
    fn classify(module: &str, name: &str) -> Option<TensorCall> {
        Some(match (module, name) {
            (TORCH_UTILS, "_rebuild_tensor") => TensorCall::V1,
            (TORCH_UTILS, "_rebuild_tensor_v2") => TensorCall::V2,
            (TORCH_UTILS, "_rebuild_tensor_v3") => TensorCall::V3,
            (TORCH_UTILS, "_rebuild_parameter") => TensorCall::Parameter,
            (TORCH_UTILS, "_rebuild_parameter_with_state") => TensorCall::ParameterWithState,
            ("torch._tensor", "_rebuild_from_type_v2") => TensorCall::FromTypeV2,
            (TORCH_UTILS, "_rebuild_qtensor") => TensorCall::Other("quantized tensor"),
            (TORCH_UTILS, "_rebuild_sparse_tensor") => TensorCall::Other("sparse tensor"),
            (TORCH_UTILS, "_rebuild_nested_tensor") => TensorCall::Other("nested tensor"),
            (TORCH_UTILS, "_rebuild_wrapper_subclass") => {
                TensorCall::Other("tensor subclass (wrapper)")
            }
            (TORCH_UTILS, "_rebuild_device_tensor_from_numpy")
            | (TORCH_UTILS, "_rebuild_device_tensor_from_cpu_tensor") => {
                TensorCall::Other("device tensor rebuilt from numpy/cpu data")
            }
            (TORCH_UTILS, "_rebuild_xla_tensor")
            | (TORCH_UTILS, "_rebuild_mtia_tensor")
            | (TORCH_UTILS, "_rebuild_meta_tensor_no_storage") => {
                TensorCall::Other("tensor without file-backed storage")
            }
            ("torch.nn.parameter", "Parameter") => TensorCall::Other("parameter called directly"),
            (TORCH_UTILS, n) if n.starts_with("_rebuild_") => TensorCall::Other("torch object"),
            _ => return None,
        })
    }

    fn rebuild(
        self,
        arena: &Arena,
        args: NodeId,
        storages: &mut dyn StorageResolver,
        depth: u32,
    ) -> Result<TensorDesc> {
        let args = arena
            .as_seq(args)
            .ok_or_else(|| Error::format("tensor rebuild arguments are not a tuple"))?;
        if depth > 4 {
            return Err(Error::format("tensor rebuild calls nested too deeply"));
        }
        match self {
            TensorCall::V1 | TensorCall::V2 | TensorCall::V3 => {
                rebuild_tensor(self, arena, args, storages)
            }
            TensorCall::Parameter | TensorCall::ParameterWithState => {
                let inner = *args
                    .first()
                    .ok_or_else(|| Error::format("_rebuild_parameter without arguments"))?;
                let mut desc = rebuild_nested(arena, inner, storages, depth)?;
                desc.requires_grad = args.get(1).and_then(|&v| arena.as_int(v)) != Some(0);
                desc.is_parameter = true;
                Ok(desc)
            }
            TensorCall::FromTypeV2 => {
                // (func, new_type, args, state): plain tensors and parameters that carry Python
                // attributes; their data is func(*args).
                let (func, new_type, inner_args) = match args {
                    [f, t, a, ..] => (*f, *t, *a),
                    _ => return Err(Error::format("_rebuild_from_type_v2 needs 4 arguments")),
                };
                let type_name = arena
                    .global_name(new_type)
                    .map(|(m, n)| format!("{m}.{n}"))
                    .unwrap_or_else(|| "<unknown>".into());
                if type_name != "torch.Tensor" && type_name != "torch.nn.parameter.Parameter" {
                    return Err(Error::unsupported(format!(
                        "tensor subclass {type_name} is not supported"
                    )));
                }
                let (m, n) = arena.global_name(func).ok_or_else(|| {
                    Error::format("_rebuild_from_type_v2: function is not a global")
                })?;
                let inner = TensorCall::classify(m, n).ok_or_else(|| {
                    Error::unsupported(format!("_rebuild_from_type_v2 with function {m}.{n}"))
                })?;
                let mut desc = inner.rebuild(arena, inner_args, storages, depth + 1)?;
                desc.is_parameter |= type_name == "torch.nn.parameter.Parameter";
                Ok(desc)
            }
            TensorCall::Other(what) => Err(Error::unsupported(format!("{what} is not supported"))),
        }
    }
}

fn rebuild_nested(
    arena: &Arena,
    node: NodeId,
    storages: &mut dyn StorageResolver,
    depth: u32,
) -> Result<TensorDesc> {
    if let Value::Object { callable, args, .. } = arena.get(node) {
        if let Some((m, n)) = arena.global_name(*callable) {
            if let Some(call) = TensorCall::classify(m, n) {
                return call.rebuild(arena, *args, storages, depth + 1);
            }
        }
    }
    Err(Error::format("parameter data is not a tensor"))
}

fn int_tuple(arena: &Arena, node: NodeId, what: &str) -> Result<Dims> {
    // torch.Size((…)) pickles as a plain tuple, but accept a REDUCE of torch.Size too.
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
        .ok_or_else(|| Error::format(format!("{what} is not a tuple")))?;
    if items.len() > MAX_NDIM {
        return Err(Error::limit(format!(
            "{what} has {} dimensions; the limit is {MAX_NDIM}",
            items.len()
        )));
    }
    let int = |&i: &NodeId| {
        arena
            .as_int(i)
            .ok_or_else(|| Error::format(format!("{what} holds a value that is not an int")))
    };
    // Up to four dimensions (nearly every tensor) straight into the inline form: no buffer
    // of MAX_NDIM to zero first.
    if items.len() <= 4 {
        let mut dims = [0i64; 4];
        for (slot, i) in dims.iter_mut().zip(items) {
            *slot = int(i)?;
        }
        return Ok(Dims::Inline {
            len: items.len() as u8,
            dims,
        });
    }
    Ok(Dims::Heap(items.iter().map(int).collect::<Result<_>>()?))
}

fn rebuild_tensor(
    call: TensorCall,
    arena: &Arena,
    args: &[NodeId],
    storages: &mut dyn StorageResolver,
) -> Result<TensorDesc> {
    // v1: (storage, offset, size, stride)
    // v2: (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
    // v3: (storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
    let min_args = match call {
        TensorCall::V1 => 4,
        TensorCall::V2 => 6,
        _ => 7,
    };
    if args.len() < min_args {
        return Err(Error::format(format!(
            "{:?} rebuild call has {} arguments, expected at least {min_args}",
            call,
            args.len()
        )));
    }
    let Value::PersistentId(pid) = arena.get(args[0]) else {
        return Err(Error::format("tensor storage is not a persistent id"));
    };
    let storage_id = parse_storage_pid(arena, *pid)?;
    let dtype = match call {
        TensorCall::V3 => {
            let (m, n) = arena
                .global_name(args[6])
                .ok_or_else(|| Error::format("_rebuild_tensor_v3 dtype is not a global"))?;
            if m != "torch" {
                return Err(Error::format(format!(
                    "dtype global {m}.{n} is not torch.<dtype>"
                )));
            }
            DType::from_name(n)
                .ok_or_else(|| Error::unsupported(format!("dtype torch.{n} is not supported")))?
        }
        _ => storage_id.dtype.ok_or_else(|| {
            Error::unsupported(format!(
                "storage class {} carries no dtype mmckpt can represent",
                storage_id.class_name()
            ))
        })?,
    };
    let storage_offset = arena
        .as_int(args[1])
        .ok_or_else(|| Error::format("storage offset is not an int"))?;
    let shape = int_tuple(arena, args[2], "size")?;
    let strides = int_tuple(arena, args[3], "stride")?;
    if shape.len() != strides.len() {
        return Err(Error::format(format!(
            "size has {} dimensions but stride has {}",
            shape.len(),
            strides.len()
        )));
    }
    if storage_offset < 0 {
        return Err(Error::format(format!(
            "negative storage offset {storage_offset}"
        )));
    }
    if let Some(&s) = shape.iter().find(|&&s| s < 0) {
        return Err(Error::format(format!("negative size {s} in {shape:?}")));
    }
    if let Some(&s) = strides.iter().find(|&&s| s < 0) {
        return Err(Error::format(format!("negative stride {s} in {strides:?}")));
    }
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &s| acc.checked_mul(s as u64))
        .ok_or_else(|| Error::format(format!("size {shape:?} overflows 64 bits")))?;
    // Like torch, the logical size in bytes must fit in an int64: then numel × itemsize never
    // wraps in any caller (a stride-0 view can declare far more elements than its storage).
    if !matches!(numel.checked_mul(dtype.itemsize() as u64), Some(b) if b <= i64::MAX as u64) {
        return Err(Error::format(format!(
            "size {shape:?} of {} is more than 2^63 bytes",
            dtype.name()
        )));
    }
    let requires_grad = match call {
        TensorCall::V1 => false,
        _ => arena.as_int(args[4]).is_some_and(|v| v != 0),
    };
    let metadata = match call {
        TensorCall::V2 => args.get(6).copied(),
        TensorCall::V3 => args.get(7).copied(),
        _ => None,
    };
    let (conj, neg) = match metadata {
        Some(m) => metadata_bits(arena, m)?,
        None => (false, false),
    };

    let (storage, storage_bytes) = storages.resolve(&storage_id)?;
    let desc = TensorDesc {
        dtype,
        shape,
        strides,
        storage_offset,
        numel,
        storage,
        requires_grad,
        is_parameter: false,
        conj,
        neg,
    };
    check_bounds(&desc, storage_bytes, &storage_id.key)?;
    Ok(desc)
}

/// Most items a tensor's metadata dict may have: torch writes at most a few (`conj`, `neg`, …).
/// One dict can be shared by every tensor of a pickle, so scanning it must stay cheap.
pub const MAX_METADATA_ITEMS: usize = 64;

fn metadata_bits(arena: &Arena, metadata: NodeId) -> Result<(bool, bool)> {
    let Value::Dict { items, .. } = arena.get(metadata) else {
        return Ok((false, false));
    };
    if items.len() > MAX_METADATA_ITEMS {
        return Err(Error::format(format!(
            "tensor metadata has {} items; torch writes at most a few (the limit is \
             {MAX_METADATA_ITEMS})",
            items.len()
        )));
    }
    let flag = |key: &str| {
        items
            .iter()
            .any(|&(k, v)| arena.as_str(k) == Some(key) && arena.as_int(v).is_some_and(|b| b != 0))
    };
    Ok((flag("conj"), flag("neg")))
}

/// `(storage_offset + Σ (size_i − 1)·stride_i + 1) · itemsize ≤ storage bytes`, overflow-checked.
pub fn check_bounds(desc: &TensorDesc, storage_bytes: u64, key: &str) -> Result<()> {
    let itemsize = desc.dtype.itemsize() as u64;
    let overflow = || {
        Error::format(format!(
            "view of storage '{key}' (offset {}, size {:?}, stride {:?}) overflows 64 bits",
            desc.storage_offset, desc.shape, desc.strides
        ))
    };
    let span = span_elements(&desc.shape, &desc.strides).ok_or_else(overflow)?;
    let end_elements = (desc.storage_offset as u64)
        .checked_add(span.unwrap_or(0))
        .ok_or_else(overflow)?;
    let end_bytes = end_elements.checked_mul(itemsize).ok_or_else(overflow)?;
    if end_bytes > storage_bytes {
        return Err(Error::format(format!(
            "view of storage '{key}' (offset {}, size {:?}, stride {:?}, {} bytes per element) \
             ends at byte {end_bytes}, past the storage's {storage_bytes} bytes",
            desc.storage_offset, desc.shape, desc.strides, itemsize
        )));
    }
    Ok(())
}

/// The globals that `MMCKPT_OPEN_STRICT` accepts: what torch's `weights_only` unpickler allows
/// for checkpoints, and nothing that can run code.
pub fn is_allowed_global(module: &str, name: &str) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
                | "_rebuild_qtensor"
                | "_rebuild_sparse_tensor"
                | "_rebuild_nested_tensor"
                | "_rebuild_meta_tensor_no_storage"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.storage" => name == "UntypedStorage",
        "torch" => {
            name == "Size"
                || name == "device"
                || name == "Tensor"
                || name == "UntypedStorage"
                || name.ends_with("Storage")
                    && (DType::from_storage_class(name).is_some()
                        || matches!(
                            name,
                            "QInt8Storage"
                                | "QUInt8Storage"
                                | "QInt32Storage"
                                | "QUInt4x2Storage"
                                | "QUInt2x4Storage"
                        ))
                || DType::from_name(name).is_some()
                || matches!(
                    name,
                    "per_tensor_affine"
                        | "per_channel_affine"
                        | "per_channel_affine_float_qparams"
                        | "sparse_coo"
                        | "sparse_csr"
                        | "sparse_csc"
                        | "sparse_bsr"
                        | "sparse_bsc"
                        | "strided"
                        | "qint8"
                        | "quint8"
                        | "qint32"
                        | "quint4x2"
                        | "quint2x4"
                )
        }
        "builtins" | "__builtin__" => matches!(
            name,
            "set"
                | "frozenset"
                | "bytearray"
                | "complex"
                | "list"
                | "dict"
                | "tuple"
                | "int"
                | "float"
                | "bool"
                | "str"
                | "bytes"
                | "slice"
                | "range"
        ),
        "_codecs" => name == "encode",
        "copyreg" | "copy_reg" => name == "_reconstructor",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(shape: &[i64], strides: &[i64], offset: i64) -> TensorDesc {
        TensorDesc {
            dtype: DType::Float32,
            shape: shape.into(),
            strides: strides.into(),
            storage_offset: offset,
            numel: shape.iter().fold(1u64, |a, &s| a.wrapping_mul(s as u64)),
            storage: 0,
            requires_grad: false,
            is_parameter: false,
            conj: false,
            neg: false,
        }
    }

    #[test]
    fn bounds_are_checked_exactly() {
        assert!(check_bounds(&desc(&[2, 3], &[3, 1], 0), 24, "0").is_ok());
        assert!(check_bounds(&desc(&[2, 3], &[3, 1], 1), 24, "0").is_err());
        assert!(check_bounds(&desc(&[3, 2], &[1, 3], 0), 24, "0").is_ok());
        assert!(check_bounds(&desc(&[0, 3], &[3, 1], 6), 24, "0").is_ok());
        assert!(check_bounds(&desc(&[], &[], 5), 24, "0").is_ok());
        assert!(check_bounds(&desc(&[], &[], 6), 24, "0").is_err());
        assert!(check_bounds(&desc(&[4, 3], &[0, 1], 0), 12, "0").is_ok());
        let huge = desc(&[i64::MAX, 2], &[i64::MAX, 1], 0);
        assert!(check_bounds(&huge, u64::MAX, "0").is_err());
    }

    #[test]
    fn dims_up_to_four_are_inline_and_all_read_back() {
        for n in 0..=6usize {
            let v: Vec<i64> = (0..n as i64).map(|d| d * 7 - 3).collect();
            let dims = Dims::from_slice(&v);
            assert_eq!(&*dims, v.as_slice());
            assert_eq!(matches!(dims, Dims::Inline { .. }), n <= 4);
            assert_eq!(format!("{dims:?}"), format!("{v:?}"));
        }
    }

    #[test]
    fn contiguity() {
        assert!(desc(&[2, 3], &[3, 1], 0).is_contiguous());
        assert!(!desc(&[3, 2], &[1, 3], 0).is_contiguous());
        assert!(desc(&[1, 3], &[99, 1], 0).is_contiguous());
        assert!(!desc(&[4, 3], &[0, 1], 0).is_contiguous());
    }
}
