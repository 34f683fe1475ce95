"""Tensor.__dlpack__ into torch and numpy for every dtype, zero-copy; numpy(); lifetimes."""
import gc
import os
import shutil

import numpy as np
import pytest
import torch

import mmckpt
from compare import raw_bytes
from conftest import FIXTURES, mapped_paths

DTYPES = os.path.join(FIXTURES, "dtypes.pt")
BITS = {"bits8", "bits16", "bits1x8", "bits2x4", "bits4x2"}
NUMPY_NATIVE = {"float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64",
                "bool", "complex64", "complex128", "uint16", "uint32", "uint64"}


def test_every_dtype_into_torch_without_a_copy():
    want = torch.load(DTYPES, weights_only=True)
    with mmckpt.open(DTYPES) as ckpt:
        for name, t in ckpt.items():
            if name in BITS:
                with pytest.raises(mmckpt.UnsupportedError, match=name):
                    torch.from_dlpack(t)
                continue
            got = torch.from_dlpack(t)
            assert got.data_ptr() == t.data_ptr, name
            assert str(got.dtype) == f"torch.{t.dtype}", name
            assert got.shape == want[name].shape and got.stride() == want[name].stride(), name
            assert raw_bytes(got) == raw_bytes(want[name]), name


def test_numpy_from_dlpack_is_zero_copy_and_read_only():
    with mmckpt.open(DTYPES) as ckpt:
        for name in NUMPY_NATIVE:
            t = ckpt[name]
            a = np.from_dlpack(t)
            assert a.ctypes.data == t.data_ptr, name
            assert not a.flags.writeable, name
            b = t.numpy()
            assert b.ctypes.data == t.data_ptr and not b.flags.writeable, name
            assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), name


def test_strided_views_keep_their_strides():
    with mmckpt.open(os.path.join(FIXTURES, "forms.pt")) as ckpt:
        want = torch.load(os.path.join(FIXTURES, "forms.pt"), weights_only=True)
        for name in ("transpose", "slice", "expanded", "as_strided", "half_step", "scalar", "empty"):
            got = torch.from_dlpack(ckpt[name])
            assert got.stride() == want[name].stride(), name
            assert torch.equal(got, want[name].detach()), name
            a = ckpt[name].numpy()
            assert np.array_equal(a, want[name].detach().numpy()), name


def test_dtypes_numpy_lacks():
    with mmckpt.open(DTYPES) as ckpt:
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            with pytest.raises(mmckpt.UnsupportedError, match="ml_dtypes"):
                ckpt["bfloat16"].numpy()
        else:
            a = ckpt["bfloat16"].numpy()
            assert a.ctypes.data == ckpt["bfloat16"].data_ptr
        with pytest.raises(mmckpt.UnsupportedError, match="torch.from_dlpack"):
            ckpt["complex32"].numpy()


def test_exports_outlive_close_and_release_the_mapping(tmp_path):
    path = str(tmp_path / "life.pt")
    shutil.copyfile(os.path.join(FIXTURES, "forms.pt"), path)
    ckpt = mmckpt.open(path)
    want = torch.load(path, weights_only=True)["transpose"]
    x = torch.from_dlpack(ckpt["transpose"])
    a = ckpt["contiguous"].numpy()
    ckpt.close()
    with pytest.raises(mmckpt.StateError):
        ckpt["transpose"]
    gc.collect()
    assert path in mapped_paths()
    assert torch.equal(x, want)
    del x
    gc.collect()
    assert path in mapped_paths()  # the numpy view still holds it
    assert a.sum() == a.sum()
    del a
    gc.collect()
    assert path not in mapped_paths()


def test_unconsumed_capsules_free_their_export(tmp_path):
    path = str(tmp_path / "cap.pt")
    shutil.copyfile(os.path.join(FIXTURES, "forms.pt"), path)
    ckpt = mmckpt.open(path)
    capsules = [ckpt["transpose"].__dlpack__(max_version=(1, 0)) for _ in range(3)]
    ckpt.close()
    gc.collect()
    assert path in mapped_paths()
    del capsules
    gc.collect()
    assert path not in mapped_paths()
