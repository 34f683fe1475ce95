"""Makes tests/data/deflated/: torch-made fixtures (torch.save archives, and TorchScript ones
from torch.jit.save, whose code/ and constants records deflate too) re-zipped with Python's
zipfile and ZIP_DEFLATED (every record, or only the data/ records), which torch.load and
torch.jit.load read, and two broken
deflated archives (a wrong CRC-32, a record that inflates past its declared size).

Run with the torch venv: python scripts/make_deflated.py (from the repository root)."""
import os
import struct
import zipfile
import zlib

FIXTURES = [
    "dtypes.pt",
    "nested.pt",
    "forms.pt",
    "bigendian.pt",
    "script.pt",
    "script_attr.pt",
    "script_nested.pt",
    "script_traced.pt",
]
OUT = "tests/data/deflated"


def rezip(src, dst, deflate_record):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            method = zipfile.ZIP_DEFLATED if deflate_record(info.filename) else zipfile.ZIP_STORED
            zout.writestr(info.filename, zin.read(info.filename), compress_type=method)


def patch_record(path, name, patch):
    """Applies patch(buf, local_header_offset, central_header_offset) to the record `name`."""
    buf = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    local = info.header_offset
    key = name.encode()
    central = buf.index(b"PK\x01\x02")
    while buf[central + 46 : central + 46 + len(key)] != key or struct.unpack_from(
        "<H", buf, central + 28
    )[0] != len(key):
        central = buf.index(b"PK\x01\x02", central + 4)
    patch(buf, local, central)
    open(path, "wb").write(bytes(buf))


def first_data_record(path):
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if "/data/" in n and z.getinfo(n).file_size > 0)


def main():
    os.makedirs(OUT, exist_ok=True)
    for fixture in FIXTURES:
        stem = fixture[:-3]
        src = os.path.join("tests/fixtures", fixture)
        rezip(src, f"{OUT}/{stem}_all.pt", lambda name: True)
        rezip(src, f"{OUT}/{stem}_data.pt", lambda name: "/data/" in name)

    # A wrong CRC-32 (in both headers) on the first storage record.
    bad_crc = f"{OUT}/bad_crc.pt"
    rezip("tests/fixtures/dtypes.pt", bad_crc, lambda name: True)
    name = first_data_record(bad_crc)

    def flip_crc(buf, local, central):
        for at in (local + 14, central + 16):
            (crc,) = struct.unpack_from("<I", buf, at)
            struct.pack_into("<I", buf, at, crc ^ 0xFFFFFFFF)

    patch_record(bad_crc, name, flip_crc)

    # A record whose stream inflates to 8 bytes more than its headers declare (same CRC).
    too_long = f"{OUT}/inflates_past_size.pt"
    with zipfile.ZipFile("tests/fixtures/dtypes.pt") as zin, zipfile.ZipFile(too_long, "w") as zout:
        target = first_data_record("tests/fixtures/dtypes.pt")
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == target:
                data += b"\x00" * 8
            zout.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile("tests/fixtures/dtypes.pt") as zin:
        real = zin.read(target)

    def declare_real(buf, local, central):
        struct.pack_into("<I", buf, local + 22, len(real))
        struct.pack_into("<I", buf, central + 24, len(real))
        for at in (local + 14, central + 16):
            struct.pack_into("<I", buf, at, zlib.crc32(real))

    patch_record(too_long, target, declare_real)


if __name__ == "__main__":
    main()
