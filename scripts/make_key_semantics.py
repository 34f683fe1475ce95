#!/usr/bin/env python3
"""Checkpoints where Python's dict-key equality, legacy storage views or TorchScript attributes
decide what torch reads (issue 11, class A items 3, 5, 7). Writes tests/data/keys/*.pt and
expected.json; tests/key_semantics.rs compares mmckpt with what torch recorded here.

The pickles need keys Python would fold before they reach a file (`{1: a, 1.0: b}`), so they are
assembled opcode by opcode (protocol 2, only opcodes torch's weights-only unpickler accepts) and
written with torch's own zip writer. Every case is then loaded with real torch
(`torch.load(weights_only=True)`, or `torch.jit.load(f).state_dict()`), and expected.json records,
per file, either the entries torch reads — name (keys spelled as mmckpt names them: floats as
Python's repr, ints in decimal, tuples as `(a, b)`), and the tensor's values or the int — or the
names of `state_dict()` for TorchScript, or, for the legacy views torch aliases into each
other, the error mmckpt must give (with what torch read, for the record).

Run: ~/.cache/mmckpt/venv/bin/python scripts/make_key_semantics.py
"""
import io
import json
import math
import os
import pickle
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "keys")


class Asm:
    """A protocol-2 pickle, opcode by opcode."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.storages = []  # (key, bytes)

    def glob(self, module, name):
        self.out += b"c" + f"{module}\n{name}\n".encode()

    def str(self, s):
        b = s.encode()
        self.out += b"X" + struct.pack("<I", len(b)) + b

    def int(self, i):
        if 0 <= i < 256:
            self.out += b"K" + bytes([i])
        elif -2**31 <= i < 2**31:
            self.out += b"J" + struct.pack("<i", i)
        else:
            n = (i.bit_length() + 8) // 8
            self.out += b"\x8a" + bytes([n]) + i.to_bytes(n, "little", signed=True)

    def float(self, f):
        self.out += b"G" + struct.pack(">d", f)

    def bool(self, b):
        self.out += b"\x88" if b else b"\x89"

    def complex(self, re, im):
        self.glob("builtins", "complex")
        self.float(re)
        self.float(im)
        self.out += b"\x86R"

    def put(self, slot):
        self.out += b"q" + bytes([slot])

    def get(self, slot):
        self.out += b"h" + bytes([slot])

    def tensor(self, values):
        """_rebuild_tensor_v2 of a new float32 storage holding `values`."""
        key = str(len(self.storages))
        self.storages.append((key, struct.pack(f"<{len(values)}f", *values)))
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("
        self.out += b"("
        self.str("storage")
        self.glob("torch", "FloatStorage")
        self.str(key)
        self.str("cpu")
        self.int(len(values))
        self.out += b"tQ"
        self.int(0)
        self.int(len(values))
        self.out += b"\x85"
        self.int(1)
        self.out += b"\x85"
        self.bool(False)
        self.glob("collections", "OrderedDict")
        self.out += b")R"
        self.out += b"tR"

    def write_zip(self, path):
        self.out += b"."
        writer = torch._C.PyTorchFileWriter(path)
        for name, data in [("data.pkl", bytes(self.out)), ("byteorder", b"little")] + [
            (f"data/{k}", d) for k, d in self.storages
        ] + [("version", b"3\n")]:
            writer.write_record(name, data, len(data))
        writer.write_end_of_file()
        del writer


def key_name(k):
    if isinstance(k, str):
        return k
    if isinstance(k, tuple):
        return "(" + ", ".join(key_name(x) for x in k) + ")"
    return repr(k)


def entries(obj):
    """(name, leaf) of a dict of tensors and ints, in torch's order."""
    out = []
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out.append({"name": key_name(k), "tensor": [float(x) for x in v.tolist()]})
        else:
            out.append({"name": key_name(k), "int": v})
    return out


# Each key case: (file stem, [(key writer, value)]). A value is an int, or a list of floats (a
# tensor). Key writers take the assembler; memo slots 0..9 are free for them.
def key_cases():
    one_c = lambda a: a.complex(1.0, 0.0)
    nan = math.nan
    return {
        "fold_1_1.0_True_complex": [
            (lambda a: a.int(1), [1.0]), (lambda a: a.float(1.0), 2),
            (lambda a: a.bool(True), [3.0, 3.5]), (one_c, 4),
            (lambda a: a.str("1"), 5),
        ],
        "fold_negzero_0_False": [
            (lambda a: a.float(-0.0), 1), (lambda a: a.int(0), [2.0]),
            (lambda a: a.bool(False), 3), (lambda a: a.float(0.0), [4.0]),
        ],
        "fold_tuples": [
            (lambda a: (a.int(1), a.int(2), a.out.extend(b"\x86")), [1.0]),
            (lambda a: (a.str("x"), a.out.extend(b"\x85")), 2),
            (lambda a: (a.float(1.0), a.float(2.0), a.out.extend(b"\x86")), 3),
            (lambda a: (a.bool(True), a.float(2.0), a.out.extend(b"\x86")), [4.0, 4.0]),
            (lambda a: (a.str("x"), a.out.extend(b"\x85")), 5),
            (lambda a: ((a.int(1), a.out.extend(b"\x85")), a.int(3), a.out.extend(b"\x86")), 6),
            (lambda a: ((a.float(1.0), a.out.extend(b"\x85")), a.float(3.0),
                        a.out.extend(b"\x86")), 7),
        ],
        "fold_big_ints": [
            (lambda a: a.int(2**64), 1), (lambda a: a.float(float(2**64)), [2.0]),
            (lambda a: a.int(-2**80), 3), (lambda a: a.float(float(-2**80)), 4),
            (lambda a: a.int(2**53 + 1), 5), (lambda a: a.float(float(2**53 + 1)), 6),
            (lambda a: a.int(2**70), 7), (lambda a: a.int(-2**70), 8),
            (lambda a: a.int(10**40), [9.0]), (lambda a: a.float(1e40), 10),
        ],
        "float_spelling": [
            (lambda a, f=f: a.float(f), i)
            for i, f in enumerate([1e16, 1e-05, 2.5, 1e300, math.inf, -math.inf, 0.1,
                                   1e15, 123456789012345678.0, 2.5e-07, 5e-324, 0.0001])
        ],
        "nan_keys": [
            (lambda a: (a.float(nan), a.put(0)), 1), (lambda a: a.get(0), [2.0]),
            (lambda a: a.float(nan), 3),
            (lambda a: (a.get(0), a.out.extend(b"\x85"), a.put(1)), 4),
            (lambda a: (a.get(0), a.out.extend(b"\x85")), 5),
        ],
        "str_duplicates": [
            (lambda a: a.str("w"), [1.0]), (lambda a: a.str("b"), 2),
            (lambda a: a.str("w"), [3.0, 3.0]), (lambda a: a.str("b"), [4.0]),
        ],
    }


def write_key_case(stem, pairs, ordered):
    a = Asm()
    if ordered:
        a.glob("collections", "OrderedDict")
        a.out += b")R"
    else:
        a.out += b"}"
    a.out += b"("
    for write_key, value in pairs:
        write_key(a)
        if isinstance(value, list):
            a.tensor(value)
        else:
            a.int(value)
    a.out += b"u"
    path = os.path.join(OUT, stem + ".pt")
    a.write_zip(path)
    return path


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def write_legacy(path, main_pickle, storages):
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        for head in (LEGACY_MAGIC, 1001, sys_info):
            f.write(pickle.dumps(head, protocol=2))
        f.write(main_pickle)
        f.write(pickle.dumps([key for key, _ in storages], protocol=2))
        for _, values in storages:
            f.write(struct.pack("<q", len(values)))
            f.write(struct.pack(f"<{len(values)}f", *values))


def legacy_pickle(tensors):
    """{name: _rebuild_tensor_v2(('storage', FloatStorage, root, 'cpu', n, view), 0, (m,), (1,))}"""
    a = Asm()
    a.out += b"}("
    for name, (root, numel, view, size) in tensors:
        a.str(name)
        a.glob("torch._utils", "_rebuild_tensor_v2")
        a.out += b"(("
        a.str("storage")
        a.glob("torch", "FloatStorage")
        a.str(root)
        a.str("cpu")
        a.int(numel)
        if view is None:
            a.out += b"N"
        else:
            a.str(view[0])
            a.int(view[1])
            a.int(view[2])
            a.out += b"\x87"
        a.out += b"tQ"
        a.int(0)
        a.int(size)
        a.out += b"\x85"
        a.int(1)
        a.out += b"\x85"
        a.bool(False)
        a.glob("collections", "OrderedDict")
        a.out += b")RtR"
    a.out += b"u."
    return bytes(a.out)


def legacy_cases():
    """View key 'B' of root 'A' that is also a root key, or a view twice with other offsets;
    and a plain view (accepted) for contrast."""
    a_vals, b_vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [7.0, 8.0]
    return {
        "legacy_view_key_is_root_key": (
            [("a", ("A", 6, None, 6)), ("b_view", ("A", 6, ("B", 2, 2), 2)),
             ("b_root", ("B", 2, None, 2))],
            [("B", b_vals), ("A", a_vals)]),
        "legacy_view_key_is_root_key_root_first": (
            [("b_root", ("B", 2, None, 2)), ("a", ("A", 6, None, 6)),
             ("b_view", ("A", 6, ("B", 2, 2), 2))],
            [("A", a_vals), ("B", b_vals)]),
        "legacy_view_key_two_offsets": (
            [("a", ("A", 6, None, 6)), ("v1", ("A", 6, ("V", 0, 2), 2)),
             ("v2", ("A", 6, ("V", 3, 2), 2))],
            [("A", a_vals)]),
        "legacy_view_plain": (
            [("a", ("A", 6, None, 6)), ("v", ("A", 6, ("V", 3, 2), 2))],
            [("A", a_vals)]),
    }


def write_torchscript(path):
    from typing import List, Tuple

    class Inner(torch.nn.Module):
        pair: Tuple[torch.Tensor, torch.Tensor]

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.pair = (torch.ones(2), torch.zeros(2))

        def forward(self, x):
            return self.lin(x) + self.pair[0]

    class Outer(torch.nn.Module):
        tup: Tuple[torch.Tensor, int]
        lst: List[torch.Tensor]

        def __init__(self):
            super().__init__()
            self.inner = Inner()
            self.register_buffer("buf", torch.arange(3.0))
            self.tup = (torch.full((2,), 3.0), 2)
            self.lst = [torch.ones(2)]
            self.plain = torch.zeros(2)
            self.scale = torch.nn.Parameter(torch.tensor([0.5, 1.5]))

        def forward(self, x):
            return (self.inner(x) + self.tup[0] + self.lst[0] + self.plain).sum() * self.scale

    torch.manual_seed(0)
    torch.jit.script(Outer()).save(path)


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    for stem, pairs in key_cases().items():
        for ordered in (False, True):
            name = stem + ("_ordered" if ordered else "")
            path = write_key_case(name, pairs, ordered)
            loaded = torch.load(path, weights_only=True)
            expected[name + ".pt"] = {"entries": entries(loaded)}
    for stem, (tensors, records) in legacy_cases().items():
        path = os.path.join(OUT, stem + ".pt")
        write_legacy(path, legacy_pickle(tensors), records)
        loaded = torch.load(path, weights_only=True)
        got = {k: v.tolist() for k, v in loaded.items()}
        if stem == "legacy_view_plain":
            expected[stem + ".pt"] = {"entries": entries(loaded)}
        else:
            # torch aliases one storage's bytes into another's: mmckpt refuses.
            expected[stem + ".pt"] = {"error": "Format", "torch_read": got}
    path = os.path.join(OUT, "script_tuple_attrs.pt")
    write_torchscript(path)
    state = torch.jit.load(path).state_dict()
    expected["script_tuple_attrs.pt"] = {"state_dict": list(state)}
    for fixture in ("script.pt", "script_attr.pt", "script_nested.pt", "script_traced.pt"):
        state = torch.jit.load(os.path.join(ROOT, "tests", "fixtures", fixture)).state_dict()
        expected["../../fixtures/" + fixture] = {"state_dict": list(state)}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(expected)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
