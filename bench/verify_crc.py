"""The cost of the CRC-32 check (MMCKPT_OPEN_VERIFY_CRC, `mmckpt verify`) on a 1 GiB file.

    ~/.cache/mmckpt/venv/bin/python bench/verify_crc.py [--exe target/release/mmckpt] [--reps 5]

Writes the file once with torch into ~/.cache/mmckpt/bench/crc/ (16 float32 tensors of 64 MiB),
then times, in this order: `mmckpt verify` with the file in the page cache (median of --reps
runs; the command prints the bytes checked and its own open time), and with the file evicted
(posix_fadvise DONTNEED) once, next to `cat FILE > /dev/null` of the evicted file (the device's
speed, in the same run). Prints one JSON object. Build the binary first: `cargo build --release`.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402

CACHE = os.path.expanduser("~/.cache/mmckpt/bench/crc")
PATH = os.path.join(CACHE, "f32_1g.pt")
TENSORS, ELEMENTS = 16, 16 << 20  # 16 x 64 MiB = 1 GiB


def make():
    if os.path.exists(PATH):
        return
    import torch

    os.makedirs(CACHE, exist_ok=True)
    g = torch.Generator().manual_seed(18)
    sd = {f"layer.{i}.weight": torch.randn(ELEMENTS, generator=g) for i in range(TENSORS)}
    torch.save(sd, PATH + ".tmp")
    os.replace(PATH + ".tmp", PATH)


def verify(exe):
    """(seconds measured by the command, bytes checked, wall seconds)."""
    start = time.perf_counter()
    out = subprocess.run([exe, "verify", PATH], check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    m = re.search(r"\((\d+) bytes\) match their CRC-32 in ([0-9.]+) s", out)
    return float(m.group(2)), int(m.group(1)), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default="target/release/mmckpt")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    make()
    size = os.path.getsize(PATH)
    verify(args.exe)  # warm the page cache
    warm = [verify(args.exe) for _ in range(args.reps)]
    warm_s = statistics.median(w[0] for w in warm)
    checked = warm[0][1]
    gen.evict(PATH)
    cold_s, _, _ = verify(args.exe)
    gen.evict(PATH)
    start = time.perf_counter()
    subprocess.run(f"cat '{PATH}' > /dev/null", shell=True, check=True)
    cat_s = time.perf_counter() - start
    print(json.dumps({
        "file_bytes": size,
        "bytes_checked": checked,
        "warm_verify_s_median": round(warm_s, 4),
        "warm_verify_gb_s": round(checked / warm_s / 1e9, 2),
        "cold_verify_s": round(cold_s, 3),
        "cold_verify_gb_s": round(checked / cold_s / 1e9, 2),
        "cold_cat_s": round(cat_s, 3),
        "cold_cat_gb_s": round(size / cat_s / 1e9, 2),
        "cpus": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
