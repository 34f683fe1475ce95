"""Writes the safetensors fixtures with the `safetensors` package (torch's side of the format):

    $(bash scripts/setup-venv.sh)/bin/python scripts/make_safetensors_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/fixtures/safetensors. Fixed seeds; a second run gives identical files.

- dtypes.safetensors: one [3, 4] tensor per torch dtype safetensors can hold (F4 as
  float4_e2m1fn_x2 [3, 2], which the header calls [3, 4]), `__metadata__` {"format": "pt",
  "note": "…"}; written by `safetensors.torch.save_file`. (The package writes no F6_E2M3 or
  F6_E3M2, which torch has no dtype for: tests/safetensors.rs writes those bytes itself.)
- sharded/: `model-0000{1,2}-of-00002.safetensors` and `model.safetensors.index.json`, as
  transformers' `save_pretrained` shards (index keys sorted, a `metadata.total_size`).
- manifest.json: per file, the tensors in `safetensors.torch.load_file` order with torch's
  dtype, shape and the SHA-256 of their bytes, and the metadata.
"""
import hashlib
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "safetensors")


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def describe(path):
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    tensors = [
        {"name": k, "dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape),
         "sha256": hashlib.sha256(raw(v)).hexdigest()}
        for k, v in load_file(path).items()
    ]
    return {"tensors": tensors, "metadata": metadata}


def main():
    os.makedirs(os.path.join(OUT, "sharded"), exist_ok=True)
    g = torch.Generator().manual_seed(15)
    bits = lambda n: torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8)
    dtypes = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32,
              torch.uint32, torch.int64, torch.uint64, torch.float16, torch.bfloat16,
              torch.float32, torch.float64, torch.complex64, torch.float8_e4m3fn,
              torch.float8_e5m2, torch.float8_e8m0fnu, torch.float8_e4m3fnuz,
              torch.float8_e5m2fnuz, torch.float4_e2m1fn_x2]
    tensors = {}
    for dt in dtypes:
        name = str(dt).removeprefix("torch.")
        if dt == torch.bool:
            t = bits(12).remainder(2).bool().reshape(3, 4)
        elif dt == torch.float4_e2m1fn_x2:
            t = bits(6).view(dt).reshape(3, 2)
        else:
            size = torch.empty((), dtype=dt).element_size()
            t = bits(12 * size).view(dt).reshape(3, 4)
        tensors[name] = t
    files = {}
    path = os.path.join(OUT, "dtypes.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "note": "one tensor per dtype"})
    files["dtypes.safetensors"] = describe(path)

    model = {
        "model.embed.weight": torch.randn(8, 4, generator=g),
        "model.layers.0.weight": torch.randn(4, 4, generator=g).to(torch.bfloat16),
        "model.layers.0.bias": torch.randn(4, generator=g),
        "model.norm.weight": torch.ones(4),
        "lm_head.weight": torch.randn(8, 4, generator=g).to(torch.float16),
    }
    shards = [["model.embed.weight", "model.layers.0.weight", "model.layers.0.bias"],
              ["model.norm.weight", "lm_head.weight"]]
    weight_map = {}
    for i, names in enumerate(shards):
        shard = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        path = os.path.join(OUT, "sharded", shard)
        save_file({n: model[n] for n in names}, path, metadata={"format": "pt"})
        files["sharded/" + shard] = describe(path)
        weight_map.update({n: shard for n in names})
    total = sum(t.numel() * t.element_size() for t in model.values())
    with open(os.path.join(OUT, "sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(files, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
