"""Writes torch.distributed.checkpoint (DCP) directories with torch's own `dcp.save`:

    ~/.cache/mmckpt/venv/bin/python scripts/make_dcp_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/data/dcp. Fixed seeds (the `.metadata` pickles hold a random save
id and the directory's path, so a second run differs in those bytes only).

- single/: one process, no process group: plain tensors of several dtypes, `step` (int),
  `config` (a dict: dcp.save flattens it to `config.lr`, `config.name`), `blob`
  (an io.BytesIO item).
- rank2/: 2 gloo processes, a 1-D device mesh: `row` Shard(0) [8, 6] float32, `col` Shard(1)
  [4, 10] float32, `uneven` Shard(0) [5, 3] int32 (chunks of 3 and 2 rows), `rep` Replicate
  [3, 4] bfloat16 (saved once), `plain` an ordinary tensor (every rank holds it), `step`.
- rank4/: 4 gloo processes: `row` Shard(0) [8, 4] float64, `col` Shard(1) [3, 8] float16,
  `short` Shard(0) [3, 2] int64 (fewer rows than ranks), `rep` Replicate [5] int8, `step`.
- bad/: copies of rank2/ whose `.metadata` was rewritten (pickle.load, change, pickle.dump) to
  break one rule each: `missing_file` (a chunk's file is gone), `gap` (chunks do not tile the
  tensor), `overlap` (two chunks cover one element), `past_end` (a byte range past the end of
  its file), `dtype` (metadata says float64 for a float32 chunk), `size` (metadata says a
  chunk is bigger than the tensor saved for it).
- expected.json: per directory, every item as dcp.load gives it back into a single process:
  tensors with dtype, shape and the SHA-256 of their row-major bytes, non-tensors as repr.
"""
import dataclasses
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, TensorStorageMetadata
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.device_mesh import init_device_mesh

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "data", "dcp")


def full_tensors(world):
    """The unsharded state dict every rank starts from (same seed on every rank)."""
    g = torch.Generator().manual_seed(16 + world)
    if world == 2:
        return {
            "row": torch.randn(8, 6, generator=g),
            "col": torch.randn(4, 10, generator=g),
            "uneven": torch.randint(-1000, 1000, (5, 3), generator=g, dtype=torch.int32),
            "rep": torch.randn(3, 4, generator=g).to(torch.bfloat16),
            "plain": torch.arange(6, dtype=torch.int16).reshape(2, 3),
        }
    return {
        "row": torch.randn(8, 4, generator=g, dtype=torch.float64),
        "col": torch.randn(3, 8, generator=g).to(torch.float16),
        "short": torch.randint(-(2**40), 2**40, (3, 2), generator=g, dtype=torch.int64),
        "rep": torch.randint(-100, 100, (5,), generator=g, dtype=torch.int8),
    }


PLACEMENTS = {"row": Shard(0), "col": Shard(1), "uneven": Shard(0), "short": Shard(0),
              "rep": Replicate()}


def rank_main(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    state = {}
    for name, t in full_tensors(world).items():
        if name in PLACEMENTS:
            state[name] = distribute_tensor(t, mesh, [PLACEMENTS[name]])
        else:
            state[name] = t
    state["step"] = 100 + world
    dcp.save(state, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


def save_distributed(world, out):
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(rank_main, args=(world, os.path.join(tmp, "init"), out), nprocs=world,
                 join=True)


def save_single(out):
    g = torch.Generator().manual_seed(16)
    state = {
        "w": torch.randn(4, 6, generator=g),
        "b": torch.randn(6, generator=g).to(torch.float16),
        "i": torch.tensor([1, -2, 3], dtype=torch.int64),
        "bf": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "step": 7,
        "config": {"lr": 0.125, "name": "dcp"},
        "blob": io.BytesIO(b"raw bytes"),
    }
    dcp.save(state, checkpoint_id=out, no_dist=True)


def expected(out):
    """Every item as dcp.load gives it back into a single process."""
    md = dcp.FileSystemReader(out).read_metadata()
    state = {}
    for fqn, item in md.state_dict_metadata.items():
        if isinstance(item, TensorStorageMetadata):
            state[fqn] = torch.empty(tuple(item.size), dtype=item.properties.dtype)
        else:
            state[fqn] = None
    dcp.load(state, checkpoint_id=out, no_dist=True)
    items = {}
    for fqn, value in state.items():
        if isinstance(value, torch.Tensor):
            raw = value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            items[fqn] = {"dtype": str(value.dtype).removeprefix("torch."),
                          "shape": list(value.shape),
                          "sha256": hashlib.sha256(raw).hexdigest(),
                          "chunks": [[list(c.offsets), list(c.sizes)]
                                     for c in md.state_dict_metadata[fqn].chunks]}
        else:
            if isinstance(value, io.BytesIO):
                value = value.getvalue()
            items[fqn] = {"value": repr(value)}
    return items


def rewrite(src, dst, change):
    shutil.copytree(src, dst)
    with open(os.path.join(dst, ".metadata"), "rb") as f:
        md = pickle.load(f)
    change(md)
    with open(os.path.join(dst, ".metadata"), "wb") as f:
        pickle.dump(md, f)


def make_bad(rank2, bad):
    def chunks(md, fqn):
        return md.state_dict_metadata[fqn].chunks

    def missing_file(md):
        os.remove(os.path.join(bad, "missing_file", "__1_0.distcp"))

    def gap(md):
        # `row` loses its second chunk: rows 4..8 are covered by nothing.
        del chunks(md, "row")[1]

    def overlap(md):
        # The second chunk of `uneven` starts one row early and is one row longer: rows 2..5.
        c = chunks(md, "uneven")
        c.append(ChunkStorageMetadata(offsets=torch.Size([2, 0]), sizes=torch.Size([1, 3])))
        first = next(k for k in md.storage_data if k.fqn == "uneven")
        md.storage_data[dataclasses.replace(first, offset=torch.Size([2, 0]))] = \
            md.storage_data[first]

    def past_end(md):
        key = next(k for k in md.storage_data if k.fqn == "col")
        info = md.storage_data[key]
        md.storage_data[key] = dataclasses.replace(info, offset=info.offset + 1_000_000)

    def dtype(md):
        md.state_dict_metadata["row"].properties.dtype = torch.float64

    def size(md):
        item = md.state_dict_metadata["col"]
        item.size = torch.Size([4, 12])
        c = item.chunks
        c[1] = ChunkStorageMetadata(offsets=c[1].offsets, sizes=torch.Size([4, 7]))

    for name, change in [("missing_file", missing_file), ("gap", gap), ("overlap", overlap),
                         ("past_end", past_end), ("dtype", dtype), ("size", size)]:
        dst = os.path.join(bad, name)
        if name == "missing_file":
            shutil.copytree(rank2, dst)
            missing_file(None)
        else:
            rewrite(rank2, dst, change)


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    save_single(os.path.join(OUT, "single"))
    save_distributed(2, os.path.join(OUT, "rank2"))
    save_distributed(4, os.path.join(OUT, "rank4"))
    make_bad(os.path.join(OUT, "rank2"), os.path.join(OUT, "bad"))
    manifest = {name: expected(os.path.join(OUT, name))
                for name in ["single", "rank2", "rank4"]}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
