"""Opening a torch.distributed.checkpoint directory of 10,000 tensors saved by 4 ranks, against
`dcp.load` of the same state dict in one process.

    cargo build --release -p mmckpt-cli --example open_time
    ~/.cache/mmckpt/venv/bin/python bench/dcp_open.py [--tensors 10000] [--reps 10]

Writes the directory once with torch's own `dcp.save` on 4 gloo CPU processes into
~/.cache/mmckpt/bench/dcp-<tensors>/: tensors of [64, 16] float32, half sharded on dim 0, a
quarter on dim 1 (DTensor.from_local: each rank's quarter, no communication), a quarter
replicated (saved once). Then, each the median of --reps runs on the warm page cache:
- mmckpt open: `Checkpoint::open` of the directory (the open_time example): metadata, every
  record's zip directory and tensor pickle; no tensor byte is copied;
- mmckpt open + every tensor ready: the Python binding's open and table (describing every
  tensor assembles each sharded one by copy);
- dcp.load: `dcp.load(state_dict, no_dist=True)` into preallocated tensors of the global
  shapes, one process.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = 4
SHAPE = (64, 16)


def placement(i):
    return ("shard", 0) if i % 4 < 2 else ("shard", 1) if i % 4 == 2 else ("replicate", None)


def save_rank(rank, init_file, out, tensors):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    state = {}
    for i in range(tensors):
        full = torch.arange(SHAPE[0] * SHAPE[1], dtype=torch.float32).reshape(SHAPE) + i
        kind, dim = placement(i)
        if kind == "shard":
            local = torch.chunk(full, WORLD, dim)[rank].contiguous()
            state[f"layers.{i}.weight"] = DTensor.from_local(
                local, mesh, [Shard(dim)], run_check=False, shape=full.shape,
                stride=full.stride())
        else:
            state[f"layers.{i}.weight"] = DTensor.from_local(full, mesh, [Replicate()],
                                                             run_check=False)
    state["step"] = 1
    dcp.save(state, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


def ensure(out, tensors):
    if os.path.exists(os.path.join(out, ".metadata")):
        return
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(save_rank, args=(os.path.join(tmp, "init"), out, tensors), nprocs=WORLD,
                 join=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensors", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    out = os.path.expanduser(f"~/.cache/mmckpt/bench/dcp-{args.tensors}")
    ensure(out, args.tensors)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))

    exe = os.path.join(REPO, "target", "release", "examples", "open_time")
    proc = subprocess.run([exe, out], env={**os.environ, "REPS": str(args.reps)},
                          capture_output=True, text=True, check=True)
    opens = [float(line.split(" in ")[1].split(" ms")[0])
             for line in proc.stdout.splitlines() if " tensors in " in line]

    sys.path.insert(0, os.path.join(REPO, "python"))
    os.environ.setdefault("MMCKPT_LIBRARY", os.path.join(REPO, "target", "release",
                                                         "libmmckpt.so"))
    import mmckpt
    ready = []
    for _ in range(args.reps):
        start = time.perf_counter()
        with mmckpt.open(out) as ckpt:
            assert len(ckpt) == args.tensors
        ready.append((time.perf_counter() - start) * 1e3)

    md = dcp.FileSystemReader(out).read_metadata()
    loads = []
    for _ in range(args.reps):
        state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
                 for k, v in md.state_dict_metadata.items() if hasattr(v, "size")}
        state["step"] = 0
        start = time.perf_counter()
        dcp.load(state, checkpoint_id=out, no_dist=True)
        loads.append((time.perf_counter() - start) * 1e3)

    print(json.dumps({
        "tensors": args.tensors, "ranks": WORLD, "directory_bytes": size,
        "mmckpt_open_ms": statistics.median(opens),
        "mmckpt_open_and_ready_ms": statistics.median(ready),
        "dcp_load_ms": statistics.median(loads),
    }, indent=1))


if __name__ == "__main__":
    main()
