"""torch.distributed.checkpoint directories through the binding (tests/data/dcp, written by
torch's dcp.save on 2 and 4 gloo processes): tensors and chunks against what dcp.load gave
(tests/data/dcp/expected.json), slices against torch.chunk and narrow of the whole."""
import hashlib
import json
import os

import pytest
import torch

import mmckpt

# Not torch.distributed: importing it makes mmckpt.torch's random-checkpoint test crash now and
# then (seen in test_torch_load after `import torch.distributed`, with or without mmckpt's
# DCP code; reported). expected.json holds what dcp.load gave (scripts/make_dcp_fixtures.py).
DCP = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "dcp")
with open(os.path.join(DCP, "expected.json")) as f:
    EXPECTED = json.load(f)


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("name", ["rank2", "rank4"])
def test_tensors_chunks_and_slices_equal_torch(name):
    path = os.path.join(DCP, name)
    want = {k: v for k, v in EXPECTED[name].items() if "sha256" in v}
    with mmckpt.open(path) as ckpt:
        assert ckpt.format == "dcp"
        assert sorted(ckpt) == sorted(want)
        for key, item in want.items():
            t = torch.from_dlpack(ckpt[key]).clone()
            assert str(t.dtype) == "torch." + item["dtype"] and list(t.shape) == item["shape"]
            assert hashlib.sha256(raw(t)).hexdigest() == item["sha256"], key
            chunks = ckpt.chunks(key)
            assert [(c.offsets, c.sizes) for c in chunks] == \
                [(tuple(o), tuple(s)) for o, s in item["chunks"]]
            for c in chunks:
                region = t
                for d, (o, s) in enumerate(zip(c.offsets, c.sizes)):
                    region = region.narrow(d, o, s)
                assert c.numpy().tobytes() == raw(region), (key, c.offsets)
            # Tensor-parallel shares: torch.chunk(t, world, dim)[rank] for every dim.
            world = 4 if name == "rank4" else 2
            for dim in range(t.dim()):
                start = 0
                for part in torch.chunk(t, world, dim):
                    s = ckpt.slice(key, dim, start, part.shape[dim])
                    assert s.shape == tuple(part.shape)
                    assert s.numpy().tobytes() == raw(part), (key, dim, start)
                    start += part.shape[dim]


def test_slice_errors_and_lifetime():
    ckpt = mmckpt.open(os.path.join(DCP, "rank2"))
    with pytest.raises(mmckpt.InvalidArgumentError, match=r"Dimension out of range"):
        ckpt.slice("row", 2, 0, 1)
    with pytest.raises(mmckpt.InvalidArgumentError, match=r"exceeds dimension size \(8\)"):
        ckpt.slice("row", 0, 4, 5)
    with pytest.raises(mmckpt.NotFoundError):
        ckpt.slice("nope", 0, 0, 1)
    s = ckpt.slice("row", 0, 3, 2)  # crosses the two ranks' chunks: a copy
    whole = torch.from_dlpack(ckpt["row"]).clone()
    ckpt.close()
    assert not s.is_mapped
    assert s.numpy().tolist() == whole[3:5].tolist()
