"""Meta modules and ``load_state_dict`` over the C ABI: :class:`Module`, its entries, and the
:class:`LoadReport` of a load."""

from __future__ import annotations

import ctypes
import json
from ctypes import byref, c_int64, c_void_p
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _lib
from ._checkpoint import Checkpoint, Row, TensorInfo, _Exportable, row_from_struct
from ._dlpack import ExportView
from ._errors import InvalidArgumentError, NotFoundError, StateError
from ._lib import check, lib

OnTensor = Callable[[TensorInfo], Optional[bool]]


@dataclass(frozen=True)
class TensorParallel:
    """One rank's share of a tensor-parallel model, for :meth:`Module.load`.

    ``rules`` maps a name pattern (``*`` matches any run of characters, dots included; the
    whole entry name must match) to the dimension matching entries are split along; the
    first pattern (in the mapping's order) that matches an entry wins. A split entry
    receives ``torch.chunk(t, world, dim)[rank]`` of the checkpoint tensor ``t`` and must be
    declared with that (local) shape; an entry no pattern matches is loaded whole
    (replicated). ``TensorParallel(1, 2, {"*.q_proj.weight": 0, "*.o_proj.weight": 1})``
    is rank 1 of 2 of a column-parallel ``q_proj`` and a row-parallel ``o_proj``.
    """

    rank: int
    world: int
    rules: Mapping[str, int] = field(default_factory=dict)


TensorParallelSpec = Union[TensorParallel, Tuple[int, int, Mapping[str, int]]]


class _ModuleHandle:
    """Owns one C module handle (freed when the Module and its entries are gone)."""

    __slots__ = ("ptr", "generation", "bound", "__weakref__")

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr
        # Bumped by every call that may change entries (load, materialize, bind): an entry
        # object made before describes what no longer is.
        self.generation = 0
        # What Module.bind was given, by entry name: the C module writes into that memory
        # until it is freed, so the objects live as long as this handle.
        self.bound: Dict[str, Any] = {}

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            lib.mmckpt_module_free(ptr)


class ModuleEntry(_Exportable):
    """A parameter or buffer of a :class:`Module`: its description (``data_ptr`` is 0 while it
    is meta), and its elements through DLPack or :meth:`numpy` once loaded.

    Entries loaded with ``assign=True`` share the checkpoint's bytes (zero-copy, read-only);
    module-owned entries (materialized, copy-loaded, converted) export a copy, so that a later
    load cannot change what a consumer holds. An entry object describes the module as it was
    when it was taken: after another load or :meth:`Module.materialize`, take it again.
    """

    __slots__ = ("_module", "_generation")

    def __init__(self, module: _ModuleHandle, row: Row) -> None:
        super().__init__(row)
        self._module = module
        self._generation = module.generation

    def _live_module(self) -> _ModuleHandle:
        module = self._module
        if not module.ptr:
            raise StateError("the module is freed", StateError.status)
        if module.generation != self._generation:
            raise StateError(
                f"entry '{self.name}' was taken before the module was loaded or materialized "
                "again: take it again from the module",
                StateError.status,
            )
        return module

    def _export(self) -> int:
        export = c_void_p()
        check(
            lib.mmckpt_module_entry_to_dlpack(
                self._live_module().ptr, self._row.index, byref(export)
            )
        )
        return export.value  # type: ignore[return-value]

    def numpy(self) -> Any:
        """A numpy array of the elements: a read-only view of the checkpoint's bytes for an
        entry assigned from it, a writable copy of module-owned memory otherwise. Dtypes as
        :meth:`Tensor.numpy`."""
        import numpy as np

        from ._numpy import numpy_dtype

        dtype = numpy_dtype(self.dtype)
        view = ExportView(self._export())
        itemsize = _lib.ITEMSIZE[self._row.dtype_code - 1]
        nbytes = self._row.nbytes
        buffer = (ctypes.c_uint8 * nbytes).from_address(view.address) if nbytes else (
            ctypes.c_uint8 * 0
        )()
        buffer._mmckpt_export = view  # type: ignore[attr-defined]
        array = np.ndarray(
            view.shape,
            dtype=dtype,
            buffer=buffer,
            strides=tuple(s * itemsize for s in view.strides),
        )
        if view.read_only:
            array.flags.writeable = False
        return array


class LoadReport:
    """What :meth:`Module.load` did, as torch's ``_IncompatibleKeys``: ``missing_keys`` (module
    entries the checkpoint did not provide), ``unexpected_keys`` (checkpoint keys no entry
    matched), ``message`` (torch's wording, also the ``repr``), and ``copied`` (entries an
    assign load copied instead of sharing: converted, or made contiguous)."""

    __slots__ = ("missing_keys", "unexpected_keys", "message", "copied")

    def __init__(
        self,
        missing_keys: List[str],
        unexpected_keys: List[str],
        message: str,
        copied: List[str],
    ) -> None:
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.message = message
        self.copied = copied

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def _report(ptr: int) -> LoadReport:
    def strings(count: Any, at: Any) -> List[str]:
        return [at(ptr, i).decode("utf-8", "replace") for i in range(count(ptr))]

    try:
        return LoadReport(
            strings(lib.mmckpt_load_report_missing_count, lib.mmckpt_load_report_missing),
            strings(lib.mmckpt_load_report_unexpected_count, lib.mmckpt_load_report_unexpected),
            lib.mmckpt_load_report_message(ptr).decode("utf-8", "replace"),
            strings(lib.mmckpt_load_report_copied_count, lib.mmckpt_load_report_copied),
        )
    finally:
        lib.mmckpt_load_report_free(ptr)


class _Callback:
    """The C trampoline of an ``on_tensor`` callable: never lets an exception unwind into
    mmckpt; the first one is kept, stops the load, and is raised after the load returns."""

    def __init__(self, fn: OnTensor) -> None:
        self.fn = fn
        self.raised: Optional[BaseException] = None
        self.count = 0
        self.c_function = _lib.ON_TENSOR(self._call)

    def _call(self, _user_data: Any, entry: Any) -> int:
        try:
            result = self.fn(TensorInfo(row_from_struct(self.count, entry.contents)))
            self.count += 1
            return 1 if result is False else 0
        except BaseException as e:  # noqa: BLE001 - kept and raised after the load
            self.raised = e
            return 1


class Module(Mapping[str, ModuleEntry]):
    """A module's entries (parameters and buffers: names, dtypes, shapes), built without memory
    as on ``torch.device('meta')``, and loaded from a checkpoint as ``load_state_dict`` does.

    A read-only mapping from entry names (in torch's state_dict order) to :class:`ModuleEntry`.

    >>> m = mmckpt.Module.from_spec({"type": "Linear", "in_features": 4, "out_features": 2})
    >>> with mmckpt.open("linear.pt") as ckpt:
    ...     report = m.load(ckpt)              # assign: zero-copy views of the checkpoint
    >>> torch.from_dlpack(m["weight"])
    """

    def __init__(self, name: Optional[str] = None) -> None:
        """An empty module; ``name`` is the class name load messages use (``"Module"``)."""
        ptr = c_void_p()
        check(lib.mmckpt_module_new(name.encode() if name is not None else None, byref(ptr)))
        self._handle = _ModuleHandle(ptr.value)  # type: ignore[arg-type]
        self._index: Optional[Dict[str, int]] = None

    @classmethod
    def _adopt(cls, ptr: int) -> "Module":
        module = cls.__new__(cls)
        module._handle = _ModuleHandle(ptr)
        module._index = None
        return module

    @classmethod
    def from_spec(cls, spec: Union[str, bytes, Mapping[str, Any]]) -> "Module":
        """A meta module from a JSON module spec (docs/module-spec.md): its text, or the spec
        as a dict (``{"type": "Linear", "in_features": 4, "out_features": 2}``)."""
        if isinstance(spec, Mapping):
            data = json.dumps(spec).encode()
        elif isinstance(spec, str):
            data = spec.encode()
        elif isinstance(spec, (bytes, bytearray)):
            data = bytes(spec)
        else:
            raise TypeError(f"a module spec is JSON text or a dict, not {type(spec).__name__}")
        ptr = c_void_p()
        check(lib.mmckpt_module_from_spec(data, len(data), byref(ptr)))
        return cls._adopt(ptr.value)  # type: ignore[arg-type]

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> "Module":
        """A meta module mirroring a checkpoint's tensor table (every tensor a parameter with
        its name, dtype and shape; no data). It does not reference the checkpoint."""
        ptr = c_void_p()
        check(lib.mmckpt_module_from_checkpoint(ckpt._live().ptr, byref(ptr)))
        return cls._adopt(ptr.value)  # type: ignore[arg-type]

    def _live(self) -> _ModuleHandle:
        handle = self._handle
        if handle is None or not handle.ptr:
            raise StateError("the module is freed", StateError.status)
        return handle

    def add(
        self,
        name: str,
        dtype: str,
        shape: Sequence[int],
        *,
        buffer: bool = False,
        persistent: bool = True,
    ) -> None:
        """Adds a meta entry: a parameter, or a buffer (``persistent=False``: not in the state
        dict, never loaded). ``dtype`` is torch's name (``"float32"``)."""
        code = _lib.DTYPE_CODES.get(dtype)
        if code is None:
            raise InvalidArgumentError(f"unknown dtype {dtype!r}", InvalidArgumentError.status)
        flags = 0
        if buffer or not persistent:
            flags |= _lib.ENTRY_BUFFER
        if not persistent:
            flags |= _lib.ENTRY_NON_PERSISTENT
        dims = (c_int64 * max(len(shape), 1))(*shape)
        handle = self._live()
        check(lib.mmckpt_module_add(handle.ptr, name.encode(), code, dims, len(shape), flags))
        self._index = None

    def materialize(self) -> None:
        """Like torch's ``to_empty()``: every entry without data gets zeroed module-owned
        memory of its dtype (then ``load(..., assign=False)`` copies into it)."""
        handle = self._live()
        handle.generation += 1
        check(lib.mmckpt_module_materialize(handle.ptr))

    def bind(self, name: str, buffer: Any) -> None:
        """Binds caller memory as entry ``name``'s contiguous storage (``mmckpt_module_bind``),
        replacing any data it had: later copy loads (``load(..., assign=False)``) write the
        entry's elements straight into it, in the entry's dtype and row-major order.

        ``buffer`` is a writable, C-contiguous object with the buffer protocol (a numpy array,
        a ``bytearray``, a writable ``memoryview``) or a contiguous CPU torch tensor, holding at
        least the entry's numel × itemsize bytes (:class:`BufferTooSmallError` otherwise, and
        the module is unchanged). The module keeps a reference to it, so it stays alive while
        the module may write into it; exports of a bound entry are copies."""
        address, nbytes, keep = _writable_memory(buffer)
        handle = self._live()
        check(lib.mmckpt_module_bind(handle.ptr, name.encode(), address, nbytes))
        handle.generation += 1
        handle.bound[name] = keep

    def load(
        self,
        ckpt: Checkpoint,
        *,
        assign: bool = True,
        strict: bool = True,
        dtype: Optional[str] = None,
        prefix: Optional[str] = None,
        contiguous: bool = False,
        on_tensor: Optional[OnTensor] = None,
        tensor_parallel: Optional[TensorParallelSpec] = None,
        prefetch: bool = False,
        direct_reads: bool = False,
    ) -> LoadReport:
        """Loads a checkpoint as ``load_state_dict(state, strict=strict, assign=assign)`` does.

        ``assign`` (default): entries become zero-copy views of the checkpoint (they keep its
        mapping alive after it is closed); ``assign=False`` copies into the module's memory
        (:meth:`materialize` first), converting floating dtypes as torch's ``.to()``.
        ``strict``: missing or unexpected keys raise :class:`KeyMismatchError` with torch's
        message (a failed strict load changes nothing). ``dtype``: ``None`` takes the
        checkpoint's dtypes, as torch's assign does; ``"module"`` keeps each entry's declared
        dtype, converting (into module-owned memory) where they differ. ``prefix``: only
        checkpoint keys under it count, stripped (``"module."`` of DataParallel).
        ``contiguous``: strided checkpoint tensors are copied row-major (see the report's
        ``copied``). ``on_tensor(info)`` is called per loaded entry in file order with a
        :class:`TensorInfo`; returning ``False`` stops the load (:class:`CallbackError`), and
        an exception it raises stops the load and is raised, as it was, from here.
        ``tensor_parallel``: a :class:`TensorParallel` (or a ``(rank, world, rules)`` tuple)
        loads one rank's share: entries its rules split get ``torch.chunk(t, world,
        dim)[rank]`` (declare them with that shape; with ``assign`` a zero-copy view, strided
        for a split after the first dimension; copies read only the share's bytes), the rest
        are loaded whole. Shapes that do not fit raise :class:`ShapeMismatchError` in torch's
        words; a rank outside ``range(world)`` or a dimension out of range for a tensor,
        :class:`InvalidArgumentError`.
        ``prefetch``: the loaded entries' bytes are brought in ahead of the copy, in file
        order (a cold file streams). ``direct_reads`` (copy loads): entries of 64 KiB or more
        whose checkpoint tensor is contiguous, whole and in the declared dtype are read with
        ``O_DIRECT`` straight into new module memory, bypassing the page cache (the others
        are copied as usual); results are the same bytes.
        """
        if dtype not in (None, "module"):
            raise InvalidArgumentError(
                f"dtype is None (the checkpoint's) or 'module' (the module's, converting), "
                f"not {dtype!r}",
                InvalidArgumentError.status,
            )
        handle = self._live()
        opts = _lib.mmckpt_load_options()
        check(lib.mmckpt_load_options_init(byref(opts), _lib.LOAD_OPTIONS_VERSION))
        flags = 0
        if assign:
            flags |= _lib.LOAD_ASSIGN
        if strict:
            flags |= _lib.LOAD_STRICT
        if dtype == "module":
            flags |= _lib.LOAD_CONVERT
        if contiguous:
            flags |= _lib.LOAD_CONTIGUOUS
        if prefetch:
            flags |= _lib.LOAD_PREFETCH
        if direct_reads:
            flags |= _lib.LOAD_DIRECT_READS
        opts.flags = flags
        opts.prefix = prefix.encode() if prefix is not None else None
        rules = _split_rules(opts, tensor_parallel)  # kept alive until the call returns
        callback = _Callback(on_tensor) if on_tensor is not None else None
        if callback is not None:
            opts.on_tensor = ctypes.cast(callback.c_function, c_void_p)
        report = c_void_p()
        handle.generation += 1
        status = lib.mmckpt_module_load(handle.ptr, ckpt._live().ptr, byref(opts), byref(report))
        del rules
        if callback is not None and callback.raised is not None:
            raise callback.raised
        check(status)
        return _report(report.value)  # type: ignore[arg-type]

    def free(self) -> None:
        """Frees the module now (also when it is garbage). Arrays and DLPack exports of its
        entries stay valid."""
        handle, self._handle = self._handle, None  # type: ignore[assignment]
        if handle is not None:
            handle.__del__()

    def __enter__(self) -> "Module":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()

    # -- Mapping ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(lib.mmckpt_module_count(self._live().ptr))

    def entry_at(self, index: int) -> ModuleEntry:
        """Entry ``index``, in the order entries were added (torch's state_dict order)."""
        handle = self._live()
        out = _lib.mmckpt_tensor()
        check(lib.mmckpt_module_at(handle.ptr, index, byref(out)))
        return ModuleEntry(handle, row_from_struct(index, out))

    def __iter__(self) -> Iterator[str]:
        return (entry.name for entry in self.entries())

    def entries(self) -> List[ModuleEntry]:
        """Every entry, in order."""
        return [self.entry_at(i) for i in range(len(self))]

    def __getitem__(self, name: str) -> ModuleEntry:
        index = self._names().get(name)
        if index is None:
            raise NotFoundError(f"the module has no entry named '{name}'", NotFoundError.status)
        return self.entry_at(index)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def _names(self) -> Dict[str, int]:
        # Names change only with add (loads change data, not names).
        if self._index is None:
            self._index = {entry.name: i for i, entry in enumerate(self.entries())}
        return self._index

    def __repr__(self) -> str:
        if self._handle is None or not self._handle.ptr:
            return "mmckpt.Module(freed)"
        return f"mmckpt.Module({len(self)} entries)"


def _writable_memory(buffer: Any) -> "tuple[int, int, Any]":
    """The address and length of a writable, contiguous buffer, and the object that keeps it
    alive (and, for the buffer protocol, holds the export so it cannot be resized)."""
    if hasattr(buffer, "data_ptr") and hasattr(buffer, "untyped_storage"):  # a torch tensor
        if buffer.device.type != "cpu":
            raise InvalidArgumentError(
                f"a bound tensor must be on the CPU, not {buffer.device}",
                InvalidArgumentError.status,
            )
        if not buffer.is_contiguous():
            raise InvalidArgumentError(
                "a bound tensor must be contiguous", InvalidArgumentError.status
            )
        return buffer.data_ptr(), buffer.numel() * buffer.element_size(), buffer
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(
            "bind needs a writable buffer (numpy array, bytearray, memoryview) or a CPU torch "
            f"tensor, not {type(buffer).__name__}"
        ) from None
    if view.readonly:
        raise InvalidArgumentError("the buffer is read-only", InvalidArgumentError.status)
    if not view.c_contiguous:
        raise InvalidArgumentError(
            "the buffer is not C-contiguous", InvalidArgumentError.status
        )
    if view.nbytes == 0:
        return 0, 0, buffer
    array = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.addressof(array), view.nbytes, array


def _split_rules(opts: Any, spec: Optional[TensorParallelSpec]) -> Any:
    """Fills the tensor-parallel fields of ``opts``; returns the rule array they point to."""
    if spec is None:
        return None
    tp = spec if isinstance(spec, TensorParallel) else TensorParallel(*spec)
    for value, what in ((tp.rank, "rank"), (tp.world, "world")):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise InvalidArgumentError(
                f"tensor_parallel {what} must be an int in [0, 2**32), not {value!r}",
                InvalidArgumentError.status,
            )
    rules = (_lib.mmckpt_split_rule * max(len(tp.rules), 1))()
    for i, (pattern, dim) in enumerate(tp.rules.items()):
        if not isinstance(pattern, str) or isinstance(dim, bool) or not isinstance(dim, int):
            raise InvalidArgumentError(
                f"tensor_parallel rules map str patterns to int dims, not {pattern!r}: {dim!r}",
                InvalidArgumentError.status,
            )
        rules[i].pattern = pattern.encode()
        rules[i].dim = dim
    opts.tp_rank = tp.rank
    opts.tp_world = tp.world
    opts.split_rules = rules
    opts.split_rule_count = len(tp.rules)
    return rules
