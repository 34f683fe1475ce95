"""torch.distributed.checkpoint directories written by torch's own `dcp.save` on 2 gloo CPU
processes (DTensors sharded on a random dimension, replicated, plain tensors, a step int),
read back by `mmckpt ls --json --hash` and compared with the unsharded originals and with
what `dcp.load` gives in one process.

All cases are written by one spawn of 2 processes (a process group costs seconds to start):
MMCKPT_DCP_CASES (default 6) directories, case i from seed `seed * 1000003 + i`."""
import hashlib
import os
import random
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from conftest import run_ls

WORLD = 2
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.int8, torch.uint8, torch.bool, torch.complex64]


def random_state(seed):
    """The unsharded state dict of one case, and how each tensor is placed."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    state, placements = {}, {}
    for i in range(rng.randint(1, 8)):
        name = f"layers.{i}." + rng.choice(["weight", "bias", "norm.scale", "q_proj.weight"])
        dtype = rng.choice(DTYPES)
        shape = [rng.choice([0, 1, 2, 3, 4, 5, 7, 8, 16]) if rng.random() < 0.9
                 else rng.randint(17, 64) for _ in range(rng.randint(1, 3))]
        numel = 1
        for d in shape:
            numel *= d
        size = torch.empty((), dtype=dtype).element_size()
        raw = torch.randint(0, 256, (numel * size,), generator=g, dtype=torch.uint8)
        t = raw.view(torch.uint8).remainder(2).bool().reshape(shape) if dtype == torch.bool \
            else raw.view(dtype).reshape(shape)
        state[name] = t
        kind = rng.random()
        placements[name] = ("shard", rng.randrange(len(shape))) if kind < 0.6 else \
            ("replicate", None) if kind < 0.8 else ("plain", None)
    state["step"] = rng.randint(0, 10**6)
    return state, placements


def save_cases(rank, init_file, seeds, dirs):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    for seed, out in zip(seeds, dirs):
        state, placements = random_state(seed)
        for name, (kind, dim) in placements.items():
            if kind == "shard":
                state[name] = distribute_tensor(state[name], mesh, [Shard(dim)])
            elif kind == "replicate":
                state[name] = distribute_tensor(state[name], mesh, [Replicate()])
        dcp.save(state, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def dcp_cases(request):
    n = int(os.environ.get("MMCKPT_DCP_CASES", 6))
    base = request.config.oracle_seed * 1_000_003
    seeds = [base + i for i in range(n)]
    tmp = tempfile.mkdtemp(prefix="mmckpt-dcp-")
    dirs = [os.path.join(tmp, f"case_{i}") for i in range(n)]
    mp.spawn(save_cases, args=(os.path.join(tmp, "init"), seeds, dirs), nprocs=WORLD, join=True)
    return list(zip(seeds, dirs))


def sha(t):
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()) \
        .hexdigest()


def test_random_dcp_directories(dcp_cases, mmckpt_bin):
    for seed, path in dcp_cases:
        label = f"seed {seed} (directory {path})"
        original, _ = random_state(seed)
        md = dcp.FileSystemReader(path).read_metadata()
        loaded = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
                  for k, v in md.state_dict_metadata.items()
                  if isinstance(v, TensorStorageMetadata)}
        dcp.load(loaded, checkpoint_id=path, no_dist=True)
        doc, err = run_ls(mmckpt_bin, path)
        assert doc is not None, f"{label}: mmckpt ls failed: {err}"
        assert doc["format"] == "dcp", label
        # The table is in .metadata's order.
        assert [t["name"] for t in doc["tensors"]] == list(loaded), label
        for row in doc["tensors"]:
            name = row["name"]
            want = original[name]
            assert row["dtype"] == str(want.dtype).removeprefix("torch."), f"{label}: {name}"
            assert row["shape"] == list(want.shape), f"{label}: {name}"
            assert row["sha256"] == sha(want) == sha(loaded[name]), f"{label}: {name} differs"
        values = {v["name"]: v["value"] for v in doc["values"]}
        assert values == {"step": original["step"]}, label
