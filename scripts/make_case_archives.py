#!/usr/bin/env python3
"""Writes tests/data/case/: torch archives whose record names differ from torch's only in
ASCII case, and manifest.json with what torch 2.15 does with each.

torch's zip reader (miniz, `mz_zip_reader_locate_file` with flags 0) finds records
case-insensitively, so `DATA.PKL` alone is read as `data.pkl`; of two names equal up to case it
reads whichever its sorted-directory binary search meets. mmckpt reads the first kind as torch
does and refuses the second. Every archive starts as a real `torch.save` / `torch.jit.save`
file; its records are then renamed in place (names patched in both the local and the central
header, same length) or rewritten with torch's own `PyTorchFileWriter` to add a record.

manifest.json, per file: "torch" is "loads" (with "tensors": name, dtype, shape, sha256 of the
row-major little-endian bytes, as torch returns them) or "refuses" (with its "error"); "mmckpt"
is "reads" (the same tensors) or "refuses" (with a substring of the message).
Run: ~/.cache/mmckpt/venv/bin/python scripts/make_case_archives.py
"""
import collections
import hashlib
import io
import json
import os
import struct
import zipfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "case")
COLLISION = "differ only in case"


def state_dict():
    sd = collections.OrderedDict()
    sd["w"] = torch.tensor([1.0, -2.5, 3.25, 4.0])
    sd["b"] = torch.tensor([7, -8], dtype=torch.int64)
    return sd


def saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def rename(data, renames):
    """The archive with records renamed (full names, same length) in both header kinds."""
    data = bytearray(data)
    eocd = data.rindex(b"PK\x05\x06")
    entries, cd_offset = struct.unpack_from("<H", data, eocd + 10)[0], struct.unpack_from(
        "<I", data, eocd + 16)[0]
    pos, done = cd_offset, set()
    for _ in range(entries):
        assert data[pos:pos + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        local = struct.unpack_from("<I", data, pos + 42)[0]
        name = bytes(data[pos + 46:pos + 46 + name_len]).decode()
        new = renames.get(name)
        if new is not None:
            assert len(new) == len(name), (name, new)
            data[pos + 46:pos + 46 + name_len] = new.encode()
            assert data[local + 30:local + 30 + name_len] == name.encode()
            data[local + 30:local + 30 + name_len] = new.encode()
            done.add(name)
        pos += 46 + name_len + extra_len + comment_len
    assert done == set(renames), set(renames) - done
    return bytes(data)


def records_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename.split("/", 1)[1], z.read(i)) for i in z.infolist()]


def rewritten(records):
    """An archive of `records` (relative names, in order) written by torch's own writer, which
    adds `version` and `.data/serialization_id` at the end."""
    buf = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(buf)
    for name, data in records:
        if name not in ("version", ".data/version", ".data/serialization_id"):
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return buf.getvalue()


def with_record(base, name, data, at=None):
    records = records_of(base)
    records.insert(len(records) if at is None else at, (name, data))
    return rewritten(records)


def big_endian(base):
    """`base` with byteorder 'big' and every storage's elements byte-swapped (4- and 8-byte
    elements: the float32 and int64 tensors of state_dict())."""
    sizes = {"0": 4, "1": 8}
    out = []
    for name, data in records_of(base):
        if name.startswith("data/"):
            n = sizes[name[5:]]
            data = b"".join(data[i:i + n][::-1] for i in range(0, len(data), n))
        elif name == "byteorder":
            data = b"big"
        out.append((name, data))
    return rewritten(out)


def describe(loaded):
    rows = []
    for name, t in loaded.items():
        t = t.detach().contiguous()
        raw = t.view(-1).view(torch.uint8).numpy().tobytes()
        rows.append({"name": name, "dtype": str(t.dtype).replace("torch.", ""),
                     "shape": list(t.shape), "sha256": hashlib.sha256(raw).hexdigest()})
    return rows


class Scripted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)
        self.register_buffer("stat", torch.arange(3.0))
        self.plain = torch.ones(5)  # an attribute: not in state_dict()

    def forward(self, x):
        return self.lin(x) + self.plain[:3]


def scripted():
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Scripted()), buf)
    return buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = {}
    base = saved(state_dict())
    decoy = saved(collections.OrderedDict(decoy=torch.tensor([9.0, 9.0, 9.0, 9.0])))
    decoy_pkl = dict(records_of(decoy))["data.pkl"]
    ts = scripted()
    ts_names = [n for n, _ in records_of(ts)]

    def upper_code(name):
        return name.replace("code/", "CODE/", 1) if name.startswith("code/") else name

    A = "archive/"
    cases = {
        # One spelling only: torch reads it; so must mmckpt.
        "DATA.PKL_only": (rename(base, {A + "data.pkl": A + "DATA.PKL"}), None),
        "Data.Pkl_only": (rename(base, {A + "data.pkl": A + "Data.Pkl"}), None),
        "DATA_0_only": (rename(base, {A + "data/0": A + "DATA/0"}), None),
        "dAtA_1_only": (rename(base, {A + "data/1": A + "dAtA/1"}), None),
        "BYTEORDER_only_big": (rename(big_endian(base), {A + "byteorder": A + "BYTEORDER"}),
                               None),
        "BYTEORDER_only_little": (rename(base, {A + "byteorder": A + "BYTEORDER"}), None),
        "dotfiles_upper": (rename(base, {A + ".format_version": A + ".FORMAT_VERSION",
                                         A + ".storage_alignment": A + ".STORAGE_ALIGNMENT",
                                         A + "version": A + "VERSION"}), None),
        "ARCHIVE_folder_everywhere": (rename(base, {n: "ARCHIVE/" + n[len(A):] for n in
                                                    [A + r for r, _ in records_of(base)]}),
                                      None),
        # Two spellings of one record: torch reads one of them by miniz's sort; mmckpt refuses.
        "DATA.PKL_after": (with_record(base, "DATA.PKL", decoy_pkl), COLLISION),
        "DATA.PKL_before": (with_record(base, "DATA.PKL", decoy_pkl, at=0), COLLISION),
        "DATA_0_after": (with_record(base, "DATA/0", bytes(range(16))), COLLISION),
        "DATA_0_before": (with_record(base, "DATA/0", bytes(range(16)), at=0), COLLISION),
        "byteorder_and_BYTEORDER": (with_record(base, "BYTEORDER", b"big", at=1), COLLISION),
        # The folder: torch compares every record's with the first one's byte for byte.
        "upper_folder_data0": (rename(base, {A + "data/0": "ARCHIVE/data/0"}),
                               "outside the archive's top-level folder"),
        "mixed_folder_data1": (rename(base, {A + "data/1": "Archive/data/1"}),
                               "outside the archive's top-level folder"),
        # TorchScript, same reader.
        "ts_DATA.PKL_and_DATA_0": (rename(ts, {A + "data.pkl": A + "DATA.PKL",
                                               A + "data/0": A + "DATA/0"}), None),
        "ts_CONSTANTS.PKL": (rename(ts, {A + "constants.pkl": A + "CONSTANTS.PKL"}), None),
        "ts_CODE_folder": (rename(ts, {A + n: A + upper_code(n) for n in ts_names
                                       if n.startswith("code/")}), None),
    }
    for name, (data, refusal) in cases.items():
        path = os.path.join(OUT, name + ".pt")
        with open(path, "wb") as f:
            f.write(data)
        entry = {}
        try:
            if name.startswith("ts_"):
                loaded = torch.jit.load(path).state_dict()
            else:
                loaded = torch.load(path, weights_only=True)
            entry["torch"] = "loads"
            entry["tensors"] = describe(loaded)
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            entry["torch"] = "refuses"
            entry["error"] = str(e).splitlines()[0][:200]
        if refusal is None:
            assert entry["torch"] == "loads", (name, entry)
            entry["mmckpt"] = "reads"
        else:
            entry["mmckpt"] = "refuses"
            entry["refusal"] = refusal
        manifest[name + ".pt"] = entry
        print(name, entry["torch"], entry.get("error", ""),
              [r["name"] for r in entry.get("tensors", [])])
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
