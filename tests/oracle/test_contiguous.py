"""MMCKPT_LOAD_CONTIGUOUS against torch: random state dicts of strided tensors saved as-is
(`.t()`, `.permute`, `as_strided`, slices with offsets, stride-0 expands, facenet-like conv
weights), assign-loaded through the C ABI (ctypes) with CONTIGUOUS; each entry's `data`, read as
a plain row-major array of `numel` elements, must equal torch's `t.contiguous()` bytes, with
row-major strides; entries torch already holds row-major stay zero-copy (MAPPED), and the
report's copied list names exactly the others, in load order."""
import ctypes
import os
import random

import pytest
import torch

from test_modules import Tensor, lib  # noqa: F401  (the session-wide library fixture)

CASES = int(os.environ.get("MMCKPT_ORACLE_CONTIGUOUS", "60"))
TENSOR_MAPPED = 1 << 0
TENSOR_CONTIGUOUS = 1 << 1
LOAD_ASSIGN, LOAD_STRICT, LOAD_CONVERT, LOAD_CONTIGUOUS = 1, 2, 4, 8
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8]


class LoadOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("prefix", ctypes.c_char_p), ("on_tensor", ctypes.c_void_p),
                ("user_data", ctypes.c_void_p)]


def random_strided(rng, dtype):
    kind = rng.choice(["t", "permute", "as_strided", "slice", "expand", "facenet", "contiguous"])
    def base(*shape):
        return (torch.randn(*shape) * 8).to(dtype)
    if kind == "t":
        return base(rng.randint(1, 7), rng.randint(1, 7)).t()
    if kind == "permute":
        dims = [rng.randint(1, 5) for _ in range(rng.randint(2, 4))]
        order = list(range(len(dims)))
        rng.shuffle(order)
        return base(*dims).permute(*order)
    if kind == "as_strided":
        storage = base(64)
        shape = (rng.randint(1, 4), rng.randint(1, 4))
        strides = (rng.randint(0, 6), rng.randint(0, 6))
        return storage.as_strided(shape, strides, rng.randint(0, 8))
    if kind == "slice":
        return base(rng.randint(2, 8), rng.randint(2, 8))[1:, ::rng.randint(1, 3)]
    if kind == "expand":
        return base(1, rng.randint(1, 5)).expand(rng.randint(1, 4), -1)
    if kind == "facenet":
        out_c, in_c, k = rng.randint(2, 12), rng.randint(1, 4), rng.choice([1, 3, 5])
        return base(k, k, in_c, out_c).permute(3, 2, 1, 0)
    return base(rng.randint(0, 5), rng.randint(1, 5))


@pytest.mark.parametrize("case", range(CASES), ids=[f"contiguous_{i}" for i in range(CASES)])
def test_contiguous_load_equals_torch_contiguous(lib, tmp_path, case):  # noqa: F811
    rng = random.Random(7919 * case + 17)
    torch.manual_seed(case)
    sd = {f"t{i}": random_strided(rng, rng.choice(DTYPES)) for i in range(rng.randint(1, 6))}
    path = str(tmp_path / "strided.pt")
    torch.save(sd, path)
    loaded = torch.load(path)

    lib.mmckpt_checkpoint_open.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.mmckpt_module_from_checkpoint.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.mmckpt_load_options_init.argtypes = [ctypes.POINTER(LoadOptions), ctypes.c_uint32]
    lib.mmckpt_module_load.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(LoadOptions),
                                       ctypes.POINTER(ctypes.c_void_p)]
    lib.mmckpt_module_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Tensor)]
    lib.mmckpt_load_report_copied_count.argtypes = [ctypes.c_void_p]
    lib.mmckpt_load_report_copied_count.restype = ctypes.c_size_t
    lib.mmckpt_load_report_copied.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.mmckpt_load_report_copied.restype = ctypes.c_char_p
    lib.mmckpt_load_report_free.argtypes = [ctypes.c_void_p]
    lib.mmckpt_checkpoint_close.argtypes = [ctypes.c_void_p]
    lib.mmckpt_checkpoint_tensor.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Tensor)]

    ckpt, module, report = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.mmckpt_checkpoint_open(path.encode(), None, ctypes.byref(ckpt)) == 0, \
        lib.mmckpt_last_error().decode()
    try:
        assert lib.mmckpt_module_from_checkpoint(ckpt, ctypes.byref(module)) == 0
        opts = LoadOptions()
        assert lib.mmckpt_load_options_init(ctypes.byref(opts), 1) == 0
        opts.flags = LOAD_ASSIGN | LOAD_STRICT | LOAD_CONTIGUOUS
        assert lib.mmckpt_module_load(module, ckpt, ctypes.byref(opts), ctypes.byref(report)) == 0, \
            lib.mmckpt_last_error().decode()
        copied = [lib.mmckpt_load_report_copied(report, i).decode()
                  for i in range(lib.mmckpt_load_report_copied_count(report))]
        # Which entries mmckpt's checkpoint table itself calls strided (torch's is_contiguous
        # ignores strides of size-1 dimensions, as mmckpt's does).
        strided = []
        for name, t in loaded.items():
            entry = Tensor()
            assert lib.mmckpt_module_get(module, name.encode(), ctypes.byref(entry)) == 0
            want = torch.empty(t.shape, dtype=t.dtype).copy_(t).reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            got = ctypes.string_at(entry.data, len(want)) if want else b""
            assert got == want, f"{name}: shape {list(t.shape)} stride {t.stride()}"
            assert entry.flags & TENSOR_CONTIGUOUS, name
            expected = 1
            for d in reversed(range(entry.ndim)):
                assert entry.shape[d] == 1 or entry.strides[d] == expected, name
                expected *= entry.shape[d]
            source = Tensor()
            assert lib.mmckpt_checkpoint_tensor(ckpt, name.encode(), ctypes.byref(source)) == 0
            if source.flags & TENSOR_CONTIGUOUS:
                assert entry.data == source.data and entry.flags & TENSOR_MAPPED, \
                    f"{name} is row-major in the file: it must stay a zero-copy view"
            else:
                assert not t.is_contiguous() or t.numel() <= 1, name
                strided.append(name)
        assert sorted(copied) == sorted(strided)
    finally:
        lib.mmckpt_load_report_free(report)
        lib.mmckpt_module_free(module)
        lib.mmckpt_checkpoint_close(ckpt)
