"""The C ABI through ctypes: the bundled libmmckpt.so, its structs and signatures, and status
codes turned into exceptions. Nothing here is public API."""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from ._errors import raise_for


def _library_path() -> str:
    override = os.environ.get("MMCKPT_LIBRARY")
    if override:
        return override
    return str(Path(__file__).resolve().parent / "libmmckpt.so")


lib = ctypes.CDLL(_library_path())


class mmckpt_tensor(Structure):
    """The C tensor description (88 bytes; see mmckpt.h)."""

    _fields_ = [
        ("name", c_char_p),
        ("dtype", c_uint32),
        ("ndim", c_uint32),
        ("shape", POINTER(c_int64)),
        ("strides", POINTER(c_int64)),
        ("storage_offset", c_int64),
        ("numel", c_uint64),
        ("data", c_void_p),
        ("nbytes", c_uint64),
        ("storage_id", c_uint64),
        ("file_offset", c_uint64),
        ("flags", c_uint32),
    ]


assert ctypes.sizeof(mmckpt_tensor) == 88


class mmckpt_chunk(Structure):
    """One chunk of a tensor (mmckpt_checkpoint_chunk_at; see mmckpt.h)."""

    _fields_ = [
        ("ndim", c_uint32),
        ("offsets", POINTER(c_int64)),
        ("sizes", POINTER(c_int64)),
        ("tensor", mmckpt_tensor),
    ]


class mmckpt_open_options(Structure):
    _fields_ = [("version", c_uint32), ("flags", c_uint32), ("root", c_char_p)]


class mmckpt_split_rule(Structure):
    _fields_ = [("pattern", c_char_p), ("dim", c_int64)]


class mmckpt_load_options(Structure):
    # Version 2 (LOAD_OPTIONS_VERSION): version 1's fields, then the tensor-parallel ones.
    _fields_ = [
        ("version", c_uint32),
        ("flags", c_uint32),
        ("prefix", c_char_p),
        ("on_tensor", c_void_p),
        ("user_data", c_void_p),
        ("tp_rank", c_uint32),
        ("tp_world", c_uint32),
        ("split_rules", POINTER(mmckpt_split_rule)),
        ("split_rule_count", c_size_t),
    ]


LOAD_OPTIONS_VERSION = 2


OPEN_STRICT = 1 << 0
OPEN_READ = 1 << 1
OPEN_POPULATE = 1 << 2
OPEN_UNALIGNED = 1 << 3
OPEN_COPY_ON_WRITE = 1 << 4

TENSOR_MAPPED = 1 << 0
TENSOR_CONTIGUOUS = 1 << 1
TENSOR_PARAMETER = 1 << 2
TENSOR_REQUIRES_GRAD = 1 << 3
TENSOR_CONJ = 1 << 4
TENSOR_NEG = 1 << 5
TENSOR_BUFFER = 1 << 6

LOAD_ASSIGN = 1 << 0
LOAD_STRICT = 1 << 1
LOAD_CONVERT = 1 << 2
LOAD_CONTIGUOUS = 1 << 3
LOAD_PREFETCH = 1 << 4
LOAD_DIRECT_READS = 1 << 5

ENTRY_BUFFER = 1 << 0
ENTRY_NON_PERSISTENT = 1 << 1

NO_OFFSET = (1 << 64) - 1

VALUE_KINDS = [
    "none",
    "bool",
    "int",
    "bigint",
    "float",
    "complex",
    "str",
    "bytes",
    "list",
    "tuple",
    "dict",
    "set",
    "object",
    "tensor",
    "global",
    "other",
]

# torch's dtype names, indexed by mmckpt_dtype value - 1.
DTYPE_NAMES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "bool",
    "complex64",
    "complex128",
    "uint16",
    "uint32",
    "uint64",
    "complex32",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
]
DTYPE_CODES = {name: i + 1 for i, name in enumerate(DTYPE_NAMES)}
ITEMSIZE = [4, 8, 2, 2, 1, 1, 2, 4, 8, 1, 8, 16, 2, 4, 8, 4, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]

ON_TENSOR = ctypes.CFUNCTYPE(c_int32, c_void_p, POINTER(mmckpt_tensor))

_P = c_void_p
_SIGNATURES = {
    "mmckpt_last_error": (c_char_p, []),
    "mmckpt_version": (c_char_p, []),
    "mmckpt_open_options_init": (c_uint32, [POINTER(mmckpt_open_options), c_uint32]),
    "mmckpt_checkpoint_open": (
        c_uint32,
        [c_char_p, POINTER(mmckpt_open_options), POINTER(_P)],
    ),
    "mmckpt_checkpoint_close": (None, [_P]),
    "mmckpt_checkpoint_tensor_count": (c_size_t, [_P]),
    "mmckpt_checkpoint_tensor_at": (c_uint32, [_P, c_size_t, POINTER(mmckpt_tensor)]),
    "mmckpt_checkpoint_name_at": (c_char_p, [_P, c_size_t]),
    "mmckpt_checkpoint_format": (c_char_p, [_P]),
    "mmckpt_checkpoint_describe": (
        c_uint32,
        [_P, c_size_t, c_size_t, _P, _P, _P, _P, c_size_t, POINTER(c_size_t)],
    ),
    "mmckpt_checkpoint_describe_names": (
        c_uint32,
        [_P, c_size_t, c_size_t, _P, c_size_t, POINTER(c_size_t)],
    ),
    "mmckpt_checkpoint_describe_layouts": (
        c_uint32,
        [_P, c_size_t, c_size_t, _P, _P, c_size_t, POINTER(c_size_t), POINTER(c_size_t)],
    ),
    "mmckpt_checkpoint_tensor_to_dlpack": (c_uint32, [_P, c_size_t, POINTER(_P)]),
    "mmckpt_dlpack_unversioned": (c_uint32, [_P, POINTER(_P)]),
    "mmckpt_checkpoint_chunk_count": (c_uint32, [_P, c_size_t, POINTER(c_size_t)]),
    "mmckpt_checkpoint_chunk_at": (c_uint32, [_P, c_size_t, c_size_t, POINTER(mmckpt_chunk)]),
    "mmckpt_checkpoint_slice": (
        c_uint32,
        [_P, c_char_p, c_int64, c_int64, c_int64, POINTER(_P)],
    ),
    "mmckpt_slice_tensor": (c_uint32, [_P, POINTER(mmckpt_tensor)]),
    "mmckpt_slice_free": (None, [_P]),
    "mmckpt_module_entry_to_dlpack": (c_uint32, [_P, c_size_t, POINTER(_P)]),
    "mmckpt_checkpoint_value_kind": (c_uint32, [_P, c_char_p, POINTER(c_uint32)]),
    "mmckpt_checkpoint_value_bool": (c_uint32, [_P, c_char_p, POINTER(c_int32)]),
    "mmckpt_checkpoint_value_int": (c_uint32, [_P, c_char_p, POINTER(c_int64)]),
    "mmckpt_checkpoint_value_float": (c_uint32, [_P, c_char_p, POINTER(c_double)]),
    "mmckpt_checkpoint_value_complex": (
        c_uint32,
        [_P, c_char_p, POINTER(c_double), POINTER(c_double)],
    ),
    "mmckpt_checkpoint_value_string": (
        c_uint32,
        [_P, c_char_p, _P, c_size_t, POINTER(c_size_t)],
    ),
    "mmckpt_checkpoint_value_class": (
        c_uint32,
        [_P, c_char_p, _P, c_size_t, POINTER(c_size_t)],
    ),
    "mmckpt_checkpoint_value_child_count": (c_uint32, [_P, c_char_p, POINTER(c_size_t)]),
    "mmckpt_checkpoint_value_child_key": (
        c_uint32,
        [_P, c_char_p, c_size_t, _P, c_size_t, POINTER(c_size_t)],
    ),
    "mmckpt_module_new": (c_uint32, [c_char_p, POINTER(_P)]),
    "mmckpt_module_from_spec": (c_uint32, [c_char_p, c_size_t, POINTER(_P)]),
    "mmckpt_module_from_checkpoint": (c_uint32, [_P, POINTER(_P)]),
    "mmckpt_module_add": (
        c_uint32,
        [_P, c_char_p, c_uint32, POINTER(c_int64), c_uint32, c_uint32],
    ),
    "mmckpt_module_free": (None, [_P]),
    "mmckpt_module_count": (c_size_t, [_P]),
    "mmckpt_module_at": (c_uint32, [_P, c_size_t, POINTER(mmckpt_tensor)]),
    "mmckpt_module_materialize": (c_uint32, [_P]),
    "mmckpt_module_bind": (c_uint32, [_P, c_char_p, _P, c_size_t]),
    "mmckpt_load_options_init": (c_uint32, [POINTER(mmckpt_load_options), c_uint32]),
    "mmckpt_module_load": (
        c_uint32,
        [_P, _P, POINTER(mmckpt_load_options), POINTER(_P)],
    ),
    "mmckpt_load_report_missing_count": (c_size_t, [_P]),
    "mmckpt_load_report_missing": (c_char_p, [_P, c_size_t]),
    "mmckpt_load_report_unexpected_count": (c_size_t, [_P]),
    "mmckpt_load_report_unexpected": (c_char_p, [_P, c_size_t]),
    "mmckpt_load_report_copied_count": (c_size_t, [_P]),
    "mmckpt_load_report_copied": (c_char_p, [_P, c_size_t]),
    "mmckpt_load_report_message": (c_char_p, [_P]),
    "mmckpt_load_report_free": (None, [_P]),
}

for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _fn = getattr(lib, _name, None)
    if _fn is None:
        continue
    _fn.restype = _restype
    _fn.argtypes = _argtypes


def check(status: int) -> None:
    """Raises the exception of a non-zero status with the library's last error message."""
    if status:
        message = lib.mmckpt_last_error().decode("utf-8", "replace")
        raise_for(status, message)


def version() -> str:
    return lib.mmckpt_version().decode()
