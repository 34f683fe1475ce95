"""Writes tests/data/crc/: checkpoints for the CRC-32 check (MMCKPT_OPEN_VERIFY_CRC).

- nocrc.pt: torch.save with torch.serialization.set_crc32_options(False), which writes 0 as
  every record's CRC-32 (the check skips such records and counts them).
- expected.json: the CRC-32 torch recorded for each record of tests/fixtures/nested.pt and
  the record's size, read with Python's zipfile (the tests mutate that fixture byte by byte themselves).

Run with the torch virtualenv: ~/.cache/mmckpt/venv/bin/python scripts/make_crc_cases.py
"""

import json
import pathlib
import zipfile

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "crc"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    obj = {"w": torch.randn(4, 3), "b": torch.arange(5, dtype=torch.int64), "epoch": 3}
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(obj, OUT / "nocrc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(OUT / "nocrc.pt") as z:
        assert all(info.CRC == 0 for info in z.infolist() if info.file_size > 0), "CRCs written"
    loaded = torch.load(OUT / "nocrc.pt", weights_only=True)
    assert torch.equal(loaded["w"], obj["w"])
    with zipfile.ZipFile(ROOT / "tests" / "fixtures" / "nested.pt") as z:
        crcs = {info.filename: {"crc": info.CRC, "size": info.file_size} for info in z.infolist()}
        z.testzip()  # every CRC of the fixture matches its bytes
    (OUT / "expected.json").write_text(json.dumps({"nested.pt": crcs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
