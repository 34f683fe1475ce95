"""What `torch.load` returned against what `mmckpt ls --json --hash` reported: the comparison
shared by the oracle (`test_oracle.py`) and the adversarial suite (`test_adversarial.py`)."""
import hashlib
import math

import torch
import torch.nn as nn


def stored_view(t):
    """t without its lazy conj / neg bits: the same storage, offset, sizes and strides, so its
    elements are the stored bytes (mmckpt reports the bits and hashes the stored bytes)."""
    if not (t.is_conj() or t.is_neg()):
        return t
    plain = torch.empty(0, dtype=t.dtype)
    return plain.set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())


def raw_bytes(t):
    """Row-major bytes of t's stored elements for every dtype (a same-size integer view first,
    so that contiguous() needs no kernel for exotic dtypes)."""
    t = stored_view(t.detach())
    same = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
    u = t.view(same) if same is not None else t
    # clone, not contiguous(): a size-1 dimension may keep any stride in a "contiguous" tensor,
    # which view(uint8) then rejects.
    c = u.clone(memory_format=torch.contiguous_format).reshape(-1)
    if c.dtype != torch.uint8:
        c = c.view(torch.uint8)
    return c.numpy().tobytes()


LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None))


def key_name(k):
    """A dict key as a name segment: strings as they are, ints in decimal (any size), floats as
    Python's repr (`1e+16`, `nan`), True / False / None, tuples as `(a, b)` of their items."""
    if isinstance(k, str):
        return k
    if isinstance(k, tuple):
        return "(" + ", ".join(key_name(x) for x in k) + ")"
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).decode("utf-8", "replace")
    return repr(k)


def walk(obj, prefix=""):
    """(name, leaf) depth first in the object's own order, named as mmckpt names them."""
    def join(k):
        return f"{prefix}.{k}" if prefix else str(k)

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, join(key_name(k)))
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


def check_tensor_list(want, got, detached=False, refusals=()):
    """want: [(name, torch tensor)] in order; got: mmckpt's `tensors` rows. `detached`: the
    tensors come from `state_dict()` of a TorchScript module, which detaches them, so their
    Parameter class and requires_grad say nothing about the file (mmckpt reports the file's).
    `refusals`: message parts of MMCKPT_ERR_UNSUPPORTED rows that are a refusal of that
    tensor, mmckpt's other allowed answer (its name and order still checked)."""
    assert [t["name"] for t in got] == [n for n, _ in want], \
        f"tensor names / order differ: mmckpt {[t['name'] for t in got]}, " \
        f"torch {[n for n, _ in want]}"
    torch_groups, our_groups = {}, {}
    for (name, t), g in zip(want, got):
        error = g.get("error")
        if error and error.get("status") == "MMCKPT_ERR_UNSUPPORTED" and any(
                part in error.get("message", "") for part in refusals):
            continue
        assert "error" not in g, f"{name}: mmckpt could not represent it: {g.get('error')}"
        where = f"tensor '{name}'"
        for field, want_value in (
                ("dtype", str(t.dtype).replace("torch.", "")), ("shape", list(t.shape)),
                ("stride", list(t.stride())), ("storage_offset", t.storage_offset()),
                ("numel", t.numel()), ("parameter", isinstance(t, nn.Parameter)),
                ("requires_grad", t.requires_grad), ("conj", t.is_conj()),
                ("neg", t.is_neg())):
            if detached and field in ("parameter", "requires_grad"):
                continue
            got_value = g.get(field, False) if field in ("conj", "neg") else g[field]
            assert got_value == want_value, \
                f"{where}: {field} {got_value!r} in mmckpt, {want_value!r} in torch"
        assert g["sha256"] == hashlib.sha256(raw_bytes(t)).hexdigest(), f"{where}: bytes differ"
        # Storage sharing: the same partition of tensors into storages on both sides.
        a = torch_groups.setdefault(storage_key(t), len(torch_groups))
        b = our_groups.setdefault(g["storage_id"], len(our_groups))
        assert a == b, f"{where}: storage sharing differs from torch"
    return len(want)


def check_tensors(loaded, doc, refusals=()):
    return check_tensor_list([(n, v) for n, v in walk(loaded) if isinstance(v, torch.Tensor)],
                             doc["tensors"], refusals=refusals)


def check_values(loaded, doc):
    want = [(n, v) for n, v in walk(loaded) if not isinstance(v, torch.Tensor)]
    got = doc["values"]
    assert "values_truncated" not in doc
    assert [v["name"] for v in got] == [n for n, _ in want], \
        f"value names / order differ: mmckpt {[v['name'] for v in got]}, " \
        f"torch {[n for n, _ in want]}"
    for (name, v), g in zip(want, got):
        kind, value = expected_value(v)
        assert g["kind"] == kind, f"value '{name}': kind {g['kind']}, torch has {kind}"
        assert same_json_value(kind, g["value"], value), \
            f"value '{name}': mmckpt {g['value']!r}, torch {value!r}"
    return len(want)
