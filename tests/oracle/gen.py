"""Random checkpoints for the oracle suite: tensors of every dtype torch.save writes, in random
shapes and views (offsets, slices with steps, transposes, as_strided, stride-0 expand),
sharing storages, nested in dicts / lists / tuples / objects, next to random non-tensor values.

Everything is derived from one `random.Random`, so a case is reproduced by its seed alone.
"""
import argparse
import collections
import math
import types

import torch
import torch.nn as nn

# Every dtype torch 2.15 can save (sub-byte int1..7 / uint1..7 cannot be saved).
DTYPE_NAMES = [
    "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16", "int32", "int64",
    "bool", "complex64", "complex128", "uint16", "uint32", "uint64", "complex32",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
]
DTYPES = [getattr(torch, n) for n in DTYPE_NAMES if hasattr(torch, n)]
PARAM_DTYPES = {torch.float32, torch.float64, torch.float16, torch.bfloat16}
# The legacy format writes the newer dtypes with untyped storages, which torch 2.15 itself
# cannot load back ("UntypedStorage has no attribute 'dtype'"): legacy cases use the dtypes
# that have typed storage classes.
LEGACY_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
                 torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool,
                 torch.complex64, torch.complex128]


def base_tensor(rng, dtype, numel):
    """A 1-D tensor of `numel` random elements (random bytes reinterpreted; bool is 0/1)."""
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    if dtype == torch.bool:
        return torch.rand(numel, generator=gen) > 0.5
    raw = torch.randint(0, 256, (numel * dtype.itemsize,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype)


def rand_shape(rng, large):
    if large:
        return [rng.randint(200, 700), rng.randint(200, 700)]
    ndim = rng.choice([0, 1, 1, 2, 2, 3, 4])
    return [rng.choice([0, 1, 2, 3, 4, 5, 7]) if rng.random() < 0.08 else rng.randint(1, 6)
            for _ in range(ndim)]


def numel_of(shape):
    return math.prod(shape)


def rand_view(rng, base, shape):
    """A view of `base` (1-D) with the given logical shape, by one of several view ops."""
    n = numel_of(shape)
    kind = rng.choice(["contiguous", "contiguous", "transpose", "step", "narrow",
                       "as_strided", "as_strided", "expand"])
    room = base.numel()
    if kind == "transpose" and len(shape) >= 2 and n > 0:
        d0, d1 = rng.sample(range(len(shape)), 2)
        swapped = list(shape)
        swapped[d0], swapped[d1] = swapped[d1], swapped[d0]
        off = rng.randint(0, room - n)
        return base[off:off + n].view(swapped).transpose(d0, d1)
    if kind == "step" and len(shape) >= 1 and n > 0:
        step = rng.randint(2, 3)
        bigger = list(shape)
        bigger[-1] = shape[-1] * step
        need = numel_of(bigger)
        if need <= room:
            off = rng.randint(0, room - need)
            return base[off:off + need].view(bigger)[..., ::step]
    if kind == "narrow" and len(shape) >= 1 and n > 0:
        d = rng.randrange(len(shape))
        extra = rng.randint(1, 3)
        bigger = list(shape)
        bigger[d] += extra
        need = numel_of(bigger)
        if need <= room:
            off = rng.randint(0, room - need)
            return base[off:off + need].view(bigger).narrow(d, rng.randint(0, extra), shape[d])
    if kind == "as_strided":
        strides = [rng.choice([0, 1, 2, 3, 5, 7]) for _ in shape]
        span = 1 + sum((s - 1) * st for s, st in zip(shape, strides)) if n > 0 else 0
        if span <= room:
            off = rng.randint(0, room - span) if n > 0 else rng.randint(0, room)
            return base.as_strided(shape, strides, base.storage_offset() + off)
    if kind == "expand" and len(shape) >= 1 and n > 0:
        d = rng.randrange(len(shape))
        small = list(shape)
        small[d] = 1
        m = numel_of(small)
        off = rng.randint(0, room - m)
        return base[off:off + m].view(small).expand(shape)
    off = rng.randint(0, room - n)
    return base[off:off + n].view(shape)


class TensorMaker:
    """Makes tensors; some share a storage with earlier ones, some are the same object."""

    def __init__(self, rng, large_ok, dtypes=DTYPES):
        self.rng = rng
        self.dtypes = dtypes
        self.bases = []  # (dtype, 1-D base)
        self.made = []
        self.large_ok = large_ok

    def __call__(self):
        rng = self.rng
        if self.made and rng.random() < 0.08:
            return rng.choice(self.made)  # the same tensor under a second name (tied weights)
        large = self.large_ok and rng.random() < 0.02
        shape = rand_shape(rng, large)
        n = numel_of(shape)
        reuse = [b for (d, b) in self.bases if b.numel() >= 4 * max(n, 1) + 8]
        if reuse and rng.random() < 0.3:
            base = rng.choice(reuse)  # another view of an existing storage
        else:
            dtype = rng.choice(self.dtypes)
            base = base_tensor(rng, dtype, 4 * max(n, 1) + rng.randint(0, 9) + 8)
            self.bases.append((dtype, base))
        t = rand_view(rng, base, shape)
        if t.dtype in PARAM_DTYPES and rng.random() < 0.2:
            t = nn.Parameter(t, requires_grad=rng.random() < 0.5)
        self.made.append(t)
        return t


BIG_INTS = [2**63, -2**63 - 1, 2**64, 2**70, -2**70, 2**200 + 12345, -(10**100), 3**500]
EDGE_INTS = [0, 1, -1, 2**63 - 1, -2**63, 2**31, -2**31 - 1, 255]
EDGE_FLOATS = [0.0, -0.0, 1.5, -2.25, 1e-308, 5e-324, 1.7976931348623157e308, 0.1,
               float("inf"), float("-inf"), float("nan")]
STRINGS = ["", "a", "run-1", "héllo", "日本語", "emoji 🎉", "with.dot", "tab\tnew\nline",
           "quote\"'", "nul\x00inside", "x" * 300]


def rand_leaf(rng):
    r = rng.random()
    if r < 0.10:
        return None
    if r < 0.20:
        return rng.random() < 0.5
    if r < 0.30:
        return rng.choice(EDGE_INTS)
    if r < 0.40:
        return rng.randint(-10**6, 10**6)
    if r < 0.47:
        return rng.choice(BIG_INTS) * rng.choice([1, -1])
    if r < 0.55:
        return rng.choice(EDGE_FLOATS)
    if r < 0.65:
        return rng.uniform(-1e6, 1e6)
    if r < 0.78:
        return rng.choice(STRINGS)
    if r < 0.86:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 20)))
    if r < 0.90:
        return bytearray(rng.getrandbits(8) for _ in range(rng.randint(0, 5)))
    return complex(rng.uniform(-10, 10), rng.choice([0.0, -1.5, 3.0]))


def rand_key(rng, i):
    r = rng.random()
    if r < 0.15:
        return i  # int keys are named in decimal, like optimizer.state
    if r < 0.25:
        return f"k{i}.sub"  # dotted keys, like state dict keys
    return rng.choice(["w", "b", "cfg", "lr", "epoch", "name", "x", "y"]) + f"_{i}"


def rand_obj(rng, make_tensor, depth, shared):
    """A random nested object whose leaves are tensors and plain values."""
    r = rng.random()
    if depth >= 4 or r < 0.35:
        return make_tensor() if rng.random() < 0.55 else rand_leaf(rng)
    if shared and r < 0.40:
        return rng.choice(shared)  # a sub-object saved twice (one memo entry)
    n = rng.randint(0, 5)
    kind = rng.choice(["dict", "odict", "list", "tuple", "namespace", "simplens"])
    children = [rand_obj(rng, make_tensor, depth + 1, shared) for _ in range(n)]
    if kind in ("dict", "odict"):
        d = dict if kind == "dict" else collections.OrderedDict
        obj = d((rand_key(rng, i), c) for i, c in enumerate(children))
    elif kind == "list":
        obj = list(children)
    elif kind == "tuple":
        obj = tuple(children)
    else:
        cls = argparse.Namespace if kind == "namespace" else types.SimpleNamespace
        obj = cls(**{f"a{i}": c for i, c in enumerate(children)})
    if isinstance(obj, (dict, list)) and children:
        shared.append(obj)
    return obj


def make_case(rng, large_ok=True):
    """The object to save and how to save it."""
    fmt = "legacy" if rng.random() < 0.25 else "zip"
    make_tensor = TensorMaker(rng, large_ok, LEGACY_DTYPES if fmt == "legacy" else DTYPES)
    shared = []
    top = collections.OrderedDict()
    for i in range(rng.randint(1, 8)):
        top[rand_key(rng, i)] = rand_obj(rng, make_tensor, 1, shared)
    return {
        "obj": top,
        "format": fmt,
        "protocol": rng.choice([2, 2, 3, 4, 5]),
        "alignment": rng.choice([64, 64, 4096]) if fmt == "zip" else None,
    }
