"""Opening an 800 MB legacy (`_use_new_zipfile_serialization=False`) state dict whose storages
are misaligned, and the first access to one of its tensors.

    python bench/legacy_lazy.py [--exe target/release/examples/legacy_lazy] [--reps 20]

Writes the file once with torch into ~/.cache/mmckpt/bench/legacy/ (100 float32 tensors of
2,000,003 elements; each storage follows the previous one's end and an 8-byte count, so all
share the first one's alignment, and a padding name makes the pickles before them a length
that leaves the first one misaligned for float32), then runs the `legacy_lazy` example on it, which prints one JSON object (see
cli/examples/legacy_lazy.rs). Build the example first:
`cargo build --release -p mmckpt-cli --example legacy_lazy`.
"""
import argparse
import os
import subprocess
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen  # noqa: E402

CACHE = os.path.expanduser("~/.cache/mmckpt/bench/legacy")
TENSORS, ELEMENTS = 100, 2_000_003  # 100 x 8 MB = 800 MB


def state_dict(pad):
    g = gen.torch.Generator().manual_seed(7)
    sd = OrderedDict((f"layer.{i}.weight", gen.torch.randn(ELEMENTS, generator=g))
                     for i in range(TENSORS))
    # The name of the last entry pads the pickle, to move the storages' start.
    sd["pad" + "x" * pad] = gen.torch.zeros(1)
    return sd


def first_storage_offset(path):
    """Where the first storage's bytes start: the storages (each an 8-byte element count and
    its bytes) fill the end of the file, after the pickles."""
    storages = TENSORS * (8 + 4 * ELEMENTS) + (8 + 4)
    return os.path.getsize(path) - storages + 8


def ensure():
    path = os.path.join(CACHE, "legacy_800m.pt")
    if os.path.exists(path):
        return path
    os.makedirs(CACHE, exist_ok=True)
    for pad in range(8):
        print(f"  writing {path} (pad {pad})", file=sys.stderr)
        gen._save(state_dict(pad), path, _use_new_zipfile_serialization=False)
        if first_storage_offset(path) % 4 != 0:
            return path
    raise SystemExit("could not make the storages misaligned")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--exe", default=os.path.join(HERE, "..", "target", "release", "examples",
                                                  "legacy_lazy"))
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    path = ensure()
    # Drop nothing from the page cache: the figures are the warm-cache ones, where an eager
    # copy's cost is all memory traffic.
    out = subprocess.run([args.exe, path, str(args.reps)], check=True, capture_output=True,
                         text=True)
    print(out.stdout.strip())


if __name__ == "__main__":
    main()
