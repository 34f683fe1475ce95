"""numpy dtypes for torch's dtype names, with ml_dtypes for those numpy lacks."""

from __future__ import annotations

from typing import Any

from ._errors import UnsupportedError

NATIVE = {
    "float32": "float32",
    "float64": "float64",
    "float16": "float16",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
    "complex64": "complex64",
    "complex128": "complex128",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
}

# torch's names -> ml_dtypes' names.
_ML_DTYPES = {
    "bfloat16": "bfloat16",
    "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2",
    "float8_e4m3fnuz": "float8_e4m3fnuz",
    "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu",
}


def numpy_dtype(name: str) -> Any:
    import numpy as np

    if name in NATIVE:
        return np.dtype(NATIVE[name])
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise UnsupportedError(
                f"numpy has no {name} dtype: install ml_dtypes (pip install ml_dtypes), or use "
                f"torch.from_dlpack(tensor)",
                UnsupportedError.status,
            ) from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
    raise UnsupportedError(
        f"neither numpy nor ml_dtypes has a {name} dtype: use torch.from_dlpack(tensor)",
        UnsupportedError.status,
    )
