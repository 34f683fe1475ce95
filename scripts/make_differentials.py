#!/usr/bin/env python3
"""Zip-parser differential cases: tricks used against model scanners, where two zip readers
see different files. Writes tests/data/differential/*.pt and expected.tsv.

The base checkpoint comes from real torch (torch.save({'a': arange(4.), 'b': -arange(4.)}));
each case re-lays its records out by hand with one trick applied (these are attack inputs, so
hand-made bytes). Then every case is loaded with real torch (torch.load, weights_only=True),
and the table records what torch read. mmckpt must either reject the file or read exactly the
tensors torch read (tests/hostile.rs and c_tests/test_attacks.c check this).

expected.tsv columns: file; mmckpt's status (MMCKPT_OK or the error); what torch.load gives
("error: <type>" or the tensors as name=v,v,v;name=...); a note.
Run: $(bash scripts/setup-venv.sh)/bin/python scripts/make_differentials.py
"""
import io
import os
import struct
import zipfile
import zlib

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "differential")


def base_records():
    buf = io.BytesIO()
    torch.save({"a": torch.arange(4.0), "b": -torch.arange(4.0)}, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def evil_records():
    """A different checkpoint (same names, other values) for the pickles tricks smuggle in."""
    buf = io.BytesIO()
    torch.save({"a": torch.full((4,), 666.0), "b": torch.full((4,), 777.0)}, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    return {i.filename.split("/", 1)[1]: z.read(i.filename) for i in z.infolist()}


def local_header(name, data, extra=b""):
    n = name.encode()
    return (struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, zlib.crc32(data), len(data),
                        len(data), len(n), len(extra)) + n + extra)


def central(name, data, offset):
    n = name.encode()
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, zlib.crc32(data),
                       len(data), len(data), len(n), 0, 0, 0, 0, 0, offset) + n


def build(entries, gap=None, trailer=b"", cd_extra=(), local_names=None):
    """entries: (name, data). gap: (index, bytes) inserted before entry `index`'s header.
    cd_extra: additional central entries (name, data, index of the entry whose offset to use).
    local_names: {index: name written in the local header instead}."""
    out = bytearray()
    offsets = []
    for i, (name, data) in enumerate(entries):
        if gap and gap[0] == i:
            out += gap[1]
        offsets.append(len(out))
        lname = (local_names or {}).get(i, name)
        base = len(out) + 30 + len(lname.encode()) + 4
        pad = (64 - base % 64) % 64
        extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        out += local_header(lname, data, extra) + data
    cd_start = len(out)
    count = 0
    for (name, data), off in zip(entries, offsets):
        out += central(name, data, off)
        count += 1
    for name, data, index in cd_extra:
        out += central(name, data, offsets[index])
        count += 1
    cd_size = len(out) - cd_start
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_start, 0)
    return bytes(out) + trailer


def cases():
    rec = base_records()
    evil = evil_records()
    prefix = rec[0][0].split("/", 1)[0]
    names = [n for n, _ in rec]
    i_pkl = names.index(f"{prefix}/data.pkl")
    i_0 = names.index(f"{prefix}/data/0")
    out = []
    out.append(("plain", build(rec), "MMCKPT_OK", "the re-laid-out base file"))
    # Data hidden between records, including a planted local header that names data/0.
    planted = local_header(f"{prefix}/data/0", evil["data/0"]) + evil["data/0"]
    out.append(("hidden_between_records", build(rec, gap=(i_0, planted * 3)), "MMCKPT_OK",
                "bytes between records that no central entry names are ignored, as torch does"))
    out.append(("local_name_differs", build(rec, local_names={i_0: f"{prefix}/data/1"}),
                "MMCKPT_ERR_FORMAT", "local header names another record"))
    out.append(("entry_listed_twice", build(rec, cd_extra=[(f"{prefix}/data/0", rec[i_0][1], i_pkl)]),
                "MMCKPT_ERR_FORMAT", "central directory lists data/0 twice"))
    out.append(("end_record_then_junk", build(rec, trailer=b"\0" * 100), "MMCKPT_ERR_FORMAT",
                "junk after the end of central directory record"))
    out.append(("end_record_then_second_end_record",
                build(rec, trailer=build([(f"{prefix}/data.pkl", evil["data.pkl"])])[-22:]),
                "MMCKPT_ERR_FORMAT", "a second end record after the first"))
    # A central entry whose offset points at data/0's local header under another name.
    out.append(("cd_points_into_other_entry",
                build(rec, cd_extra=[(f"{prefix}/data/9", rec[i_0][1], i_0)]),
                "MMCKPT_ERR_FORMAT", "two central entries share one local header"))
    # A second pickle under a case variant, before and after the real one.
    for where in ("first", "last"):
        extra = (f"{prefix}/DATA.PKL", evil["data.pkl"])
        entries = [extra] + rec if where == "first" else rec + [extra]
        out.append((f"case_variant_pickle_{where}", build(entries), "MMCKPT_ERR_FORMAT",
                    "DATA.PKL next to data.pkl: torch finds records case-insensitively and "
                    "reads one of the two by miniz's sort order"))
    for where in ("first", "last"):
        extra = (f"{prefix}/./data.pkl", evil["data.pkl"])
        entries = [extra] + rec if where == "first" else rec + [extra]
        out.append((f"dot_path_pickle_{where}", build(entries), None,
                    "archive/./data.pkl next to data.pkl"))
    # Records under two top-level folders.
    moved = [(n.replace(f"{prefix}/", "other/", 1) if n.endswith("data/0") else n, d)
             for n, d in rec]
    moved.append((f"{prefix}/data/0", evil["data/0"]))
    out.append(("prefix_mismatch", build(moved), "MMCKPT_ERR_FORMAT",
                "data/0 both under other/ and under the prefix"))
    return out


def torch_view(path):
    try:
        sd = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is torch's answer
        return f"error: {type(e).__name__}"
    return ";".join(f"{k}=" + ",".join(repr(float(x)) for x in v.flatten()) for k, v in sd.items())


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for stem, data, status, note in cases():
        path = os.path.join(OUT, f"{stem}.pt")
        with open(path, "wb") as f:
            f.write(data)
        seen = torch_view(path)
        if status is None:  # accepted by mmckpt exactly when torch reads the true tensors
            status = "MMCKPT_OK" if "666" not in seen else "MMCKPT_ERR_FORMAT"
        rows.append((f"{stem}.pt", status, seen, note))
    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        f.write("# file\tmmckpt status\twhat torch.load reads\tnote "
                "(generated by scripts/make_differentials.py with torch %s)\n" % torch.__version__)
        for row in rows:
            f.write("\t".join(row) + "\n")


if __name__ == "__main__":
    main()
