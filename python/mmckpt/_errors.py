"""Exceptions: one per status of the C ABI, each carrying the status and the library's message."""

from __future__ import annotations

from typing import Dict, NoReturn, Type


class Error(Exception):
    """An mmckpt call failed. `status` is the C status code, `message` the library's text."""

    status: int = 0
    status_name: str = "MMCKPT_ERR"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.status_name})"


class NullArgumentError(Error):
    status, status_name = 1, "MMCKPT_ERR_NULL_ARGUMENT"


class InvalidArgumentError(Error, ValueError):
    status, status_name = 2, "MMCKPT_ERR_INVALID_ARGUMENT"


class IoError(Error, OSError):
    """Opening, mapping or reading the file failed."""

    status, status_name = 3, "MMCKPT_ERR_IO"


class FormatError(Error):
    """Not a checkpoint, or a corrupt one."""

    status, status_name = 4, "MMCKPT_ERR_FORMAT"


class UnsupportedError(Error):
    """Valid, but something this version does not handle (a quantized tensor, say)."""

    status, status_name = 5, "MMCKPT_ERR_UNSUPPORTED"


class UnsafeError(Error):
    """A strict open met a global outside the allowlist."""

    status, status_name = 6, "MMCKPT_ERR_UNSAFE"


class LimitError(Error):
    status, status_name = 7, "MMCKPT_ERR_LIMIT"


class NotFoundError(Error, KeyError):
    status, status_name = 8, "MMCKPT_ERR_NOT_FOUND"


class KeyMismatchError(Error):
    """A strict load found missing or unexpected keys."""

    status, status_name = 9, "MMCKPT_ERR_KEY_MISMATCH"


class ShapeMismatchError(Error):
    status, status_name = 10, "MMCKPT_ERR_SHAPE_MISMATCH"


class DtypeMismatchError(Error):
    status, status_name = 11, "MMCKPT_ERR_DTYPE_MISMATCH"


class BufferTooSmallError(Error):
    status, status_name = 12, "MMCKPT_ERR_BUFFER_TOO_SMALL"


class StateError(Error):
    status, status_name = 13, "MMCKPT_ERR_STATE"


class CallbackError(Error):
    """An on_tensor callback stopped the load (its exception is the __cause__)."""

    status, status_name = 14, "MMCKPT_ERR_CALLBACK"


class NoMemoryError(Error, MemoryError):
    status, status_name = 15, "MMCKPT_ERR_NO_MEMORY"


class PanicError(Error):
    """An internal error of the library (please report it)."""

    status, status_name = 99, "MMCKPT_ERR_PANIC"


BY_STATUS: Dict[int, Type[Error]] = {
    cls.status: cls
    for cls in (
        NullArgumentError,
        InvalidArgumentError,
        IoError,
        FormatError,
        UnsupportedError,
        UnsafeError,
        LimitError,
        NotFoundError,
        KeyMismatchError,
        ShapeMismatchError,
        DtypeMismatchError,
        BufferTooSmallError,
        StateError,
        CallbackError,
        NoMemoryError,
        PanicError,
    )
}


def raise_for(status: int, message: str) -> NoReturn:
    cls = BY_STATUS.get(status, Error)
    raise cls(message, status)
