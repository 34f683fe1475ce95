"""Copy loads against the machine's limits, in one run (issue #17).

    ~/.cache/mmckpt/venv/bin/python bench/copy_limits.py [--reps 5] [--rounds 3] [--json OUT]
    ~/.cache/mmckpt/venv/bin/python bench/copy_limits.py --tiny      # 16 MiB inputs, seconds

Measures, on the same 2 GiB checkpoint of eight float32 tensors (written by bench/gen.py into
~/.cache/mmckpt/bench/full, with the same tensors as .safetensors):
- the limits, natively (cli/examples/copy_limits.rs, one process per configuration): memcpy of
  the file's size from a fresh mapping of it on 1..nproc threads into fresh 4 KiB-page memory,
  fresh MADV_HUGEPAGE 2 MiB-aligned memory and warm (already written) memory;
- torch.load(path, weights_only=True) (reads the whole file into fresh memory) and safetensors'
  load_file of the .safetensors twin, each rep in one Python process;
- mmckpt's copy load (materialize + load into fresh memory, then a second load into the same
  memory) and the float32->bfloat16 conversion load;
- cold file (evicted with posix_fadvise(DONTNEED) before every pass, modes interleaved over
  --rounds): the device's sequential throughput (8 MiB preads, buffered and O_DIRECT, 1 and
  nproc threads; and O_DIRECT into fresh memory of the file's size, which adds the page faults
  every load into new memory pays; and that fresh memory populated alone, no I/O), mmckpt's copy load (without and with a prefetch plan, and with direct
  reads: O_DIRECT into the module's memory), the mapped tensors
  summed (alone, and inside a prefetch plan), and the open with the CRC-32 check of every record;
- the 10,000-entry recipe (open + spec + assign) and the open at 100,000 tensors
  (cli/examples/bench.rs).
Then prints a table: each mmckpt figure (median, best) beside its baseline and the ratio.
Every repetition, with the /proc/vmstat counters that moved during it, goes to --json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen  # noqa: E402

EXAMPLES = os.path.join(ROOT, "target", "release", "examples")


def inputs(tiny):
    """The inputs this benchmark reads, written (as bench/gen.py writes them) where missing;
    not gen.ensure, which writes the whole set of bench/run.py (16 GB)."""
    import torch
    cache = os.path.expanduser(f"~/.cache/mmckpt/bench/{'tiny' if tiny else 'full'}")
    os.makedirs(cache, exist_ok=True)
    s = gen.sizes(tiny)
    size = s["copy_bytes"]
    label = f"{size // gen.GiB}g" if size >= gen.GiB else f"{size // gen.MiB}m"
    many, wide = max(s["many"]), s["wide"]
    p = dict(pt=f"f32_{label}.pt", st=f"f32_{label}.safetensors", many=f"many_{many}.pt",
             wide=f"wide_{wide}.pt", wide_spec=f"wide_{wide}.spec.json")
    p = {k: os.path.join(cache, v) for k, v in p.items()}
    makers = [
        (p["pt"], lambda f: gen._save(gen.random_tensors(size, torch.float32), f)),
        # The same tensors (same generator and seed) as .safetensors.
        (p["st"], lambda f: gen._save_st(gen.random_tensors(size, torch.float32), f)),
        (p["many"], lambda f: gen._save(gen.many(many), f)),
        (p["wide"], lambda f: gen._save(gen.wide_module(wide).state_dict(), f)),
        (p["wide_spec"], lambda f: gen._write_text(f, json.dumps(gen.wide_spec(wide)))),
    ]
    for path, make in makers:
        if not os.path.exists(path):
            print(f"  writing {path}", file=sys.stderr)
            make(path)
    return p


def run_json(args):
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def native(*args):
    return run_json([os.path.join(EXAMPLES, "copy_limits"), *map(str, args)])


def bench(*args):
    return run_json([os.path.join(EXAMPLES, "bench"), *map(str, args)])


PY_LOAD = r"""
import json, sys, time
kind, path, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "torch":
    import torch
    load = lambda: torch.load(path, weights_only=True)
elif kind == "safetensors":
    from safetensors.torch import load_file
    load = lambda: load_file(path)
else:
    # load_file's tensors may still be backed by the file (it maps it): cloned, each is read
    # once into fresh memory, as a full load is.
    from safetensors.torch import load_file
    load = lambda: {k: v.clone() for k, v in load_file(path).items()}
times = []
for _ in range(reps):
    t = time.perf_counter(); sd = load(); times.append(time.perf_counter() - t)
    nbytes = sum(v.numel() * v.element_size() for v in sd.values())
    del sd
print(json.dumps({"kind": kind, "seconds": times, "bytes": nbytes}))
"""


def python_load(kind, path, reps):
    return run_json([sys.executable, "-c", PY_LOAD, kind, path, str(reps)])


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "mmckpt-cli",
                    "--example", "copy_limits", "--example", "bench"], check=True, cwd=ROOT)
    p = inputs(a.tiny)
    nproc = os.cpu_count()
    res = {"nproc": nproc, "reps": a.reps, "rounds": a.rounds, "loadavg": [os.getloadavg()[0]]}
    log = lambda m: print(m, file=sys.stderr, flush=True)

    # Warm: the file in the page cache first.
    with open(p["pt"], "rb") as f:
        while f.read(64 << 20):
            pass
    log("warm: memcpy grid")
    res["memcpy"] = [native("memcpy", p["pt"], dst, t, a.reps)
                     for dst in ("fresh4k", "freshthp", "warm") for t in range(1, nproc + 1)]
    log("warm: mmckpt copy and conversion loads")
    res["load_same"] = native("load", p["pt"], "same", a.reps)
    res["load_bf16"] = native("load", p["pt"], "bfloat16", a.reps)
    log("warm: torch.load, safetensors load_file")
    res["torch"] = python_load("torch", p["pt"], a.reps)
    with open(p["st"], "rb") as f:
        while f.read(64 << 20):
            pass
    res["safetensors"] = python_load("safetensors", p["st"], a.reps)
    res["safetensors_clone"] = python_load("safetensors-clone", p["st"], a.reps)
    res["loadavg"].append(os.getloadavg()[0])

    # Before the cold passes: each evicts the 2 GiB file and fills 2 GiB of new memory, after
    # which the first allocations of any process are slow for a while (the kernel, and in a
    # virtual machine its host, find fresh pages again), which is not what an open measures.
    log("recipe and open")
    reps_small = max(a.reps, 21)
    res["recipe"] = bench("recipe", p["wide"], p["wide_spec"], reps_small)
    res["open"] = bench("open", p["many"], reps_small)
    res["loadavg"].append(os.getloadavg()[0])

    log("cold: device throughput and mmckpt passes, interleaved")
    modes = [("pread", 1), ("direct", 1), ("direct", nproc), ("pread", nproc),
             ("direct-fresh", nproc), ("populate", 1),
             ("load", 1), ("load-prefetch", 1), ("load-direct", 1), ("mapsum", 1),
             ("mapsum-prefetch", 1),
             ("verify", 1)]
    res["cold"] = []
    for _ in range(a.rounds):
        for mode, threads in modes:
            gen.evict(p["pt"])
            res["cold"].append(native("cold", p["pt"], mode, threads))
    res["loadavg"].append(os.getloadavg()[0])


    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print_table(res)


def print_table(res):
    GB = 1e9
    rows = []

    def row(case, ours, base, ratio, goal, met):
        rows.append((case, ours, base, ratio, goal, met))

    def mb(xs):  # "median (best)" of seconds, in ms
        return f"{med(xs) * 1e3:.0f} ms (best {min(xs) * 1e3:.0f})"

    memcpy = {(m["dst"], m["threads"]): m for m in res["memcpy"]}
    nbytes = res["memcpy"][0]["bytes"]
    for (dst, threads), m in sorted(memcpy.items()):
        s = m["seconds"]
        row(f"memcpy {nbytes / 2**30:.2f} GiB -> {dst}, {threads} thread(s)",
            "", f"{mb(s)}, {nbytes / med(s) / GB:.1f} GB/s; first {s[0] * 1e3:.0f} ms", "", "", "")

    def best_of(prefixes):
        # The memcpy configuration with the lowest median: the limit.
        cands = [m for (d, _), m in memcpy.items() if d in prefixes]
        return min(cands, key=lambda m: med(m["seconds"]))

    fresh = best_of(("fresh4k", "freshthp"))
    warm = best_of(("warm",))
    fresh_label = f"memcpy {fresh['dst']}, {fresh['threads']}t"
    same, bf16 = res["load_same"], res["load_bf16"]
    torch_s, st_s = res["torch"]["seconds"], res["safetensors"]["seconds"]
    f = same["fresh_s"]
    row(f"copy load f32 {nbytes / 2**30:.2f} GiB, fresh memory", mb(f), f"torch.load full {mb(torch_s)}",
        f"{med(torch_s) / med(f):.1f}x faster (best {min(torch_s) / min(f):.1f}x)", ">=4x",
        "met" if med(torch_s) / med(f) >= 4 else "not met")
    row("", "", f"{fresh_label} {mb(fresh['seconds'])}",
        f"{med(fresh['seconds']) / med(f):.0%} of memcpy (best {min(fresh['seconds']) / min(f):.0%})",
        ">=80%", "met" if med(fresh["seconds"]) / med(f) >= 0.8 else "not met")
    row("", "", f"safetensors load_file {mb(st_s)}", "(maps the file)", "", "")
    stc = res["safetensors_clone"]["seconds"]
    row("", "", f"safetensors load_file + clone {mb(stc)}",
        f"{med(stc) / med(f):.1f}x faster", "", "")
    row("  first rep of the process", f"{f[0] * 1e3:.0f} ms",
        f"torch first {torch_s[0] * 1e3:.0f} ms; memcpy first {fresh['seconds'][0] * 1e3:.0f} ms",
        "", "", "")
    w = same["warm_s"]
    row("copy load f32, warm memory", mb(w), f"memcpy warm, {warm['threads']}t {mb(warm['seconds'])}",
        f"{med(warm['seconds']) / med(w):.0%} of memcpy", "", "")
    traffic = bf16["src_bytes"] + bf16["dst_bytes"]
    fb = bf16["fresh_s"]
    fresh_bw = 2 * fresh["bytes"] / med(fresh["seconds"])
    row("f32->bf16 load, fresh memory", f"{mb(fb)}, {traffic / med(fb) / GB:.1f} GB/s traffic",
        f"{fresh_label} {fresh_bw / GB:.1f} GB/s traffic",
        f"{traffic / med(fb) / fresh_bw:.0%} of memcpy", ">=70%",
        "met" if traffic / med(fb) / fresh_bw >= 0.7 else "not met")
    wb = bf16["warm_s"]
    warm_bw = 2 * warm["bytes"] / med(warm["seconds"])
    row("f32->bf16 load, warm memory", f"{traffic / med(wb) / GB:.1f} GB/s traffic",
        f"memcpy warm {warm_bw / GB:.1f} GB/s traffic", f"{traffic / med(wb) / warm_bw:.0%}",
        "", "")

    cold = {}
    for c in res["cold"]:
        cold.setdefault((c["mode"], c["threads"]), []).append(c)
    gbps = lambda cs: med([c["file_bytes"] / c["seconds"] / GB for c in cs])
    device = max((gbps(cs), f"{m} {t}t") for (m, t), cs in cold.items()
                 if m in ("pread", "direct") and all(c["bytes"] for c in cs))
    for (mode, threads), cs in cold.items():
        if mode in ("pread", "direct", "direct-fresh"):
            ok = all(c["bytes"] for c in cs)
            row(f"cold: {mode} 8 MiB, {threads} thread(s)", "",
                f"{gbps(cs):.2f} GB/s" if ok else "refused by the file system", "", "", "")
    populate = None
    if ("populate", 1) in cold:
        populate = gbps(cold[("populate", 1)])
        row("cold: populate fresh memory (no I/O)", "", f"{populate:.2f} GB/s", "", "", "")
    for mode, goal in (("load", ">=90%"), ("load-prefetch", ">=90%"), ("load-direct", ">=90%"),
                       ("mapsum", ">=90%"), ("mapsum-prefetch", ">=90%"), ("verify", "")):
        cs = cold[(mode, 1)]
        r = gbps(cs) / device[0]
        row(f"cold: {mode}", f"{gbps(cs):.2f} GB/s", f"device {device[0]:.2f} GB/s ({device[1]})",
            f"{r:.0%} of device", goal, ("met" if r >= 0.9 else "not met") if goal else "")
        if mode in ("load", "load-prefetch", "load-direct") and populate:
            # A copy load fills memory it has not touched: the device's bytes and the fresh
            # memory's faults, one after the other when nothing overlaps them.
            serial = 1 / (1 / device[0] + 1 / populate)
            row("", "", f"device + fresh memory in series {serial:.2f} GB/s",
                f"{gbps(cs) / serial:.0%} of that", "", "")
        if mode in ("mapsum", "mapsum-prefetch", "verify") and ("pread", 1) in cold:
            # Mapped reads go through the page cache, as buffered reads do.
            buffered = gbps(cold[("pread", 1)])
            row("", "", f"page cache (pread 8 MiB, 1t) {buffered:.2f} GB/s",
                f"{gbps(cs) / buffered:.0%} of that", "", "")

    rec = res["recipe"]
    tot = rec["total_s"]
    row(f"recipe {rec['entries']} entries: open+spec+assign", "",
        f"open {med(rec['open_s']) * 1e3:.2f} + spec {med(rec['spec_s']) * 1e3:.2f} + assign "
        f"{med(rec['assign_s']) * 1e3:.2f} ms", "", "<=5 ms",
        "met" if med(tot) <= 5e-3 else "not met")
    rows[-1] = (rows[-1][0], f"{med(tot) * 1e3:.2f} ms (best {min(tot) * 1e3:.2f})", *rows[-1][2:])
    op = res["open"]
    per = [s / op["tensors"] * 1e6 for s in op["open_s"]]
    row(f"open {op['tensors']} tensors, per tensor", f"{med(per):.2f} us (best {min(per):.2f})",
        f"{med(op['open_s']) * 1e3:.1f} ms per open", "", "<0.5 us",
        "met" if med(per) < 0.5 else "not met")

    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    head = ("case", "mmckpt: median (best)", "baseline", "ratio", "goal", "")
    widths = [max(w, len(h)) for w, h in zip(widths, head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(f"nproc {res['nproc']}, reps {res['reps']}, cold rounds {res['rounds']}, "
          f"load average {', '.join(f'{x:.1f}' for x in res['loadavg'])}")
    print(fmt.format(*head).rstrip())
    print(fmt.format(*("-" * w for w in widths)).rstrip())
    for r in rows:
        print(fmt.format(*r).rstrip())


if __name__ == "__main__":
    main()
