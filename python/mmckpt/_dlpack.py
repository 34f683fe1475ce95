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

# DLManagedTensorVersioned: version (8), manager_ctx (8), deleter at offset 16.
_DELETER = ctypes.CFUNCTYPE(None, c_void_p)


def _call_deleter(managed: int) -> None:
    deleter = ctypes.c_void_p.from_address(managed + 16).value
    if deleter:
        _DELETER(deleter)(managed)


@ctypes.CFUNCTYPE(None, c_void_p)
def _capsule_destructor(capsule: int) -> None:
    # A consumer renames the capsule ("used_dltensor_versioned") when it takes ownership;
    # an unconsumed capsule still owns the export and frees it here.
    if _api.PyCapsule_IsValid(capsule, _NAME):
        managed = _api.PyCapsule_GetPointer(capsule, _NAME)
        if managed:
            _call_deleter(managed)


_DESTRUCTOR_PTR = ctypes.cast(_capsule_destructor, c_void_p).value


def capsule_from_export(managed: int) -> Any:
    """Wraps a DLManagedTensorVersioned* in a capsule that frees it unless consumed."""
    try:
        return _api.PyCapsule_New(managed, _NAME_PTR, _DESTRUCTOR_PTR)
    except BaseException:
        _call_deleter(managed)
        raise
