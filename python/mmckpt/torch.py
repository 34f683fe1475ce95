"""The recipe for PyTorch users: ``load`` as ``torch.load(path, mmap=True, weights_only=True)``
returns a state dict, and ``load_into`` for a ``torch.device('meta')`` module.

Tensors are built per storage, not per tensor: one ``torch.UntypedStorage`` over each of the
checkpoint's storages (its bytes in the mapping), and each tensor a view of it
(``Tensor.set_``), so tensors that share a storage in the file share one here, as torch's do.
The file is mapped copy-on-write (``MAP_PRIVATE``) as torch maps it: writing into a loaded
tensor changes a private copy of the page, never the file.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
from typing import Any, Dict, Iterator, List, Optional

import torch as _torch

from . import _lib
from ._checkpoint import Checkpoint, PathLike, Row, _Handle
from ._errors import UnsupportedError, raise_for

__all__ = ["load", "load_into", "tensors", "TORCH_DTYPES"]

TORCH_DTYPES: List[Optional[_torch.dtype]] = [
    getattr(_torch, name, None) for name in _lib.DTYPE_NAMES
]


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic collector paused while the (acyclic) table objects are made: with 100,000
    tensors its passes over the new objects cost more than making them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _storage(handle: _Handle, address: int, nbytes: int) -> _torch.UntypedStorage:
    if nbytes == 0:
        return _torch.UntypedStorage(0)
    buffer = (ctypes.c_uint8 * nbytes).from_address(address)
    # The storage keeps `buffer` alive, and `buffer` the checkpoint's handle (the mapping).
    buffer._mmckpt_handle = handle  # type: ignore[attr-defined]
    return _torch.frombuffer(buffer, dtype=_torch.uint8).untyped_storage()


def _tensors(ckpt: Checkpoint) -> "collections.OrderedDict[str, _torch.Tensor]":
    handle = ckpt._live()
    rows: List[Row] = ckpt._table()
    storages: Dict[int, _torch.UntypedStorage] = {}
    out: "collections.OrderedDict[str, _torch.Tensor]" = collections.OrderedDict()
    itemsizes = _lib.ITEMSIZE
    dtypes = TORCH_DTYPES
    empty = _torch.empty
    parameter_flags = _lib.TENSOR_PARAMETER | _lib.TENSOR_REQUIRES_GRAD
    special_flags = _lib.TENSOR_CONJ | _lib.TENSOR_NEG
    for row in rows:
        if row.status:
            ckpt.tensor_at(row.index)  # raises the entry's own error
            raise_for(row.status, f"tensor '{row.name}' cannot be represented")
        if row.name in out:
            continue  # the table keeps the first of a name, as torch's dict does
        dtype = dtypes[row.dtype_code - 1]
        if dtype is None:
            raise UnsupportedError(
                f"tensor '{row.name}' has dtype {_lib.DTYPE_NAMES[row.dtype_code - 1]}, which "
                f"this torch ({_torch.__version__}) does not have",
                UnsupportedError.status,
            )
        storage = storages.get(row.storage_id)
        if storage is None:
            itemsize = itemsizes[row.dtype_code - 1]
            start = row.data - row.storage_offset * itemsize if row.data else 0
            storage = _storage(handle, start, row.storage_nbytes)
            storages[row.storage_id] = storage
        t = empty(0, dtype=dtype).set_(storage, row.storage_offset, row.shape, row.strides)
        flags = row.flags
        if flags & special_flags:
            if flags & _lib.TENSOR_CONJ:
                t = t.conj()  # the stored bytes are the conjugate: set the lazy bit back
            if flags & _lib.TENSOR_NEG:
                t = _torch._neg_view(t)
        if flags & parameter_flags:
            if flags & _lib.TENSOR_PARAMETER:
                t = _torch.nn.Parameter(t, requires_grad=bool(flags & _lib.TENSOR_REQUIRES_GRAD))
            else:
                t.requires_grad_(True)
        out[row.name] = t
    return out


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
    with _no_gc(), Checkpoint(path, strict=strict, root=root, copy_on_write=True) as ckpt:
        _check_flat(ckpt, root)
        return _tensors(ckpt)


def tensors(
    path: PathLike, *, root: Optional[str] = None, strict: bool = False
) -> "collections.OrderedDict[str, _torch.Tensor]":
    """Every tensor of any checkpoint (a training checkpoint, a TorchScript archive, a shard
    index), as torch tensors by their dotted names (``"optimizer.state.0.exp_avg"``), backed
    by the mapping as :func:`load`'s are; the first of a repeated name is kept."""
    with _no_gc(), Checkpoint(path, strict=strict, root=root, copy_on_write=True) as ckpt:
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
