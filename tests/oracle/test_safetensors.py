"""safetensors files written by the `safetensors` package (`safetensors.torch.save_file`), read
back by `safetensors.torch.load_file` and by `mmckpt ls --json --hash`: every tensor's name,
order, dtype, shape, strides, bytes and storage, and `__metadata__` as values. A quarter of the
cases are shard sets (`model.safetensors.index.json`).

Order: load_file returns tensors by data offset; empty tensors at one offset come in the
order of a hash map there, and in header order in mmckpt (the test sorts them so)."""
import json
import random
import struct

import torch

from compare import check_tensor_list
from conftest import run_ls
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32,
          torch.uint32, torch.int64, torch.uint64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64, torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2,
          torch.float8_e8m0fnu, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
          torch.float4_e2m1fn_x2]
SEGMENTS = ["weight", "bias", "layers", "0", "17", "attn", "q_proj", "norm", "ünï", "emb ed", ""]


def random_tensor(rng, g):
    dtype = rng.choice(DTYPES)
    shape = [rng.choice([0, 1, 2, 3, 5, 8]) if rng.random() < 0.9 else rng.randint(9, 300)
             for _ in range(rng.randint(0, 4))]
    if rng.random() < 0.05:
        shape.append(0)
    if dtype == torch.float4_e2m1fn_x2 and not shape:
        shape = [1]
    numel = 1
    for d in shape:
        numel *= d
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (numel * size,), generator=g, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def random_tensors(rng, g):
    out = {}
    for _ in range(rng.randint(1, 12)):
        name = ".".join(rng.choice(SEGMENTS) for _ in range(rng.randint(1, 4)))
        if name == "__metadata__":
            continue
        out[name] = random_tensor(rng, g)
    return out


def random_metadata(rng):
    if rng.random() < 0.3:
        return None
    return {rng.choice(["format", "a.b", "ü", "", "x" * 40]): rng.choice(["pt", "", "v\n1", "ü" * 3])
            for _ in range(rng.randint(1, 4))}


def header_order(path, loaded):
    """load_file's order with ties (empty tensors at one offset) in header order."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    position = {name: i for i, name in enumerate(header)}
    offsets = {name: tuple(info["data_offsets"]) for name, info in header.items()
               if name != "__metadata__"}
    names = list(loaded)
    assert [offsets[k] for k in names] == sorted(offsets[k] for k in names), \
        "load_file's order is not by offset"
    return sorted(names, key=lambda k: (offsets[k], position[k]))


def expected_rows(path):
    loaded = load_file(path)
    # A clone per tensor: load_file's tensors may share one mapping; in the file (and in
    # mmckpt) each is its own storage.
    return [(k, loaded[k].clone()) for k in header_order(path, loaded)]


def test_random_safetensors(case_index, request, tmp_path, mmckpt_bin):
    seed = request.config.oracle_seed * 1_000_003 + case_index
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    label = f"seed {request.config.oracle_seed} case {case_index}"
    if case_index % 4 == 3:
        want, weight_map = [], {}
        for i in range(2):
            shard = f"model-{i + 1:05d}-of-00002.safetensors"
            tensors = {k: v for k, v in random_tensors(rng, g).items() if k not in weight_map}
            save_file(tensors, str(tmp_path / shard), metadata=random_metadata(rng))
            want += expected_rows(str(tmp_path / shard))
            weight_map.update({k: shard for k in tensors})
        path = str(tmp_path / "model.safetensors.index.json")
        with open(path, "w") as f:
            json.dump({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, f)
        doc, err = run_ls(mmckpt_bin, path)
        assert doc is not None, f"{label}: mmckpt ls failed: {err}"
        assert doc["format"] == "sharded", label
        check_tensor_list(want, doc["tensors"])
        return
    tensors = random_tensors(rng, g)
    metadata = random_metadata(rng)
    path = str(tmp_path / ("model.safetensors" if rng.random() < 0.8 else "weights.bin"))
    save_file(tensors, path, metadata=metadata)
    doc, err = run_ls(mmckpt_bin, path)
    assert doc is not None, f"{label}: mmckpt ls failed: {err}"
    assert doc["format"] == "safetensors", label
    try:
        check_tensor_list(expected_rows(path), doc["tensors"])
        with safe_open(path, framework="pt") as f:
            stored = f.metadata() or {}
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            in_header = json.loads(f.read(n)).get("__metadata__") or {}
        assert in_header == stored
        # In header order (safe_open's dict comes from a hash map).
        values = [(v["name"], v["kind"], v["value"]) for v in doc["values"]]
        assert values == [(f"__metadata__.{k}", "str", v) for k, v in in_header.items()], \
            f"metadata: mmckpt {values}, safetensors {stored}"
    except AssertionError as e:
        raise AssertionError(f"{label} (file kept at {path}): {e}") from None
