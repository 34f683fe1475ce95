#!/usr/bin/env python3
"""State dicts as `torch.save(model.state_dict())` writes them, for the plain state-dict reader
(src/checkpoint/plain.rs) and its differential test (tests/plain_state_dict.rs), which opens each
file both ways and compares, and checks the tensors against what torch recorded here.

Each file is one shape of the layout the reader takes, or one near it that it must leave to the
generic path: every storage dtype, views (offsets, transposes, expanded strides), shared storages,
0-d, empty and 6-d tensors, requires_grad, more than 1000 tensors (several SETITEMS batches, and a
last single item), module metadata of other versions, keys with dots, non-ASCII and long keys,
no metadata at all, a plain dict (not an OrderedDict), Parameters (kept by keep_vars), non-tensor
values, a nested state dict. (Big-endian archives: tests/fixtures/bigendian.pt.)

Run: ~/.cache/mmckpt/venv/bin/python scripts/make_plain_fixtures.py
"""
import collections
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "plain")

torch.manual_seed(15)


def model_state(n_layers, width=4):
    model = torch.nn.Sequential(
        *[torch.nn.Linear(width, width) for _ in range(n_layers)]
    )
    return model.state_dict()


# The dtypes with a typed storage class (`torch.<T>Storage`, `_rebuild_tensor_v2`); the newer
# ones are saved with `_rebuild_tensor_v3` and an untyped storage (not the plain layout).
STORAGE_DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64,
    torch.complex128, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool,
]
NEWER_DTYPES = [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]


def every_dtype(dtypes):
    sd = collections.OrderedDict()
    for dtype in dtypes:
        t = torch.arange(12).reshape(3, 4)
        sd[str(dtype).replace("torch.", "")] = t.to(dtype)
    return sd


def views():
    base = torch.arange(60, dtype=torch.float32)
    sd = collections.OrderedDict()
    sd["whole"] = base
    sd["offset"] = base[7:19]
    sd["transposed"] = base[:20].reshape(4, 5).t()
    sd["strided"] = base[::3]
    sd["expanded"] = torch.arange(3.0).expand(4, 3)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.empty(0, 3)
    sd["six_dims"] = torch.arange(64.0).reshape(2, 2, 2, 2, 2, 2)
    sd["nine_dims"] = torch.arange(512.0).reshape(*([2] * 9))
    sd["big_numel"] = torch.zeros(70000, dtype=torch.uint8)
    sd["shared_again"] = base[1:3]
    return sd


def requires_grad():
    sd = collections.OrderedDict()
    sd["w"] = torch.ones(3, requires_grad=True)
    sd["b"] = torch.zeros(2)
    return sd


def keys():
    sd = collections.OrderedDict()
    sd["a.b.c"] = torch.ones(1)
    sd["ünïcødé"] = torch.ones(2)
    sd["k" * 3000] = torch.ones(3)
    sd[""] = torch.ones(4)
    sd["with space"] = torch.ones(5)
    return sd


def metadata_versions():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.LayerNorm(2))
    return model.state_dict()


def no_metadata():
    sd = model_state(2)
    del sd._metadata
    return sd


def odd_metadata():
    sd = model_state(2)
    sd._metadata[""]["extra"] = True
    sd._metadata["0"]["note"] = None
    return sd


CASES = {
    "linear_3": lambda: model_state(3),
    "linear_700": lambda: model_state(700),  # 1400 tensors: a batch of 1000, then 400
    "linear_500_5": lambda: model_state(500, 5),  # 1000 tensors: exactly one full batch
    "dtypes": lambda: every_dtype(STORAGE_DTYPES),
    "views": views,
    "requires_grad": requires_grad,
    "keys": keys,
    "metadata_versions": metadata_versions,
    "no_metadata": no_metadata,
    "odd_metadata": odd_metadata,
    # Not plain: left to the generic path, with the same result.
    "plain_dict": lambda: dict(model_state(2)),
    "parameters": lambda: torch.nn.Linear(3, 2).state_dict(keep_vars=True),
    "with_values": lambda: collections.OrderedDict(w=torch.ones(2), step=3),
    "nested": lambda: {"model": model_state(2), "epoch": 4},
    "newer_dtypes": lambda: every_dtype(STORAGE_DTYPES + NEWER_DTYPES),
    "single": lambda: collections.OrderedDict(only=torch.arange(3.0)),
    "empty": lambda: collections.OrderedDict(),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, make in CASES.items():
        obj = make()
        path = os.path.join(OUT, f"{name}.pt")
        torch.save(obj, path)
        loaded = torch.load(path, weights_only=True)
        rows = {}
        small = isinstance(loaded, dict) and len(loaded) <= 100
        if small and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            for k, v in loaded.items():
                rows[k] = {
                    "dtype": str(v.dtype).replace("torch.", ""),
                    "shape": list(v.shape),
                    "stride": list(v.stride()),
                    "offset": v.storage_offset(),
                    "requires_grad": v.requires_grad,
                }
        expected[name] = {"tensors": len(loaded) if isinstance(loaded, dict) else None, "rows": rows}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True, ensure_ascii=False)
    print(f"wrote {len(CASES)} files to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
