#!/usr/bin/env python3
"""Writes tests/data/conversions/conversions.tsv: element conversions as torch 2.15's `.to()`
makes them on the CPU, for `mmckpt_convert` / `mmckpt::convert_elements` to match bit for bit.

One line per (from, to) pair: `from<TAB>to<TAB>count<TAB>source bytes (hex)<TAB>torch's result
(hex)`, little-endian elements. Pairs: every pair of float64, float32, float16, bfloat16, and
each float8 kind (e4m3fn, e5m2, e4m3fnuz, e5m2fnuz, e8m0fnu) to float32 over all 256 bytes.
Sources: signed zeros, infinities, NaNs with payloads (quiet and signalling), subnormals of
every width, the largest finite values, values just past them (out of range for the narrower
type), rounding ties (even and odd) at every narrowing, then random bit patterns. The float
tensors are 1024 elements, a multiple of every vector width, so torch's vectorised kernels
convert all of them (its scalar tails treat NaNs into bfloat16 differently; see
src/module/convert.rs). Deterministic; run with the test venv's python.
"""
import os
import random
import struct

import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "tests", "data", "conversions", "conversions.tsv")
COUNT = 1024
FLOATS = [("float64", torch.float64, "<Q", 8), ("float32", torch.float32, "<I", 4),
          ("float16", torch.float16, "<H", 2), ("bfloat16", torch.bfloat16, "<H", 2)]
FP8 = [("float8_e4m3fn", torch.float8_e4m3fn), ("float8_e5m2", torch.float8_e5m2),
       ("float8_e4m3fnuz", torch.float8_e4m3fnuz), ("float8_e5m2fnuz", torch.float8_e5m2fnuz),
       ("float8_e8m0fnu", torch.float8_e8m0fnu)]


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def specials(name):
    """Bit patterns of `name` that exercise every rule."""
    if name == "float64":
        vals = [0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
                0x7FF0000000000001, 0xFFF8000000000123, 0x7FF4000000000000, 1, 0x000FFFFFFFFFFFFF,
                0x7FEFFFFFFFFFFFFF, f64_bits(3.4028235677973366e38), f64_bits(3.4028236e38),
                f64_bits(65504.0), f64_bits(65520.0), f64_bits(65519.99), f64_bits(1e-8),
                f64_bits(5.960464477539063e-08), f64_bits(2.9802322387695312e-08),
                f64_bits(1 + 2 ** -24), f64_bits(1 + 3 * 2 ** -24), f64_bits(1 + 2 ** -11),
                f64_bits(1 + 3 * 2 ** -11), f64_bits(1 + 2 ** -8), f64_bits(1 + 3 * 2 ** -8),
                f64_bits(1 + 2 ** -8 + 2 ** -30), f64_bits(1e-45), f64_bits(1.5e-45), f64_bits(-0.75e-45)]
    elif name == "float32":
        vals = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00123,
                0x7FA00000, 0x7FBFFFFF, 1, 0x007FFFFF, 0x00400000, 0x7F7FFFFF, 0xFF7FFFFF,
                f32_bits(65504.0), f32_bits(65520.0), f32_bits(65519.996), f32_bits(1e-8),
                f32_bits(5.960464477539063e-08), f32_bits(2.9802322387695312e-08),
                0x3F808000, 0x3F818000, 0x3F808001, 0x3F800800 + 0x1000, 0x3F801000,
                0x3F801001, 0x7F7F8000, 0x7F7FC000, 0x33800000, 0x33000000]
    else:  # float16 / bfloat16
        vals = [0, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE12, 0x7D00, 0x7DFF, 1, 0x03FF,
                0x0200, 0x7BFF, 0xFBFF, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC1, 0x7FA0, 0x0080,
                0x007F, 0x7F7F, 0x3C01, 0x3F81, 0x0001, 0x8001]
    return vals


def float_source(name, fmt, size, rng):
    vals = specials(name)
    mask = (1 << (8 * size)) - 1
    while len(vals) < COUNT:
        vals.append(rng.getrandbits(8 * size) & mask)
    return b"".join(struct.pack(fmt, v & mask) for v in vals[:COUNT])


def tensor_of(raw, dtype):
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)


def raw_of(t):
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def main():
    rng = random.Random(20260413)
    lines = []
    sources = {name: float_source(name, fmt, size, rng) for name, _, fmt, size in FLOATS}
    for from_name, from_dtype, _, _ in FLOATS:
        for to_name, to_dtype, _, _ in FLOATS:
            src = sources[from_name]
            out = raw_of(tensor_of(src, from_dtype).to(to_dtype))
            lines.append((from_name, to_name, COUNT, src, out))
    every_byte = bytes(range(256))
    for name, dtype in FP8:
        out = raw_of(tensor_of(every_byte, dtype).to(torch.float32))
        lines.append((name, "float32", 256, every_byte, out))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        for from_name, to_name, count, src, out in lines:
            f.write(f"{from_name}\t{to_name}\t{count}\t{src.hex()}\t{out.hex()}\n")
    print(f"wrote {len(lines)} conversions to {OUT}")


if __name__ == "__main__":
    main()
