"""The oracle: random checkpoints written by real torch, read back by torch.load and by mmckpt
(`mmckpt ls --json --hash`); every tensor's dtype, shape, strides, storage offset, element bytes,
parameter flags and storage sharing, and every non-tensor value, must agree."""
import hashlib
import math
import os
import random

import pytest
import torch
import torch.nn as nn
import torch.utils.serialization  # noqa: F401  (torch.utils.serialization.config)

from conftest import run_ls
from gen import make_case

ser_config = torch.utils.serialization.config


def raw_bytes(t):
    """Row-major bytes of t's elements for every dtype (a same-size integer view first, so that
    contiguous() needs no kernel for exotic dtypes)."""
    t = t.detach()
    same = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
    u = t.view(same) if same is not None else t
    # clone, not contiguous(): a size-1 dimension may keep any stride in a "contiguous" tensor,
    # which view(uint8) then rejects.
    c = u.clone(memory_format=torch.contiguous_format).reshape(-1)
    if c.dtype != torch.uint8:
        c = c.view(torch.uint8)
    return c.numpy().tobytes()


LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None))


def walk(obj, prefix=""):
    """(name, leaf) depth first in the object's own order, named as mmckpt names them."""
    def join(k):
        return f"{prefix}.{k}" if prefix else str(k)

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, join(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk(v, join(i))
    elif isinstance(obj, LEAF_TYPES):
        yield prefix, obj
    else:
        for k, v in vars(obj).items():
            yield from walk(v, join(k))


def float_json(f):
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def expected_value(v):
    if isinstance(v, bool):
        return "bool", v
    if v is None:
        return "none", None
    if isinstance(v, int):
        return "int", v if -2**63 <= v < 2**63 else str(v)
    if isinstance(v, float):
        return "float", float_json(v)
    if isinstance(v, complex):
        return "complex", [float_json(v.real), float_json(v.imag)]
    if isinstance(v, str):
        return "str", v
    return "bytes", bytes(v).hex()


def same_json_value(kind, got, want):
    if kind == "float":
        return (isinstance(got, str) and got == want) or (
            not isinstance(got, str) and not isinstance(want, str)
            and float(got).hex() == float(want).hex())
    if kind == "complex":
        return all(same_json_value("float", g, w) for g, w in zip(got, want))
    if kind == "int" and not isinstance(want, str):
        return isinstance(got, int) and not isinstance(got, bool) and got == want
    return got == want


def storage_key(t):
    s = t.untyped_storage()
    return ("ptr", s.data_ptr()) if s.data_ptr() != 0 else ("impl", s._cdata)


def save(case, path):
    obj = case["obj"]
    if case["format"] == "legacy":
        torch.save(obj, path, pickle_protocol=case["protocol"],
                   _use_new_zipfile_serialization=False)
        return
    old = ser_config.save.storage_alignment
    ser_config.save.storage_alignment = case["alignment"]
    try:
        torch.save(obj, path, pickle_protocol=case["protocol"])
    finally:
        ser_config.save.storage_alignment = old


def check_tensors(loaded, doc):
    want = [(n, v) for n, v in walk(loaded) if isinstance(v, torch.Tensor)]
    got = doc["tensors"]
    assert [t["name"] for t in got] == [n for n, _ in want], "tensor names / order differ"
    torch_groups, our_groups = {}, {}
    for (name, t), g in zip(want, got):
        assert "error" not in g, f"{name}: mmckpt could not represent it: {g.get('error')}"
        where = f"tensor '{name}'"
        assert g["dtype"] == str(t.dtype).replace("torch.", ""), where
        assert g["shape"] == list(t.shape), where
        assert g["stride"] == list(t.stride()), where
        assert g["storage_offset"] == t.storage_offset(), where
        assert g["numel"] == t.numel(), where
        assert g["parameter"] == isinstance(t, nn.Parameter), where
        assert g["requires_grad"] == t.requires_grad, where
        assert g["sha256"] == hashlib.sha256(raw_bytes(t)).hexdigest(), f"{where}: bytes differ"
        # Storage sharing: the same partition of tensors into storages on both sides.
        a = torch_groups.setdefault(storage_key(t), len(torch_groups))
        b = our_groups.setdefault(g["storage_id"], len(our_groups))
        assert a == b, f"{where}: storage sharing differs from torch"
    return len(want)


def check_values(loaded, doc):
    want = [(n, v) for n, v in walk(loaded) if not isinstance(v, torch.Tensor)]
    got = doc["values"]
    assert "values_truncated" not in doc
    assert [v["name"] for v in got] == [n for n, _ in want], "value names / order differ"
    for (name, v), g in zip(want, got):
        kind, value = expected_value(v)
        assert g["kind"] == kind, f"value '{name}': kind {g['kind']}, torch has {kind}"
        assert same_json_value(kind, g["value"], value), \
            f"value '{name}': mmckpt {g['value']!r}, torch {value!r}"
    return len(want)


def test_random_checkpoint(case_index, request, tmp_path, mmckpt_bin, legacy_support):
    seed = request.config.oracle_seed * 1_000_003 + case_index
    rng = random.Random(seed)
    case = make_case(rng)
    label = (f"seed {request.config.oracle_seed} case {case_index}: {case['format']}, "
             f"protocol {case['protocol']}, alignment {case['alignment']}")
    if case["format"] == "legacy" and legacy_support is not None:
        if os.environ.get("MMCKPT_ORACLE_REQUIRE_LEGACY") == "1":
            pytest.fail(f"{label}: {legacy_support}")
        pytest.skip(legacy_support)
    path = str(tmp_path / "ckpt.pt")
    save(case, path)
    loaded = torch.load(path, weights_only=False)
    doc, err = run_ls(mmckpt_bin, path)
    assert doc is not None, f"{label}: mmckpt ls failed: {err}"
    assert doc["format"] == case["format"], label
    try:
        check_tensors(loaded, doc)
        check_values(loaded, doc)
    except AssertionError as e:
        raise AssertionError(f"{label} (file kept at {path}): {e}") from None


def test_fixtures_agree_with_the_manifest_values(mmckpt_bin):
    """The committed nested.pt's values, as torch recorded them."""
    import json
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fixtures = os.path.join(repo, "tests", "fixtures")
    with open(os.path.join(fixtures, "manifest.json")) as f:
        manifest = json.load(f)
    doc, err = run_ls(mmckpt_bin, os.path.join(fixtures, "nested.pt"))
    assert doc is not None, err
    for want in manifest["nested.pt"]["values"]:
        assert want in doc["values"], want
