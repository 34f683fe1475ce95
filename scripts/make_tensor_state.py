#!/usr/bin/env python3
"""Writes tests/data/tensor_state/: checkpoints whose tensors depend on torch rules a reader
can miss (issue 11, class A items 1, 4 and 6), and expected.json with what torch 2.15 makes of
each, recorded by loading every file with `torch.load(weights_only=True)`; and
allowed_globals.txt, the globals torch's weights_only unpickler allows by default.

- state attached to a tensor: BUILD on a rebuilt tensor (`set_` with a storage view, a storage,
  a tensor), on a Parameter (`Tensor.__setstate__`'s 3-, 4- and 5-tuples),
  `_rebuild_parameter_with_state` and `_rebuild_from_type_v2` with a state holding `data`,
  `requires_grad` or other attributes;
- `conj` / `neg` metadata with odd values (the bit is set when the key is present);
- big-endian archives: swaps by the storage class's unit (an UntypedStorage is not swapped);
  the byteorder record compared exactly.

torch.save cannot write these, so the pickle is written by Python's pickler with torch's own
rebuild functions and storage classes (a reducer override emits BUILD), and the archive by
torch's zip writer. For each file expected.json holds torch's answer ("tensors": the flat
dict's entries, or "refused": torch's error) and "mmckpt": "match" (mmckpt must report exactly
torch's tensors) or the status mmckpt refuses with (a file torch refuses too, or a state
mmckpt does not model). Run with the test venv's python: python scripts/make_tensor_state.py
"""
import collections
import hashlib
import io
import json
import os
import pickle
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tensor_state")
utils = torch._utils


class S:
    """A storage reference: the persistent id ('storage', cls, key, 'cpu', numel)."""

    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class R:
    """func(*args), then BUILD with state when there is one."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, tuple(args), state


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, S):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, R):
            return (obj.func, obj.args) if obj.state is None else (obj.func, obj.args, obj.state)
        return NotImplemented


def hooks():
    return collections.OrderedDict()


def v2(st, offset, size, stride, rg=False, meta=None):
    extra = () if meta is None else (meta,)
    return R(utils._rebuild_tensor_v2, (st, offset, size, stride, rg, hooks()) + extra)


def v3(st, offset, size, stride, dtype, rg=False):
    return R(utils._rebuild_tensor_v3, (st, offset, size, stride, rg, hooks(), dtype))


def param(t, rg=False):
    return R(utils._rebuild_parameter, (t, rg, hooks()))


def build(obj, state):
    obj.state = state
    return obj


class Case:
    """One archive: its storages (key -> (class, bytes)), its top dict, its byteorder."""

    def __init__(self, name):
        self.name = name
        self.storages = {}
        self.byteorder = b"little"

    def storage(self, cls, numel):
        key = str(len(self.storages))
        elem = 1 if cls is torch.UntypedStorage else cls.dtype.itemsize
        data = bytes((len(self.storages) * 37 + i * 11 + 5) % 251 for i in range(numel * elem))
        self.storages[key] = data
        return S(key, cls, numel)

    def float_tensor(self, numel=8, cls=torch.FloatStorage, **kw):
        return v2(self.storage(cls, numel), 0, (numel,), (1,), **kw)

    def write(self, top):
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(top)
        path = os.path.join(OUT, self.name + ".pt")
        writer = torch._C.PyTorchFileWriter(path)
        writer.write_record("data.pkl", buf.getvalue(), len(buf.getvalue()))
        writer.write_record("byteorder", self.byteorder, len(self.byteorder))
        for key, data in self.storages.items():
            writer.write_record(f"data/{key}", data, len(data))
        writer.write_end_of_file()
        return path


def raw_bytes(t):
    """Row-major bytes of t's stored elements (the conj / neg bits not applied)."""
    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), t.storage_offset(),
                                                t.size(), t.stride())
    same = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
    u = t.view(same) if same is not None else t
    c = u.clone(memory_format=torch.contiguous_format).reshape(-1)
    return (c.view(torch.uint8) if c.dtype != torch.uint8 else c).numpy().tobytes()


def torch_answer(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 (a refusal is torch's answer)
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            return {"refused": f"{type(e).__name__}: {lines[0][:200] if lines else ''}"}
    return {"tensors": [
        {"name": name, "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
         "stride": list(t.stride()), "storage_offset": t.storage_offset(),
         "requires_grad": t.requires_grad, "parameter": isinstance(t, torch.nn.Parameter),
         "conj": t.is_conj(), "neg": t.is_neg(),
         "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()}
        for name, t in loaded.items()]}


CASES = []


def case(mmckpt="match", byteorder=b"little"):
    """Registers a builder; `mmckpt` is what mmckpt must answer ("match" or a status)."""
    def register(fn):
        CASES.append((fn.__name__, fn, mmckpt, byteorder))
        return fn
    return register


F, D = torch.FloatStorage, torch.DoubleStorage

# ---- A.1: state attached to a tensor ---------------------------------------------------------


@case()
def build_set_view(c):
    return {"w": build(c.float_tensor(), (c.storage(F, 8), 2, (2, 3), (3, 1)))}


@case()
def build_set_view_no_stride(c):
    return {"w": build(c.float_tensor(), (c.storage(F, 8), 1, (2, 3)))}


@case()
def build_set_storage(c):
    return {"w": build(c.float_tensor(), (c.storage(F, 5),))}


@case()
def build_set_tensor(c):
    return {"w": build(c.float_tensor(), (v2(c.storage(F, 6), 1, (2, 2), (1, 2)),))}


@case()
def build_set_list_state(c):
    return {"w": build(c.float_tensor(), [c.storage(F, 8), 0, [4], [2]])}


@case()
def build_set_keeps_neg(c):
    return {"w": build(c.float_tensor(meta={"neg": True}), (c.storage(F, 4), 0, (4,), (1,)))}


@case()
def build_set_shares_storage(c):
    st = c.storage(F, 8)
    return {"a": v2(st, 0, (8,), (1,)), "w": build(c.float_tensor(), (st, 4, (2,), (1,)))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def build_set_other_dtype(c):
    return {"w": build(c.float_tensor(), (c.storage(D, 4), 0, (2,), (1,)))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def build_set_untyped_storage(c):
    return {"w": build(c.float_tensor(), (c.storage(torch.UntypedStorage, 16), 0, (2,), (1,)))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def build_set_tensor_other_dtype(c):
    return {"w": build(c.float_tensor(), (c.float_tensor(cls=D),))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def build_set_requires_grad(c):
    return {"w": build(c.float_tensor(rg=True), (c.storage(F, 8), 0, (2,), (1,)))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def build_set_out_of_bounds(c):
    return {"w": build(c.float_tensor(), (c.storage(F, 4), 1, (4,), (1,)))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def build_set_two_items(c):
    return {"w": build(c.float_tensor(), (c.storage(F, 4), 1))}


@case(mmckpt="MMCKPT_ERR_UNSUPPORTED")
def build_set_nothing(c):
    return {"w": build(c.float_tensor(), ())}


@case(mmckpt="MMCKPT_ERR_UNSUPPORTED")
def build_bare_tensor_state(c):
    return {"w": build(c.float_tensor(), c.float_tensor(1))}


@case(mmckpt="MMCKPT_ERR_UNSUPPORTED")
def build_set_tensor_with_state(c):
    inner = build(c.float_tensor(), (c.storage(F, 4), 0, (2,), (1,)))
    return {"w": build(c.float_tensor(), (inner,))}


@case()
def param_setstate_set(c):
    return {"w": build(param(c.float_tensor()), (c.storage(F, 8), 1, (2,), (1,)))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def param_setstate_set_requires_grad(c):
    return {"w": build(param(c.float_tensor(), True), (c.storage(F, 8), 1, (2,), (1,)))}


@case()
def param_setstate_requires_grad(c):
    return {"w": build(param(c.float_tensor()), (True, None, hooks()))}


@case()
def param_setstate_variable(c):
    return {"w": build(param(c.float_tensor(), True),
                       (c.float_tensor(3, cls=D), None, hooks(), False, None))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def param_setstate_requires_grad_int(c):
    return {"w": build(param(c.float_tensor()), (1, None, hooks()))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def param_setstate_two_items(c):
    return {"w": build(param(c.float_tensor()), (True, None))}


def with_state(c, state, rg=False):
    return R(utils._rebuild_parameter_with_state, (c.float_tensor(), rg, hooks(), state))


@case()
def param_with_state_data(c):
    return {"w": with_state(c, {"data": c.float_tensor(3, cls=D)})}


@case()
def param_with_state_requires_grad(c):
    return {"w": with_state(c, {"requires_grad": False}, rg=True)}


@case()
def param_with_state_later_data_wins(c):
    return {"w": with_state(c, {"data": c.float_tensor(2), "requires_grad": True,
                                "foo": 1, "data ": 2})}


@case()
def param_with_state_slots(c):
    return {"w": with_state(c, ({"requires_grad": True}, {"data": c.float_tensor(3, cls=D)}))}


@case()
def param_with_state_empty(c):
    return {"w": with_state(c, ({}, None))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def param_with_state_int_data_requires_grad(c):
    return {"w": with_state(c, {"data": c.float_tensor(2, cls=torch.LongStorage)}, rg=True)}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def param_with_state_three_parts(c):
    return {"w": with_state(c, (None, None, None))}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def param_with_state_int_key(c):
    return {"w": with_state(c, {1: 2})}


@case(mmckpt="MMCKPT_ERR_UNSUPPORTED")
def param_with_state_grad(c):
    return {"w": with_state(c, {"grad": None})}


def from_type(c, new_type, state, func=utils._rebuild_tensor_v2, args=None):
    args = args or (c.storage(F, 8), 0, (8,), (1,), False, hooks())
    return R(torch._tensor._rebuild_from_type_v2, (func, new_type, args, state))


@case()
def from_type_v2_data(c):
    return {"w": from_type(c, torch.Tensor, {"data": c.float_tensor(3)})}


@case()
def from_type_v2_param_data(c):
    return {"w": from_type(c, torch.nn.Parameter, {"data": c.float_tensor(3, cls=D)})}


@case()
def from_type_v2_slots_data(c):
    return {"w": from_type(c, torch.Tensor, (None, {"data": c.float_tensor(3)}))}


@case()
def from_type_v2_plain_attribute(c):
    return {"w": from_type(c, torch.Tensor, {"foo": 1})}


@case()
def from_type_v2_parameter_as_tensor(c):
    return {"w": from_type(c, torch.Tensor, None, utils._rebuild_parameter,
                           (c.float_tensor(), True, hooks()))}


@case()
def from_type_v2_then_set(c):
    return {"w": build(from_type(c, torch.Tensor, None), (c.storage(F, 8), 1, (2,), (1,)))}


@case(mmckpt="MMCKPT_ERR_UNSUPPORTED")
def from_type_v2_class(c):
    return {"w": from_type(c, torch.Tensor, {"__class__": torch.nn.Parameter})}


# ---- A.4: conj / neg metadata ----------------------------------------------------------------

for key, cls in [("conj", torch.ComplexFloatStorage), ("neg", F)]:
    for label, value in [("True", True), ("False", False), ("None", None), ("0", 0),
                         ("1_0", 1.0), ("0_0", 0.0), ("2", 2)]:
        def meta_case(c, key=key, cls=cls, value=value):
            return {"w": c.float_tensor(4, cls=cls, meta={key: value})}
        meta_case.__name__ = f"metadata_{key}_{label}"
        case()(meta_case)


@case()
def metadata_empty(c):
    return {"w": c.float_tensor(4, meta={})}


@case()
def metadata_falsy_list(c):
    return {"w": c.float_tensor(4, meta=[])}


@case()
def metadata_other_key(c):
    return {"w": c.float_tensor(4, meta={"foo": True})}


@case()
def metadata_neg_on_int(c):
    return {"w": c.float_tensor(4, cls=torch.LongStorage, meta={"neg": True})}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def metadata_conj_on_float(c):
    return {"w": c.float_tensor(4, meta={"conj": True})}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def metadata_str_value(c):
    return {"w": c.float_tensor(4, cls=torch.ComplexFloatStorage, meta={"conj": ""})}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def metadata_not_a_dict(c):
    return {"w": c.float_tensor(4, meta=[1])}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def requires_grad_int(c):
    return {"w": c.float_tensor(4, rg=1)}


@case(mmckpt="MMCKPT_ERR_FORMAT")
def requires_grad_on_int_dtype(c):
    return {"w": c.float_tensor(4, cls=torch.LongStorage, rg=True)}


# ---- A.6: big-endian archives ----------------------------------------------------------------

for cls in [F, D, torch.HalfStorage, torch.ComplexFloatStorage, torch.LongStorage]:
    def big_v2(c, cls=cls):
        return {"w": c.float_tensor(6, cls=cls)}
    big_v2.__name__ = f"big_v2_{cls.__name__}"
    case(byteorder=b"big")(big_v2)


@case(byteorder=b"big")
def big_v3_untyped_float32(c):
    return {"w": v3(c.storage(torch.UntypedStorage, 16), 1, (3,), (1,), torch.float32)}


@case(byteorder=b"big")
def big_v3_float_storage_float16(c):
    return {"w": v3(c.storage(F, 4), 1, (5,), (1,), torch.float16)}


@case(byteorder=b"big")
def big_v3_double_storage_float32(c):
    return {"w": v3(c.storage(D, 2), 0, (4,), (1,), torch.float32)}


@case(byteorder=b"big")
def big_v3_complex_storage_int16(c):
    return {"w": v3(c.storage(torch.ComplexDoubleStorage, 1), 0, (8,), (1,), torch.int16)}


for label, spelling in [("newline", b"big\n"), ("space", b" big"), ("little_space", b"little "),
                        ("upper", b"BIG"), ("nul", b"big\0"), ("empty", b"")]:
    def byteorder_case(c):
        return {"w": c.float_tensor(2)}
    byteorder_case.__name__ = f"byteorder_{label}"
    case(mmckpt="MMCKPT_ERR_FORMAT", byteorder=spelling)(byteorder_case)


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for name, fn, mmckpt, byteorder in CASES:
        c = Case(name)
        c.byteorder = byteorder
        path = c.write(fn(c))
        answer = torch_answer(path)
        if mmckpt == "match" and "refused" in answer:
            raise SystemExit(f"{name}: torch refuses it ({answer['refused']}) but the case "
                             "says mmckpt matches a reading")
        if mmckpt == "MMCKPT_ERR_FORMAT" and "refused" not in answer:
            raise SystemExit(f"{name}: torch reads it but the case says mmckpt refuses it as "
                             "malformed")
        expected[os.path.basename(path)] = {"torch": answer, "mmckpt": mmckpt}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    # The globals torch's weights_only unpickler allows by default: its own allowlist and what
    # torch registers with add_safe_globals on import (mmckpt's strict allowlist is exactly this).
    from torch import _weights_only_unpickler as wo
    allowed = sorted(set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals()))
    with open(os.path.join(OUT, "allowed_globals.txt"), "w") as f:
        f.write(f"# torch {torch.__version__}: _get_allowed_globals() and default safe globals\n")
        f.write("".join(g + "\n" for g in allowed))
    print(f"{len(expected)} files in {OUT}")


if __name__ == "__main__":
    main()
