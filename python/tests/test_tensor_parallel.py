"""Tensor-parallel loads through the binding: a rank's share as a view or a copy, the
dataclass and tuple forms, and the errors (tests/oracle/test_tensor_parallel.py runs one
process per rank against torch.chunk)."""
import os

import pytest
import torch

import mmckpt

DCP = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "dcp")


def test_shares_views_and_copies(fixture_path):
    ckpt = mmckpt.open(fixture_path("dtypes.pt"))
    whole = torch.from_dlpack(ckpt["float32"]).clone()  # [3, 5]
    m = mmckpt.Module("Net")
    m.add("float32", "float32", [3, 2])
    m.add("int8", "int8", [3, 5])
    rules = {"float*": 1, "nothing.*": 0}
    report = m.load(ckpt, strict=False, tensor_parallel=mmckpt.TensorParallel(1, 2, rules))
    assert report.missing_keys == [] and "int8" not in report.copied
    assert torch.equal(torch.from_dlpack(m["float32"]), torch.chunk(whole, 2, 1)[1])
    assert torch.equal(torch.from_dlpack(m["int8"]), torch.from_dlpack(ckpt["int8"]))
    copied = mmckpt.Module("Net")
    copied.add("float32", "float32", [3, 3])
    copied.materialize()
    copied.load(ckpt, assign=False, strict=False, tensor_parallel=(0, 2, rules))
    assert torch.equal(torch.from_dlpack(copied["float32"]), torch.chunk(whole, 2, 1)[0])


def test_dcp_share_is_its_chunk():
    ckpt = mmckpt.open(os.path.join(DCP, "rank4"))
    m = mmckpt.Module("Net")
    m.add("row", "float64", [2, 4])
    m.load(ckpt, strict=False, tensor_parallel=mmckpt.TensorParallel(3, 4, {"row": 0}))
    assert m["row"].data_ptr == ckpt.chunks("row")[3].data_ptr


def test_errors():
    ckpt = mmckpt.open(os.path.join(DCP, "rank4"))
    m = mmckpt.Module("Net")
    m.add("short", "int64", [1, 2])
    with pytest.raises(mmckpt.ShapeMismatchError, match=r"rank 3 of world size 4 .* no shard"):
        m.load(ckpt, strict=False, tensor_parallel=(3, 4, {"short": 0}))
    with pytest.raises(mmckpt.InvalidArgumentError, match="rank 4 is out of range"):
        m.load(ckpt, strict=False, tensor_parallel=(4, 4, {"short": 0}))
    with pytest.raises(mmckpt.InvalidArgumentError, match="dimension 2 is out of range"):
        m.load(ckpt, strict=False, tensor_parallel=(0, 4, {"short": 2}))
    with pytest.raises(mmckpt.InvalidArgumentError, match="rank must be an int"):
        m.load(ckpt, strict=False, tensor_parallel=(-1, 4, {}))
