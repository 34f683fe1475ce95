//! Interprets a pickle's value tree as torch does: rebuild calls become tensor descriptions
//! (storage, dtype, shape, strides, offset), storages are deduplicated by key, and every view
//! is bounds-checked with overflow-checked arithmetic.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::value::ObjectItems;
use crate::pickle::{Arena, NodeId, ReadAt, Value};
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

    /// The dtype torch gives the storage object a persistent id loads as: the class's dtype,
    /// `uint8` for `UntypedStorage` (`serialization.py`, `persistent_load`).
    pub fn class_dtype(&self) -> DType {
        self.dtype.unwrap_or(DType::UInt8)
    }

    /// The unit torch's `storage.byteswap(dtype)` reverses in a big-endian archive: the
    /// class's element size, half of it for complex classes (`storage.py`, `byteswap`), so 1
    /// (no swap) for `UntypedStorage`, whatever dtype a tensor later views the bytes as.
    pub fn swap_unit(&self) -> usize {
        let dtype = self.class_dtype();
        if is_complex(dtype) {
            (dtype.itemsize() / 2).max(1)
        } else {
            dtype.itemsize()
        }
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
    /// `persistent` is the persistent id node `id` was parsed from (one `persistent_load`
    /// call in torch).
    fn resolve(&mut self, persistent: NodeId, id: &StorageId<'_>) -> Result<(usize, u64)>;
    /// How many storages the file has room for (a capacity hint: torch saves about one
    /// tensor per storage).
    fn expected_storages(&self) -> usize {
        0
    }
    /// Called once the table's walk is done: checks what the persistent ids the walk did
    /// not reach (torch loads those too) and how references to one storage agree.
    fn finish_references(&mut self, _arena: &Arena) -> Result<()> {
        Ok(())
    }
}

const TORCH_UTILS: &str = "torch._utils";

/// Longest storage key or location string (torch writes `"0"`, `"cuda:0"`).
pub const MAX_STORAGE_FIELD_LEN: usize = 1024;

/// Parses a persistent id: `('storage', storage_class, key, location, numel[, view_metadata])`.
pub fn parse_storage_pid(arena: &Arena, persistent: NodeId) -> Result<StorageId<'_>> {
    let Value::PersistentId(pid) = *arena.get(persistent) else {
        return Err(Error::format("tensor storage is not a persistent id"));
    };
    // A tuple, which nothing can change after the BINPERSID: torch refuses any other id
    // (`_weights_only_unpickler.py:535-549`, "persistent_load id must be tuple or int", and
    // `persistent_load` asserts a tuple).
    let Value::Tuple(items) = arena.get(pid) else {
        return Err(Error::format(format!(
            "a persistent id is a {}, not a tuple (torch: \"saved_id must be a tuple\")",
            kind_name(arena, pid)
        )));
    };
    let items: &[NodeId] = items;
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
        ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage")
    );
    if untyped && module == "torch" {
        // A class mmckpt could represent but spelled as torch's weights_only unpickler
        // refuses (it allows `torch.storage.UntypedStorage` only): torch never builds this
        // tensor, so neither does mmckpt. (Every `torch.<X>Storage` with a dtype is allowed.)
        return Err(unsafe_spelling(module, name, "storage class"));
    }
    if dtype.is_none() && !untyped {
        return Err(Error::unsupported(format!(
            "storage class {module}.{name} is not one mmckpt can represent"
        )));
    }
    // One persistent id can be shared by any number of tensors, each of which copies its key
    // and location: check their lengths before copying. (Key and location are read once,
    // here, for the checks below too.)
    let (key_str, location_str) = (arena.as_str(items[2]), arena.as_str(items[3]));
    let too_long = |s: Option<&str>| s.is_some_and(|s| s.len() > MAX_STORAGE_FIELD_LEN);
    let view_key = items
        .get(5)
        .and_then(|&v| arena.as_seq(v))
        .and_then(|view| view.first().copied());
    if too_long(key_str)
        || too_long(location_str)
        || view_key.is_some_and(|v| too_long(arena.as_str(v)))
    {
        return Err(Error::format(format!(
            "a storage key, view key or location is longer than {MAX_STORAGE_FIELD_LEN} bytes"
        )));
    }
    let key: Cow<'_, str> = match (key_str, arena.get(items[2])) {
        (Some(s), _) => Cow::Borrowed(s),
        (None, Value::Int(i)) => Cow::Owned(i.to_string()),
        _ => {
            return Err(Error::format(
                "a storage key is neither a string nor an int",
            ))
        }
    };
    let location = location_str
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
    let Value::Object {
        callable,
        args,
        state,
        items,
        ..
    } = arena.get(node)
    else {
        return None;
    };
    let (module, name) = arena.global_name(*callable)?;
    let kind = TensorCall::classify(module, name)?;
    let built = no_items(items.as_deref())
        .and_then(|()| rebuild_node(arena, kind, node, *args, *state, storages, 0));
    Some(match built {
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

#[derive(Copy, Clone, Debug, PartialEq)]
enum TensorCall {
    V1,
    V2,
    V3,
    Parameter,
    ParameterWithState,
    FromTypeV2,
    Other(&'static str),
}

/// Most nested rebuild calls one tensor may go through (a parameter of a `_rebuild_from_type_v2`
/// of a tensor, its state's `data`, ...): torch writes two.
const MAX_REBUILD_DEPTH: u32 = 4;

impl TensorCall {
    fn classify(module: &str, name: &str) -> Option<TensorCall> {
        // Runs for every object of a pickle (and twice per tensor): the module is compared
        // once, then the name.
        if module != TORCH_UTILS {
            return match (module, name) {
                ("torch._tensor", "_rebuild_from_type_v2") => Some(TensorCall::FromTypeV2),
                ("torch.nn.parameter", "Parameter") => {
                    Some(TensorCall::Other("parameter called directly"))
                }
                _ => None,
            };
        }
        Some(match name {
            "_rebuild_tensor_v2" => TensorCall::V2,
            "_rebuild_tensor" => TensorCall::V1,
            "_rebuild_tensor_v3" => TensorCall::V3,
            "_rebuild_parameter" => TensorCall::Parameter,
            "_rebuild_parameter_with_state" => TensorCall::ParameterWithState,
            "_rebuild_qtensor" => TensorCall::Other("quantized tensor"),
            "_rebuild_sparse_tensor" => TensorCall::Other("sparse tensor"),
            "_rebuild_nested_tensor" => TensorCall::Other("nested tensor"),
            "_rebuild_wrapper_subclass" => TensorCall::Other("tensor subclass (wrapper)"),
            "_rebuild_device_tensor_from_numpy" | "_rebuild_device_tensor_from_cpu_tensor" => {
                TensorCall::Other("device tensor rebuilt from numpy/cpu data")
            }
            "_rebuild_xla_tensor" | "_rebuild_mtia_tensor" | "_rebuild_meta_tensor_no_storage" => {
                TensorCall::Other("tensor without file-backed storage")
            }
            n if n.starts_with("_rebuild_") => TensorCall::Other("torch object"),
            _ => return None,
        })
    }

    /// The call `self(*args)`, made when torch reads `args` (`at`).
    fn rebuild(
        self,
        arena: &Arena,
        args: NodeId,
        at: ReadAt,
        storages: &mut dyn StorageResolver,
        depth: u32,
    ) -> Result<TensorDesc> {
        read_unchanged(arena, args, at, "the rebuild call's arguments")?;
        let args = arena
            .as_seq(args)
            .ok_or_else(|| Error::format("tensor rebuild arguments are not a tuple"))?;
        if depth > MAX_REBUILD_DEPTH {
            return Err(Error::format("tensor rebuild calls nested too deeply"));
        }
        match self {
            TensorCall::V1 | TensorCall::V2 | TensorCall::V3 => {
                rebuild_tensor(self, arena, args, at, storages)
            }
            TensorCall::Parameter | TensorCall::ParameterWithState => {
                // _utils.py: Parameter(data, requires_grad), then (with state)
                // _set_obj_state(param, state).
                let inner = *args
                    .first()
                    .ok_or_else(|| Error::format("_rebuild_parameter without arguments"))?;
                let mut desc = nested_tensor(arena, inner, storages, depth, "parameter data")?;
                let requires_grad = args
                    .get(1)
                    .ok_or_else(|| Error::format("_rebuild_parameter without requires_grad"))?;
                desc.requires_grad = bool_arg(arena, *requires_grad, "parameter requires_grad")?;
                check_requires_grad(&desc)?;
                desc.is_parameter = true;
                if self == TensorCall::ParameterWithState {
                    let state = *args.get(3).ok_or_else(|| {
                        Error::format("_rebuild_parameter_with_state needs 4 arguments")
                    })?;
                    set_obj_state(arena, &mut desc, state, at, storages, depth)?;
                }
                Ok(desc)
            }
            TensorCall::FromTypeV2 => {
                // (func, new_type, args, state): _tensor.py `_rebuild_from_type_v2`:
                // ret = func(*args), as_subclass(new_type), then _set_obj_state(ret, state)
                // (both allowed types keep Tensor.__setstate__).
                let (func, new_type, inner_args, state) = match args {
                    [f, t, a, s] => (*f, *t, *a, *s),
                    _ => return Err(Error::format("_rebuild_from_type_v2 needs 4 arguments")),
                };
                let (tm, tn) = arena.global_name(new_type).ok_or_else(|| {
                    Error::format("_rebuild_from_type_v2: the type is not a global")
                })?;
                let is_parameter = match (tm, tn) {
                    ("torch", "Tensor") => false,
                    ("torch.nn.parameter", "Parameter") => true,
                    // Another spelling of those classes (`torch._tensor.Tensor`,
                    // `torch.nn.Parameter`): torch refuses the global, so the tensor it would
                    // describe is never built.
                    _ if tm.starts_with("torch") && matches!(tn, "Tensor" | "Parameter") => {
                        return Err(unsafe_spelling(tm, tn, "tensor type"))
                    }
                    _ => {
                        return Err(Error::unsupported(format!(
                            "tensor subclass {tm}.{tn} is not supported"
                        )))
                    }
                };
                let (m, n) = arena.global_name(func).ok_or_else(|| {
                    Error::format("_rebuild_from_type_v2: function is not a global")
                })?;
                let inner = TensorCall::classify(m, n).ok_or_else(|| {
                    Error::unsupported(format!("_rebuild_from_type_v2 with function {m}.{n}"))
                })?;
                let mut desc = inner.rebuild(arena, inner_args, at, storages, depth + 1)?;
                // as_subclass keeps the data and requires_grad; the type is new_type's.
                desc.is_parameter = is_parameter;
                set_obj_state(arena, &mut desc, state, at, storages, depth)?;
                Ok(desc)
            }
            TensorCall::Other(what) => Err(Error::unsupported(format!("{what} is not supported"))),
        }
    }
}

/// torch refuses APPEND(S) or SETITEM(S) on a tensor (`_weights_only_unpickler.py:462-486`:
/// APPEND needs a `list`, SETITEM a dict, OrderedDict or Counter).
fn no_items(items: Option<&ObjectItems>) -> Result<()> {
    let Some(items) = items else {
        return Ok(());
    };
    let (op, torch_says) = if items.list.is_empty() {
        (
            "SETITEM",
            "Can only SETITEM for dict, collections.OrderedDict, collections.Counter",
        )
    } else {
        ("APPEND", "Can only append to lists")
    };
    Err(Error::format(format!(
        "{op} adds items to a tensor (torch: \"{torch_says}, but got <class 'torch.Tensor'>\")"
    )))
}

/// A rebuild call node (`kind(*args)`) and then the state BUILD attached to it, as torch
/// applies it: `set_` on a plain tensor, `Tensor.__setstate__` on a parameter.
fn rebuild_node(
    arena: &Arena,
    kind: TensorCall,
    node: NodeId,
    args: NodeId,
    state: Option<NodeId>,
    storages: &mut dyn StorageResolver,
    depth: u32,
) -> Result<TensorDesc> {
    let mut desc = kind.rebuild(arena, args, ReadAt::Node(node), storages, depth)?;
    if let Some(state) = state {
        let at = arena.build_read_at(node);
        read_unchanged(arena, state, at, "the tensor's BUILD state")?;
        if desc.is_parameter {
            parameter_setstate(arena, &mut desc, state, at, storages, depth)?;
        } else {
            let items = arena.as_seq(state).ok_or_else(|| {
                Error::unsupported(format!(
                    "BUILD state of a tensor is a {} (torch calls set_(*state)); only a \
                     (storage, offset, size[, stride]), (storage,) or (tensor,) tuple is \
                     supported",
                    kind_name(arena, state)
                ))
            })?;
            tensor_set(arena, &mut desc, items, at, storages, depth)?;
        }
    }
    Ok(desc)
}

/// An error when torch read `node` (at `at`) before a later opcode changed it: torch's result
/// follows the contents at the read, the finished tree holds the later ones.
#[inline(always)]
fn read_unchanged(arena: &Arena, node: NodeId, at: ReadAt, what: &str) -> Result<()> {
    if !arena.changed_after(node, at) {
        return Ok(());
    }
    Err(changed_after_read(arena, node, what))
}

#[cold]
fn changed_after_read(arena: &Arena, node: NodeId, what: &str) -> Error {
    Error::unsupported(format!(
        "{what} (a {}) changed after torch read it (APPEND/SETITEM/BUILD after the call or \
         BUILD that used it; torch builds the tensor from the contents at that time)",
        kind_name(arena, node)
    ))
}

/// A tensor used inside another's rebuild (a parameter's data, a `set_` source, a state's
/// `data`). One that carries BUILD state of its own is refused: the pickle does not say
/// whether that BUILD ran before or after the outer call used the tensor, and torch's result
/// depends on it.
fn nested_tensor(
    arena: &Arena,
    node: NodeId,
    storages: &mut dyn StorageResolver,
    depth: u32,
    what: &str,
) -> Result<TensorDesc> {
    if let Value::Object {
        callable,
        args,
        state,
        items,
        ..
    } = arena.get(node)
    {
        if let Some((m, n)) = arena.global_name(*callable) {
            if let Some(call) = TensorCall::classify(m, n) {
                if state.is_some() {
                    return Err(Error::unsupported(format!(
                        "{what} is a tensor with BUILD state of its own (torch's result \
                         depends on when that state was applied)"
                    )));
                }
                no_items(items.as_deref())?;
                return rebuild_node(arena, call, node, *args, None, storages, depth + 1);
            }
        }
    }
    Err(Error::format(format!(
        "{what} is a {}, not a tensor (torch: \"Variable data has to be a tensor\")",
        kind_name(arena, node)
    )))
}

/// `Tensor.set_(*items)` (`_weights_only_unpickler.py`, BUILD on a `torch.Tensor`):
/// `(storage, offset, size[, stride])`, `(storage,)` (1-D, the whole storage) or `(tensor,)`.
fn tensor_set(
    arena: &Arena,
    desc: &mut TensorDesc,
    items: &[NodeId],
    at: ReadAt,
    storages: &mut dyn StorageResolver,
    depth: u32,
) -> Result<()> {
    if desc.requires_grad {
        return Err(Error::format(
            "BUILD calls set_ on a tensor that requires grad (torch: \"a leaf Variable that \
             requires grad is being used in an in-place operation\")",
        ));
    }
    let first = match items {
        [] => {
            return Err(Error::unsupported(
                "BUILD state () (torch's set_() makes an empty tensor with a new storage) is \
                 not supported",
            ))
        }
        [first] | [first, _, _] | [first, _, _, _] => *first,
        _ => {
            return Err(Error::format(format!(
                "BUILD state has {} items; torch's set_ takes (storage, offset, size[, stride]), \
                 (storage,) or (tensor,)",
                items.len()
            )))
        }
    };
    match arena.get(first) {
        Value::PersistentId(_) => {
            let id = parse_storage_pid(arena, first)?;
            // set_ takes the TypedStorage persistent_load made: its class's dtype must be the
            // tensor's ("Expected a Storage of type float ... but got type Double").
            if id.class_dtype() != desc.dtype {
                return Err(Error::format(format!(
                    "BUILD sets a {} tensor to storage '{}' of class {} (torch: \"Expected a \
                     Storage of type {}\")",
                    desc.dtype.name(),
                    id.key,
                    id.class_name(),
                    desc.dtype.name()
                )));
            }
            let (storage, storage_bytes) = storages.resolve(first, &id)?;
            let itemsize = desc.dtype.itemsize() as u64;
            let (offset, shape, strides) = match items {
                [_] => {
                    let numel = storage_bytes / itemsize;
                    let numel = i64::try_from(numel)
                        .map_err(|_| Error::format("storage size overflows"))?;
                    (0, Dims::from_slice(&[numel]), Dims::from_slice(&[1]))
                }
                [_, offset, size, rest @ ..] => {
                    let offset = match arena.get(*offset) {
                        Value::Int(o) if *o >= 0 => *o,
                        Value::Int(o) => {
                            return Err(Error::format(format!(
                                "BUILD sets storage offset {o} (torch: \"invalid storage \
                                 offset\")"
                            )))
                        }
                        other => {
                            return Err(Error::format(format!(
                                "BUILD's storage offset is a {}, not an int",
                                value_kind(other)
                            )))
                        }
                    };
                    let shape = int_tuple(arena, *size, at, "BUILD size")?;
                    let strides = match rest.first() {
                        Some(&stride) => int_tuple(arena, stride, at, "BUILD stride")?,
                        None => contiguous_strides(&shape)?,
                    };
                    (offset, shape, strides)
                }
                _ => unreachable!("lengths checked above"),
            };
            desc.numel = check_view(desc.dtype, offset, &shape, &strides)?;
            desc.storage_offset = offset;
            desc.shape = shape;
            desc.strides = strides;
            desc.storage = storage;
            check_bounds(desc, storage_bytes, &id.key)
        }
        Value::Object { .. } if items.len() == 1 => {
            let source = nested_tensor(arena, first, storages, depth, "BUILD's set_ source")?;
            if source.dtype != desc.dtype {
                return Err(Error::format(format!(
                    "BUILD sets a {} tensor to a {} tensor (torch: \"Could not set tensor of \
                     type {} to a tensor of type {}\")",
                    desc.dtype.name(),
                    source.dtype.name(),
                    source.dtype.name(),
                    desc.dtype.name()
                )));
            }
            // set_(source) takes its storage and geometry; the bits and flags stay the
            // target's.
            desc.storage = source.storage;
            desc.storage_offset = source.storage_offset;
            desc.shape = source.shape;
            desc.strides = source.strides;
            desc.numel = source.numel;
            Ok(())
        }
        other => Err(Error::unsupported(format!(
            "BUILD calls set_ with a {} first (only a storage or a tensor is supported)",
            value_kind(other)
        ))),
    }
}

/// `Tensor.__setstate__(state)` (`_tensor.py`): a 4-tuple is `set_`, a 5-tuple
/// `(data, _, hooks, requires_grad, _)` replaces the data then requires_grad, a 3-tuple
/// `(requires_grad, _, hooks)` sets requires_grad.
fn parameter_setstate(
    arena: &Arena,
    desc: &mut TensorDesc,
    state: NodeId,
    at: ReadAt,
    storages: &mut dyn StorageResolver,
    depth: u32,
) -> Result<()> {
    let items = arena.as_seq(state).ok_or_else(|| {
        Error::unsupported(format!(
            "BUILD state of a parameter is a {} (Tensor.__setstate__ takes a 3-, 4- or 5-tuple)",
            kind_name(arena, state)
        ))
    })?;
    match items.len() {
        4 => tensor_set(arena, desc, items, at, storages, depth),
        5 => {
            set_data(arena, desc, items[0], storages, depth)?;
            set_requires_grad(arena, desc, items[3])
        }
        3 => set_requires_grad(arena, desc, items[0]),
        n => Err(Error::format(format!(
            "BUILD state of a parameter has {n} items (Tensor.__setstate__ unpacks 3)"
        ))),
    }
}

/// `_utils.py` `_set_obj_state(obj, state)`: `state` is an attribute dict, or a
/// `(dict, slots)` pair; each item is `setattr(obj, key, value)`, in order. `data` and
/// `requires_grad` are modelled; a key naming another Tensor descriptor (`grad`, `real`,
/// `__class__`, ...) is refused; any other key is a plain Python attribute torch keeps
/// beside the tensor, which changes nothing mmckpt reports.
fn set_obj_state(
    arena: &Arena,
    desc: &mut TensorDesc,
    state: NodeId,
    at: ReadAt,
    storages: &mut dyn StorageResolver,
    depth: u32,
) -> Result<()> {
    read_unchanged(arena, state, at, "the tensor's state")?;
    let parts: &[NodeId] = match arena.get(state) {
        Value::Tuple(parts) if parts.len() == 2 => parts,
        Value::Tuple(parts) => {
            return Err(Error::format(format!(
                "tensor state is a tuple of {} items (torch: \"Invalid serialized state\")",
                parts.len()
            )))
        }
        _ => std::slice::from_ref(&state),
    };
    for &part in parts {
        read_unchanged(arena, part, at, "a part of the tensor's state")?;
        match truthy(arena, part) {
            Some(false) => continue,
            Some(true) => {}
            None => {
                return Err(Error::unsupported(format!(
                    "tensor state holds a {} whose truth torch decides by its class",
                    kind_name(arena, part)
                )))
            }
        }
        let Value::Dict { items, .. } = arena.get(part) else {
            return Err(Error::format(format!(
                "tensor state is a {} (torch calls its .items())",
                kind_name(arena, part)
            )));
        };
        for &(key, value) in items {
            let key = arena.as_str(key).ok_or_else(|| {
                Error::format(format!(
                    "tensor state has a {} key (torch: \"attribute name must be string\")",
                    kind_name(arena, key)
                ))
            })?;
            match key {
                "data" => set_data(arena, desc, value, storages, depth)?,
                "requires_grad" => set_requires_grad(arena, desc, value)?,
                _ if is_tensor_descriptor(key) => {
                    return Err(Error::unsupported(format!(
                        "tensor state sets attribute '{}', a Tensor property that torch \
                         applies to the tensor",
                        key.escape_debug()
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `tensor.data = value` (`set_data`): the storage, dtype and geometry become `value`'s;
/// requires_grad and the type stay.
fn set_data(
    arena: &Arena,
    desc: &mut TensorDesc,
    value: NodeId,
    storages: &mut dyn StorageResolver,
    depth: u32,
) -> Result<()> {
    let data = nested_tensor(arena, value, storages, depth, "tensor state's data")?;
    if desc.requires_grad && !can_require_grad(data.dtype) {
        return Err(Error::format(format!(
            "tensor state sets {} data on a tensor that requires grad (torch: \"data set to a \
             tensor that requires gradients must be floating point or complex dtype\")",
            data.dtype.name()
        )));
    }
    if data.conj || data.neg || desc.conj || desc.neg {
        return Err(Error::unsupported(
            "tensor state sets data where the tensor or the data has a conj/neg bit",
        ));
    }
    *desc = TensorDesc {
        requires_grad: desc.requires_grad,
        is_parameter: desc.is_parameter,
        ..data
    };
    Ok(())
}

fn set_requires_grad(arena: &Arena, desc: &mut TensorDesc, value: NodeId) -> Result<()> {
    desc.requires_grad = bool_arg(arena, value, "requires_grad")?;
    check_requires_grad(desc)
}

/// torch's `requires_grad` setter and argument parsers take a bool, nothing else.
fn bool_arg(arena: &Arena, node: NodeId, what: &str) -> Result<bool> {
    match arena.get(node) {
        Value::Bool(b) => Ok(*b),
        other => Err(Error::format(format!(
            "{what} is a {} (torch: \"requires_grad must be a bool\")",
            value_kind(other)
        ))),
    }
}

fn check_requires_grad(desc: &TensorDesc) -> Result<()> {
    if desc.requires_grad && !can_require_grad(desc.dtype) {
        return Err(Error::format(format!(
            "a {} tensor requires grad (torch: \"only Tensors of floating point and complex \
             dtype can require gradients\")",
            desc.dtype.name()
        )));
    }
    Ok(())
}

/// torch's `is_floating_point() or is_complex()`: the dtypes that may require grad.
fn can_require_grad(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        Float32
            | Float64
            | Float16
            | BFloat16
            | Float8E4M3Fn
            | Float8E5M2
            | Float8E4M3FnUz
            | Float8E5M2FnUz
            | Float8E8M0Fnu
            | Float4E2M1FnX2
            | Complex32
            | Complex64
            | Complex128
    )
}

fn is_complex(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Complex32 | DType::Complex64 | DType::Complex128
    )
}

/// Attribute names that are data descriptors of `torch.nn.Parameter` (its class and bases,
/// torch 2.15): `setattr` with one of these acts on the tensor itself. `data` and
/// `requires_grad` are modelled before this is asked.
fn is_tensor_descriptor(name: &str) -> bool {
    (name.starts_with("__") && name.ends_with("__"))
        || matches!(
            name,
            "H" | "T"
                | "_backward_hooks"
                | "_base"
                | "_cdata"
                | "_grad"
                | "_grad_fn"
                | "_has_grad_dtype_override"
                | "_has_symbolic_sizes_strides"
                | "_post_accumulate_grad_hooks"
                | "_python_dispatch"
                | "_version"
                | "data"
                | "device"
                | "dtype"
                | "grad"
                | "grad_dtype"
                | "grad_fn"
                | "imag"
                | "is_cpu"
                | "is_cuda"
                | "is_ipu"
                | "is_leaf"
                | "is_maia"
                | "is_meta"
                | "is_mkldnn"
                | "is_mps"
                | "is_mtia"
                | "is_nested"
                | "is_quantized"
                | "is_sparse"
                | "is_sparse_csr"
                | "is_vulkan"
                | "is_xla"
                | "is_xpu"
                | "itemsize"
                | "layout"
                | "mH"
                | "mT"
                | "name"
                | "names"
                | "nbytes"
                | "ndim"
                | "output_nr"
                | "real"
                | "requires_grad"
                | "retains_grad"
                | "shape"
                | "volatile"
        )
}

/// Python's truth value of a plain value; `None` for objects whose class decides.
fn truthy(arena: &Arena, node: NodeId) -> Option<bool> {
    Some(match arena.get(node) {
        Value::None => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::BigInt(bytes) => bytes.iter().any(|&b| b != 0),
        Value::Float(f) => *f != 0.0,
        Value::Complex(re, im) => *re != 0.0 || *im != 0.0,
        Value::Str(s) => !arena.str(*s).is_empty(),
        Value::Bytes(b) | Value::ByteArray(b) => !b.is_empty(),
        Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => !items.is_empty(),
        Value::Tuple(items) => !items.is_empty(),
        Value::Dict { items, .. } => !items.is_empty(),
        Value::Global { .. } => true,
        Value::Object { .. } | Value::PersistentId(_) => return None,
    })
}

/// The value's type for messages; a persistent id is what torch makes of it, a storage.
fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::PersistentId(_) => "storage",
        other => other.type_name(),
    }
}

fn kind_name(arena: &Arena, node: NodeId) -> &'static str {
    value_kind(arena.get(node))
}

/// Row-major strides of `shape` (torch's default when set_ gets no stride).
fn contiguous_strides(shape: &[i64]) -> Result<Dims> {
    let mut strides = [0i64; MAX_NDIM];
    let mut step: i64 = 1;
    for (slot, &size) in strides[..shape.len()].iter_mut().zip(shape).rev() {
        *slot = step;
        step = step
            .checked_mul(size.max(1))
            .ok_or_else(|| Error::format(format!("size {shape:?} overflows 64 bits")))?;
    }
    Ok(Dims::from_slice(&strides[..shape.len()]))
}

/// An error unless torch's weights_only unpickler allows the global `module.name`: torch
/// refuses the whole file ("Unsupported global"), so no tensor may be built through it.
fn require_allowed(module: &str, name: &str, what: &str) -> Result<()> {
    if is_allowed_global(module, name) {
        return Ok(());
    }
    Err(unsafe_spelling(module, name, what))
}

fn unsafe_spelling(module: &str, name: &str, what: &str) -> Error {
    Error::unsafe_global(format!(
        "{what} global '{module}.{name}' is not one torch's weights_only unpickler allows \
         (torch refuses the file: \"Unsupported global\")"
    ))
}

/// A size or stride, read at `at`: a tuple, a list, or a `torch.Size` of either.
fn int_tuple(arena: &Arena, node: NodeId, at: ReadAt, what: &str) -> Result<Dims> {
    read_unchanged(arena, node, at, what)?;
    // torch.Size((…)) pickles as a plain tuple, but accept a REDUCE of torch.Size too.
    let node = match arena.get(node) {
        Value::Object {
            callable,
            args,
            state,
            items,
            ..
        } if arena.global_name(*callable) == Some(("torch", "Size")) => {
            if state.is_some() || items.is_some() {
                return Err(Error::unsupported(format!(
                    "{what}: a torch.Size with BUILD state or added items"
                )));
            }
            let inner = arena
                .as_seq(*args)
                .and_then(|a| a.first().copied())
                .ok_or_else(|| Error::format(format!("{what}: torch.Size without arguments")))?;
            // torch.Size(x) copies x when it is called.
            read_unchanged(arena, inner, ReadAt::Node(node), what)?;
            inner
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

/// The checks every view torch builds passes: matching ranks, no negative offset, size or
/// stride, and a logical size in bytes that fits an int64.
/// Returns the element count.
#[inline]
fn check_view(dtype: DType, storage_offset: i64, shape: &[i64], strides: &[i64]) -> Result<u64> {
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
    Ok(numel)
}

fn rebuild_tensor(
    call: TensorCall,
    arena: &Arena,
    args: &[NodeId],
    at: ReadAt,
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
    let storage_id = parse_storage_pid(arena, args[0])?;
    let dtype = match call {
        TensorCall::V3 => {
            let (m, n) = arena
                .global_name(args[6])
                .ok_or_else(|| Error::format("_rebuild_tensor_v3 dtype is not a global"))?;
            let dtype = DType::from_name(n)
                .ok_or_else(|| Error::unsupported(format!("dtype torch.{n} is not supported")))?;
            // Only `torch.<canonical name>` is allowed: torch refuses `torch.float`.
            require_allowed(m, n, "dtype")?;
            dtype
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
    let shape = int_tuple(arena, args[2], at, "size")?;
    let strides = int_tuple(arena, args[3], at, "stride")?;
    let numel = check_view(dtype, storage_offset, &shape, &strides)?;
    // v2: `tensor.requires_grad = requires_grad`; v3: `torch.empty(requires_grad=...)`: a
    // bool, and True only for floating and complex dtypes.
    let requires_grad = match call {
        TensorCall::V1 => false,
        _ => bool_arg(arena, args[4], "requires_grad")?,
    };
    let metadata = match call {
        TensorCall::V2 => args.get(6).copied(),
        TensorCall::V3 => args.get(7).copied(),
        _ => None,
    };
    let (storage, storage_bytes) = storages.resolve(args[0], &storage_id)?;
    let mut desc = TensorDesc {
        dtype,
        shape,
        strides,
        storage_offset,
        numel,
        storage,
        requires_grad,
        is_parameter: false,
        conj: false,
        neg: false,
    };
    check_bounds(&desc, storage_bytes, &storage_id.key)?;
    check_requires_grad(&desc)?;
    if let Some(m) = metadata {
        read_unchanged(arena, m, at, "the tensor's metadata")?;
        (desc.conj, desc.neg) = metadata_bits(arena, m, dtype)?;
    }
    Ok(desc)
}

/// Most items a tensor's metadata dict may have: torch writes at most a few (`conj`, `neg`, …).
/// One dict can be shared by every tensor of a pickle, so scanning it must stay cheap.
pub const MAX_METADATA_ITEMS: usize = 64;

/// The description a `_rebuild_tensor_v2` call of these arguments (the storage's dtype, no
/// metadata) gives before its storage is resolved (`storage` is 0 until then), or `None` where
/// the call's checks fail: the plain state-dict reader ([`crate::checkpoint`]'s `plain`) then
/// leaves the file to the generic path, which reports why.
pub(crate) fn plain_desc(
    dtype: DType,
    storage_offset: i64,
    shape: Dims,
    strides: Dims,
    requires_grad: bool,
) -> Option<TensorDesc> {
    let numel = check_view(dtype, storage_offset, &shape, &strides).ok()?;
    let desc = TensorDesc {
        dtype,
        shape,
        strides,
        storage_offset,
        numel,
        storage: 0,
        requires_grad,
        is_parameter: false,
        conj: false,
        neg: false,
    };
    check_requires_grad(&desc).ok()?;
    Some(desc)
}

/// `_utils.py`: `if metadata: set_tensor_metadata(tensor, metadata)`, which asserts a dict and
/// calls `torch._C._set_tensor_metadata(tensor, dict[str, bool])` (pybind11): every key a str,
/// every value convertible to a C++ bool (bool, None, int, float, complex; not str or a
/// container), and the bit set when its key is PRESENT, whatever the value. `conj` on a
/// non-complex tensor fails torch's internal assert.
fn metadata_bits(arena: &Arena, metadata: NodeId, dtype: DType) -> Result<(bool, bool)> {
    match truthy(arena, metadata) {
        Some(false) => return Ok((false, false)),
        Some(true) => {}
        None => {
            return Err(Error::unsupported(format!(
                "tensor metadata is a {} whose truth torch decides by its class",
                kind_name(arena, metadata)
            )))
        }
    }
    let Value::Dict { items, .. } = arena.get(metadata) else {
        return Err(Error::format(format!(
            "tensor metadata is a {} (torch asserts a dict)",
            kind_name(arena, metadata)
        )));
    };
    if items.len() > MAX_METADATA_ITEMS {
        return Err(Error::format(format!(
            "tensor metadata has {} items; torch writes at most a few (the limit is \
             {MAX_METADATA_ITEMS})",
            items.len()
        )));
    }
    let (mut conj, mut neg) = (false, false);
    for &(key, value) in items {
        let key = arena.as_str(key).ok_or_else(|| {
            Error::format(format!(
                "tensor metadata has a {} key; torch requires dict[str, bool]",
                kind_name(arena, key)
            ))
        })?;
        match arena.get(value) {
            Value::Bool(_)
            | Value::None
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::Float(_)
            | Value::Complex(..) => {}
            Value::Object { .. } => {
                return Err(Error::unsupported(format!(
                    "tensor metadata value for '{}' is an object whose conversion to bool \
                     torch decides by its class",
                    key.escape_debug()
                )))
            }
            other => {
                return Err(Error::format(format!(
                    "tensor metadata value for '{}' is a {}; torch requires a bool",
                    key.escape_debug(),
                    value_kind(other)
                )))
            }
        }
        conj |= key == "conj";
        neg |= key == "neg";
    }
    if conj && !is_complex(dtype) {
        return Err(Error::format(format!(
            "tensor metadata sets conj on a {} tensor (torch fails an internal assert: \
             isComplexType)",
            dtype.name()
        )));
    }
    Ok((conj, neg))
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

/// The globals torch 2.15's `weights_only` unpickler allows by default, by exact
/// `module.name` (`_weights_only_unpickler.py`, `_get_allowed_globals`, plus the two classes
/// `torch.distributed` registers with `add_safe_globals` on import). `MMCKPT_OPEN_STRICT`
/// refuses every other global, and no tensor is built through one in any open. The pickle
/// machine has already renamed Python 2 names as torch does (`UserDict.OrderedDict` is
/// `collections.OrderedDict`); `__builtin__` stays accepted for a STACK_GLOBAL at protocol 3
/// or more, which the machine leaves as written.
pub fn is_allowed_global(module: &str, name: &str) -> bool {
    match module {
        "collections" => matches!(name, "OrderedDict" | "Counter"),
        "_codecs" => name == "encode",
        "builtins" | "__builtin__" => matches!(name, "bytearray" | "set" | "complex"),
        "torch._utils" => matches!(
            name,
            "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
                | "_rebuild_qtensor"
                | "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_sparse_tensor"
                | "_rebuild_meta_tensor_no_storage"
                | "_rebuild_wrapper_subclass"
                | "_rebuild_device_tensor_from_numpy"
                | "_rebuild_device_tensor_from_cpu_tensor"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "torch.storage" => matches!(name, "TypedStorage" | "UntypedStorage"),
        "torch.distributed._mesh_layout" => matches!(name, "_FlatLayout" | "_MeshLayout"),
        "torch.cuda" => {
            (is_legacy_storage_class(name) && !name.starts_with('Q'))
                || is_legacy_tensor_class(name)
        }
        "torch.sparse" | "torch.cuda.sparse" => {
            is_legacy_tensor_class(name) && name != "BoolTensor"
        }
        "torch" => {
            matches!(name, "Size" | "Tensor" | "device")
                || is_legacy_storage_class(name)
                || is_legacy_tensor_class(name)
                || is_dtype_name(name)
                || matches!(
                    name,
                    "per_tensor_affine"
                        | "per_tensor_symmetric"
                        | "per_channel_affine"
                        | "per_channel_symmetric"
                        | "per_channel_affine_float_qparams"
                )
        }
        _ => false,
    }
}

/// `torch.<X>Storage` (`torch._storage_classes`, torch 2.15).
fn is_legacy_storage_class(name: &str) -> bool {
    matches!(
        name,
        "BFloat16Storage"
            | "BoolStorage"
            | "ByteStorage"
            | "CharStorage"
            | "ComplexDoubleStorage"
            | "ComplexFloatStorage"
            | "DoubleStorage"
            | "FloatStorage"
            | "HalfStorage"
            | "IntStorage"
            | "LongStorage"
            | "ShortStorage"
            | "QInt32Storage"
            | "QInt8Storage"
            | "QUInt2x4Storage"
            | "QUInt4x2Storage"
            | "QUInt8Storage"
    )
}

/// `torch.<X>Tensor` (`torch._tensor_classes`, torch 2.15).
fn is_legacy_tensor_class(name: &str) -> bool {
    matches!(
        name,
        "BFloat16Tensor"
            | "BoolTensor"
            | "ByteTensor"
            | "CharTensor"
            | "DoubleTensor"
            | "FloatTensor"
            | "HalfTensor"
            | "IntTensor"
            | "LongTensor"
            | "ShortTensor"
    )
}

/// `str(dtype)` of every dtype torch allows: `torch.float32`, never an alias (`torch.float`).
fn is_dtype_name(name: &str) -> bool {
    matches!(
        name,
        "bcomplex32"
            | "bfloat16"
            | "bits16"
            | "bits1x8"
            | "bits2x4"
            | "bits4x2"
            | "bits8"
            | "bool"
            | "complex128"
            | "complex32"
            | "complex64"
            | "float16"
            | "float32"
            | "float4_e2m1fn_x2"
            | "float64"
            | "float8_e4m3fn"
            | "float8_e4m3fnuz"
            | "float8_e5m2"
            | "float8_e5m2fnuz"
            | "float8_e8m0fnu"
            | "int1"
            | "int16"
            | "int2"
            | "int3"
            | "int32"
            | "int4"
            | "int5"
            | "int6"
            | "int64"
            | "int7"
            | "int8"
            | "qint32"
            | "qint8"
            | "quint2x4"
            | "quint4x2"
            | "quint8"
            | "uint1"
            | "uint16"
            | "uint2"
            | "uint3"
            | "uint32"
            | "uint4"
            | "uint5"
            | "uint6"
            | "uint64"
            | "uint7"
            | "uint8"
    )
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
