"""torch.distributed.checkpoint directories through the binding (tests/data/dcp, written by
torch's dcp.save on 2 and 4 gloo processes): tensors, chunks and slices against torch."""
import os

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

import mmckpt

DCP = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "dcp")


def dcp_load(path):
    md = dcp.FileSystemReader(path).read_metadata()
    state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
             for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
    dcp.load(state, checkpoint_id=path, no_dist=True)
    return state, md


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("name", ["rank2", "rank4"])
def test_tensors_chunks_and_slices_equal_torch(name):
    path = os.path.join(DCP, name)
    want, md = dcp_load(path)
    with mmckpt.open(path) as ckpt:
        assert ckpt.format == "dcp"
        assert list(ckpt) == list(want)
        for key, t in want.items():
            got = torch.from_dlpack(ckpt[key])
            assert torch.equal(got, t), key
            chunks = ckpt.chunks(key)
            listed = md.state_dict_metadata[key].chunks
            assert [(c.offsets, c.sizes) for c in chunks] == \
                [(tuple(c.offsets), tuple(c.sizes)) for c in listed]
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
