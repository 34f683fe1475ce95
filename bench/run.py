"""mmckpt benchmarks (issue #6): mmckpt and the alternatives on the same files, in one run.

    python bench/run.py            # full sizes (inputs cached in ~/.cache/mmckpt/bench/full)
    python bench/run.py --tiny     # every scenario on tiny inputs, well under a minute

Writes its inputs with torch (once; reused), builds and runs the Rust side
(`cargo run --release -p mmckpt-cli --example bench`), runs torch's and safetensors' side here,
prints a table of medians and ratios against the issue's goals, and writes everything (every repetition) as
JSON (default bench/results.json, or --json PATH). Run with the venv's python
(`$(bash scripts/setup-venv.sh)/bin/python`). Benchmarks are not pass/fail: the table says
which goals are met (with --tiny it only shows that every scenario runs: no goal verdicts).
"""
import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen  # noqa: E402
import torch  # noqa: E402

GB = 1e9


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def timed(f, reps, setup=None):
    """Median-able list of wall times of f() (setup() before each, untimed)."""
    out = []
    for _ in range(reps):
        arg = setup() if setup else None
        gc.collect()
        t = time.perf_counter()
        r = f(arg) if setup else f()
        out.append(time.perf_counter() - t)
        del r
    return out


def rust(*args):
    exe = os.path.join(ROOT, "target", "release", "examples", "bench")
    out = subprocess.run([exe, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def cached_fraction(path):
    """Fraction of the file in the page cache, from fincore(1) when available."""
    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", path],
                             capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]) / max(1, int(out[1]))
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ----- torch's side ---------------------------------------------------------------------------

def torch_open(path, reps):
    return timed(lambda: torch.load(path, mmap=True, weights_only=True), reps)


def torch_recipe(path, make_module, reps):
    def best():
        sd = torch.load(path, mmap=True, weights_only=True)
        with torch.device("meta"):
            m = make_module()
        m.load_state_dict(sd, assign=True)
        return m

    def naive():
        sd = torch.load(path, weights_only=True)
        m = make_module()
        m.load_state_dict(sd)
        return m

    return {"best_s": timed(best, reps), "naive_s": timed(naive, reps)}


def torch_copy(path, to, reps):
    """torch's copy load: load_state_dict (param.copy_) from an mmap'ed state dict into
    preallocated parameters of the target dtype; fresh = allocate + copy (from a fresh
    mapping, as mmckpt's fresh figure), warm = copy again."""
    fresh, warm = [], []
    for _ in range(reps):
        sd = torch.load(path, mmap=True, weights_only=True)
        gc.collect()
        t = time.perf_counter()
        dst = {k: torch.empty(v.shape, dtype=to or v.dtype) for k, v in sd.items()}
        for k, v in sd.items():
            dst[k].copy_(v)
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        for k, v in sd.items():
            dst[k].copy_(v)
        warm.append(time.perf_counter() - t)
        del dst, sd
    return {"fresh_s": fresh, "warm_s": warm}


def st_python(path, reps):
    from safetensors.torch import load_file
    return timed(lambda: load_file(path), reps)


# ----- the run --------------------------------------------------------------------------------

def machine():
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "cpu": cpu, "free": mem.strip(), "kernel": platform.release(),
            "torch": torch.__version__, "python": platform.python_version()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny inputs (CI: checks that it runs)")
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/mmckpt/bench"))
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated scenarios (1-6) to run")
    a = ap.parse_args()
    tiny = a.tiny
    reps = a.reps or (3 if tiny else 7)
    slow_reps = 3  # torch paths that take seconds per repetition
    only = {int(x) for x in a.only.split(",") if x}
    run = lambda n: not only or n in only  # noqa: E731
    cache = os.path.join(a.cache, "tiny" if tiny else "full")
    torch.set_num_threads(os.cpu_count())

    print(f"inputs in {cache}", file=sys.stderr)
    paths = gen.ensure(cache, tiny, log=lambda m: print(m, file=sys.stderr))
    s = gen.sizes(tiny)
    print("building the Rust side (cargo build --release -p mmckpt-cli --example bench)", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "mmckpt-cli", "--example",
                    "bench"], cwd=ROOT, check=True)

    results = {"machine": machine(), "tiny": tiny, "reps": reps, "scenarios": {}}
    R = results["scenarios"]
    rows = []  # (scenario, case, mmckpt, alternative, ratio, goal, met)

    def row(scn, case, ours, theirs, ratio, goal, met):
        rows.append((scn, case, ours, theirs, ratio, goal,
                     "-" if met is None else ("met" if met else "NOT met")))

    def note(msg):
        # The machine may be shared: the 1-minute load average shows who else was running.
        load = os.getloadavg()[0]
        results.setdefault("loadavg", []).append([msg, load])
        print(f"{msg}  (load average {load:.2f})", file=sys.stderr)

    # 1. Open, many tensors.
    if run(1):
        for n in s["many"]:
            note(f"[1] open, {n} tensors")
            p = paths[f"many_{n}.pt"]
            # Opens take milliseconds: three times the repetitions steady the median on a
            # shared machine at little cost (torch's take seconds and keep `reps`).
            ours = rust("open", p, reps * 3)
            theirs = torch_open(p, slow_reps if n >= 100_000 else reps)
            R[f"1_open_{n}"] = {"mmckpt": ours, "torch_s": theirs}
            mo, mt = median(ours["open_s"]), median(theirs)
            row(1, f"open {n} tensors", f"{mo*1e3:.2f} ms", f"{mt*1e3:.0f} ms (torch mmap)",
                f"{mt/mo:.0f}x", ">=100x", mt / mo >= 100)
            us = mo / n * 1e6
            row(1, f"  per tensor ({n})", f"{us:.2f} us", "", "", "<1 us", us < 1)
            row(1, f"  close {n} tensors", f"{median(ours['drop_s'])*1e3:.2f} ms", "", "", "", None)

    # 2. Open, big tensors.
    if run(2):
        for gib in s["big_gib"]:
            label = f"{gib:g}g" if gib >= 1 else f"{int(gib * 1024)}m"
            note(f"[2] open, big tensors ({label})")
            p = paths[f"big_{label}.pt"]
            ours = rust("open", p, reps)
            theirs = torch_open(p, reps)
            R[f"2_open_big_{label}"] = {"mmckpt": ours, "torch_s": theirs}
            mo, mt = median(ours["open_s"]), median(theirs)
            delta = (ours["rss_after_open_kb"] - ours["rss_base_kb"]) / 1024
            row(2, f"open {ours['file_bytes']/2**30:.2f} GiB, {ours['tensors']} tensors",
                f"{mo*1e3:.3f} ms", f"{mt*1e3:.2f} ms (torch mmap)", f"{mt/mo:.0f}x",
                "size-independent", None)
            row(2, f"  RSS after open - baseline", f"{delta:.1f} MB",
                f"file pages mapped: {ours['file_rss_kb']/1024:.1f} MB", "", "few MB", delta < 8)
        keys = [k for k in R if k.startswith("2_open_big_")]
        if len(keys) == 2:
            # The bigger file also has 4x the records (tensors of the same size), and opening
            # reads each record's header: the time per record shows what the bytes cost.
            (a0, n0), (a1, n1) = ((median(R[k]["mmckpt"]["open_s"]), R[k]["mmckpt"]["tensors"])
                                  for k in keys)
            row(2, "  open time, 4x bigger file", f"{a1/a0:.2f}x",
                f"{n1/n0:.0f}x the records", "", "", None)
            per = (a1 / n1) / (a0 / n0)
            row(2, "  open time per record, 4x bigger file", f"{per:.2f}x", "", "", "~1x",
                per < 1.5)

    # 3. The recipe: meta module + assign load.
    if run(3):
        n, w = s["recipe_features"], s["wide"]
        cases = [(f"SomeModule({n})", paths[f"recipe_{n}.pt"], paths[f"recipe_{n}.spec.json"],
                  lambda: gen.SomeModule(n)),
                 (f"{w}-entry module", paths[f"wide_{w}.pt"], paths[f"wide_{w}.spec.json"],
                  lambda: gen.wide_module(w))]
        for name, p, spec, make in cases:
            note(f"[3] recipe, {name}")
            ours = rust("recipe", p, spec, reps)
            theirs = torch_recipe(p, make, slow_reps)
            R[f"3_recipe_{name}"] = {"mmckpt": ours, "torch": theirs}
            mo = median(ours["total_s"])
            best, naive = median(theirs["best_s"]), median(theirs["naive_s"])
            goal = name.startswith(f"{w}-")
            row(3, f"{name}: open+spec+assign", f"{mo*1e3:.2f} ms",
                f"{best*1e3:.0f} ms (torch meta+assign)", f"{best/mo:.0f}x",
                ">=50x" if goal else "", (best / mo >= 50) if goal else None)
            row(3, f"  vs torch naive (load+construct+copy)", "",
                f"{naive*1e3:.0f} ms", f"{naive/mo:.0f}x", "", None)
            parts = (f"open {median(ours['open_s'])*1e3:.2f} + spec {median(ours['spec_s'])*1e3:.2f}"
                     f" + assign {median(ours['assign_s'])*1e3:.2f} ms")
            row(3, f"  breakdown", parts, "", "", "", None)
            sa = median(ours["spec_s"]) + median(ours["assign_s"])
            row(3, f"  build meta module + assign (#2/#3)", f"{sa*1e3:.2f} ms", "", "",
                "<10 ms" if goal else "", (sa < 0.010) if goal else None)
            touched = ours["file_rss_after_assign_kb"] - ours["file_rss_after_open_kb"]
            row(3, f"  data pages touched by assign", f"{touched} KiB",
                f"major faults {ours['assign_major_faults']}", "", "0", touched == 0)

    # 4. Copy load and conversion (warm cache).
    if run(4):
        c = s["copy_bytes"]
        label = f"{c // 2**30}g" if c >= 2**30 else f"{c // 2**20}m"
        cases = [("copy float32", paths[f"f32_{label}.pt"], "same", None, 0.8),
                 ("float32->bfloat16", paths[f"f32_{label}.pt"], "bfloat16", torch.bfloat16, 0.6),
                 ("bfloat16->float32", paths[f"bf16_{label}.pt"], "float32", torch.float32, 0.6)]
        for name, p, to, tdt, goal in cases:
            note(f"[4] {name}")
            ours = rust("copy", p, to, reps)
            theirs = torch_copy(p, tdt, slow_reps)
            R[f"4_{name}"] = {"mmckpt": ours, "torch": theirs}
            traffic = ours["src_bytes"] + ours["dst_bytes"]  # bytes read + written
            mc_traffic = 2 * ours["src_bytes"]  # memcpy of the source bytes
            for kind in ("warm", "fresh"):
                t = median(ours[f"load_{kind}_s"])
                m = median(ours[f"memcpy_{kind}_s"])
                tt = median(theirs[f"{kind}_s"])
                ours_gbs, mc_gbs = traffic / t / GB, mc_traffic / m / GB
                ratio = ours_gbs / mc_gbs
                row(4, f"{name} ({kind} dst), {ours['src_bytes']/2**30:.2f} GiB in",
                    f"{ours_gbs:.1f} GB/s", f"memcpy {mc_gbs:.1f} GB/s; torch {traffic/tt/GB:.1f} GB/s",
                    f"{ratio*100:.0f}% of memcpy", f">={goal*100:.0f}%", ratio >= goal)

    # 5. Versus safetensors.
    if run(5):
        for base in (f"wide_{s['wide']}", f"recipe_{s['recipe_features']}"):
            note(f"[5] safetensors, {base}")
            st, pt, spec = (paths[f"{base}.safetensors"], paths[f"{base}.pt"],
                            paths[f"{base}.spec.json"])
            ours = rust("safetensors", st, pt, spec, reps)
            theirs = st_python(st, reps)
            R[f"5_safetensors_{base}"] = {"rust": ours, "python_load_file_s": theirs}
            mo = median(ours["mmckpt_open_s"])
            sd = median(ours["st_map_deserialize_s"])
            row(5, f"{base}: open ({ours['pt_tensors']} tensors)", f"{mo*1e3:.3f} ms",
                f"{sd*1e3:.3f} ms (crate map+deserialize)", f"{mo/sd:.2f}x of crate", "<=2x",
                mo / sd <= 2)
            ms = median(ours["mmckpt_open_safetensors_s"])
            n = ours["st_tensors"]
            row(5, f"  same .safetensors: mmckpt open", f"{ms*1e3:.3f} ms ({ms/n*1e6:.2f} us/tensor)",
                f"{sd*1e3:.3f} ms ({sd/n*1e6:.2f} us/tensor, crate)", f"{ms/sd:.2f}x of crate", "<=1x",
                ms <= sd)
            ma = median(ours["mmckpt_open_spec_assign_s"])
            py = median(theirs)
            row(5, f"  open+spec+assign", f"{ma*1e3:.3f} ms",
                f"{py*1e3:.2f} ms (safetensors.torch.load_file)", f"{py/ma:.0f}x faster", ">1x",
                py > ma)

    # 6. Cold cache.
    if run(6):
        c = s["copy_bytes"]
        label = f"{c // 2**30}g" if c >= 2**30 else f"{c // 2**20}m"
        p = paths[f"f32_{label}.pt"]
        note("[6] cold cache")
        modes = ["map", "sequential", "willneed", "populate", "read"]
        cold = {m: [] for m in modes}
        evicted = []
        for _ in range(5 if not tiny else 1):
            for m in modes:  # interleaved, so drift hits every mode alike
                gen.evict(p)
                evicted.append(cached_fraction(p))
                cold[m].append(rust("cold", p, m))
        R["6_cold"] = {"modes": cold, "cached_fraction_after_evict": evicted}
        base = None
        for m in modes:
            t = median([r["seconds"] for r in cold[m]])
            gbs = cold[m][0]["file_bytes"] / t / GB
            base = base or gbs
            row(6, f"cold read {cold[m][0]['file_bytes']/2**30:.2f} GiB, {m}",
                f"{gbs:.2f} GB/s", f"major faults {median([r['major_faults'] for r in cold[m]]):.0f}",
                f"{gbs/base:.2f}x of map", "", None)

    # The table. Tiny inputs only check that every scenario runs: their timings say nothing
    # about the goals, so no goal or verdict is printed (or recorded) for them.
    widths = [3, 44, 30, 52, 18, 16, 8]
    head = ("#", "case", "mmckpt (median)", "alternative (median)", "ratio", "goal", "")
    keys = ["scenario", "case", "mmckpt", "alternative", "ratio", "goal", "status"]
    if tiny:
        widths, head, keys = widths[:5], head[:5], keys[:5]
        rows = [r[:5] for r in rows]
    line = lambda cols: "  ".join(str(c).ljust(w) for c, w in zip(cols, widths)).rstrip()  # noqa
    print(line(head))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    results["table"] = [dict(zip(keys, r)) for r in rows]
    ran = len({r[0] for r in rows})
    expected = len(only) if only else 6
    if ran != expected:
        sys.exit(f"{ran} of {expected} scenarios ran")
    if tiny:
        print(f"\n{ran} scenarios ran, {len(rows)} rows (tiny inputs: no goal verdicts)")
    else:
        met = sum(r[6] == "met" for r in rows)
        judged = sum(r[6] != "-" for r in rows)
        print(f"\n{ran} scenarios ran; goals met in {met} of {judged} judged rows")
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nJSON: {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
