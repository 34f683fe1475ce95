#!/usr/bin/env python3
"""Generates cases.rs: real pickles (protocols 0-5, CPython 3.11) and the value tree each one
must load into, in the rendering of `render` in ../tests.rs. Development tool only; the tests
do not need Python. Run: python3 gen_cases.py > cases.rs"""
import argparse
import collections
import pickle
import struct
import sys
import types

# A fake `torch` so that a state-dict-shaped pickle can be written without torch installed.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils
torch._utils = torch_utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
FloatStorage.__qualname__ = "FloatStorage"
torch.FloatStorage = FloatStorage


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel

    def pid(self):
        return ("storage", FloatStorage, self.key, "cpu", self.numel)


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid() if isinstance(obj, Storage) else None


def enc_long(n):
    return pickle.encode_long(n).hex()


def render(o, path=()):
    if any(o is p for p in path):
        return "..."
    path = path + (o,)
    r = lambda x: render(x, path)
    if o is None:
        return "None"
    if o is True or o is False:
        return repr(o)
    if isinstance(o, int):
        return str(o) if -(2**63) <= o < 2**63 else "big:" + enc_long(o)
    if isinstance(o, float):
        return "f:" + struct.pack(">d", o).hex()
    if isinstance(o, complex):
        return "c(" + r(o.real) + ", " + r(o.imag) + ")"
    if isinstance(o, str):
        return "s:" + o.encode("utf-8").hex()
    if isinstance(o, bytes):
        return "b:" + o.hex()
    if isinstance(o, bytearray):
        return "ba:" + bytes(o).hex()
    if isinstance(o, list):
        return "[" + ", ".join(map(r, o)) + "]"
    if isinstance(o, tuple):
        return "(" + ", ".join(map(r, o)) + ")"
    if isinstance(o, dict):
        s = "{" + ", ".join(r(k) + ": " + r(v) for k, v in o.items()) + "}"
        if isinstance(o, collections.OrderedDict) and vars(o):
            s += "@" + r(vars(o))
        return s
    if isinstance(o, frozenset):
        return "fs{" + ", ".join(map(r, o)) + "}"
    if isinstance(o, set):
        return "set{" + ", ".join(map(r, o)) + "}"
    if isinstance(o, Storage):
        # Protocol 0 writes str(pid) as a PERSID text line.
        return "pid(" + r(str(o.pid()) if PROTO == 0 else o.pid()) + ")"
    if o is FloatStorage:
        return "g:torch.FloatStorage"
    if isinstance(o, Tensor):
        return "obj(g:torch._utils._rebuild_tensor_v2, " + r(o.args) + ", call)"
    if isinstance(o, argparse.Namespace):
        return "obj(g:argparse.Namespace, (), new, state=" + r(vars(o)) + ")"
    raise TypeError(type(o))


def cases():
    nested = {
        "a": [1, 2, (3, 4.5)],
        "b": {"c": None, "d": True, "e": False},
        "f": {1, 2, 3},
        "g": frozenset({"x"}),
        "h": b"\x00\xffab",
        "i": bytearray(b"\x01\x80"),
        "j": 2**70,
        "k": -(2**70),
        "l": 1.5e300,
        "m": 3 - 4j,
        "n": "h\u00e9llo \u2603 \U0001f600 \\u1234 \n",
        "o": -1,
        "p": 2**31,
        "q": -(2**63),
        "r": 2**63,
        "s": (),
        "t": [],
        "u": "",
        "v": float("-inf"),
        "w": b"",
        "x": bytearray(),
        "y": set(),
        "z": frozenset(),
    }
    yield "nested", nested
    od = collections.OrderedDict([("w", 1), ("b", [2, 3])])
    od._metadata = {"": {"version": 1}}
    yield "ordered_dict_with_attribute", od
    yield "namespace", argparse.Namespace(lr=0.1, name="x", layers=[1, 2])
    ints = [0, 1, -1, 127, 128, 255, 256, 65535, 65536, -128, -129, 2**31 - 1, -(2**31),
            2**32, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 2**70, -(2**70),
            10**40, -(10**40), 2**1000]
    yield "ints", ints
    yield "floats", [0.0, -0.0, 1e-300, 0.1, float("inf"), 1e22, 5e-324]
    yield "strings", ["a\\u1234 back\\slash", "quote'\"", "\x00\x7f\x80\xff", "\U0010ffff",
                      "\u0100\ud7ff", "line\nbreak\r", "\\", "\\\\u0041"]
    yield "dict_keys", {(1, 2): "a", 1: "b", None: "c", b"k": "d", "k": "e", 2**70: "f",
                        -5: "g", 1.5: "h"}
    big = b"\x07" * 300
    yield "long_bytes_and_str", [big, "z" * 300, bytearray(big)]
    storage = Storage("0", 6)
    sd = collections.OrderedDict()
    sd["layer.weight"] = Tensor(storage, 0, (2, 2), (2, 1))
    sd["layer.bias"] = Tensor(storage, 4, (2,), (1,))
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("layer", {"version": 1})])
    yield "state_dict", sd


def shared_and_recursive():
    a = []
    a.append(a)
    yield "recursive_list", a
    x = [1]
    yield "shared", [x, x, {"k": x}]
    d = {}
    d["self"] = d
    yield "recursive_dict", d


def lit(b):
    out = []
    for c in b:
        if 0x20 <= c < 0x7F and c not in (0x22, 0x5C):
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return 'b"' + "".join(out) + '"'


def dumps(obj, proto):
    import io

    f = io.BytesIO()
    TorchPickler(f, protocol=proto).dump(obj)
    return f.getvalue()


PROTO = None


def main():
    global PROTO
    print("// @generated by gen_cases.py (CPython %s); do not edit." % sys.version.split()[0])
    print("pub(super) struct Case {")
    print("    pub name: &'static str,")
    print("    pub proto: u8,")
    print("    pub data: &'static [u8],")
    print("    pub expected: &'static str,")
    print("}")
    print()
    print("pub(super) const CASES: &[Case] = &[")
    for gen in (cases, shared_and_recursive):
        for name, obj in gen():
            for proto in range(6):
                PROTO = proto
                data = dumps(obj, proto)
                print("    Case {")
                print("        name: %s," % '"%s"' % name)
                print("        proto: %d," % proto)
                print("        data: %s," % lit(data))
                print('        expected: "%s",' % render(obj))
                print("    },")
    print("];")


main()
