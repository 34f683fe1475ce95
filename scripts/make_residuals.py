#!/usr/bin/env python3
"""Writes tests/data/residuals/: hand-assembled checkpoints for four places where a reader can
differ from torch.load(weights_only=True) (issue 11, residual holes), and expected.json with
torch 2.15's answer for each, recorded by loading every file:

- a container passed to a tensor rebuild (a size list, the metadata dict, a state dict, the
  arguments of `_rebuild_from_type_v2`, a BUILD state) and changed afterwards by APPEND(S) /
  SETITEM(S): torch reads it at the call;
- `collections.Counter` (and torch's Python 2 renames, `UserDict.Counter`,
  `UserDict.OrderedDict`): a dict torch allows;
- one zip storage key referenced through storage classes of different sizes;
- legacy (non-zip) files whose storage keys are ints beside strs.

The pickles are assembled opcode by opcode (only opcodes torch's weights_only unpickler runs),
zip archives are written by torch's own writer. For each file expected.json holds torch's answer
("tensors": every tensor reachable through dicts and lists, named as mmckpt names them, or
"refused": torch's error) and "mmckpt": "match" or the status mmckpt answers with (for tensor
"w" when the open itself succeeds; every other tensor must then match). Run with the test venv's
python: python scripts/make_residuals.py
"""
import collections
import hashlib
import json
import os
import struct
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tensor_state import raw_bytes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "residuals")

# ---- a tiny assembler ------------------------------------------------------------------------

MARK, TUPLE, REDUCE, BUILD, NEWOBJ = b"(", b"t", b"R", b"b", b"\x81"
APPEND, APPENDS, SETITEM, SETITEMS = b"a", b"e", b"s", b"u"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE = b"}", b"]", b")"
NONE, TRUE, FALSE, BINPERSID, STOP = b"N", b"\x88", b"\x89", b"Q", b"."


def g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def u(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(n):
    return b"J" + struct.pack("<i", n)


def put(k):
    return b"q" + bytes([k])


def get(k):
    return b"h" + bytes([k])


def tup(*items):
    return MARK + b"".join(items) + TUPLE


def lst(*items):
    return EMPTY_LIST + (MARK + b"".join(items) + APPENDS if items else b"")


def dct(*pairs):
    body = b"".join(k + v for k, v in pairs)
    return EMPTY_DICT + (MARK + body + SETITEMS if pairs else b"")


def pid(key, numel, cls="FloatStorage", int_key=False, view=None):
    key_op = i(int(key)) if int_key else u(key)
    extra = b"" if view is None else view
    return tup(u("storage"), g("torch", cls), key_op, u("cpu"), i(numel), extra) + BINPERSID


def hooks():
    return g("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE


def v2(storage, offset, size, stride, rg=FALSE, meta=None):
    return g("torch._utils", "_rebuild_tensor_v2") + tup(
        storage, i(offset), size, stride, rg, hooks(), meta or b"") + REDUCE


def ints(*values):
    return tup(*(i(v) for v in values))


def top(*pairs, before=b""):
    """The saved object: {name: value, ...}, then STOP; `before` runs first and leaves its
    values on the stack below it, where nothing reaches them."""
    return b"\x80\x02" + before + dct(*pairs) + STOP


# ---- torch's answer --------------------------------------------------------------------------

def leaves(obj):
    """(name, tensor) for every tensor reachable through dicts, lists and tuples, in order."""
    out, todo = [], [("", obj)]
    while todo:
        name, value = todo.pop()
        if isinstance(value, torch.Tensor):
            out.append((name, value))
            continue
        if isinstance(value, dict):
            children = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            children = [(str(n), v) for n, v in enumerate(value)]
        else:
            continue
        for key, child in reversed(children):
            todo.append((f"{name}.{key}" if name else key, child))
    return out


def describe(t):
    return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
            "stride": list(t.stride()), "storage_offset": t.storage_offset(),
            "requires_grad": t.requires_grad, "parameter": isinstance(t, torch.nn.Parameter),
            "conj": t.is_conj(), "neg": t.is_neg(),
            "sha256": hashlib.sha256(raw_bytes(t)).hexdigest()}


def torch_answer(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 (a refusal is torch's answer)
            text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
            # The weights_only unpickler's own reason, not its advice around it.
            text = text.split("WeightsUnpickler error:", 1)[-1].strip()
            return {"refused": f"{type(e).__name__}: {text[:200]}"}
    found = leaves(loaded)
    ptrs = {}
    tensors = []
    for name, t in found:
        row = {"name": name, **describe(t)}
        # Which tensors share one storage (torch's untyped storage), numbered in order.
        ptr = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        row["storage"] = ptrs.setdefault(ptr, len(ptrs))
        tensors.append(row)
    return {"tensors": tensors}


# ---- archives --------------------------------------------------------------------------------

def write_zip(name, pickle_bytes, storages, byteorder=b"little"):
    path = os.path.join(OUT, name + ".pt")
    writer = torch._C.PyTorchFileWriter(path)
    writer.write_record("data.pkl", pickle_bytes, len(pickle_bytes))
    writer.write_record("byteorder", byteorder, len(byteorder))
    for key, data in storages.items():
        writer.write_record(f"data/{key}", data, len(data))
    writer.write_end_of_file()
    return path


def write_legacy(name, object_pickle, keys_pickle, storages):
    """The legacy format: magic, protocol, sys info, object, key list, then each storage."""
    import pickle
    path = os.path.join(OUT, name + ".pt")
    with open(path, "wb") as f:
        for value in (0x1950A86A20F9469CFC6C, 1001,
                      {"protocol_version": 1001, "little_endian": True,
                       "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(value, f, protocol=2)
        f.write(object_pickle)
        f.write(keys_pickle)
        for count, data in storages:
            f.write(struct.pack("<q", count))
            f.write(data)
    return path


def data(n, seed=0):
    return bytes((seed * 37 + k * 11 + 5) % 251 for k in range(n))


CASES = []


def case(mmckpt="match"):
    def register(fn):
        CASES.append((fn.__name__, fn, mmckpt))
        return fn
    return register


UNSUPPORTED, FORMAT = "MMCKPT_ERR_UNSUPPORTED", "MMCKPT_ERR_FORMAT"

# ---- 1: a rebuild's argument changed after the call ------------------------------------------
# The list / dict is memoized where the call uses it, then fetched again (BINGET) after the call
# and changed; the changed container is kept under key "z" (weights_only has no POP).


@case(UNSUPPORTED)
def size_list_appended_after_call(name):
    size = lst(i(2)) + put(1)
    p = top((u("w"), v2(pid("0", 4), 0, size, ints(1))), (u("z"), get(1) + i(2) + APPEND))
    return write_zip(name, p, {"0": data(16)})


@case()
def size_list_filled_before_call(name):
    size = EMPTY_LIST + i(2) + APPEND
    p = top((u("w"), v2(pid("0", 4), 0, size, ints(1))))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def metadata_set_after_call(name):
    meta = EMPTY_DICT + put(1)
    p = top((u("w"), v2(pid("0", 4), 0, ints(4), ints(1), meta=meta)),
            (u("z"), get(1) + u("neg") + TRUE + SETITEM))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def metadata_shared_set_between_two_tensors(name):
    # "w" reads the empty dict; "b" reads it after SETITEM: only "b" is negated, in torch too.
    meta = EMPTY_DICT + put(1)
    p = top((u("w"), v2(pid("0", 4), 0, ints(4), ints(1), meta=meta)),
            (u("z"), get(1) + u("neg") + TRUE + SETITEM),
            (u("b"), v2(pid("1", 4), 0, ints(4), ints(1), meta=get(1))))
    return write_zip(name, p, {"0": data(16), "1": data(16, 1)})


@case(UNSUPPORTED)
def parameter_state_set_after_call(name):
    state = EMPTY_DICT + put(1)
    param = g("torch._utils", "_rebuild_parameter_with_state") + tup(
        v2(pid("0", 4), 0, ints(4), ints(1)), FALSE, hooks(), state) + REDUCE
    p = top((u("w"), param), (u("z"), get(1) + u("requires_grad") + TRUE + SETITEM))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def parameter_state_tuple_part_set_after_call(name):
    # The state is a (dict, slots) tuple: the dict inside it changes after the call.
    state = tup(EMPTY_DICT + put(1), NONE)
    param = g("torch._utils", "_rebuild_parameter_with_state") + tup(
        v2(pid("0", 4), 0, ints(4), ints(1)), FALSE, hooks(), state) + REDUCE
    p = top((u("w"), param), (u("z"), get(1) + u("requires_grad") + TRUE + SETITEM))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def from_type_args_list_appended_after_call(name):
    # func(*args) with args a list: a metadata dict appended after the call.
    args = lst(pid("0", 4), i(0), ints(4), ints(1), FALSE, hooks()) + put(1)
    t = g("torch._tensor", "_rebuild_from_type_v2") + tup(
        g("torch._utils", "_rebuild_tensor_v2"), g("torch", "Tensor"), args, dct()) + REDUCE
    p = top((u("w"), t), (u("z"), get(1) + dct((u("neg"), TRUE)) + APPEND))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def build_state_size_appended_after_build(name):
    # BUILD on a plain tensor is set_(*state); the state's size list grows after the BUILD.
    size = lst(i(2)) + put(1)
    t = v2(pid("0", 4), 0, ints(4), ints(1)) + tup(pid("0", 4), i(0), size, ints(1)) + BUILD
    p = top((u("w"), t), (u("z"), get(1) + i(2) + APPEND))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def torch_size_list_appended_after_size(name):
    # torch.Size(list) copies the list at its own call, before the rebuild call.
    size_list = lst(i(2)) + put(1)
    size = g("torch", "Size") + tup(size_list) + REDUCE + put(2)
    p = top((u("a"), size), (u("z"), get(1) + i(2) + APPEND),
            (u("w"), v2(pid("0", 4), 0, get(2), ints(1))))
    return write_zip(name, p, {"0": data(16)})


@case(FORMAT)
def setitem_on_a_tensor(name):
    t = v2(pid("0", 4), 0, ints(4), ints(1)) + i(0) + i(7) + SETITEM
    return write_zip(name, top((u("w"), t)), {"0": data(16)})


@case(FORMAT)
def append_on_a_tensor(name):
    t = v2(pid("0", 4), 0, ints(4), ints(1)) + i(7) + APPEND
    return write_zip(name, top((u("w"), t)), {"0": data(16)})


# ---- 2: collections.Counter and torch's Python 2 renames -------------------------------------

def counter(pairs):
    return g("collections", "Counter") + tup(dct(*pairs)) + REDUCE


@case()
def counter_of_tensors(name):
    p = top((u("c"), counter([(u("w"), v2(pid("0", 4), 0, ints(4), ints(1))),
                               (u("n"), i(3))])))
    return write_zip(name, p, {"0": data(16)})


@case()
def counter_newobj_setitems(name):
    c = g("collections", "Counter") + EMPTY_TUPLE + NEWOBJ + MARK + u("w") + v2(
        pid("0", 4), 0, ints(4), ints(1)) + SETITEMS
    return write_zip(name, top((u("c"), c)), {"0": data(16)})


@case()
def counter_copies_its_dict_at_the_call(name):
    # Counter(d) copies d; d gains a tensor afterwards, which only d holds.
    d = dct((u("w"), v2(pid("0", 4), 0, ints(4), ints(1)))) + put(1)
    c = g("collections", "Counter") + tup(d) + REDUCE
    p = top((u("c"), c), (u("d"), get(1) + u("x") + v2(pid("1", 4), 0, ints(4), ints(1))
                          + SETITEM))
    return write_zip(name, p, {"0": data(16), "1": data(16, 1)})


@case()
def userdict_counter_is_collections_counter(name):
    c = g("UserDict", "Counter") + tup(dct((u("w"), v2(pid("0", 4), 0, ints(4), ints(1))))) \
        + REDUCE
    return write_zip(name, top((u("c"), c)), {"0": data(16)})


@case()
def userdict_ordereddict_is_collections_ordereddict(name):
    od = g("UserDict", "OrderedDict") + EMPTY_TUPLE + REDUCE + MARK + u("w") + v2(
        pid("0", 4), 0, ints(4), ints(1)) + SETITEMS
    return write_zip(name, top((u("o"), od)), {"0": data(16)})


# ---- 3: one zip storage key behind storage classes of different sizes ------------------------
# torch's persistent_load loads a key's record at its first reference (whose length must be the
# record's: get_storage_from_record checks it); a later reference of the same dtype shares that
# storage whatever it declares, one of another dtype shares it when the byte lengths agree and
# is loaded again (and fails the same check) when they do not.


def w_and_b(ref_w, ref_b, shape_w=(4,), shape_b=(2,)):
    return ((u("w"), v2(ref_w, 0, ints(*shape_w), ints(1))),
            (u("b"), v2(ref_b, 0, ints(*shape_b), ints(1))))


@case()
def zip_float_and_double_same_bytes(name):
    p = top(*w_and_b(pid("0", 4), pid("0", 2, "DoubleStorage")))
    return write_zip(name, p, {"0": data(16)})


@case(FORMAT)
def zip_float_and_double_different_bytes(name):
    p = top(*w_and_b(pid("0", 4), pid("0", 4, "DoubleStorage"), shape_b=(4,)))
    return write_zip(name, p, {"0": data(32)})


@case(UNSUPPORTED)
def zip_same_class_different_numel(name):
    p = top(*w_and_b(pid("0", 2), pid("0", 4), shape_w=(2,), shape_b=(4,)))
    return write_zip(name, p, {"0": data(16)})


@case()
def zip_empty_storage_two_dtypes(name):
    p = top(*w_and_b(pid("0", 0), pid("0", 0, "IntStorage"), shape_w=(0,), shape_b=(0,)))
    return write_zip(name, p, {"0": b""})


@case()
def zip_empty_storage_two_dtypes_big_endian(name):
    p = top(*w_and_b(pid("0", 0), pid("0", 0, "DoubleStorage"), shape_w=(0,), shape_b=(0,)))
    return write_zip(name, p, {"0": b""}, byteorder=b"big")


@case(FORMAT)
def zip_unreachable_reference_without_record(name):
    p = top((u("w"), v2(pid("0", 4), 0, ints(4), ints(1))), before=pid("9", 4))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def zip_unreachable_reference_first_with_other_length(name):
    p = top((u("w"), v2(pid("0", 4), 0, ints(4), ints(1))), before=pid("0", 1))
    return write_zip(name, p, {"0": data(16)})


@case(UNSUPPORTED)
def zip_same_class_shorter_later(name):
    # torch reads it: "w" loads the 16-byte record, "b" (same dtype) shares it.
    p = top(*w_and_b(pid("0", 4), pid("0", 2), shape_b=(2,)))
    return write_zip(name, p, {"0": data(16)})


@case(FORMAT)
def zip_other_dtype_and_length_later(name):
    # The Double reference (32 bytes) is loaded again from the 16-byte record: torch fails.
    p = top(*w_and_b(pid("0", 4), pid("0", 4, "DoubleStorage"), shape_b=(2,)))
    return write_zip(name, p, {"0": data(16)})


@case(FORMAT)
def zip_unreachable_reference_first_other_dtype_and_length(name):
    p = top((u("w"), v2(pid("0", 4), 0, ints(4), ints(1))),
            (u("z"), lst(i(1))), before=pid("0", 4, "DoubleStorage"))
    return write_zip(name, p, {"0": data(16)})


# ---- 4: legacy int and str storage keys --------------------------------------------------------
# torch's `_legacy_load` keeps storages in a dict keyed by the pickled key: 1 and '1' differ.

def legacy_case(name, pids, key_list):
    """`pids`: (name, key, int_key) tensors of 4 floats; `key_list`: the key list's items."""
    import pickle
    pairs = [(u(n), v2(pid(k, 4, int_key=ik, view=NONE), 0, ints(4), ints(1)))
             for n, k, ik in pids]
    keys = pickle.dumps(key_list, protocol=2)
    return write_legacy(name, top(*pairs), keys,
                        [(4, data(16, n)) for n, _ in enumerate(key_list)])


@case()
def legacy_int_keys_throughout(name):
    return legacy_case(name, [("w", "1", True)], [1])


@case(FORMAT)
def legacy_int_key_listed_as_str(name):
    return legacy_case(name, [("w", "1", True)], ["1"])


@case(UNSUPPORTED)
def legacy_int_and_str_key_are_two_storages(name):
    return legacy_case(name, [("w", "1", True), ("b", "1", False)], [1, "1"])


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith(".pt"):
            os.remove(os.path.join(OUT, old))
    expected = {}
    for name, fn, mmckpt in CASES:
        path = fn(name)
        answer = torch_answer(path)
        if mmckpt == "match" and "refused" in answer:
            raise SystemExit(f"{name}: torch refuses it ({answer['refused']})")
        if mmckpt == FORMAT and "refused" not in answer:
            raise SystemExit(f"{name}: torch reads it but the case says FORMAT")
        expected[os.path.basename(path)] = {"torch": answer, "mmckpt": mmckpt}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(expected)} files in {OUT}")


if __name__ == "__main__":
    main()
