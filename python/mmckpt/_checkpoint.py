"""Checkpoints and their tensors over the C ABI."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from ctypes import byref, c_double, c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from . import _lib
from ._dlpack import capsule_from_export, export_is_copy, free_export, legacy_capsule_from_export
from ._errors import BufferTooSmallError, Error, NotFoundError, StateError, raise_for
from ._lib import check, lib

PathLike = Union[str, "os.PathLike[str]"]


class _Handle:
    """Owns one C checkpoint handle; the handle is closed when the last Python object that
    needs it (the Checkpoint, a tensor's storage made by mmckpt.torch, a numpy view) is gone."""

    __slots__ = ("ptr", "copy_on_write", "__weakref__")

    def __init__(self, ptr: int, copy_on_write: bool = False) -> None:
        self.ptr = ptr
        # Mapped privately (MMCKPT_OPEN_COPY_ON_WRITE): writes into mapped bytes stay private.
        self.copy_on_write = copy_on_write

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            lib.mmckpt_checkpoint_close(ptr)


# What mmckpt_checkpoint_describe gives for each entry: a Row holds one entry's, a Table each
# as a column (int each; shape and strides are lists of ints).
_DESCRIBED = (
    "status",
    "dtype_code",
    "shape",
    "strides",
    "storage_offset",
    "numel",
    "data",
    "nbytes",
    "storage_id",
    "file_offset",
    "flags",
    "storage_nbytes",
)


class Row:
    """One entry of the tensor table as mmckpt_checkpoint_describe gave it."""

    __slots__ = ("index", "name") + _DESCRIBED


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector paused while many acyclic objects are made: its passes over them
    (and over everything else the process holds) cost more than making them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Table:
    """The whole tensor table, column by column, as two C calls give it
    (mmckpt_checkpoint_describe and mmckpt_checkpoint_describe_names): decoded with
    memoryview casts, not per-row ctypes objects, so a 100,000-tensor table costs tens of
    milliseconds, not seconds."""

    # names: str each; layout_id: each entry's index into layouts, its distinct (shape, strides)
    __slots__ = ("count", "names", "layout_id", "layouts") + _DESCRIBED

    def __init__(self, handle: _Handle) -> None:
        with no_gc():
            self._describe(handle)

    def _describe(self, handle: _Handle) -> None:
        n = lib.mmckpt_checkpoint_tensor_count(handle.ptr)
        self.count = n
        self.names = _names(handle, n)
        # One zeroed allocation for the rows (88 bytes each), statuses (4) and storage lengths
        # (8); shapes and strides come from mmckpt_checkpoint_describe_layouts.
        at_status = 88 * n
        at_lengths = at_status + 4 * n
        buf = bytearray(at_lengths + 8 * n + 8)
        address = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
        check(
            lib.mmckpt_checkpoint_describe(
                handle.ptr, 0, n, address, address + at_status, address + at_lengths, None, 0, None
            )
        )
        whole = memoryview(buf)
        self.status = whole[at_status:at_lengths].cast("I").tolist()
        self.storage_nbytes = whole[at_lengths : at_lengths + 8 * n].cast("Q").tolist()
        # A row is 11 native 8-byte words (mmckpt_tensor, 88 bytes): name, dtype | ndim << 32,
        # shape, strides, storage_offset, numel, data, nbytes, storage_id, file_offset, flags.
        raw = whole[:at_status]
        words = raw.cast("Q")
        halves = raw.cast("I")
        self.dtype_code = halves[2::22].tolist()
        self.storage_offset = raw.cast("q")[4::11].tolist()
        self.numel = words[5::11].tolist()
        self.data = words[6::11].tolist()
        self.nbytes = words[7::11].tolist()
        self.storage_id = words[8::11].tolist()
        self.file_offset = words[9::11].tolist()
        self.flags = halves[20::22].tolist()
        if any(self.status):
            # A failing entry's row is unspecified: dtype code 0 (none), and no dims.
            self.dtype_code = [0 if st else c for c, st in zip(self.dtype_code, self.status)]
        self.shape, self.strides, self.layout_id, self.layouts = _layouts(handle, n)


    def row(self, i: int) -> Row:
        row = Row()
        row.index = i
        row.name = self.names[i]
        row.status = self.status[i]
        row.dtype_code = self.dtype_code[i]
        row.shape = tuple(self.shape[i])
        row.strides = tuple(self.strides[i])
        row.storage_offset = self.storage_offset[i]
        row.numel = self.numel[i]
        row.data = self.data[i]
        row.nbytes = self.nbytes[i]
        row.storage_id = self.storage_id[i]
        row.file_offset = self.file_offset[i]
        row.flags = self.flags[i]
        row.storage_nbytes = self.storage_nbytes[i]
        return row


_Layouts = Tuple[
    List[Tuple[int, ...]],
    List[Tuple[int, ...]],
    List[int],
    List[Tuple[Tuple[int, ...], Tuple[int, ...]]],
]


def _layouts(handle: _Handle, n: int) -> _Layouts:
    """Every entry's shape and strides as tuples, from mmckpt_checkpoint_describe_layouts: a
    tuple pair per distinct layout (a state dict has a few hundred among 100,000 tensors),
    shared by the entries that have it; a failing entry gets empty ones. Also each entry's
    layout id and the distinct (shape, strides) pairs it indexes."""
    ids = (ctypes.c_uint32 * n)()
    needed = c_size_t(0)
    distinct = c_size_t(0)
    # One call in the usual case: room for 64 four-dimensional layouts, more when asked.
    capacity = 64 * 9
    while True:
        dims = (ctypes.c_int64 * capacity)()
        status = lib.mmckpt_checkpoint_describe_layouts(
            handle.ptr, 0, n, ids, dims, capacity, byref(needed), byref(distinct)
        )
        if status == BufferTooSmallError.status and needed.value > capacity:
            capacity = needed.value
            continue
        check(status)
        break
    flat = dims[:]
    shapes: List[Tuple[int, ...]] = []
    strides: List[Tuple[int, ...]] = []
    at = 0
    for _ in range(distinct.value):  # each: ndim, shape, strides
        ndim = flat[at]
        shapes.append(tuple(flat[at + 1 : at + 1 + ndim]))
        strides.append(tuple(flat[at + 1 + ndim : at + 1 + 2 * ndim]))
        at += 1 + 2 * ndim
    # A failing entry's id is UINT32_MAX: the extra last slot answers it.
    shapes.append(())
    strides.append(())
    failing = len(shapes) - 1
    id_list = memoryview(ids).cast("B").cast("I").tolist() if n else []
    if 0xFFFFFFFF in id_list:
        id_list = [failing if i == 0xFFFFFFFF else i for i in id_list]
    return (
        list(map(shapes.__getitem__, id_list)),
        list(map(strides.__getitem__, id_list)),
        id_list,
        list(zip(shapes, strides)),
    )


def _names(handle: _Handle, n: int) -> List[str]:
    """Every entry's name, from one C call into one buffer."""
    if n == 0:
        return []
    needed = c_size_t(0)
    capacity = 48 * n  # one call in the usual case; the size asked for when it is not enough
    while True:
        buf = ctypes.create_string_buffer(capacity)
        status = lib.mmckpt_checkpoint_describe_names(handle.ptr, 0, n, buf, capacity, byref(needed))
        if status == BufferTooSmallError.status and needed.value > capacity:
            capacity = needed.value
            continue
        check(status)
        break
    # Each name ends with a NUL: the last split piece is the empty string after the last one.
    return buf.raw[: needed.value].decode("utf-8", "replace").split("\0")[:n]


def row_from_struct(index: int, t: "_lib.mmckpt_tensor") -> Row:
    """A Row from one mmckpt_tensor (copied: the struct's pointers are borrowed)."""
    row = Row()
    row.index = index
    row.status = 0
    row.name = (t.name or b"").decode("utf-8", "replace")
    row.dtype_code = t.dtype
    row.shape = tuple(t.shape[d] for d in range(t.ndim))
    row.strides = tuple(t.strides[d] for d in range(t.ndim))
    row.storage_offset = t.storage_offset
    row.numel = t.numel
    row.data = t.data
    row.nbytes = t.nbytes
    row.storage_id = t.storage_id
    row.file_offset = t.file_offset
    row.flags = t.flags
    row.storage_nbytes = 0
    return row


class TensorInfo:
    """The description of a tensor (name, dtype, shape, strides, where its bytes are), without
    access to the bytes: what an ``on_tensor`` callback of :meth:`Module.load` receives."""

    __slots__ = ("_row",)

    def __init__(self, row: Row) -> None:
        self._row = row

    @property
    def name(self) -> str:
        """Its full dotted name, as ``state_dict()`` names it."""
        return self._row.name

    @property
    def dtype(self) -> str:
        """torch's name of its dtype (``"bfloat16"``)."""
        return _lib.DTYPE_NAMES[self._row.dtype_code - 1]

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._row.shape

    @property
    def strides(self) -> Tuple[int, ...]:
        """Strides in elements, as ``torch.Tensor.stride()``."""
        return self._row.strides

    @property
    def storage_offset(self) -> int:
        """Offset of element [0, ..., 0] in its storage, in elements."""
        return self._row.storage_offset

    @property
    def numel(self) -> int:
        return self._row.numel

    @property
    def nbytes(self) -> int:
        """Bytes from element [0, ..., 0] to the end of the last reachable element."""
        return self._row.nbytes

    @property
    def file_offset(self) -> Optional[int]:
        """Where element [0, ..., 0] is in the file, when the bytes are the file's (mapped)."""
        offset = self._row.file_offset
        return None if offset == _lib.NO_OFFSET else offset

    @property
    def is_mapped(self) -> bool:
        """The elements are the mapped file's pages (not a private copy)."""
        return bool(self._row.flags & _lib.TENSOR_MAPPED)

    @property
    def is_contiguous(self) -> bool:
        return bool(self._row.flags & _lib.TENSOR_CONTIGUOUS)

    @property
    def is_parameter(self) -> bool:
        """Saved as an ``nn.Parameter``."""
        return bool(self._row.flags & _lib.TENSOR_PARAMETER)

    @property
    def requires_grad(self) -> bool:
        return bool(self._row.flags & _lib.TENSOR_REQUIRES_GRAD)

    @property
    def storage_id(self) -> int:
        """Equal ids <=> the same storage (tied weights, views of one tensor)."""
        return self._row.storage_id

    @property
    def data_ptr(self) -> int:
        """Address of element [0, ..., 0]."""
        return self._row.data or 0

    @property
    def is_buffer(self) -> bool:
        """A module entry that is a buffer (``running_mean``), not a parameter."""
        return bool(self._row.flags & _lib.TENSOR_BUFFER)

    def __repr__(self) -> str:
        return (
            f"mmckpt.{type(self).__name__}(name={self.name!r}, dtype={self.dtype}, shape={list(self.shape)}, "
            f"strides={list(self.strides)}, mapped={self.is_mapped})"
        )


class _Exportable(TensorInfo):
    """A described tensor whose elements can be exported through DLPack."""

    __slots__ = ()

    def _export(self) -> int:
        """A new DLManagedTensorVersioned* of the elements (the caller owns it)."""
        raise NotImplementedError

    def __dlpack__(
        self,
        *,
        stream: Any = None,
        max_version: Optional[Tuple[int, int]] = None,
        dl_device: Optional[Tuple[int, int]] = None,
        copy: Optional[bool] = None,
    ) -> Any:
        """A DLPack 1.x capsule (``dltensor_versioned``) of the elements, zero-copy and flagged
        read-only where they are the checkpoint's.

        A consumer that asks for the pre-1.0 protocol (no ``max_version``, as JAX's
        ``from_dlpack`` does) gets a ``dltensor`` capsule, which has no read-only flag: zero-copy
        where a write would be harmless — a mapped tensor of a checkpoint opened with
        ``copy_on_write=True`` (the default: writes change private pages, never the file), or a
        module entry's copy — and :class:`BufferError` otherwise (``copy_on_write=False`` or
        ``read=True`` checkpoints, and storages the checkpoint copied, which its other tensors
        share)."""
        legacy = max_version is None or max_version[0] < 1
        if dl_device is not None and tuple(dl_device) != (1, 0):
            raise BufferError(f"mmckpt tensors are on the CPU (kDLCPU, 0), not {dl_device}")
        if copy:
            raise BufferError("mmckpt exports zero-copy only (copy=True was asked)")
        managed = self._export()
        if copy is False and export_is_copy(managed):
            free_export(managed)
            raise BufferError(
                f"{self.name!r} is module-owned memory, which DLPack exports as a copy "
                "(copy=False was asked)"
            )
        if not legacy:
            return capsule_from_export(managed)
        if not (export_is_copy(managed) or self._writes_are_private()):
            free_export(managed)
            raise BufferError(
                f"{self.name!r}: the consumer asked for the unversioned DLPack protocol, which "
                "cannot mark memory read-only, and these bytes are shared read-only; open the "
                "checkpoint with copy_on_write=True (writes then stay private, as with "
                "torch.load(mmap=True)), or use a DLPack 1.x consumer (torch >= 2.4, "
                "numpy >= 2.1)"
            )
        return legacy_capsule_from_export(managed)

    def _writes_are_private(self) -> bool:
        """Whether a write into the exported bytes stays private to the writer."""
        return False

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (1, 0)


class Tensor(_Exportable):
    """A tensor of a checkpoint: its description, and its elements through DLPack
    (``torch.from_dlpack(t)``, ``numpy.from_dlpack(t)``) or :meth:`numpy`, zero-copy.

    The elements stay valid as long as anything made from them lives, also after the
    checkpoint is closed: a DLPack export holds the mapping itself.
    """

    __slots__ = ("_handle",)

    def __init__(self, handle: _Handle, row: Row) -> None:
        super().__init__(row)
        self._handle = handle

    def _live_handle(self) -> _Handle:
        if not self._handle.ptr:
            raise StateError("the checkpoint's handle is gone", StateError.status)
        return self._handle

    def _export(self) -> int:
        export = c_void_p()
        check(
            lib.mmckpt_checkpoint_tensor_to_dlpack(
                self._live_handle().ptr, self._row.index, byref(export)
            )
        )
        return export.value  # type: ignore[return-value]

    def _writes_are_private(self) -> bool:
        return self.is_mapped and self._handle.copy_on_write

    def numpy(self) -> Any:
        """A read-only numpy view of the elements (zero-copy). Dtypes numpy lacks (bfloat16,
        float8 kinds) come from ``ml_dtypes`` when it is installed; complex32 and
        float4_e2m1fn_x2 have no numpy dtype (use ``torch.from_dlpack(tensor)``)."""
        row = self._row
        itemsize = _lib.ITEMSIZE[row.dtype_code - 1]
        start = row.data - row.storage_offset * itemsize if row.data else 0
        buffer = _storage_buffer(self._live_handle(), start, row.storage_nbytes)
        return _read_only_array(row, buffer, row.storage_offset * itemsize)


def _read_only_array(row: Row, buffer: Any, offset: int) -> Any:
    """A read-only numpy array of a row's elements over `buffer`, `offset` bytes in."""
    import numpy as np

    from ._numpy import numpy_dtype

    itemsize = _lib.ITEMSIZE[row.dtype_code - 1]
    array = np.ndarray(
        row.shape,
        dtype=numpy_dtype(_lib.DTYPE_NAMES[row.dtype_code - 1]),
        buffer=buffer,
        offset=offset,
        strides=tuple(s * itemsize for s in row.strides),
    )
    array.flags.writeable = False
    return array


def _storage_buffer(handle: Any, address: int, nbytes: int) -> Any:
    """A ctypes array over bytes that keeps their owner (a checkpoint or slice handle) alive."""
    array = (ctypes.c_uint8 * nbytes).from_address(address) if nbytes else (ctypes.c_uint8 * 0)()
    array._mmckpt_handle = handle  # type: ignore[attr-defined]
    return array


def _row_of(t: "_lib.mmckpt_tensor", index: int = -1) -> Row:
    """A Row from a C description of a view that is not a table row (a chunk, a slice): its
    bytes are all its storage."""
    row = row_from_struct(index, t)
    row.storage_nbytes = t.nbytes
    return row


class TensorView(TensorInfo):
    """A tensor that is not a row of the table: a chunk of one (:meth:`Checkpoint.chunks`) or
    a slice (:meth:`Checkpoint.slice`). Its elements through :meth:`numpy` (zero-copy); the
    view keeps the memory it points into alive."""

    __slots__ = ("_owner",)

    def __init__(self, row: Row, owner: Any) -> None:
        super().__init__(row)
        self._owner = owner

    def numpy(self) -> Any:
        """A read-only numpy view of the elements (zero-copy), as :meth:`Tensor.numpy`."""
        row = self._row
        return _read_only_array(row, _storage_buffer(self._owner, row.data or 0, row.nbytes), 0)


class Chunk(TensorView):
    """One chunk a tensor was saved in: where it starts in the whole tensor (:attr:`offsets`)
    and its elements (a tensor of :attr:`sizes`)."""

    __slots__ = ("offsets",)

    def __init__(self, row: Row, owner: Any, offsets: Tuple[int, ...]) -> None:
        super().__init__(row, owner)
        self.offsets = offsets

    @property
    def sizes(self) -> Tuple[int, ...]:
        """The chunk's sizes (its shape)."""
        return self.shape


class _SliceHandle:
    """Owns one C slice handle (freed when the last view of it is gone)."""

    __slots__ = ("ptr", "__weakref__")

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            lib.mmckpt_slice_free(ptr)


class Checkpoint(Mapping[str, Tensor]):
    """An open checkpoint: a read-only mapping from tensor names (as ``state_dict()`` names
    them) to :class:`Tensor`, and its other values by dotted path (:meth:`value`).

    Use it as a context manager or call :meth:`close`; tensors and arrays made from it stay
    valid after the close (they keep the mapping alive until they are gone).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        strict: bool = False,
        read: bool = False,
        root: Optional[str] = None,
        copy_on_write: bool = True,
    ) -> None:
        flags = 0
        if strict:
            flags |= _lib.OPEN_STRICT
        if read:
            flags |= _lib.OPEN_READ
        elif copy_on_write:
            flags |= _lib.OPEN_COPY_ON_WRITE
        opts = _lib.mmckpt_open_options(1, flags, root.encode() if root is not None else None)
        ptr = c_void_p()
        check(lib.mmckpt_checkpoint_open(os.fsencode(path), byref(opts), byref(ptr)))
        self._handle: Optional[_Handle] = _Handle(
            ptr.value, copy_on_write=bool(flags & _lib.OPEN_COPY_ON_WRITE)  # type: ignore[arg-type]
        )
        self._path = os.fspath(path)
        self._rows: Optional[Table] = None
        self._index: Optional[Dict[str, int]] = None

    # -- handle -------------------------------------------------------------------------------

    def _live(self) -> _Handle:
        if self._handle is None:
            raise StateError(f"checkpoint '{self._path}' is closed", StateError.status)
        return self._handle

    def close(self) -> None:
        """Drops this object's hold on the file. Tensors, arrays and DLPack exports made from it
        keep working; the mapping goes away with the last of them."""
        self._handle = None
        self._rows = None
        self._index = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def format(self) -> str:
        """``"zip"``, ``"legacy"``, ``"torchscript"``, ``"sharded"``, ``"safetensors"``,
        ``"tar"``, ``"dcp"``."""
        return lib.mmckpt_checkpoint_format(self._live().ptr).decode()

    def _table(self) -> Table:
        if self._rows is None:
            self._rows = Table(self._live())
        return self._rows

    def _name_index(self) -> Dict[str, int]:
        if self._index is None:
            index: Dict[str, int] = {}
            for i, name in enumerate(self._table().names):
                index.setdefault(name, i)
            self._index = index
        return self._index

    # -- Mapping ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._table().count

    def __iter__(self) -> Iterator[str]:
        return iter(self._table().names)

    def __contains__(self, name: object) -> bool:
        return name in self._name_index()

    def __getitem__(self, name: str) -> Tensor:
        index = self._name_index().get(name)
        if index is None:
            raise NotFoundError(f"no tensor named '{name}'", NotFoundError.status)
        return self.tensor_at(index)

    def tensor_at(self, index: int) -> Tensor:
        """Entry ``index`` of the table (in file order)."""
        table = self._table()
        if not 0 <= index < table.count:
            raise NotFoundError(
                f"tensor index {index} is out of range (the table has {table.count} entries)",
                NotFoundError.status,
            )
        row = table.row(index)
        if row.status:
            # Ask again for the message of the entry's error.
            out = _lib.mmckpt_tensor()
            st = lib.mmckpt_checkpoint_tensor_at(self._live().ptr, index, byref(out))
            check(st)
            raise_for(row.status, f"tensor '{row.name}' cannot be represented")
        return Tensor(self._live(), row)

    def _index_of(self, name: str) -> int:
        index = self._name_index().get(name)
        if index is None:
            raise NotFoundError(f"no tensor named '{name}'", NotFoundError.status)
        return index

    def chunks(self, name: str) -> List[Chunk]:
        """The chunks tensor ``name`` was saved in, in the order its file lists them: for a
        ``torch.distributed.checkpoint`` directory, each rank's shard (its offsets in the whole
        tensor, its elements as views into the files, nothing assembled); for a tensor saved
        whole (every single-file format), one chunk at offsets 0 that is the tensor."""
        handle = self._live()
        index = self._index_of(name)
        count = c_size_t()
        check(lib.mmckpt_checkpoint_chunk_count(handle.ptr, index, byref(count)))
        chunks = []
        for i in range(count.value):
            out = _lib.mmckpt_chunk()
            check(lib.mmckpt_checkpoint_chunk_at(handle.ptr, index, i, byref(out)))
            offsets = tuple(out.offsets[d] for d in range(out.ndim))
            chunks.append(Chunk(_row_of(out.tensor, index), handle, offsets))
        return chunks

    def slice(self, name: str, dim: int, start: int, length: int) -> TensorView:
        """Tensor ``name`` narrowed as ``tensor.narrow(dim, start, length)`` (negative ``dim``
        and ``start`` count from the end; a bad argument raises
        :class:`~mmckpt.InvalidArgumentError` worded as torch's). A view into the file
        (same strides, offset advanced) whenever the bytes are in one place; a copy of only
        the slice's bytes when it crosses chunks of a distributed checkpoint. The slice stays
        valid after the checkpoint is closed."""
        ptr = c_void_p()
        check(
            lib.mmckpt_checkpoint_slice(
                self._live().ptr, name.encode("utf-8", "surrogateescape"), dim, start, length,
                byref(ptr),
            )
        )
        owner = _SliceHandle(ptr.value)  # type: ignore[arg-type]
        out = _lib.mmckpt_tensor()
        check(lib.mmckpt_slice_tensor(owner.ptr, byref(out)))
        return TensorView(_row_of(out), owner)

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"{len(self)} tensors"
        return f"mmckpt.Checkpoint({self._path!r}, {state})"

    # -- values -------------------------------------------------------------------------------

    def value(self, path: str) -> Any:
        """The value at a dotted path (``"optimizer.param_groups.0.lr"``, ``"epoch"``): None,
        bool, int, float, complex, str, bytes; a list, tuple, dict or set of values; a
        :class:`Tensor`; an object (``argparse.Namespace``) as a dict of its attributes; a
        global (``torch.float32``) as its dotted name. ``""`` is the whole checkpoint."""
        handle = self._live()
        return _Values(self, handle).read(path)


def _text(fn: Any, handle: _Handle, path: bytes) -> bytes:
    length = c_size_t(0)
    st = fn(handle.ptr, path, None, 0, byref(length))
    if st not in (0, BufferTooSmallError.status):
        check(st)
    buf = ctypes.create_string_buffer(length.value + 1)
    check(fn(handle.ptr, path, buf, length.value + 1, byref(length)))
    return buf.raw[: length.value]


class _Values:
    """Reads a value tree iteratively (input-controlled depth never recurses in Python)."""

    def __init__(self, ckpt: Checkpoint, handle: _Handle) -> None:
        self.ckpt = ckpt
        self.handle = handle

    def kind(self, path: bytes) -> str:
        out = c_uint32()
        check(lib.mmckpt_checkpoint_value_kind(self.handle.ptr, path, byref(out)))
        return _lib.VALUE_KINDS[out.value]

    def children(self, path: bytes) -> List[Tuple[str, bytes]]:
        count = c_size_t()
        check(lib.mmckpt_checkpoint_value_child_count(self.handle.ptr, path, byref(count)))
        out = []
        for i in range(count.value):
            key = self._child_key(path, i)
            out.append((key.decode("utf-8", "replace"), path + b"." + key if path else key))
        return out

    def _child_key(self, path: bytes, i: int) -> bytes:
        length = c_size_t(0)
        fn = lib.mmckpt_checkpoint_value_child_key
        st = fn(self.handle.ptr, path, i, None, 0, byref(length))
        if st not in (0, BufferTooSmallError.status):
            check(st)
        buf = ctypes.create_string_buffer(length.value + 1)
        check(fn(self.handle.ptr, path, i, buf, length.value + 1, byref(length)))
        return buf.raw[: length.value]

    def scalar(self, kind: str, path: bytes) -> Any:
        h = self.handle.ptr
        if kind == "none":
            return None
        if kind == "bool":
            b = c_int32()
            check(lib.mmckpt_checkpoint_value_bool(h, path, byref(b)))
            return bool(b.value)
        if kind in ("int", "bigint"):
            return int(_text(lib.mmckpt_checkpoint_value_string, self.handle, path))
        if kind == "float":
            f = c_double()
            check(lib.mmckpt_checkpoint_value_float(h, path, byref(f)))
            return f.value
        if kind == "complex":
            re, im = c_double(), c_double()
            check(lib.mmckpt_checkpoint_value_complex(h, path, byref(re), byref(im)))
            return complex(re.value, im.value)
        if kind == "str":
            return _text(lib.mmckpt_checkpoint_value_string, self.handle, path).decode()
        if kind == "bytes":
            return _text(lib.mmckpt_checkpoint_value_string, self.handle, path)
        if kind == "global":
            return _text(lib.mmckpt_checkpoint_value_class, self.handle, path).decode()
        if kind == "tensor":
            return self.ckpt[path.decode()]
        raise Error(f"value '{path.decode()}' is of a kind mmckpt does not read", 5)

    def read(self, path: str) -> Any:
        containers = ("list", "tuple", "dict", "set", "object")
        top = path.encode()
        kind = self.kind(top)
        if kind not in containers:
            return self.scalar(kind, top)
        # Explicit stack: (path, kind, key in parent, parent slot list).
        result: Dict[str, Any] = {}
        stack: List[Tuple[bytes, str, Any, Any]] = [(top, kind, "", result)]
        finish: List[Tuple[str, Any, Any, List[Any]]] = []
        while stack:
            p, k, key, parent = stack.pop()
            items: List[Any] = []
            finish.append((k, key, parent, items))
            for child_key, child_path in self.children(p):
                child_kind = self.kind(child_path)
                if child_kind in containers:
                    slot: List[Any] = [child_key, None]
                    items.append(slot)
                    stack.append((child_path, child_kind, child_key, slot))
                else:
                    items.append([child_key, self.scalar(child_kind, child_path)])
        # Build containers bottom-up (children were appended after their parents).
        for k, key, parent, items in reversed(finish):
            if k == "list":
                built: Any = [v for _, v in items]
            elif k == "tuple":
                built = tuple(v for _, v in items)
            elif k == "set":
                built = {v for _, v in items}
            else:
                built = {name: v for name, v in items}
            if isinstance(parent, dict):
                parent["value"] = built
            else:
                parent[1] = built
        return result["value"]


def open(
    path: PathLike,
    *,
    strict: bool = False,
    read: bool = False,
    root: Optional[str] = None,
    copy_on_write: bool = True,
) -> Checkpoint:
    """Opens a PyTorch checkpoint (zip, legacy, TorchScript, or a sharded ``*.index.json``):
    maps the file and parses its metadata; no tensor byte is read.

    ``strict``: refuse pickles that name globals outside the allowlist (UnsafeError).
    ``read``: read the file into memory instead of mapping it.
    ``root``: the dotted path of the sub-object whose tensors form the table (``"model"``).
    ``copy_on_write`` (default): map the file privately, as ``torch.load(mmap=True)`` does, so
    that a consumer writing into a tensor (torch ignores DLPack's read-only flag) changes its
    own copy of the page, never the file, and does not crash.
    """
    return Checkpoint(path, strict=strict, read=read, root=root, copy_on_write=copy_on_write)
