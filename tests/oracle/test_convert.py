"""`mmckpt convert`, checked by the libraries that read its output: every fixture and the
oracle's random checkpoints (legacy, views, tied weights, every dtype, big-endian) converted to a
torch.save archive must load with `torch.load(..., mmap=True, weights_only=True)` and equal the
input tensor for tensor (names, order, dtype, shape, strides, offset, Parameter, requires_grad,
bytes, storage sharing), and, when torch.load(weights_only=True) reads the input, equal it as a
whole object (nested containers, ints, floats, strings, None, shared sub-objects); converted to safetensors they must load with
`safetensors.torch.load_file`, hold what the safetensors project's `convert.py` keeps (the
first of the names that start at the same bytes, the others in `__metadata__`), and be laid out
byte for byte as `safetensors.torch.save_file` lays out the same tensors.

The reference for an input is `mmckpt ls --json --hash` (which the oracle itself checks against
torch), so TorchScript, sharded and safetensors inputs are covered too; the random cases are
also compared with `torch.load` of the input directly."""
import collections
import glob
import hashlib
import json
import os
import random
import struct
import subprocess

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from compare import check_tensor_list, raw_bytes, storage_key, walk
from conftest import REPO, run_ls
from gen import make_case
from test_oracle import save

FIXTURES = os.path.join(REPO, "tests", "fixtures")
INPUTS = sorted(glob.glob(os.path.join(FIXTURES, "*.pt"))) + [
    os.path.join(FIXTURES, "safetensors", "dtypes.safetensors"),
    os.path.join(FIXTURES, "shards", "pytorch_model.bin.index.json"),
]

# What mmckpt refuses to write, and says so (status, a part of the message).
REFUSALS = [
    ("MMCKPT_ERR_UNSUPPORTED", "bit set; mmckpt writes no such view"),
    ("MMCKPT_ERR_UNSUPPORTED", "which safetensors cannot hold"),
    ("MMCKPT_ERR_UNSUPPORTED", "view one storage as different dtypes"),
    ("MMCKPT_ERR_INVALID_ARGUMENT", "a state dict cannot hold both"),
]


def convert(mmckpt_bin, src, dst, *extra):
    proc = subprocess.run([mmckpt_bin, "convert", src, dst, "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr.strip()


def refused(doc, err):
    """A refusal is allowed only for what the writer cannot write, and only when the input
    really has it (an entry mmckpt cannot represent is refused with that entry's error)."""
    entry_errors = [t["error"]["message"] for t in doc["tensors"] if "error" in t]
    if any(m in err for m in entry_errors):
        return True
    return any(status in err and part in err for status, part in REFUSALS)


def tensors_of(obj):
    """(name, tensor) for every tensor of a loaded object, named as mmckpt's table names them
    (for a flat state dict: its items)."""
    return [(n, v) for n, v in walk(obj) if isinstance(v, torch.Tensor)]


def check_torch_output(doc, out):
    got = torch.load(out, mmap=True, weights_only=True)
    check_tensor_list(tensors_of(got), doc["tensors"])


MAPPINGS = (dict, collections.OrderedDict, collections.Counter)


def same_object(want, got, where, pairs):
    """`got` is `want` as torch.load returns it: the same containers (of the same class: a dict,
    OrderedDict or Counter, with a state dict's `_metadata`), values,
    tensors (dtype, shape, strides, offset, Parameter, requires_grad, bytes), and the same
    sharing: an object reached twice in `want` is one object in `got`."""
    if id(want) in pairs:
        assert pairs[id(want)] is got, f"{where}: sharing differs"
        return
    if isinstance(want, (torch.Tensor, list, dict, set, bytearray)):
        pairs[id(want)] = got
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert (want.dtype, want.shape, want.stride(), want.storage_offset()) == \
            (got.dtype, got.shape, got.stride(), got.storage_offset()), where
        assert isinstance(want, nn.Parameter) == isinstance(got, nn.Parameter), where
        assert want.requires_grad == got.requires_grad, where
        assert raw_bytes(want) == raw_bytes(got), f"{where}: bytes"
    elif isinstance(want, MAPPINGS):
        assert type(got) is type(want), f"{where}: {type(want)} became {type(got)}"
        assert list(want) == list(got), f"{where}: keys"
        assert getattr(want, "_metadata", None) == getattr(got, "_metadata", None), where
        for k in want:
            same_object(want[k], got[k], f"{where}.{k}", pairs)
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(want, got)):
            same_object(a, b, f"{where}.{i}", pairs)
    else:
        assert type(got) is type(want), f"{where}: {type(want)} became {type(got)}"
        if isinstance(want, float) and want != want:
            assert got != got, where
        else:
            assert got == want, where


def check_whole_object(src, out, label):
    """When torch's weights-only unpickler reads the input, the torch output is the whole
    object (non-tensor values too); otherwise it is the table as a flat state dict."""
    got = torch.load(out, mmap=True, weights_only=True)
    if not src.endswith(".pt"):  # safetensors, a shard index: the table as a state dict
        assert isinstance(got, dict), label
        return
    try:
        want = torch.load(src, weights_only=True, map_location="cpu")
    except Exception:  # an object outside the allowlist, TorchScript, not a torch file
        assert isinstance(got, dict), label
        return
    same_object(want, got, label, {})


def check_safetensors_output(doc, out, storage_nbytes):
    got = load_file(out)
    with open(out, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    first, dropped, kept = {}, {}, []
    for row in doc["tensors"]:
        start = (row["storage_id"], row["storage_offset"] * row["itemsize"])
        if storage_nbytes[row["name"]] > 0 and start in first:
            dropped[row["name"]] = first[start]
            continue
        first.setdefault(start, row["name"])
        kept.append(row)
    assert header["__metadata__"] == {"format": "pt", **dropped}
    assert sorted(got) == sorted(r["name"] for r in kept)
    for row in kept:
        t = got[row["name"]]
        where = f"tensor '{row['name']}'"
        assert str(t.dtype).replace("torch.", "") == row["dtype"], where
        assert list(t.shape) == row["shape"], where
        assert t.is_contiguous(), where
        assert hashlib.sha256(raw_bytes(t)).hexdigest() == row["sha256"], f"{where}: bytes"
    return got, dropped


def itemsizes(doc):
    for row in doc["tensors"]:
        if "error" not in row:
            row["itemsize"] = torch.empty((), dtype=getattr(torch, row["dtype"])).element_size()


def run_case(mmckpt_bin, src, tmp_path, label):
    doc, err = run_ls(mmckpt_bin, src)
    assert doc is not None, f"{label}: mmckpt ls failed: {err}"
    itemsizes(doc)
    results = {}
    for fmt, name in (("torch", "out.pt"), ("safetensors", "out.safetensors")):
        out = str(tmp_path / name)
        rc, err = convert(mmckpt_bin, src, out, "--format", fmt)
        if rc != 0:
            assert refused(doc, err), f"{label}: convert --format {fmt} failed: {err}"
            assert not os.path.exists(out), f"{label}: a refused convert left {out}"
            continue
        results[fmt] = out
    return doc, results


def storage_sizes(loaded_tensors):
    return {n: t.untyped_storage().nbytes() for n, t in loaded_tensors}


@pytest.mark.parametrize("src", INPUTS, ids=[os.path.basename(p) for p in INPUTS])
def test_fixture_converts(src, tmp_path, mmckpt_bin):
    doc, outs = run_case(mmckpt_bin, src, tmp_path, os.path.basename(src))
    if "torch" not in outs:
        # Refused (run_case checked why): only an input with entries mmckpt cannot represent.
        assert any("error" in t for t in doc["tensors"]), f"{src} did not convert"
        return
    check_torch_output(doc, outs["torch"])
    check_whole_object(src, outs["torch"], os.path.basename(src))
    # The torch output has each table tensor under its name, with its storage: its storage
    # sizes are the input's.
    sizes = storage_sizes(tensors_of(torch.load(outs["torch"], mmap=True, weights_only=True)))
    if "safetensors" in outs:
        check_safetensors_output(doc, outs["safetensors"], sizes)


def test_random_checkpoint_converts(case_index, request, tmp_path, mmckpt_bin, legacy_support):
    seed = request.config.oracle_seed * 1_000_003 + case_index
    case = make_case(random.Random(seed))
    label = f"seed {request.config.oracle_seed} case {case_index}: {case['format']}"
    if case["format"] == "legacy" and legacy_support is not None:
        pytest.skip(legacy_support)
    src = str(tmp_path / "in.pt")
    save(case, src)
    doc, outs = run_case(mmckpt_bin, src, tmp_path, label)
    want = [(n, v) for n, v in walk(torch.load(src, weights_only=False))
            if isinstance(v, torch.Tensor)]
    if "torch" in outs:
        got = tensors_of(torch.load(outs["torch"], mmap=True, weights_only=True))
        assert [n for n, _ in got] == [n for n, _ in want], label
        groups_want, groups_got = {}, {}
        for (name, a), (_, b) in zip(want, got):
            where = f"{label}: tensor '{name}'"
            assert (a.dtype, a.shape, a.stride(), a.storage_offset()) == \
                (b.dtype, b.shape, b.stride(), b.storage_offset()), where
            assert isinstance(a, nn.Parameter) == isinstance(b, nn.Parameter), where
            assert a.requires_grad == b.requires_grad, where
            assert raw_bytes(a) == raw_bytes(b), f"{where}: bytes"
            assert groups_want.setdefault(storage_key(a), len(groups_want)) == \
                groups_got.setdefault(storage_key(b), len(groups_got)), f"{where}: sharing"
        check_torch_output(doc, outs["torch"])
        check_whole_object(src, outs["torch"], label)
    if "safetensors" in outs:
        sizes = {n: t.untyped_storage().nbytes() for n, t in want}
        got, dropped = check_safetensors_output(doc, outs["safetensors"], sizes)
        by_name = dict(want)
        for name, t in got.items():
            assert raw_bytes(t) == raw_bytes(by_name[name]), f"{label}: '{name}' bytes"
        for name, kept in dropped.items():
            # convert.py's test for sharing: the same data pointer in what torch.load returns.
            assert by_name[name].data_ptr() == by_name[kept].data_ptr(), f"{label}: {name}"


def test_safetensors_layout_is_save_files(tmp_path, mmckpt_bin):
    """What convert.py does (drop shared names, .contiguous(), save_file with its metadata) and
    mmckpt convert give the same header and the same data bytes."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {"z.weight": base, "a.tied": base, "t": base.t(), "h": torch.ones(3, dtype=torch.float16),
          "i": torch.arange(5), "b": torch.tensor([True, False]), "bf": torch.zeros(2, 2,
          dtype=torch.bfloat16), "e": torch.zeros(0)}
    src = str(tmp_path / "in.pt")
    torch.save(sd, src)
    out = str(tmp_path / "out.safetensors")
    rc, err = convert(mmckpt_bin, src, out)
    assert rc == 0, err
    # convert.py: the first name of each data pointer; `t` starts where `z.weight` does.
    loaded = torch.load(src)
    seen, keep, metadata = {}, {}, {"format": "pt"}
    for k, v in loaded.items():
        if v.untyped_storage().nbytes() and v.data_ptr() in seen:
            metadata[k] = seen[v.data_ptr()]
            continue
        seen.setdefault(v.data_ptr(), k)
        keep[k] = v.contiguous()
    ref = str(tmp_path / "ref.safetensors")
    save_file(keep, ref, metadata=metadata)

    def parts(path):
        with open(path, "rb") as f:
            data = f.read()
        n = struct.unpack("<Q", data[:8])[0]
        return n, json.loads(data[8:8 + n]), data[8 + n:]

    ours, theirs = parts(out), parts(ref)
    assert ours[0] == theirs[0], "header lengths differ"
    assert ours[1] == theirs[1]
    assert list(ours[1])[1:] == list(theirs[1])[1:], "tensor order differs"
    assert ours[2] == theirs[2], "data differs"


def test_dtype_and_contiguous(tmp_path, mmckpt_bin):
    src = os.path.join(FIXTURES, "forms.pt")
    loaded = torch.load(src, weights_only=False)
    want = [(n, v) for n, v in walk(loaded) if isinstance(v, torch.Tensor)]
    out = str(tmp_path / "bf16.pt")
    rc, err = convert(mmckpt_bin, src, out, "--dtype", "bfloat16", "--contiguous")
    assert rc == 0, err
    got = torch.load(out, mmap=True, weights_only=True)
    floating = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    for name, t in want:
        g = got[name]
        assert g.is_contiguous(), name
        expect = t.detach().to(torch.bfloat16) if t.dtype in floating else t.detach()
        assert g.dtype == expect.dtype and g.shape == expect.shape, name
        assert raw_bytes(g) == raw_bytes(expect.contiguous()), name


def _linear_state_dict():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).state_dict()


def _stripped_prefix():
    """What scripts do to a DataParallel checkpoint: a new OrderedDict (no `_metadata`)."""
    stripped = collections.OrderedDict()
    for k, v in _linear_state_dict().items():
        stripped[k[len("0."):]] = v
    return stripped


def _nested():
    model = _stripped_prefix()
    return {"model": model, "again": model, "epoch": 3,
            "optimizer": {"lr": 0.1, "steps": collections.OrderedDict(a=1)}}


def _counter():
    return {"counts": collections.Counter({"cat": 3, "dog": 1, 7: -2}),
            "empty": collections.Counter(), "w": torch.arange(4.0)}


# (name, object, legacy format, (path, class) that the loaded object must have there)
DICT_CLASS_CASES = [
    ("ordered_dict_without_state", _stripped_prefix, False, [((), collections.OrderedDict)]),
    ("ordered_dict_in_a_dict", _nested, False,
     [((), dict), (("model",), collections.OrderedDict), (("optimizer",), dict),
      (("optimizer", "steps"), collections.OrderedDict)]),
    ("counter", _counter, False,
     [((), dict), (("counts",), collections.Counter), (("empty",), collections.Counter)]),
    ("state_dict_with_metadata", _linear_state_dict, False, [((), collections.OrderedDict)]),
    ("legacy_ordered_dict", _stripped_prefix, True, [((), collections.OrderedDict)]),
    ("legacy_counter", _counter, True, [(("counts",), collections.Counter)]),
]


@pytest.mark.parametrize("name,make,legacy,classes", DICT_CLASS_CASES,
                         ids=[c[0] for c in DICT_CLASS_CASES])
def test_dict_classes_survive(name, make, legacy, classes, tmp_path, mmckpt_bin,
                              legacy_support):
    """A dict, OrderedDict or Counter comes back from the torch output as the class torch.load
    returns for the input (they compare equal with ==, so only the type tells them apart)."""
    if legacy and legacy_support is not None:
        pytest.skip(legacy_support)
    src, out = str(tmp_path / "in.pt"), str(tmp_path / "out.pt")
    torch.save(make(), src, _use_new_zipfile_serialization=not legacy)
    rc, err = convert(mmckpt_bin, src, out, "--format", "torch")
    assert rc == 0, err
    want = torch.load(src, weights_only=True)
    got = torch.load(out, mmap=True, weights_only=True)
    for path, cls in classes:
        w, g = want, got
        for key in path:
            w, g = w[key], g[key]
        assert type(w) is cls, f"{name}: the input holds a {type(w)} at {path}"
        assert type(g) is cls, f"{name}: {cls} at {path} became {type(g)}"
    if name == "state_dict_with_metadata":
        assert got._metadata == want._metadata and got._metadata, name
    same_object(want, got, name, {})
