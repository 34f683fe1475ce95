#!/usr/bin/env python3
"""Writes mmckpt's test fixtures with real PyTorch (the test oracle).

Usage:  $(bash scripts/setup-venv.sh)/bin/python scripts/make_fixtures.py [OUT_DIR]

OUT_DIR defaults to <repo>/tests/fixtures. Every checkpoint is written by torch itself
(torch.save / torch.jit.save); nothing here forges bytes. The script is deterministic:
fixed seeds, files saved directly under their final name (the zip's top-level folder is the
file stem), and a fixed source file name for the TorchScript module. Running it twice yields
byte-identical files, with one exception that torch itself causes:

  * legacy.pt (``_use_new_zipfile_serialization=False``): torch's legacy writer names each
    storage ``str(storage._cdata)``, i.e. its C++ heap address, and writes the storages in the
    sorted order of those names. Keys and data order therefore change from run to run.
    The manifest does not depend on them (it records what torch.load returns).

``.data/serialization_id`` in zip files is NOT random in torch 2.15: it is derived from the
records' contents (same content -> same id), so it does not break determinism. The manifest
does not depend on it either.
"""
import argparse
import collections
import hashlib
import json
import linecache
import os
import sys
import types
import warnings

import torch
import torch.nn as nn

warnings.filterwarnings("ignore")  # complex32 "experimental", torch.jit deprecation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures")

# --------------------------------------------------------------------------------------------
# helpers


def dtype_name(dt):
    return str(dt).replace("torch.", "")


def raw_bytes(t):
    """Row-major bytes of t's logical elements, for every dtype (bool, complex32, float8,
    float4_e2m1fn_x2, bits*), 0-d and empty tensors included. A same-size integer view is
    taken first (it works on any strides), so that contiguous() never needs a copy kernel
    for the exotic dtype."""
    t = t.detach()
    same = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
    u = t.view(same) if same is not None else t  # complex128 (16 bytes) copies fine as is
    c = u.contiguous().reshape(-1)
    if c.dtype != torch.uint8:
        c = c.view(torch.uint8)
    return c.numpy().tobytes()


def sha256(t):
    return hashlib.sha256(raw_bytes(t)).hexdigest()


def walk(obj, prefix=""):
    """Depth-first (name, value) for every tensor and every leaf, in the object's own order."""
    def join(k):
        return f"{prefix}.{k}" if prefix else str(k)

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):  # dict and OrderedDict (its _metadata attribute is not walked)
        for k, v in obj.items():
            yield from walk(v, join(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from walk(v, join(i))
    elif isinstance(obj, (str, bytes, bytearray, int, float, complex, bool, type(None))):
        yield prefix, obj
    elif hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            yield from walk(v, join(k))
    else:
        yield prefix, obj


def storage_key(t):
    s = t.untyped_storage()
    # data_ptr() identifies the storage; zero-byte storages all have data_ptr 0, so fall
    # back to the StorageImpl pointer (_cdata) for those.
    return ("ptr", s.data_ptr()) if s.data_ptr() != 0 else ("impl", s._cdata)


def describe_tensors(obj):
    groups = {}
    out = []
    for name, v in walk(obj):
        if not isinstance(v, torch.Tensor):
            continue
        key = storage_key(v)
        if key not in groups:
            groups[key] = len(groups)
        out.append({
            "name": name,
            "dtype": dtype_name(v.dtype),
            "shape": list(v.shape),
            "stride": list(v.stride()),
            "storage_offset": v.storage_offset(),
            "numel": v.numel(),
            "requires_grad": bool(v.requires_grad),
            "is_parameter": isinstance(v, nn.Parameter),
            "sha256": sha256(v),
            "storage_group": groups[key],
        })
    return out


def describe_value(name, v):
    if isinstance(v, bool):
        return {"name": name, "kind": "bool", "value": v}
    if v is None:
        return {"name": name, "kind": "none", "value": None}
    if isinstance(v, int):
        return {"name": name, "kind": "int",
                "value": v if -2**63 <= v < 2**63 else str(v)}
    if isinstance(v, float):
        return {"name": name, "kind": "float", "value": v}
    if isinstance(v, str):
        return {"name": name, "kind": "str", "value": v}
    if isinstance(v, (bytes, bytearray)):
        return {"name": name, "kind": "bytes", "value": bytes(v).hex()}
    raise TypeError(f"{name}: {type(v)}")


# --------------------------------------------------------------------------------------------
# checkpoints

# Dtypes requested for dtypes.pt, in this order; every one of them saves and loads in torch
# 2.15 (the ones not in the running torch are skipped and reported).
DTYPES = [
    "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16", "int32", "int64",
    "bool", "complex64", "complex128", "uint16", "uint32", "uint64", "complex32",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    # Also saveable in 2.15 (raw bit containers, rebuilt with _rebuild_tensor_v3):
    "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
]
# Sub-byte dtypes torch 2.15 has but cannot save (torch.save raises
# KeyError "dtype torch.int4 is not recognized"): int1..int7, uint1..uint7.


def make_dtype_tensor(name, gen):
    dt = getattr(torch, name)
    shape = (3, 5)
    if name == "bool":
        return torch.rand(shape, generator=gen) > 0.5
    if dt.is_complex:
        t = torch.randn(shape, dtype=torch.complex128, generator=gen) * 4
        return t.to(dt)
    if dt.is_floating_point and not name.startswith(("float4", "float8_e8m0")):
        t = torch.randn(shape, dtype=torch.float64, generator=gen) * 3
        return t.to(dt) if dt.itemsize >= 4 else t.float().to(dt)
    if name == "float8_e8m0fnu":  # powers of two only: 2**-8 .. 2**8
        e = torch.randint(-8, 9, shape, generator=gen).double()
        return torch.pow(2.0, e).to(dt)
    if not dt.is_floating_point and not name.startswith(("bits", "float4")) and name != "bool":
        info = torch.iinfo(dt)
        lo = max(info.min, -2**62)
        hi = min(info.max, 2**62)
        if name in ("uint32", "uint64"):
            # randint on these is limited; build from int64 and reinterpret high values too
            v = torch.randint(0, 2**31, shape, dtype=torch.int64, generator=gen)
            v[0, 0] = 2**32 - 1 if name == "uint32" else 2**62 + 12345
            return v.to(dt)
        return torch.randint(lo, hi, shape, dtype=torch.int64, generator=gen).to(dt)
    # float4_e2m1fn_x2 and bits*: no arithmetic; random bytes reinterpreted
    nbytes = dt.itemsize
    b = torch.randint(0, 256, shape + (nbytes,), dtype=torch.int64, generator=gen).to(torch.uint8)
    return b.view(dt).reshape(shape)


def dtypes_ckpt():
    gen = torch.Generator().manual_seed(1)
    sd = collections.OrderedDict()
    for name in DTYPES:
        if not hasattr(torch, name):
            print(f"  dtypes.pt: torch has no {name}, skipped", file=sys.stderr)
            continue
        sd[name] = make_dtype_tensor(name, gen)
    return sd


def forms_ckpt():
    torch.manual_seed(2)
    base = torch.randn(8, 6)  # not saved itself: its views keep the whole storage alive
    other = torch.randn(20)
    shared = torch.randn(10)
    tied = torch.randn(5, 4)
    half = torch.randn(10).half()
    sd = collections.OrderedDict()
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 4)
    sd["contiguous"] = torch.randn(4, 6)
    sd["slice"] = base[2:5]                       # offset 12, shape [3, 6]
    sd["transpose"] = base.t()                    # shape [6, 8], stride [1, 6]
    sd["narrow"] = base.narrow(1, 1, 3)           # offset 1, shape [8, 3], stride [6, 1]
    sd["as_strided"] = other.as_strided((3, 4), (1, 3), 2)  # overlapping, column-major-ish
    sd["expanded"] = torch.arange(3.0).expand(4, 3)         # stride [0, 1]
    sd["shared.a"] = shared[:6].view(2, 3)
    sd["shared.b"] = shared[4:]                   # overlaps shared.a, offset 4
    sd["embed.weight"] = tied
    sd["lm_head.weight"] = tied                   # the same tensor object
    sd["param_grad"] = nn.Parameter(torch.randn(3), requires_grad=True)
    sd["param_nograd"] = nn.Parameter(torch.randn(2, 2), requires_grad=False)
    sd["buffer_int64"] = torch.arange(5, dtype=torch.int64) * 7 - 10
    sd["half_step"] = half[1::3]                  # float16, offset 1, stride [3]
    return sd


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)

    def forward(self, x):
        return self.norm(self.fc(x))


def nested_ckpt():
    torch.manual_seed(3)
    model = SmallNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(torch.randn(2, 4)).pow(2).sum()
    loss.backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "step": 2**70,
        "lr": 1e-3,
        "name": "run-1",
        "blob": b"\x00\x01",
        "flags": [True, None],
        "args": argparse.Namespace(hidden=16, scale=torch.ones(2)),
    }


NESTED_VALUE_LEAVES = ["epoch", "step", "lr", "name", "blob", "flags.0", "flags.1", "args.hidden"]


def small_sd(seed):
    torch.manual_seed(seed)
    sd = collections.OrderedDict()
    sd["weight"] = torch.randn(3, 4)
    sd["bias"] = torch.randn(3)
    sd["steps"] = torch.arange(4, dtype=torch.int32)
    return sd


def legacy_ckpt():
    torch.manual_seed(5)
    i8 = torch.arange(-7, 8, dtype=torch.int8)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 4)
    sd["i8_view"] = i8[3::2]                      # odd offset 3, stride [2]
    sd["f64"] = torch.randn(2, 3, dtype=torch.float64)
    return sd


def legacy_layout(path):
    """(key, itemsize, data offset) of each storage of a protocol-2 legacy file, found the way
    the format is defined: skip the five pickles, then per key an 8-byte count and the data.
    Each key's element size comes from the storage class named just before it in the object
    pickle (GLOBAL 'torch FloatStorage', then the key string)."""
    import pickle
    import pickletools
    import struct
    data = open(path, "rb").read()
    pos, itemsize, pending = 0, {}, None
    for i in range(5):
        keys_at = pos
        for op, arg, at in pickletools.genops(data[pos:]):
            if i == 3 and op.name == "GLOBAL" and arg.startswith("torch ") and arg.endswith("Storage"):
                pending = getattr(torch, arg.split(" ")[1]).dtype.itemsize
            elif i == 3 and pending is not None and op.name in ("BINUNICODE", "SHORT_BINUNICODE"):
                itemsize.setdefault(arg, pending)
                pending = None
            if op.name == "STOP":
                pos += at + 1
                break
    keys = pickle.loads(data[keys_at:pos])
    out = []
    for key in keys:
        (count,) = struct.unpack_from("<q", data, pos)
        out.append((key, itemsize[key], pos + 8))
        pos += 8 + count * itemsize[key]
    assert pos == len(data), (pos, len(data))
    return out


def legacy_odd_ckpt(pad):
    """Storages of several element sizes, unaligned in the file; `pad` shifts the data."""
    torch.manual_seed(8)
    sd = collections.OrderedDict()
    sd["pad"] = "x" * pad
    sd["i8_odd"] = torch.arange(7, dtype=torch.int8)
    sd["f32"] = torch.randn(5)
    sd["i16"] = torch.arange(3, dtype=torch.int16) - 1
    sd["f64"] = torch.randn(3, 2, dtype=torch.float64)
    sd["u8"] = torch.arange(5, dtype=torch.uint8)
    sd["f16"] = torch.randn(3).half()
    sd["i64"] = torch.arange(3, dtype=torch.int64) * 1000
    sd["c64"] = torch.randn(2, dtype=torch.complex64)
    return sd


def save_legacy_odd(path):
    """Saves legacy_odd.pt with a padding that leaves at least one multi-byte storage aligned
    to its element size (zero-copy) and at least one misaligned (copied)."""
    for pad in range(64):
        torch.save(legacy_odd_ckpt(pad), path, _use_new_zipfile_serialization=False)
        layout = legacy_layout(path)
        multi = [(off % min(size, 8) == 0) for _, size, off in layout if size > 1]
        if any(multi) and not all(multi):
            return
    raise AssertionError("no padding gives both aligned and misaligned storages")


class ScriptSub(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, 2)
        self.register_buffer("stat", torch.arange(2.0))
        self.k = 3                      # non-tensor attributes
        self.names = ["a", "b"]

    def forward(self, x):
        return self.lin(x) + self.stat * self.k


class ScriptTop(nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = ScriptSub(3)
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.LayerNorm(2)])
        self.scale = nn.Parameter(torch.ones(2))
        self.register_buffer("steps", torch.tensor(5))
        self.cfg = {"a": 1}
        self.label = "top"

    def forward(self, x):
        y = self.sub(x)
        for layer in self.layers:
            y = layer(y)
        return y * self.scale


TRACE_CONST = torch.tensor([1.5, 2.5])


class ScriptAttr(nn.Module):
    """A scripted module with a plain tensor attribute: not a parameter or buffer, so
    state_dict() leaves it out (mmckpt must too; only code/ says which attributes are state)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(6.0).reshape(2, 3))
        self.register_buffer("stat", torch.full((3,), 2.0))
        self.table = torch.arange(4.0)  # plain attribute

    def forward(self, x):
        return x @ self.weight.t() + self.stat.sum() + self.table.sum()


class Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((2,), 0.5))

    def forward(self, x):
        return x * self.w + TRACE_CONST  # traced: TRACE_CONST becomes a constants/ record


class Tagged(torch.Tensor):
    """A torch.Tensor subclass (pickled with _rebuild_from_type_v2 and this class)."""


def exotic_ckpt():
    torch.manual_seed(9)
    sd = collections.OrderedDict()
    sd["plain"] = torch.randn(2, 3)
    sd["quantized"] = torch.quantize_per_tensor(torch.randn(4), 0.1, 3, torch.qint8)
    sd["sparse"] = torch.eye(3).to_sparse()
    sd["nested"] = torch.nested.nested_tensor([torch.randn(2), torch.randn(3)])
    sd["subclass"] = torch.randn(2).as_subclass(Tagged)
    sd["conj"] = torch.randn(3, dtype=torch.complex64).conj()
    sd["neg"] = torch._neg_view(torch.randn(3))
    sd["plain_int"] = torch.arange(4, dtype=torch.int32)
    return sd


EXOTIC_KINDS = {"quantized": "quantized", "sparse": "sparse", "nested": "nested",
                "subclass": "subclass"}


def describe_exotic(loaded):
    """The normal rows (conj/neg with both their stored and resolved values) and the kinds."""
    tensors, unsupported = [], []
    for name, t in loaded.items():
        if name in EXOTIC_KINDS:
            unsupported.append({"name": name, "kind": EXOTIC_KINDS[name]})
            continue
        row = {"name": name, "dtype": dtype_name(t.dtype), "shape": list(t.shape),
               "conj": bool(t.is_conj()), "neg": bool(t.is_neg())}
        # The file holds the un-conjugated, un-negated values: flipping the lazy bit back
        # gives a plain view of those bytes.
        stored = t.conj() if t.is_conj() else (torch._neg_view(t) if t.is_neg() else t)
        assert not stored.is_conj() and not stored.is_neg()
        row["stored_sha256"] = sha256(stored)
        row["resolved_sha256"] = sha256(t.resolve_conj().resolve_neg())
        tensors.append(row)
    return tensors, unsupported


def bigendian_ckpt():
    sd = collections.OrderedDict()
    sd["f32"] = torch.tensor([1.0, -2.5, 3.25])
    sd["i16"] = torch.tensor([1, -2, 300], dtype=torch.int16)
    sd["c64"] = torch.tensor([1 + 2j, -3.5j])
    sd["u8"] = torch.tensor([1, 2, 255], dtype=torch.uint8)
    sd["f64_t"] = torch.tensor([[1.5, 2.0], [3.0, 4.0]], dtype=torch.float64).t()
    sd["bf16"] = torch.tensor([0.5, -8.0]).bfloat16()
    return sd


def byteswapped(t):
    """t with every element's bytes reversed (each half of a complex), same strides/offset:
    what a big-endian machine holds in memory for t."""
    s = t.untyped_storage()
    full = torch.empty(0, dtype=t.dtype).set_(s, 0, (s.nbytes() // t.element_size(),), (1,))
    if t.is_complex():
        sw = torch.view_as_complex(torch.from_numpy(torch.view_as_real(full).numpy().byteswap()))
    elif t.element_size() == 1:
        sw = full.clone()
    else:
        same = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        sw = torch.from_numpy(full.view(same).numpy().byteswap()).view(t.dtype)
    return sw.as_strided(t.shape, t.stride(), t.storage_offset())


def save_big_endian(sd, path):
    """What torch.save writes on a big-endian machine: the storages' bytes in big-endian order
    and a `byteorder` record of `big` (torch.save writes sys.byteorder there). The pickle does
    not depend on the host (pickle integers are little-endian by definition). torch.load on
    this machine is the oracle: it must give back `sd`."""
    swapped = collections.OrderedDict((k, byteswapped(v)) for k, v in sd.items())
    old = sys.byteorder
    sys.byteorder = "big"
    try:
        torch.save(swapped, path)
    finally:
        sys.byteorder = old


LOCATION_TAGS = {}


def _location_tagger(storage):
    return LOCATION_TAGS.get(storage.data_ptr())


def _location_deserializer(storage, location):
    return storage if location in ("cuda:0", "mps") else None


def location_ckpt():
    """Tensors whose storages torch tags `cuda:0` and `mps` through torch's public
    register_package hook (the tagger decides a storage's location string; the bytes are
    written the same way for every device)."""
    torch.manual_seed(10)
    sd = collections.OrderedDict()
    sd["on_cpu"] = torch.randn(3)
    sd["on_cuda"] = torch.randn(2, 2)
    sd["on_mps"] = torch.arange(3, dtype=torch.int64)
    LOCATION_TAGS.clear()
    LOCATION_TAGS[sd["on_cuda"].untyped_storage().data_ptr()] = "cuda:0"
    LOCATION_TAGS[sd["on_mps"].untyped_storage().data_ptr()] = "mps"
    return sd


def shard_state_dict():
    torch.manual_seed(11)
    sd = collections.OrderedDict()
    sd["model.embed.weight"] = torch.randn(6, 4)
    sd["model.layers.0.weight"] = torch.randn(4, 4)
    sd["model.layers.0.bias"] = torch.randn(4)
    sd["model.norm.weight"] = torch.ones(4, dtype=torch.bfloat16)
    sd["lm_head.weight"] = torch.randn(6, 4)
    return sd


def save_shards(out_dir):
    """Splits a state dict into two shard files saved with torch.save and writes the index as
    transformers' save_pretrained does (json.dumps(index, indent=2, sort_keys=True))."""
    sd = shard_state_dict()
    names = list(sd)
    split = [names[:3], names[3:]]
    total = len(split)
    weight_map, size = {}, 0
    os.makedirs(out_dir, exist_ok=True)
    for i, part in enumerate(split):
        fname = f"pytorch_model-{i + 1:05d}-of-{total:05d}.bin"
        torch.save(collections.OrderedDict((k, sd[k]) for k in part), os.path.join(out_dir, fname))
        for k in part:
            weight_map[k] = fname
            size += sd[k].numel() * sd[k].element_size()
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "pytorch_model.bin.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")


def load_sharded(index_path):
    """The state dict transformers' loader assembles: shard files in sorted order, each
    shard's tensors in its own order."""
    index = json.load(open(index_path))
    out = collections.OrderedDict()
    for fname in sorted(set(index["weight_map"].values())):
        shard = torch.load(os.path.join(os.path.dirname(index_path), fname))
        for k, v in shard.items():
            if index["weight_map"].get(k) == fname:
                out[k] = v
    return out


# The TorchScript module is compiled from this source under a fixed file name, because
# torch.jit.save records the source file's path in code/*.debug_pkl.
JIT_SOURCE = '''
import torch


class ScriptNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 4))
        self.register_buffer("running", torch.arange(3.0))
        self.register_buffer("count", torch.tensor(7, dtype=torch.int64))

    def forward(self, x):
        return x @ self.weight.t() + self.running * self.count
'''
JIT_MODULE = "mmckpt_fixture_jit"
JIT_FILE = "mmckpt_fixture_jit.py"


def script_module():
    mod = types.ModuleType(JIT_MODULE)
    mod.__file__ = JIT_FILE
    sys.modules[JIT_MODULE] = mod
    lines = JIT_SOURCE.splitlines(keepends=True)
    linecache.cache[JIT_FILE] = (len(JIT_SOURCE), None, lines, JIT_FILE)
    exec(compile(JIT_SOURCE, JIT_FILE, "exec"), mod.__dict__)
    torch.manual_seed(6)
    return torch.jit.script(mod.ScriptNet())


class SomeModule(nn.Module):
    """The recipe's module."""

    def __init__(self, size):
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(size, size) for _ in range(10)])

    def forward(self, x):
        return self.linears(x)


def transposed_ckpt():
    """Weights saved as-is in non-row-major layouts, as facenet-pytorch's MTCNN weights are
    (its conv1.weight has strides [1, 10, 30, 90]): what an engine that reads `data` row-major
    gets wrong, and what MMCKPT_LOAD_CONTIGUOUS re-lays out. Own generator: the other fixtures'
    random streams are untouched."""
    g = torch.Generator().manual_seed(1313)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    sd = collections.OrderedDict()
    sd["conv1.weight"] = randn(3, 3, 3, 10).permute(3, 2, 1, 0)  # [10, 3, 3, 3], strides [1, 10, 30, 90]
    sd["conv1.bias"] = randn(10)
    sd["fc.weight"] = randn(6, 4).t()  # [4, 6], strides [1, 4]
    sd["fc.bias"] = randn(4)
    sd["strided"] = randn(40).as_strided((3, 4), (8, 2), 1)
    sd["half_t"] = randn(5, 3).half().t()  # float16 [3, 5], strides [1, 3]
    assert sd["conv1.weight"].stride() == (1, 10, 30, 90)
    return sd


def recipe_ckpt():
    # Build on meta (no 40 MB of random init), then give each tensor a deterministic,
    # low-entropy pattern so that git's zlib stores the 40 MB file in well under 1 MB.
    with torch.device("meta"):
        m = SomeModule(1000)
    m = m.to_empty(device="cpu")
    with torch.no_grad():
        for i, lin in enumerate(m.linears):
            for w in (lin.weight, lin.bias):
                w.copy_((((torch.arange(w.numel()) % 97) - 48).float().reshape(w.shape)
                         * 0.01 * (i + 1)))
    return m.state_dict()


RECIPE_SPEC = {"name": "SomeModule", "type": "Module", "children": {
    "linears": {"type": "ModuleList", "repeat": 10,
                "item": {"type": "Linear", "in_features": 1000, "out_features": 1000}}}}


# --------------------------------------------------------------------------------------------
# spec interpreter (the format of docs/module-spec.md), building real torch modules

LAYERS = {
    # type: (required args, {optional arg: default}, constructor)
    "Linear": (["in_features", "out_features"], {"bias": True}, nn.Linear),
    "Conv1d": (["in_channels", "out_channels", "kernel_size"], {"groups": 1, "bias": True}, nn.Conv1d),
    "Conv2d": (["in_channels", "out_channels", "kernel_size"], {"groups": 1, "bias": True}, nn.Conv2d),
    "Conv3d": (["in_channels", "out_channels", "kernel_size"], {"groups": 1, "bias": True}, nn.Conv3d),
    "ConvTranspose1d": (["in_channels", "out_channels", "kernel_size"], {"groups": 1, "bias": True}, nn.ConvTranspose1d),
    "ConvTranspose2d": (["in_channels", "out_channels", "kernel_size"], {"groups": 1, "bias": True}, nn.ConvTranspose2d),
    "ConvTranspose3d": (["in_channels", "out_channels", "kernel_size"], {"groups": 1, "bias": True}, nn.ConvTranspose3d),
    "Embedding": (["num_embeddings", "embedding_dim"], {}, nn.Embedding),
    "LayerNorm": (["normalized_shape"], {"elementwise_affine": True, "bias": True}, nn.LayerNorm),
    "RMSNorm": (["normalized_shape"], {"elementwise_affine": True}, nn.RMSNorm),
    "GroupNorm": (["num_groups", "num_channels"], {"affine": True}, nn.GroupNorm),
    "BatchNorm1d": (["num_features"], {"affine": True, "track_running_stats": True}, nn.BatchNorm1d),
    "BatchNorm2d": (["num_features"], {"affine": True, "track_running_stats": True}, nn.BatchNorm2d),
    "BatchNorm3d": (["num_features"], {"affine": True, "track_running_stats": True}, nn.BatchNorm3d),
    "MultiheadAttention": (["embed_dim", "num_heads"], {"bias": True}, nn.MultiheadAttention),
    "PReLU": ([], {"num_parameters": 1}, nn.PReLU),
}
NODE_KEYS = {"type", "dtype", "name"}
# Layers without state (scripts/stateless_layers.py), with the arguments torch was built with.
with open(os.path.join(REPO, "src", "module", "stateless_layers.json")) as _f:
    STATELESS_LAYERS = json.load(_f)["layers"]


def spec_dtype(name):
    dt = getattr(torch, name, None)
    assert isinstance(dt, torch.dtype), name
    return dt


def build(node, dtype="float32"):
    """Spec node -> torch.nn.Module (call under `with torch.device('meta')`)."""
    dtype = node.get("dtype", dtype)
    if "entries" in node and "type" not in node:
        return build_flat(node["entries"])
    kind = node["type"]
    if kind == "Module":
        m = nn.Module()
        for name, p in node.get("params", {}).items():
            m.register_parameter(name, nn.Parameter(
                torch.empty(p["shape"], dtype=spec_dtype(p.get("dtype", dtype)))))
        for name, b in node.get("buffers", {}).items():
            m.register_buffer(name, torch.empty(b["shape"], dtype=spec_dtype(b.get("dtype", dtype))),
                              persistent=b.get("persistent", True))
        for name, child in node.get("children", {}).items():
            m.add_module(name, build(child, dtype))
        return m
    if kind in ("ModuleList", "Sequential"):
        if "repeat" in node:
            items = [node["item"]] * node["repeat"]
        else:
            items = node["items"]
        mods = [build(it, dtype) for it in items]
        return nn.ModuleList(mods) if kind == "ModuleList" else nn.Sequential(*mods)
    if kind == "ModuleDict":
        return nn.ModuleDict({k: build(v, dtype) for k, v in node["children"].items()})
    args = {k: v for k, v in node.items() if k not in NODE_KEYS}
    if kind in STATELESS_LAYERS:
        return getattr(nn, kind)(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    required, optional, ctor = LAYERS[kind]
    assert set(args) <= set(required) | set(optional), (kind, args)
    assert set(required) <= set(args), (kind, args)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    return ctor(**args, dtype=spec_dtype(dtype))


def build_flat(entries):
    root = nn.Module()
    for e in entries:
        *path, leaf = e["name"].split(".")
        m = root
        for p in path:
            if not hasattr(m, p):
                m.add_module(p, nn.Module())
            m = getattr(m, p)
        t = torch.empty(e["shape"], dtype=spec_dtype(e["dtype"]))
        if e["kind"] == "parameter":
            m.register_parameter(leaf, nn.Parameter(t))
        else:
            m.register_buffer(leaf, t)
    return root


def expected_entries(spec):
    with torch.device("meta"):
        m = build(spec)
    params = {k for k, _ in m.named_parameters()}
    return [{"name": k, "shape": list(v.shape), "dtype": dtype_name(v.dtype),
             "kind": "parameter" if k in params else "buffer"}
            for k, v in m.state_dict().items()]


def L(kind, **kw):
    return {"type": kind, **kw}


def spec_cases():
    c = []

    def add(name, spec):
        c.append((name, spec))

    # Linear
    add("linear", L("Linear", in_features=4, out_features=3))
    add("linear_nobias", L("Linear", in_features=4, out_features=3, bias=False))
    add("linear_bias_true_explicit", L("Linear", in_features=1, out_features=1, bias=True))
    # Convolutions
    add("conv1d", L("Conv1d", in_channels=4, out_channels=6, kernel_size=3))
    add("conv1d_groups_nobias", L("Conv1d", in_channels=4, out_channels=6, kernel_size=[5], groups=2, bias=False))
    add("conv2d", L("Conv2d", in_channels=3, out_channels=8, kernel_size=3))
    add("conv2d_tuple_kernel", L("Conv2d", in_channels=3, out_channels=8, kernel_size=[3, 5]))
    add("conv2d_depthwise", L("Conv2d", in_channels=8, out_channels=16, kernel_size=[1, 7], groups=8))
    add("conv3d", L("Conv3d", in_channels=2, out_channels=4, kernel_size=3))
    add("conv3d_list_groups_nobias", L("Conv3d", in_channels=4, out_channels=8, kernel_size=[1, 2, 3], groups=4, bias=False))
    add("convtranspose1d", L("ConvTranspose1d", in_channels=4, out_channels=6, kernel_size=3))
    add("convtranspose1d_groups", L("ConvTranspose1d", in_channels=4, out_channels=6, kernel_size=3, groups=2))
    add("convtranspose2d", L("ConvTranspose2d", in_channels=6, out_channels=4, kernel_size=[2, 3]))
    add("convtranspose2d_groups_nobias", L("ConvTranspose2d", in_channels=6, out_channels=9, kernel_size=2, groups=3, bias=False))
    add("convtranspose3d", L("ConvTranspose3d", in_channels=2, out_channels=4, kernel_size=[3, 1, 2]))
    add("convtranspose3d_groups", L("ConvTranspose3d", in_channels=4, out_channels=2, kernel_size=2, groups=2))
    # Embedding
    add("embedding", L("Embedding", num_embeddings=100, embedding_dim=16))
    add("embedding_bf16", L("Embedding", num_embeddings=7, embedding_dim=3, dtype="bfloat16"))
    # Norms
    add("layernorm", L("LayerNorm", normalized_shape=8))
    add("layernorm_list", L("LayerNorm", normalized_shape=[4, 5]))
    add("layernorm_nobias", L("LayerNorm", normalized_shape=8, bias=False))
    add("layernorm_noaffine", L("LayerNorm", normalized_shape=[2, 3], elementwise_affine=False))
    add("rmsnorm", L("RMSNorm", normalized_shape=8))
    add("rmsnorm_list", L("RMSNorm", normalized_shape=[3, 4]))
    add("rmsnorm_noaffine", L("RMSNorm", normalized_shape=8, elementwise_affine=False))
    add("groupnorm", L("GroupNorm", num_groups=2, num_channels=6))
    add("groupnorm_noaffine", L("GroupNorm", num_groups=3, num_channels=6, affine=False))
    add("batchnorm1d", L("BatchNorm1d", num_features=5))
    add("batchnorm2d_noaffine", L("BatchNorm2d", num_features=4, affine=False))
    add("batchnorm3d_no_running_stats", L("BatchNorm3d", num_features=3, track_running_stats=False))
    add("batchnorm2d_neither", L("BatchNorm2d", num_features=3, affine=False, track_running_stats=False))
    add("batchnorm1d_float64", L("BatchNorm1d", num_features=2, dtype="float64"))
    # Attention, PReLU
    add("mha", L("MultiheadAttention", embed_dim=8, num_heads=2))
    add("mha_nobias", L("MultiheadAttention", embed_dim=6, num_heads=3, bias=False))
    add("prelu", L("PReLU"))
    add("prelu_channels", L("PReLU", num_parameters=4))
    # Containers
    add("module_dtype_inherited_bf16", {
        "type": "Module", "dtype": "bfloat16", "children": {
            "proj": L("Linear", in_features=4, out_features=2),
            "bn": L("BatchNorm1d", num_features=2),
            "attn": L("MultiheadAttention", embed_dim=4, num_heads=1),
            "head": L("Linear", in_features=2, out_features=2, dtype="float32"),
        }})
    add("sequential", {"type": "Sequential", "items": [
        L("Conv2d", in_channels=3, out_channels=4, kernel_size=3),
        L("BatchNorm2d", num_features=4),
        L("PReLU", num_parameters=4),
    ]})
    add("sequential_repeat_float64", {"type": "Sequential", "repeat": 3, "dtype": "float64",
                                      "item": L("Linear", in_features=2, out_features=2)})
    add("modulelist_items", {"type": "ModuleList", "items": [
        L("Linear", in_features=3, out_features=4),
        L("LayerNorm", normalized_shape=4),
        L("Embedding", num_embeddings=5, embedding_dim=4),
    ]})
    add("moduledict", {"type": "ModuleDict", "children": {
        "b": L("Linear", in_features=2, out_features=3),
        "a": L("GroupNorm", num_groups=1, num_channels=3),
    }})
    add("nested_containers", {
        "name": "Transformer", "type": "Module", "children": {
            "embed": L("Embedding", num_embeddings=50, embedding_dim=8),
            "layers": {"type": "ModuleList", "repeat": 2, "item": {
                "type": "Module", "children": {
                    "attn": L("MultiheadAttention", embed_dim=8, num_heads=2),
                    "ln1": L("LayerNorm", normalized_shape=8),
                    "mlp": {"type": "Sequential", "items": [
                        L("Linear", in_features=8, out_features=16),
                        L("Linear", in_features=16, out_features=8, bias=False),
                    ]},
                    "norms": {"type": "ModuleDict", "dtype": "bfloat16", "children": {
                        "rms": L("RMSNorm", normalized_shape=8),
                    }},
                }}},
            "lm_head": L("Linear", in_features=8, out_features=50, bias=False),
        }})
    add("custom_module_params_buffers", {
        "type": "Module", "dtype": "float64",
        "params": {"scale": {"shape": [4]}, "table": {"shape": [2, 3], "dtype": "bfloat16"},
                   "scalar": {"shape": []}},
        "buffers": {"pos": {"shape": [16], "dtype": "int64"},
                    "cache": {"shape": [4, 4], "persistent": False},
                    "mask": {"shape": [2, 2], "dtype": "bool", "persistent": True}},
        "children": {"fc": L("Linear", in_features=4, out_features=4)},
    })
    add("custom_module_children_before_params", {
        # children are written first in the JSON, but torch's state_dict lists a module's own
        # params and buffers before its children's entries
        "type": "Module",
        "children": {"inner": {"type": "Module", "params": {"w": {"shape": [2]}}}},
        "params": {"outer": {"shape": [3]}},
        "buffers": {"zero_size": {"shape": [0, 5]}},
    })
    add("recipe", RECIPE_SPEC)
    # Flat form (entries are given in an order torch's state_dict would also produce)
    add("flat", {"name": "Net", "entries": [
        {"name": "scale", "shape": [1], "dtype": "bfloat16", "kind": "parameter"},
        {"name": "linears.0.weight", "shape": [4, 3], "dtype": "float32", "kind": "parameter"},
        {"name": "linears.0.bias", "shape": [4], "dtype": "float32", "kind": "parameter"},
        {"name": "bn.running_mean", "shape": [4], "dtype": "float32", "kind": "buffer"},
        {"name": "bn.num_batches_tracked", "shape": [], "dtype": "int64", "kind": "buffer"},
    ]})
    # Mixed: a flat node as a child of a layer-form container (the spec says the two forms
    # may be mixed; this is this script's reading of that: a node with "entries" and no "type").
    add("mixed_flat_child", {"type": "Module", "children": {
        "enc": {"entries": [
            {"name": "w", "shape": [2, 2], "dtype": "float16", "kind": "parameter"},
            {"name": "sub.b", "shape": [2], "dtype": "float32", "kind": "buffer"},
        ]},
        "head": L("Linear", in_features=2, out_features=1),
    }})

    cases = []
    for name, spec in c:
        expected = expected_entries(spec)
        if "entries" in spec:  # flat cases are written in torch's own state_dict order
            assert [{k: e[k] for k in ("name", "shape", "dtype", "kind")}
                    for e in spec["entries"]] == expected, name
        cases.append({"name": name, "spec": spec, "expected": expected})
    return cases


def invalid_spec_cases():
    lin = {"type": "Linear", "in_features": 4, "out_features": 4}
    return [
        {"name": "unknown_type", "error_contains": "node 'linears.0'",
         "spec": {"type": "Module", "children": {"linears": {"type": "ModuleList", "items": [
             {"type": "Linaer", "in_features": 4, "out_features": 4}, lin]}}}},
        {"name": "unknown_type_in_repeat", "error_contains": "node 'blocks.0'",
         "spec": {"type": "Module", "children": {"blocks": {"type": "ModuleList", "repeat": 2,
                                                            "item": {"type": "Transformer"}}}}},
        {"name": "missing_argument", "error_contains": "node 'fc'",
         "spec": {"type": "Module", "children": {"fc": {"type": "Linear", "in_features": 4}}}},
        {"name": "mistyped_argument_string", "error_contains": "node 'fc'",
         "spec": {"type": "Module", "children": {"fc": {"type": "Linear", "in_features": "4",
                                                        "out_features": 4}}}},
        {"name": "mistyped_argument_bool", "error_contains": "node '1'",
         "spec": {"type": "Sequential", "items": [lin, {"type": "Linear", "in_features": 4,
                                                       "out_features": 4, "bias": 1}]}},
        {"name": "mistyped_kernel_size", "error_contains": "node 'conv'",
         "spec": {"type": "Module", "children": {"conv": {
             "type": "Conv2d", "in_channels": 3, "out_channels": 3, "kernel_size": [3, 3, 3]}}}},
        {"name": "negative_size", "error_contains": "node 'layers.1'",
         "spec": {"type": "Module", "children": {"layers": {"type": "ModuleList", "items": [
             lin, {"type": "Linear", "in_features": 4, "out_features": -1}]}}}},
        {"name": "negative_param_shape", "error_contains": "parameter 'w'",
         "spec": {"type": "Module", "params": {"w": {"shape": [2, -3]}}}},
        {"name": "unknown_dtype", "error_contains": "node 'emb'",
         "spec": {"type": "Module", "children": {"emb": {
             "type": "Embedding", "num_embeddings": 3, "embedding_dim": 2, "dtype": "float12"}}}},
        {"name": "duplicate_flat_entry", "error_contains": "duplicate entry name 'a.weight'",
         "spec": {"name": "Net", "entries": [
             {"name": "a.weight", "shape": [2], "dtype": "float32", "kind": "parameter"},
             {"name": "a.bias", "shape": [2], "dtype": "float32", "kind": "parameter"},
             {"name": "a.weight", "shape": [2], "dtype": "float32", "kind": "parameter"}]}},
    ]


# --------------------------------------------------------------------------------------------


def save_zip(obj, path, **kw):
    torch.save(obj, path, **kw)


def write_manifest_tsv(manifest, path):
    """The manifest's tensors as tab-separated lines, for the C tests (no JSON parser in C)."""
    cols = ["file", "name", "dtype", "shape", "stride", "storage_offset", "numel",
            "is_parameter", "requires_grad", "storage_group", "sha256"]
    with open(path, "w") as f:
        f.write("# " + "\t".join(cols) + "  (generated from manifest.json by make_fixtures.py)\n")
        for fname, entry in manifest.items():
            for t in entry["tensors"]:
                row = [fname, t["name"], t["dtype"], ",".join(map(str, t["shape"])),
                       ",".join(map(str, t["stride"])), str(t["storage_offset"]), str(t["numel"]),
                       str(int(t["is_parameter"])), str(int(t["requires_grad"])),
                       str(t["storage_group"]), t["sha256"]]
                f.write("\t".join(row) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=DEFAULT_OUT)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    def p(name):
        return os.path.join(out, name)

    manifest = collections.OrderedDict()

    def record(fname, fmt, loaded, values=None):
        entry = {"format": fmt, "tensors": describe_tensors(loaded)}
        if values is not None:
            entry["values"] = values
        manifest[fname] = entry

    def load(fname):
        return torch.load(p(fname), weights_only=False)

    save_zip(dtypes_ckpt(), p("dtypes.pt"))
    record("dtypes.pt", "zip", load("dtypes.pt"))

    save_zip(forms_ckpt(), p("forms.pt"))
    record("forms.pt", "zip", load("forms.pt"))

    save_zip(nested_ckpt(), p("nested.pt"))
    nested = load("nested.pt")
    leaves = dict(walk(nested))
    record("nested.pt", "zip", nested,
           values=[describe_value(n, leaves[n]) for n in NESTED_VALUE_LEAVES])

    save_zip(small_sd(4), p("proto4.pt"), pickle_protocol=4)
    record("proto4.pt", "zip", load("proto4.pt"))

    from torch.utils.serialization import config as ser_config
    old = ser_config.save.storage_alignment
    ser_config.save.storage_alignment = 4096
    try:
        save_zip(small_sd(7), p("align4096.pt"))
    finally:
        ser_config.save.storage_alignment = old
    record("align4096.pt", "zip", load("align4096.pt"))

    torch.save(legacy_ckpt(), p("legacy.pt"), _use_new_zipfile_serialization=False)
    record("legacy.pt", "legacy", load("legacy.pt"))

    torch.jit.save(script_module(), p("script.pt"))
    record("script.pt", "torchscript", torch.jit.load(p("script.pt")).state_dict())

    torch.save(small_sd(12), p("legacy_proto4.pt"), _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    record("legacy_proto4.pt", "legacy", load("legacy_proto4.pt"))

    save_legacy_odd(p("legacy_odd.pt"))
    record("legacy_odd.pt", "legacy", load("legacy_odd.pt"))

    torch.manual_seed(13)
    torch.jit.save(torch.jit.script(ScriptTop()), p("script_nested.pt"))
    record("script_nested.pt", "torchscript", torch.jit.load(p("script_nested.pt")).state_dict())

    torch.jit.save(torch.jit.script(ScriptAttr()), p("script_attr.pt"))
    record("script_attr.pt", "torchscript", torch.jit.load(p("script_attr.pt")).state_dict())

    torch.jit.save(torch.jit.trace(Traced(), torch.ones(2)), p("script_traced.pt"))
    record("script_traced.pt", "torchscript", torch.jit.load(p("script_traced.pt")).state_dict())

    save_big_endian(bigendian_ckpt(), p("bigendian.pt"))
    be = load("bigendian.pt")
    want = bigendian_ckpt()
    assert all(torch.equal(be[k], want[k]) and be[k].stride() == want[k].stride() for k in want)
    record("bigendian.pt", "zip", be)

    torch.serialization.register_package(1, _location_tagger, _location_deserializer)
    save_zip(location_ckpt(), p("location.pt"))
    LOCATION_TAGS.clear()
    record("location.pt", "zip", torch.load(p("location.pt"), map_location="cpu"))
    manifest["location.pt"]["locations"] = {"on_cpu": "cpu", "on_cuda": "cuda:0", "on_mps": "mps"}

    save_zip(exotic_ckpt(), p("exotic.pt"))
    ex_tensors, ex_unsupported = describe_exotic(load("exotic.pt"))
    exotic_manifest = {"exotic.pt": {"format": "zip", "tensors": ex_tensors,
                                     "unsupported": ex_unsupported}}

    save_shards(p("shards"))
    record("shards/pytorch_model.bin.index.json", "sharded",
           load_sharded(p("shards/pytorch_model.bin.index.json")))

    save_zip(recipe_ckpt(), p("recipe.pt"))
    record("recipe.pt", "zip", load("recipe.pt"))
    with open(p("recipe.spec.json"), "w") as f:
        json.dump(RECIPE_SPEC, f, indent=2)
        f.write("\n")

    save_zip(transposed_ckpt(), p("transposed.pt"))
    record("transposed.pt", "zip", load("transposed.pt"))

    with open(p("manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")

    write_manifest_tsv(manifest, p("manifest.tsv"))

    # exotic.pt has rows torch.load gives but mmckpt cannot represent: its own file, so the
    # generic manifest checks (C and Rust) need no exceptions.
    with open(p("exotic.json"), "w") as f:
        json.dump(exotic_manifest, f, indent=1)
        f.write("\n")

    specs = spec_cases() + invalid_spec_cases()
    for case in specs:
        # The spec as text, in document order (JSON readers that sort object keys would lose
        # the order that decides torch's registration order).
        case["spec_text"] = json.dumps(case["spec"])
    with open(p("specs.json"), "w") as f:
        json.dump(specs, f, indent=1)
        f.write("\n")

    print(f"wrote fixtures to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
