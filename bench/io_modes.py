"""Cold loads in each I/O mode against the device's speed, on the 1 GiB file of verify_crc.py.

    ~/.cache/mmckpt/venv/bin/python bench/io_modes.py [--exe target/release/examples/io_modes]
        [--rounds N]

For each of `one` (the first 64 MiB tensor) and `all` (16 tensors, 1 GiB), and each mode
(`map`, `read`, `pread`), evicts the file from the page cache (posix_fadvise DONTNEED), runs
the `io_modes` example once (open, then ask for the tensors and touch every page) and records
its wall time and what it read; then `cat FILE > /dev/null` of the evicted file, in the same
run. Then `copy` (every tensor copied into a buffer, as a copy load does) in each mode without
and with a prefetch plan (`Checkpoint::prefetch_while`, 256 MiB window), each cold, and `cat`
again after them. With `--rounds N` the whole sequence runs N times (interleaved, so drift
in the device's speed hits every mode alike) and each figure is the median over the rounds.
Prints one JSON object. Build first: `cargo build --release -p mmckpt-cli --example
io_modes`; the file is written by bench/verify_crc.py.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402

PATH = os.path.expanduser("~/.cache/mmckpt/bench/crc/f32_1g.pt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default="target/release/examples/io_modes")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    rounds = [one_round(args.exe) for _ in range(args.rounds)]
    results = {"file_bytes": os.path.getsize(PATH), "rounds": args.rounds, "runs": []}
    for key in ["cat_s", "cat_gb_s", "cat_s_after", "cat_gb_s_after"]:
        results[key] = statistics.median(r[key] for r in rounds)
    for i, run in enumerate(rounds[0]["runs"]):
        merged = dict(run)
        for key in ["open_s", "load_s", "wall_s", "gb_s"]:
            merged[key] = statistics.median(r["runs"][i][key] for r in rounds)
        results["runs"].append(merged)
    print(json.dumps(results, indent=1))


def one_round(exe):
    results = {"runs": []}
    plan = [(what, mode, False) for what in ["one", "all"] for mode in ["map", "read", "pread"]]
    plan += [("copy", mode, prefetch) for mode in ["map", "read", "pread"]
             for prefetch in [False, True]]
    for what, mode, prefetch in plan:
        gen.evict(PATH)
        start = time.perf_counter()
        out = subprocess.run([exe, PATH, mode, what] + (["prefetch"] if prefetch else []),
                             check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - start
        run = json.loads(out)
        run.update(what=what, mode=mode, prefetch=prefetch, wall_s=round(wall, 3),
                   gb_s=round(run["tensor_bytes"] / wall / 1e9, 2))
        results["runs"].append(run)
        if what == "all" and mode == "pread":
            results.update(cat())
    results.update({k + "_after": v for k, v in cat().items()})
    return results


def cat():
    """`cat FILE > /dev/null` of the evicted file: the device's speed for this file."""
    gen.evict(PATH)
    start = time.perf_counter()
    subprocess.run(f"cat '{PATH}' > /dev/null", shell=True, check=True)
    cat_s = time.perf_counter() - start
    return {"cat_s": round(cat_s, 3),
            "cat_gb_s": round(os.path.getsize(PATH) / cat_s / 1e9, 2)}


if __name__ == "__main__":
    main()
