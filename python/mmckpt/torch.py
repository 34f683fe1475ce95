"""The recipe for PyTorch users: ``load`` as ``torch.load(path, mmap=True, weights_only=True)``
returns a state dict, and ``load_into`` for a ``torch.device('meta')`` module.

Tensors are built per storage, not per tensor: one ``torch.UntypedStorage`` over each of the
checkpoint's storages (its bytes in the mapping, made by ``torch.frombuffer`` over one buffer
per mapped file), and each tensor on it, so tensors that share a storage in the file share one
here, as torch's do, and distinct storages stay distinct.
The file is mapped copy-on-write (``MAP_PRIVATE``) as torch maps it: writing into a loaded
tensor changes a private copy of the page, never the file.
"""

from __future__ import annotations

import collections
import ctypes
from itertools import compress, repeat
from operator import add, and_, floordiv, itemgetter, mod, mul, sub
from typing import Any, Dict, Iterator, List, Optional

import torch as _torch

from . import _lib
from ._checkpoint import Checkpoint, PathLike, Table, _Handle, _storage_buffer, no_gc
from ._errors import UnsupportedError, raise_for
from ._numpy import NATIVE as _NUMPY_NATIVE

__all__ = ["load", "load_into", "tensors", "TORCH_DTYPES"]

TORCH_DTYPES: List[Optional[_torch.dtype]] = [
    getattr(_torch, name, None) for name in _lib.DTYPE_NAMES
]
# Indexed by mmckpt_dtype code (0: none, a failing entry's).
_DTYPE_BY_CODE: List[Optional[_torch.dtype]] = [None, *TORCH_DTYPES]
_ITEMSIZE_BY_CODE: List[int] = [0, *_lib.ITEMSIZE]
# numpy's dtype by mmckpt_dtype code where numpy has it natively (torch.from_numpy takes
# those); none without numpy, which torch does not require.
try:
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is installed wherever the tests run
    _np = None
_NUMPY_BY_CODE: List[Any] = [None] + [
    _np.dtype(name) if _np is not None and name in _NUMPY_NATIVE else None
    for name in _lib.DTYPE_NAMES
]


def _mapped_regions(
    table: Table, bases: List[int], region_offsets: List[int]
) -> Dict[int, int]:
    """For each mapped file (several for a sharded checkpoint), by the address of its byte 0,
    the end of its last storage: the span one buffer over the file must cover."""
    is_mapped = list(map(and_, table.flags, repeat(_lib.TENSOR_MAPPED)))
    ends = list(compress(map(add, region_offsets, table.storage_nbytes), is_mapped))
    mapped_bases = list(compress(bases, is_mapped))
    distinct = set(mapped_bases)
    if len(distinct) <= 1:  # one file: no per-row work
        return {base: max(ends) for base in distinct}
    out: Dict[int, int] = {}
    for base, end in zip(mapped_bases, ends):
        if end > out.get(base, 0):
            out[base] = end
    return out


def _tensors(ckpt: Checkpoint) -> "collections.OrderedDict[str, _torch.Tensor]":
    """The table as torch tensors. Per storage, one ``torch.frombuffer`` over the mapped file's
    buffer (a new storage at the storage's address, holding the buffer and so the mapping);
    its first tensor is that result restrided in place (``as_strided_``), later tensors of the
    storage ``set_`` onto it. Storages not in a mapping (copies) get a buffer of their own.
    Per-row arithmetic is done column-wise by ``map`` (C speed) before the one Python loop."""
    handle = ckpt._live()
    table = ckpt._table()
    itemsizes = list(map(_ITEMSIZE_BY_CODE.__getitem__, table.dtype_code))
    # Where each storage starts in its file, and the address of the file's byte 0.
    region_offsets = list(map(sub, table.file_offset, map(mul, table.storage_offset, itemsizes)))
    bases = list(map(sub, table.data, table.file_offset))
    if _is_plain(table, itemsizes) and len(set(bases)) == 1:  # one mapped file
        end = max(map(add, region_offsets, table.storage_nbytes), default=0)
        region = _storage_buffer(handle, bases[0], end)
        return _plain_tensors(table, region, itemsizes, region_offsets)
    counts = list(map(floordiv, table.storage_nbytes, map(max, itemsizes, repeat(1))))
    ends = _mapped_regions(table, bases, region_offsets)
    regions = {base: _storage_buffer(handle, base, end) for base, end in ends.items()}
    firsts: Dict[int, _torch.Tensor] = {}  # storage id -> its first tensor
    out: "collections.OrderedDict[str, _torch.Tensor]" = collections.OrderedDict()
    dtypes = _DTYPE_BY_CODE
    frombuffer = _torch.frombuffer
    empty = _torch.empty
    mapped = _lib.TENSOR_MAPPED
    special_flags = (
        _lib.TENSOR_CONJ | _lib.TENSOR_NEG | _lib.TENSOR_PARAMETER | _lib.TENSOR_REQUIRES_GRAD
    )
    columns = zip(
        table.names,
        table.status,
        table.dtype_code,
        table.shape,
        table.strides,
        table.storage_offset,
        table.storage_id,
        table.flags,
        table.storage_nbytes,
        itemsizes,
        counts,
        bases,
        region_offsets,
    )
    for i, row in enumerate(columns):
        name, status, code, shape, strides, offset, sid, flags, nbytes, itemsize = row[:10]
        if status:
            ckpt.tensor_at(i)  # raises the entry's own error
            raise_for(status, f"tensor '{name}' cannot be represented")
        if name in out:
            continue  # the table keeps the first of a name, as torch's dict does
        dtype = dtypes[code]
        if dtype is None:
            raise UnsupportedError(
                f"tensor '{name}' has dtype {_lib.DTYPE_NAMES[code - 1]}, which this torch "
                f"({_torch.__version__}) does not have",
                UnsupportedError.status,
            )
        first = firsts.get(sid)
        if first is not None:  # the storage has a tensor already: view it
            t = empty(0, dtype=dtype).set_(first.untyped_storage(), offset, shape, strides)
        else:
            if flags & mapped and nbytes and not nbytes % itemsize:
                t = frombuffer(regions[row[11]], dtype=dtype, count=row[10], offset=row[12])
                t.as_strided_(shape, strides, offset)
            else:
                start = row[11] + row[12] if nbytes else 0
                storage = _own_storage(handle, start, nbytes)
                t = empty(0, dtype=dtype).set_(storage, offset, shape, strides)
            firsts[sid] = t
        if flags & special_flags:
            t = _special(t, flags)
        out[name] = t
    return out


def _is_plain(table: Table, itemsizes: List[int]) -> bool:
    """Whether every entry is the plain case of a state dict, column by column at C speed: it
    can be represented, its name is the only one of its kind, its storage is its own, mapped,
    not empty and a whole number of its elements, its dtype exists in this torch, and it has
    none of the flags that need a step of their own (conj, neg, Parameter, requires_grad)."""
    n = table.count
    mapped = _lib.TENSOR_MAPPED
    special = (
        _lib.TENSOR_CONJ | _lib.TENSOR_NEG | _lib.TENSOR_PARAMETER | _lib.TENSOR_REQUIRES_GRAD
    )
    # Each test is one pass at C speed over a column, or over the few distinct values of one.
    return (
        not any(table.status)
        and set(map(and_, table.flags, repeat(mapped | special))) <= {mapped}
        and all(_DTYPE_BY_CODE[code] is not None for code in set(table.dtype_code))
        and 0 not in itemsizes
        and all(table.storage_nbytes)
        and not any(map(mod, table.storage_nbytes, itemsizes))
        and len(set(table.storage_id)) == n
        and len(set(table.names)) == n
    )


def _plain_tensors(
    table: Table, region: Any, itemsizes: List[int], region_offsets: List[int]
) -> "collections.OrderedDict[str, _torch.Tensor]":
    """The tensors of a table that `_is_plain` accepts, one mapped file: a storage per tensor
    by ``torch.frombuffer`` over the file's buffer, restrided in place, with no per-row Python
    beyond those two calls (the layouts are tuples shared among the rows that have them).
    Where every tensor spans exactly its storage, one ``torch.from_numpy`` each instead."""
    whole = _whole_storage_tensors(table, region, region_offsets)
    if whole is not None:
        return whole
    frombuffer = _torch.frombuffer
    counts = map(floordiv, table.storage_nbytes, itemsizes)  # _is_plain: no itemsize is 0
    dtypes = map(_DTYPE_BY_CODE.__getitem__, table.dtype_code)
    tensors = [
        frombuffer(region, dtype=dtype, count=count, offset=offset)
        for dtype, count, offset in zip(dtypes, counts, region_offsets)
    ]
    # as_strided_ in place, as in _tensors: no `_base`, as torch.load's tensors have none.
    for _ in map(_torch.Tensor.as_strided_, tensors, table.shape, table.strides,
                 table.storage_offset):
        pass
    return collections.OrderedDict(zip(table.names, tensors))


def _whole_storage_tensors(
    table: Table, region: Any, region_offsets: List[int]
) -> "Optional[collections.OrderedDict[str, _torch.Tensor]]":
    """The plain table's tensors through numpy, when every tensor starts at its storage's
    first byte and spans exactly its storage (a state dict's usual case) and numpy has every
    dtype: a numpy array over the buffer with the tensor's shape and strides, then
    ``torch.from_numpy``, whose storage is then exactly the storage torch's load gives (same
    address, same length) — one torch call per tensor instead of ``frombuffer`` and
    ``as_strided_``. Each tensor holds its array, which holds the buffer and so the mapping.
    ``None`` when any tensor does not qualify."""
    if _np is None or any(table.storage_offset):
        return None
    if any(_NUMPY_BY_CODE[code] is None for code in set(table.dtype_code)):
        return None  # before any per-row work: bfloat16 state dicts are common
    keys = list(zip(table.layout_id, table.dtype_code))
    # Per distinct (layout, dtype): numpy's dtype, strides in bytes, the bytes spanned.
    specs: Dict[Any, Any] = {}
    for key in set(keys):
        layout, code = key
        dtype = _NUMPY_BY_CODE[code]
        shape, strides = table.layouts[layout]
        itemsize = _ITEMSIZE_BY_CODE[code]
        span = 1 + sum((n - 1) * st for n, st in zip(shape, strides)) if all(shape) else 0
        specs[key] = (dtype, tuple(st * itemsize for st in strides), span * itemsize)
    rows = list(map(specs.__getitem__, keys))
    if list(map(itemgetter(2), rows)) != table.storage_nbytes:
        return None
    arrays = map(
        _np.ndarray,
        table.shape,
        map(itemgetter(0), rows),
        repeat(region),
        region_offsets,
        map(itemgetter(1), rows),
    )
    return collections.OrderedDict(zip(table.names, map(_torch.from_numpy, arrays)))


def _special(t: _torch.Tensor, flags: int) -> _torch.Tensor:
    """The lazy conjugate and negation bits, and Parameter / requires_grad, as saved."""
    if flags & _lib.TENSOR_CONJ:
        t = t.conj()  # the stored bytes are the conjugate: set the lazy bit back
    if flags & _lib.TENSOR_NEG:
        t = _torch._neg_view(t)
    if flags & _lib.TENSOR_PARAMETER:
        return _torch.nn.Parameter(t, requires_grad=bool(flags & _lib.TENSOR_REQUIRES_GRAD))
    if flags & _lib.TENSOR_REQUIRES_GRAD:
        t.requires_grad_(True)
    return t


def _own_storage(handle: _Handle, address: int, nbytes: int) -> _torch.UntypedStorage:
    """A storage over bytes outside any mapping (a copy the checkpoint owns)."""
    if nbytes == 0:
        return _torch.UntypedStorage(0)
    buffer = _storage_buffer(handle, address, nbytes)
    return _torch.frombuffer(buffer, dtype=_torch.uint8).untyped_storage()


def load(
    path: PathLike, *, root: Optional[str] = None, strict: bool = False
) -> "collections.OrderedDict[str, _torch.Tensor]":
    """Loads a state dict as ``torch.load(path, mmap=True, weights_only=True)`` returns it: the
    same keys in the same order, dtypes, shapes, strides and values; tensors that share a
    storage in the file share one here; ``nn.Parameter`` where one was saved. Backed by the
    file's mapping (copy-on-write, as torch's), also for legacy (pre-1.6) files, which torch
    refuses to map. The mapping lives as long as any of the tensors.

    The result is an ``OrderedDict`` of every tensor of the checkpoint by its dotted name;
    for a checkpoint that is not a flat state dict (a training checkpoint), pass ``root``
    (``"model"``) to take the state dict inside it, or use :func:`mmckpt.open` for the rest.
    Not carried over: ``state_dict()``'s ``_metadata`` attribute.
    """
    with no_gc(), Checkpoint(path, strict=strict, root=root, copy_on_write=True) as ckpt:
        _check_flat(ckpt, root)
        return _tensors(ckpt)


def tensors(
    path: PathLike, *, root: Optional[str] = None, strict: bool = False
) -> "collections.OrderedDict[str, _torch.Tensor]":
    """Every tensor of any checkpoint (a training checkpoint, a TorchScript archive, a shard
    index), as torch tensors by their dotted names (``"optimizer.state.0.exp_avg"``), backed
    by the mapping as :func:`load`'s are; the first of a repeated name is kept."""
    with no_gc(), Checkpoint(path, strict=strict, root=root, copy_on_write=True) as ckpt:
        return _tensors(ckpt)


def _check_flat(ckpt: Checkpoint, root: Optional[str]) -> None:
    """Refuses a checkpoint whose root is not a dict of tensors: its table would flatten the
    nesting torch.load keeps."""
    from ._checkpoint import _Values

    values = _Values(ckpt, ckpt._live())
    top = b""  # value paths are relative to the root the table was opened at
    kind = values.kind(top)
    if kind != "dict":
        raise UnsupportedError(
            f"the checkpoint's {'root' if root is None else repr(root)} is a {kind}, not a state "
            "dict: pass root= to select one, or use mmckpt.open",
            UnsupportedError.status,
        )
    count = ctypes.c_size_t()
    _lib.check(_lib.lib.mmckpt_checkpoint_value_child_count(ckpt._live().ptr, top, ctypes.byref(count)))
    if count.value != len(ckpt):
        raise UnsupportedError(
            f"the checkpoint's {'root' if root is None else repr(root)} holds {count.value} "
            f"values of which {len(ckpt)} are tensors (or nested): not a flat state dict; pass "
            "root= to select one, or use mmckpt.open",
            UnsupportedError.status,
        )


def load_into(
    module: _torch.nn.Module,
    path: PathLike,
    *,
    assign: bool = True,
    strict: bool = True,
    root: Optional[str] = None,
) -> Any:
    """The recipe: ``module.load_state_dict(mmckpt.torch.load(path), assign=assign,
    strict=strict)``, for a module built on ``torch.device('meta')`` (``assign=True``: the
    module's parameters become the mapped tensors, nothing is copied). Returns torch's
    ``_IncompatibleKeys``."""
    state = load(path, root=root)
    return module.load_state_dict(state, strict=strict, assign=assign)
