"""Into JAX, whose from_dlpack asks for the pre-1.0 DLPack protocol: zero-copy for every dtype
JAX has, values equal to torch's; and the unversioned capsule's rules (refused where a write
could reach shared read-only bytes, a copy's is writable, torch can consume it too)."""
import os

import numpy as np
import pytest
import torch

import mmckpt
from compare import raw_bytes
from conftest import FIXTURES

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)  # else JAX narrows 64-bit dtypes by a copy
jax.config.update("jax_platforms", "cpu")

DTYPES = os.path.join(FIXTURES, "dtypes.pt")
# DLPack codes JAX refuses ("complex width 32", "lanes != 1"), and torch's bits types, which
# DLPack has no code for.
NOT_IN_JAX = {"complex32", "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2"}


def test_every_dtype_into_jax_without_a_copy():
    want = torch.load(DTYPES, weights_only=True)
    seen = 0
    with mmckpt.open(DTYPES) as ckpt:
        for name, t in ckpt.items():
            if name in NOT_IN_JAX:
                continue
            x = jax.dlpack.from_dlpack(t)
            assert x.unsafe_buffer_pointer() == t.data_ptr, name  # no copy
            assert str(x.dtype) == t.dtype, name
            assert x.shape == tuple(want[name].shape), name
            assert np.asarray(x).tobytes() == raw_bytes(want[name].contiguous()), name
            seen += 1
    assert seen == 20


def test_jax_arrays_outlive_the_checkpoint():
    with mmckpt.open(DTYPES) as ckpt:
        x = jax.dlpack.from_dlpack(ckpt["float32"])
        expected = torch.from_dlpack(ckpt["float32"]).clone()
    import gc

    gc.collect()
    assert np.array_equal(np.asarray(x), expected.numpy())


def test_unversioned_capsules_only_where_writes_stay_private(tmp_path):
    path = str(tmp_path / "w.pt")
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, path)
    before = open(path, "rb").read()
    # The default open maps copy-on-write: the capsule is zero-copy, and a write through it
    # changes a private page, never the file.
    with mmckpt.open(path) as ckpt:
        t = ckpt["w"]
        capsule = t.__dlpack__()  # no max_version: the pre-1.0 protocol
        got = torch.utils.dlpack.from_dlpack(capsule)
        assert got.data_ptr() == t.data_ptr
        got[0] = 42.0
        assert torch.from_dlpack(ckpt["w"])[0] == 42.0  # the process's view
        del capsule
    assert open(path, "rb").read() == before
    # A shared read-only mapping: refused, naming the way out.
    with mmckpt.open(path, copy_on_write=False) as ckpt:
        with pytest.raises(BufferError, match="copy_on_write=True"):
            ckpt["w"].__dlpack__()
        with pytest.raises(BufferError, match="unversioned"):
            jax.dlpack.from_dlpack(ckpt["w"])
        assert torch.from_dlpack(ckpt["w"]).data_ptr() == ckpt["w"].data_ptr  # 1.x still fine
    # A module entry with owned memory exports a copy: writable, so the old protocol gets it.
    module = mmckpt.Module()
    module.add("w", "float32", [6])
    module.materialize()
    with mmckpt.open(path) as ckpt:
        module.load(ckpt, assign=False)
    x = jax.dlpack.from_dlpack(module["w"])
    assert x.unsafe_buffer_pointer() != module["w"].data_ptr
    assert np.array_equal(np.asarray(x), np.arange(6, dtype=np.float32))
    # An unconsumed unversioned capsule frees its export when it is garbage.
    with mmckpt.open(path) as ckpt:
        for _ in range(100):
            ckpt["w"].__dlpack__()
