#!/usr/bin/env python3
"""Prints the records and the disassembled pickles of a torch checkpoint (debugging aid).

Usage:  $(bash scripts/setup-venv.sh)/bin/python scripts/dump_pickles.py FILE [--records-only]

Zip checkpoints (torch.save, torch.jit.save): every record with its data offset, size and (for
small text records) contents, then pickletools.dis of every *.pkl record except debug_pkl.
Legacy checkpoints: pickletools.dis of each pickle in the stream, then the storage blobs.
Uses only the standard library.
"""
import io
import pickletools
import struct
import sys
import zipfile


def dis(data, out=sys.stdout):
    pickletools.dis(data, out=out)


def zip_dump(path, records_only):
    with open(path, "rb") as f:
        raw = f.read()
    z = zipfile.ZipFile(io.BytesIO(raw))
    for info in z.infolist():
        lh = info.header_offset
        name_len, extra_len = struct.unpack("<HH", raw[lh + 26:lh + 30])
        data_off = lh + 30 + name_len + extra_len
        body = z.read(info)
        shown = ""
        if len(body) <= 64 and not info.filename.endswith(".pkl"):
            shown = repr(body)
        print(f"{info.filename:50s} off={data_off:<8d} size={info.file_size:<8d} "
              f"method={info.compress_type} crc={info.CRC:08x} {shown}")
    if records_only:
        return
    for info in z.infolist():
        if info.filename.endswith(".pkl"):
            print(f"\n==== {info.filename}")
            dis(z.read(info))


def legacy_dump(path, records_only):
    with open(path, "rb") as f:
        raw = f.read()
    bio = io.BytesIO(raw)
    import pickle

    pids = {}

    class Stub:  # stands for any global; never calls anything real
        def __init__(self, *args, **kw):
            self.args = args

        def __setstate__(self, state):
            self.state = state

        def __setitem__(self, k, v):
            pass

    class P(pickle.Unpickler):
        def persistent_load(self, pid):
            pids[pid[2]] = pid
            return pid

        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            return type(name, (Stub,), {"qualname": f"{module}.{name}"})

    for what in ("magic number", "protocol version", "sys info", "object", "storage keys"):
        start = bio.tell()
        val = P(bio).load()
        end = bio.tell()
        print(f"\n==== pickle #{what} bytes [{start}, {end})")
        if not records_only:
            dis(raw[start:end])
        if what == "storage keys":
            keys = val
    itemsize = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4,
                "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8,
                "ComplexDouble": 16}
    for k in keys:
        (n,) = struct.unpack("<q", bio.read(8))
        start = bio.tell()
        cls = pids[k][1].qualname.rsplit(".", 1)[1].replace("Storage", "")
        size = itemsize.get(cls, 1)  # UntypedStorage counts bytes
        pid = (pids[k][0], pids[k][1].qualname) + tuple(pids[k][2:])
        print(f"storage {k!r} {pid}: count={n}, data [{start}, {start + n * size})")
        bio.seek(start + n * size)
    print(f"end of stream {bio.tell()}, file size {len(raw)}")


def main():
    path = sys.argv[1]
    records_only = "--records-only" in sys.argv
    if zipfile.is_zipfile(path):
        zip_dump(path, records_only)
    else:
        legacy_dump(path, records_only)


if __name__ == "__main__":
    main()
