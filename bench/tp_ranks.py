"""Tensor-parallel copy loads, one process per rank: what each rank keeps resident and how much
of the file it reads, for N = 2 and 4 ranks, splitting every tensor on dim 0 (rows) or dim 1
(columns).

    cargo build --release
    ~/.cache/mmckpt/venv/bin/python bench/tp_ranks.py [--worlds 2 4] [--reps 1]

Inputs (written once by torch into ~/.cache/mmckpt/bench/, ~1 GiB each):
- tp_wide.pt: 16 float32 [4096, 4096] tensors (rows of 16 KiB: four pages);
- tp_narrow.pt: 16 float32 [262144, 64] tensors (rows of 256 bytes: 16 rows a page).

Each configuration (file, split dim, N) starts with the file dropped from the page cache
(posix_fadvise DONTNEED, bench/gen.py's evict), then runs the N ranks at once. Each rank is
a fresh Python process using only the mmckpt binding (no torch): it opens the file (mapped),
declares a module of the local shapes, materializes it and copy-loads its share with
`tensor_parallel=(rank, N, {"*": dim})`; then reports from /proc/self:
- RssAnon / RssFile / VmHWM (status): the module's memory, the file pages it has mapped, the
  peak of both;
- the file mapping's Rss (smaps): pages of the file this process touched (faults map a few
  neighbours already in the page cache too: the kernel's fault-around, 64 KiB);
- read_bytes (io): bytes this process caused to be read from the disk (its faults and their
  read-ahead);
- the pages the share lies in, from the tensors' file offsets: the fewest pages any reader of
  the share must touch.
After the N ranks, mincore over the file counts the pages the page cache holds: the pages
read in total, by all ranks together.
"""
import argparse
import ctypes
import json
import mmap
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser("~/.cache/mmckpt/bench")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20
INPUTS = {"tp_wide.pt": (16, (4096, 4096)), "tp_narrow.pt": (16, (262144, 64))}


def rank_main(path, rank, world, dim):
    import mmckpt

    with mmckpt.open(path) as ckpt:
        m = mmckpt.Module("Model")
        needed = 0
        for name in ckpt:
            t = ckpt[name]
            shape = list(t.shape)
            n = shape[dim]
            size = -(-n // world)
            start = rank * size
            shape[dim] = max(0, min(size, n - start))
            m.add(name, t.dtype, shape)
            needed += share_pages(t, dim, start, shape[dim])
        m.materialize()
        start = time.perf_counter()
        m.load(ckpt, assign=False, tensor_parallel=(rank, world, {"*": dim}))
        seconds = time.perf_counter() - start
        status = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    status[key] = int(value.split()[0]) * 1024
        mapped_rss = 0
        real = os.path.realpath(path)
        with open("/proc/self/smaps") as f:
            current = None
            for line in f:
                fields = line.split()
                if fields and "-" in fields[0] and len(fields) >= 5:
                    current = fields[5] if len(fields) >= 6 else None
                elif fields and fields[0] == "Rss:" and current == real:
                    mapped_rss += int(fields[1]) * 1024
        with open("/proc/self/io") as f:
            io = {k: int(v) for k, v in (line.split(": ") for line in f)}
        print(json.dumps(dict(status, mapped_rss=mapped_rss, read_bytes=io["read_bytes"],
                              needed_pages=needed,
                              seconds=seconds, loaded_bytes=sum(e.nbytes for e in m.entries()))))


def share_pages(t, dim, start, length):
    """Pages of the file the share of 2-d row-major `t` lies in: the fewest any reader must
    touch (one run of rows for dim 0; a run in every row for dim 1)."""
    import numpy as np

    rows, cols = t.shape
    item = t.nbytes // (rows * cols)
    base = t.file_offset
    if dim == 0:
        first, end = base + start * cols * item, base + (start + length) * cols * item
        return (end - 1) // PAGE - first // PAGE + 1 if end > first else 0
    row = base + np.arange(rows, dtype=np.int64) * cols * item + start * item
    first, last = row // PAGE, (row + length * item - 1) // PAGE
    # Runs ascend: consecutive runs share at most their boundary page.
    return int((last - first + 1).sum() - (first[1:] == last[:-1]).sum())


def write_inputs():
    import torch

    os.makedirs(CACHE, exist_ok=True)
    for name, (count, shape) in INPUTS.items():
        path = os.path.join(CACHE, name)
        if os.path.exists(path):
            continue
        print(f"writing {path}", file=sys.stderr)
        state = {f"layers.{i}.weight": torch.full(shape, float(i)) for i in range(count)}
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)


def cached_pages(path):
    """Pages of the file in the page cache (mincore over a fresh mapping: touches nothing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        pages = (size + PAGE - 1) // PAGE
        vec = ctypes.create_string_buffer(pages)
        if libc.mincore(addr, size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        libc.munmap(addr, size)
        return sum(b & 1 for b in vec.raw), pages
    finally:
        os.close(fd)


def spawn(path, world, dim, ranks):
    env = dict(os.environ, MMCKPT_LIBRARY=os.path.join(REPO, "target", "release", "libmmckpt.so"),
               PYTHONPATH=os.path.join(REPO, "python"))
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), "--world", str(world),
                               "--dim", str(dim), path], env=env, stdout=subprocess.PIPE)
             for r in ranks]
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a rank failed ({p.returncode})")
        out.append(json.loads(text))
    return out


def alone(path, world, dim):
    """Each rank by itself on a cold file: what it reads (its own faults' read-around only)."""
    from gen import evict  # here, not at the top: the rank processes run without torch

    ranks = []
    for r in range(world):
        evict(path)
        (x,) = spawn(path, world, dim, [r])
        x["cached"], _ = cached_pages(path)
        ranks.append(x)
    return ranks


def together(path, world, dim):
    """The N ranks at once on a cold file: the pages read by all of them together."""
    from gen import evict

    evict(path)
    ranks = spawn(path, world, dim, range(world))
    cached, _ = cached_pages(path)
    return sum(x["read_bytes"] for x in ranks), cached


def span(values, scale, size=None):
    lo, hi = min(values) / scale, max(values) / scale
    text = f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f}"
    if size:
        flo, fhi = min(values) / size, max(values) / size
        text += f" ({flo:.2f})" if f"{flo:.2f}" == f"{fhi:.2f}" else f" ({flo:.2f}–{fhi:.2f})"
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rank", type=int)
    ap.add_argument("--world", type=int)
    ap.add_argument("--dim", type=int)
    ap.add_argument("path", nargs="?")
    args = ap.parse_args()
    if args.rank is not None:
        return rank_main(args.path, args.rank, args.world, args.dim)
    write_inputs()
    print("Per rank, each rank alone on a cold file (MiB; fraction of the file):")
    print()
    print("| file | split | N | loaded | RssAnon | VmHWM | file pages mapped (smaps Rss) | "
          "read from disk (io read_bytes) | in the page cache after (mincore) | "
          "pages the share lies in | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    totals = []
    for name in INPUTS:
        path = os.path.join(CACHE, name)
        size = os.path.getsize(path)
        for dim in (0, 1):
            for world in args.worlds:
                ranks = alone(path, world, dim)
                col = lambda key, scale=MiB, of=None: span([x[key] for x in ranks], scale, of)
                print(f"| {name} | dim {dim} | {world} | {col('loaded_bytes')} | {col('RssAnon')} "
                      f"| {col('VmHWM')} | {col('mapped_rss', MiB, size)} "
                      f"| {col('read_bytes', MiB, size)} "
                      f"| {span([x['cached'] * PAGE for x in ranks], MiB, size)} "
                      f"| {span([x['needed_pages'] * PAGE for x in ranks], MiB, size)} "
                      f"| {span([x['seconds'] for x in ranks], 1e-3)} ms |")
                read, cached = together(path, world, dim)
                totals.append((name, dim, world, size, read, cached))
    print()
    print("All N ranks at once on a cold file:")
    print()
    print("| file | split | N | file | read from disk, sum over the ranks | "
          "in the page cache after (mincore) |")
    print("|---|---|---|---|---|---|")
    for name, dim, world, size, read, cached in totals:
        print(f"| {name} | dim {dim} | {world} | {size / MiB:.0f} MiB | {read / MiB:.0f} MiB "
              f"({read / size:.2f}) | {cached * PAGE / MiB:.0f} MiB ({cached * PAGE / size:.2f}) |")


if __name__ == "__main__":
    main()
