"""mmckpt: PyTorch checkpoints, memory-mapped and zero-copy, through mmckpt's C ABI.

>>> import mmckpt, torch
>>> with mmckpt.open("model.pt") as ckpt:
...     w = torch.from_dlpack(ckpt["fc.weight"])     # zero-copy
...     lr = ckpt.value("optimizer.param_groups.0.lr")
>>> state = mmckpt.torch.load("model.pt")              # as torch.load(mmap=True, weights_only=True)
>>> m = mmckpt.Module.from_spec({"type": "Linear", "in_features": 4, "out_features": 2})
>>> report = m.load(mmckpt.open("linear.pt"))           # load_state_dict(assign=True), zero-copy
"""

from ._checkpoint import Checkpoint, Chunk, Tensor, TensorInfo, TensorView, open
from ._module import LoadReport, Module, ModuleEntry, TensorParallel
from ._errors import (
    BufferTooSmallError,
    CallbackError,
    DtypeMismatchError,
    Error,
    FormatError,
    InvalidArgumentError,
    IoError,
    KeyMismatchError,
    LimitError,
    NoMemoryError,
    NotFoundError,
    NullArgumentError,
    PanicError,
    ShapeMismatchError,
    StateError,
    UnsafeError,
    UnsupportedError,
)
from ._lib import version as _version

__version__ = _version()

__all__ = [
    "open",
    "Checkpoint",
    "Tensor",
    "TensorView",
    "Chunk",
    "TensorInfo",
    "Module",
    "ModuleEntry",
    "LoadReport",
    "TensorParallel",
    "Error",
    "NullArgumentError",
    "InvalidArgumentError",
    "IoError",
    "FormatError",
    "UnsupportedError",
    "UnsafeError",
    "LimitError",
    "NotFoundError",
    "KeyMismatchError",
    "ShapeMismatchError",
    "DtypeMismatchError",
    "BufferTooSmallError",
    "StateError",
    "CallbackError",
    "NoMemoryError",
    "PanicError",
]


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook
    # `mmckpt.torch` imports torch: only when asked for.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'mmckpt' has no attribute {name!r}")
