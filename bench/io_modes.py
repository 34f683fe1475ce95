"""Cold loads in each I/O mode against the device's speed, on the 1 GiB file of verify_crc.py.

    ~/.cache/mmckpt/venv/bin/python bench/io_modes.py [--exe target/release/examples/io_modes]

For each of `one` (the first 64 MiB tensor) and `all` (16 tensors, 1 GiB), and each mode
(`map`, `read`, `pread`), evicts the file from the page cache (posix_fadvise DONTNEED), runs
the `io_modes` example once (open, then ask for the tensors and touch every page) and records
its wall time and what it read; then `cat FILE > /dev/null` of the evicted file, in the same
run. Prints one JSON object. Build first: `cargo build --release -p mmckpt-cli --example
io_modes`; the file is written by bench/verify_crc.py.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402

PATH = os.path.expanduser("~/.cache/mmckpt/bench/crc/f32_1g.pt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default="target/release/examples/io_modes")
    args = ap.parse_args()
    results = {"file_bytes": os.path.getsize(PATH), "runs": []}
    for what in ["one", "all"]:
        for mode in ["map", "read", "pread"]:
            gen.evict(PATH)
            start = time.perf_counter()
            out = subprocess.run([args.exe, PATH, mode, what], check=True,
                                 capture_output=True, text=True).stdout
            wall = time.perf_counter() - start
            run = json.loads(out)
            run.update(what=what, mode=mode, wall_s=round(wall, 3),
                       gb_s=round(run["tensor_bytes"] / wall / 1e9, 2))
            results["runs"].append(run)
    gen.evict(PATH)
    start = time.perf_counter()
    subprocess.run(f"cat '{PATH}' > /dev/null", shell=True, check=True)
    cat_s = time.perf_counter() - start
    results["cat_s"] = round(cat_s, 3)
    results["cat_gb_s"] = round(results["file_bytes"] / cat_s / 1e9, 2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
