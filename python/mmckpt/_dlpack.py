"""DLPack capsules over the C exports (PEP-less protocol of the array API standard)."""

from __future__ import annotations

import ctypes
from ctypes import c_char_p, c_int, c_void_p
from typing import Any

_NAME = b"dltensor_versioned"
# The capsule keeps a pointer to its name: a module-level bytes object lives as long as the
# interpreter.
_NAME_PTR = ctypes.c_char_p(_NAME)

_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [c_void_p, c_char_p, c_void_p]
_api.PyCapsule_IsValid.restype = c_int
_api.PyCapsule_IsValid.argtypes = [c_void_p, c_char_p]
_api.PyCapsule_GetPointer.restype = c_void_p
_api.PyCapsule_GetPointer.argtypes = [c_void_p, c_char_p]

_DELETER = ctypes.CFUNCTYPE(None, c_void_p)

# Where the deleter is: DLManagedTensorVersioned: version (8), manager_ctx (8), deleter;
# DLManagedTensor (pre-1.0): dl_tensor (48), manager_ctx (8), deleter.
_VERSIONED_DELETER_AT = 16
_LEGACY_DELETER_AT = 56


def _call_deleter(managed: int, deleter_at: int = _VERSIONED_DELETER_AT) -> None:
    deleter = ctypes.c_void_p.from_address(managed + deleter_at).value
    if deleter:
        _DELETER(deleter)(managed)


def _capsule_destructor_for(name: bytes, deleter_at: int) -> Any:
    """The destructor of capsules named `name`: a consumer renames the capsule
    ("used_dltensor_versioned", "used_dltensor") when it takes ownership; an unconsumed capsule
    still owns the export and frees it here."""

    @ctypes.CFUNCTYPE(None, c_void_p)
    def destructor(capsule: int) -> None:
        if _api.PyCapsule_IsValid(capsule, name):
            managed = _api.PyCapsule_GetPointer(capsule, name)
            if managed:
                _call_deleter(managed, deleter_at)

    return destructor


# Module-level: the C function pointers must live as long as any capsule.
_capsule_destructor = _capsule_destructor_for(_NAME, _VERSIONED_DELETER_AT)
_DESTRUCTOR_PTR = ctypes.cast(_capsule_destructor, c_void_p).value


def capsule_from_export(managed: int) -> Any:
    """Wraps a DLManagedTensorVersioned* in a capsule that frees it unless consumed."""
    try:
        return _api.PyCapsule_New(managed, _NAME_PTR, _DESTRUCTOR_PTR)
    except BaseException:
        _call_deleter(managed)
        raise


_LEGACY_NAME = b"dltensor"
_LEGACY_NAME_PTR = ctypes.c_char_p(_LEGACY_NAME)


_legacy_capsule_destructor = _capsule_destructor_for(_LEGACY_NAME, _LEGACY_DELETER_AT)
_LEGACY_DESTRUCTOR_PTR = ctypes.cast(_legacy_capsule_destructor, c_void_p).value


def legacy_capsule_from_export(managed: int) -> Any:
    """Wraps a DLManagedTensorVersioned* as a pre-1.0 ``dltensor`` capsule (through
    mmckpt_dlpack_unversioned, which takes ownership of the export), for consumers that ask
    for the unversioned protocol. The caller has checked that writes into it are safe."""
    from ._lib import check, lib  # here: _lib imports this module's neighbours

    wrapper = ctypes.c_void_p()
    try:
        check(lib.mmckpt_dlpack_unversioned(managed, ctypes.byref(wrapper)))
    except BaseException:
        _call_deleter(managed)
        raise
    try:
        return _api.PyCapsule_New(wrapper.value, _LEGACY_NAME_PTR, _LEGACY_DESTRUCTOR_PTR)
    except BaseException:
        _call_deleter(wrapper.value, _LEGACY_DELETER_AT)  # type: ignore[arg-type]
        raise


_FLAG_IS_COPIED = 1 << 1


def export_is_copy(managed: int) -> bool:
    """DLPACK_FLAG_BITMASK_IS_COPIED of an export (flags at offset 24)."""
    return bool(ctypes.c_uint64.from_address(managed + 24).value & _FLAG_IS_COPIED)


def free_export(managed: int) -> None:
    """Calls an export's deleter (for an export no capsule took)."""
    _call_deleter(managed)


class ExportView:
    """An export's elements as seen by Python: owns the DLManagedTensorVersioned and calls
    its deleter when garbage (a numpy array built over `address` keeps this object alive)."""

    __slots__ = ("managed", "address", "shape", "strides", "read_only", "__weakref__")

    def __init__(self, managed: int) -> None:
        self.managed = managed
        # DLTensor at offset 32: data (8), device (8), ndim (4), dtype (4), shape (8),
        # strides (8), byte_offset (8).
        tensor = managed + 32
        data = ctypes.c_void_p.from_address(tensor).value or 0
        ndim = ctypes.c_int32.from_address(tensor + 16).value
        shape_ptr = ctypes.c_void_p.from_address(tensor + 24).value
        strides_ptr = ctypes.c_void_p.from_address(tensor + 32).value
        byte_offset = ctypes.c_uint64.from_address(tensor + 40).value
        self.address = data + byte_offset
        dims = ctypes.c_int64 * ndim
        self.shape = tuple(dims.from_address(shape_ptr)) if ndim else ()
        self.strides = tuple(dims.from_address(strides_ptr)) if ndim else ()
        self.read_only = bool(ctypes.c_uint64.from_address(managed + 24).value & 1)

    def __del__(self) -> None:
        managed, self.managed = self.managed, 0
        if managed:
            _call_deleter(managed)
