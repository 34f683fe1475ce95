"""Benchmark inputs, written by real torch into a cache directory outside the repo.

Every file is written once (to a temporary name, then renamed) and reused while it exists, so a
second run starts measuring at once. `sizes(tiny)` says how big each input is.
"""
import json
import os
from collections import OrderedDict

import torch

GiB = 1 << 30
MiB = 1 << 20


def sizes(tiny):
    if tiny:
        return dict(many=[100, 1000], big_gib=[8 * MiB / GiB, 32 * MiB / GiB],
                    big_tensor=4 * MiB, wide=100, recipe_features=100,
                    copy_bytes=16 * MiB)
    return dict(many=[10_000, 100_000], big_gib=[2, 8], big_tensor=256 * MiB,
                wide=10_000, recipe_features=1000, copy_bytes=2 * GiB)


def _save(obj, path, **kw):
    tmp = path + ".tmp"
    torch.save(obj, tmp, **kw)
    os.replace(tmp, path)


def _save_st(tensors, path):
    from safetensors.torch import save_file
    tmp = path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, path)


def _write_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def many(n):
    # The shape: a state dict of n small float32 tensors.
    g = torch.Generator().manual_seed(n)
    return OrderedDict((f"layer.{i}.weight", torch.randn(4, 4, generator=g)) for i in range(n))


class SomeModule(torch.nn.Module):
    """The recipe's module: ten Linear(n, n)."""

    def __init__(self, n):
        super().__init__()
        self.linears = torch.nn.ModuleList([torch.nn.Linear(n, n) for _ in range(10)])


def wide_module(entries):
    # `entries` parameters: Linear(4, 4) layers (weight + bias each) in a Sequential.
    return torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(entries // 2)])


def recipe_spec(n):
    return {"name": "SomeModule", "type": "Module", "children": {
        "linears": {"type": "ModuleList", "repeat": 10,
                    "item": {"type": "Linear", "in_features": n, "out_features": n}}}}


def wide_spec(entries):
    return {"name": "Sequential", "type": "Sequential", "repeat": entries // 2,
            "item": {"type": "Linear", "in_features": 4, "out_features": 4}}


def big(total_bytes, tensor_bytes):
    # Zeros: calloc'd memory is never touched, so writing 8 GiB needs no 8 GiB of RAM.
    count = max(1, int(total_bytes // tensor_bytes))
    return OrderedDict((f"big.{i}", torch.zeros(tensor_bytes // 4, dtype=torch.float32))
                       for i in range(count))


def random_tensors(total_bytes, dtype, pieces=8):
    g = torch.Generator().manual_seed(1234)
    elems = total_bytes // torch.tensor([], dtype=dtype).element_size() // pieces
    return OrderedDict((f"w.{i}", torch.randn(elems, generator=g).to(dtype)) for i in range(pieces))


def ensure(cache, tiny, log=print):
    """Writes the missing inputs; returns {name: path} of every input."""
    s = sizes(tiny)
    os.makedirs(cache, exist_ok=True)
    paths = {}

    def want(name, make):
        path = os.path.join(cache, name)
        paths[name] = path
        if not os.path.exists(path):
            log(f"  writing {path}")
            make(path)

    torch.manual_seed(0)
    for n in s["many"]:
        want(f"many_{n}.pt", lambda p, n=n: _save(many(n), p))
    for gib in s["big_gib"]:
        label = f"{gib:g}g" if gib >= 1 else f"{int(gib * 1024)}m"
        want(f"big_{label}.pt", lambda p, gib=gib: _save(big(gib * GiB, s["big_tensor"]), p))
    n = s["recipe_features"]
    want(f"recipe_{n}.pt", lambda p: _save(SomeModule(n).state_dict(), p))
    want(f"recipe_{n}.spec.json", lambda p: _write_text(p, json.dumps(recipe_spec(n))))
    w = s["wide"]
    want(f"wide_{w}.pt", lambda p: _save(wide_module(w).state_dict(), p))
    want(f"wide_{w}.spec.json", lambda p: _write_text(p, json.dumps(wide_spec(w))))
    want(f"wide_{w}.safetensors", lambda p: _save_st(wide_module(w).state_dict(), p))
    want(f"recipe_{n}.safetensors", lambda p: _save_st(SomeModule(n).state_dict(), p))
    c = s["copy_bytes"]
    label = f"{c // GiB}g" if c >= GiB else f"{c // MiB}m"
    want(f"f32_{label}.pt", lambda p: _save(random_tensors(c, torch.float32), p))
    # Same element count in bfloat16 (half the bytes), for the bfloat16 -> float32 direction.
    want(f"bf16_{label}.pt", lambda p: _save(random_tensors(c // 2, torch.bfloat16), p))
    return paths


def evict(path):
    """Drops the file's pages from the page cache (only this file, so nobody else's cache): the
    cold-read benchmarks start each measurement from the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
