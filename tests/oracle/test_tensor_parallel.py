"""Tensor-parallel loads against torch.chunk: N processes (N = 2 and 4), one per rank, each load
their share of random torch-saved state dicts and of the 2- and 4-rank DCP directories through
the Python binding (`Module.load(..., tensor_parallel=...)`), by assign and by copy; each
loaded entry must equal `torch.chunk(t, N, dim)[rank]` computed here, in the parent, from
`torch.load` (for DCP: from the whole tensor, whose bytes must hash to what `dcp.load` gave,
tests/data/dcp/expected.json). Entries that match no rule must load whole.

Random shapes (dimensions that N does not divide, and smaller than N, included), dtypes and
split dimensions, from a fixed seed; MMCKPT_TP_CASES (default 4) state dicts. One process per
rank loads every case, so each world size costs one spawn of N interpreters.

Run as a script, this file is that child: `test_tensor_parallel.py SPEC RANK OUT`."""
import hashlib
import json
import os
import random
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DCP = os.path.join(REPO, "tests", "data", "dcp")
CASES = int(os.environ.get("MMCKPT_TP_CASES", "4"))
SEED = 20261601
DTYPES = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool",
          "complex64"]


def child(spec_path, rank, out_dir):
    """Rank `rank`: loads every job of the spec and writes each entry's row-major bytes."""
    import torch

    import mmckpt

    with open(spec_path) as f:
        spec = json.load(f)
    world = spec["world"]
    for j, job in enumerate(spec["jobs"]):
        entries = job["entries"][str(rank)]
        with mmckpt.open(job["path"]) as ckpt:
            for mode in ("assign", "copy"):
                m = mmckpt.Module("Net")
                for name, dtype, shape in entries:
                    m.add(name, dtype, shape)
                if mode == "copy":
                    m.materialize()
                # Rules in order: the first that matches an entry wins.
                rules = {pattern: dim for pattern, dim in job["rules"]}
                tp = mmckpt.TensorParallel(rank, world, rules) if mode == "assign" \
                    else (rank, world, rules)
                m.load(ckpt, assign=mode == "assign", strict=False, tensor_parallel=tp)
                for i, (name, _, _) in enumerate(entries):
                    t = torch.from_dlpack(m[name]).contiguous()
                    data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
                    with open(os.path.join(out_dir, f"{j}.{mode}.{i}"), "wb") as out:
                        out.write(data)


def whole(directory, out):
    """The whole tensors of a DCP directory, as mmckpt assembles them, saved with torch."""
    import torch

    import mmckpt

    with mmckpt.open(directory) as ckpt:
        torch.save({k: torch.from_dlpack(ckpt[k]).clone() for k in ckpt}, out)


if __name__ == "__main__":
    if sys.argv[1] == "--whole":
        whole(sys.argv[2], sys.argv[3])
    else:
        child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    sys.exit(0)

import pytest  # noqa: E402
import torch  # noqa: E402

DTYPE = {name: getattr(torch, name) for name in DTYPES}


def raw(t):
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def random_state(rng, g):
    """A state dict of random tensors, and the rules: names → split dim (absent: replicated)."""
    state, dims = {}, {}
    for i in range(rng.randint(3, 8)):
        ndim = rng.randint(1, 3)
        shape = [rng.choice([0, 1, 2, 3, 5, 7, 8, 12, 17]) for _ in range(ndim)]
        dtype = DTYPE[rng.choice(DTYPES)]
        numel = 1
        for d in shape:
            numel *= d
        size = torch.empty((), dtype=dtype).element_size()
        bytes_ = torch.randint(0, 256, (numel * size,), generator=g, dtype=torch.uint8)
        t = bytes_.remainder(2).bool().reshape(shape) if dtype == torch.bool \
            else bytes_.view(dtype).reshape(shape)
        kind = rng.choice(["q_proj", "o_proj", "other"])
        name = f"layers.{i}.{kind}.weight"
        state[name] = t
        if rng.random() < 0.8:
            dims[name] = rng.randrange(ndim) - (ndim if rng.random() < 0.3 else 0)
    return state, dims


def share(t, world, rank, dim):
    parts = torch.chunk(t, world, dim)
    return parts[rank] if rank < len(parts) else None


def child_env():
    lib = os.environ.get("MMCKPT_LIB", os.path.join(REPO, "target", "release", "libmmckpt.so"))
    if not os.path.exists(lib):
        pytest.fail(f"{lib} does not exist: run `cargo build --release` first (or set MMCKPT_LIB)")
    # The binding of this checkout over the library just built, not an installed one.
    return dict(os.environ, MMCKPT_LIBRARY=lib,
                PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"),
                                            os.environ.get("PYTHONPATH", "")]))


def run_ranks(tmp_path, world, jobs):
    spec = str(tmp_path / f"spec{world}.json")
    with open(spec, "w") as f:
        json.dump({"world": world, "jobs": jobs}, f)
    procs = []
    for rank in range(world):
        out = tmp_path / f"w{world}r{rank}"
        out.mkdir()
        procs.append((out, subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), spec, str(rank), str(out)],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    for rank, (_, p) in enumerate(procs):
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"rank {rank} of {world}:\n{output.decode(errors='replace')}"
    return [out for out, _ in procs]


def job_for(path, state, dims, world, rules):
    """What each rank declares (local shapes; an entry torch.chunk gives it no chunk of is
    left out) and the expected bytes of each of its entries. `dims`: the split dim each rule
    gives each entry (absent: replicated)."""
    entries, expected = {}, {}
    for rank in range(world):
        declared, want = [], []
        for name, t in state.items():
            part = t if name not in dims else share(t, world, rank, dims[name])
            if part is None:
                continue
            declared.append([name, str(t.dtype).removeprefix("torch."), list(part.shape)])
            want.append(raw(part))
        entries[str(rank)] = declared
        expected[rank] = want
    return {"path": path, "entries": entries, "rules": rules}, expected


def dcp_state(tmp_path, name):
    """The whole tensors of a DCP fixture, each checked against what dcp.load gave."""
    with open(os.path.join(DCP, "expected.json")) as f:
        items = json.load(f)[name]
    out = str(tmp_path / f"{name}.pt")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--whole",
                    os.path.join(DCP, name), out], env=child_env(), check=True)
    state = torch.load(out)
    for key, item in items.items():
        if "sha256" in item:
            assert hashlib.sha256(raw(state[key])).hexdigest() == item["sha256"], key
    assert sorted(state) == sorted(k for k, v in items.items() if "sha256" in v)
    return state


@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_loads_torch_chunk(tmp_path, world):
    rng = random.Random(SEED * 1000003 + world)
    g = torch.Generator().manual_seed(SEED + world)
    jobs, expected = [], []
    for case in range(CASES):
        state, dims = random_state(rng, g)
        path = str(tmp_path / f"case{case}.pt")
        torch.save(state, path)
        loaded = torch.load(path)
        # A glob ahead of the exact names: it splits every q_proj weight on dim 0.
        rules = [["*.q_proj.weight", 0]] + [[n, d] for n, d in dims.items()]
        dims.update({n: 0 for n in loaded if ".q_proj." in n})
        job, want = job_for(path, loaded, dims, world, rules)
        jobs.append(job)
        expected.append(want)
    # The DCP directory written by `world` ranks: rows, columns, uneven, replicated.
    name = f"rank{world}"
    state = dcp_state(tmp_path, name)
    dims = {k: d for k, d in {"row": 0, "col": 1, "uneven": 0, "short": 0}.items() if k in state}
    job, want = job_for(os.path.join(DCP, name), state, dims, world,
                        [[n, d] for n, d in dims.items()])
    jobs.append(job)
    expected.append(want)

    outs = run_ranks(tmp_path, world, jobs)
    checked = 0
    for rank, out in enumerate(outs):
        for j, job in enumerate(jobs):
            for mode in ("assign", "copy"):
                for i, (name, _, shape) in enumerate(job["entries"][str(rank)]):
                    with open(os.path.join(out, f"{j}.{mode}.{i}"), "rb") as f:
                        got = f.read()
                    assert got == expected[j][rank][i], \
                        f"job {j} ({job['path']}) rank {rank}/{world} {mode} {name} {shape}"
                    checked += 1
    assert checked > 20 * world, checked
