"""A/B of two builds of mmckpt's bench example on the same inputs, interleaved in one run.

    python bench/ab.py --a OLD/examples/bench --b NEW/examples/bench [--rounds 5]

Runs mmckpt's own scenarios (1 open, 3 recipe, 4 copy, 5 open beside the safetensors crate) with
each executable in turn, round after round, so that drift on a shared machine hits both alike,
and prints each measure's median for A and B and the ratio B/A (below 1: B is faster). Inputs
are `bench/gen.py`'s full-size files (written once into the cache; the 2 and 8 GiB files of
scenario 2 are not needed here). Used to show that a refactor made nothing slower.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen  # noqa: E402


def inputs(cache):
    """Writes the inputs these scenarios need (once) and returns their paths."""
    s = gen.sizes(False)
    os.makedirs(cache, exist_ok=True)
    paths = {}

    def want(name, make):
        path = os.path.join(cache, name)
        paths[name] = path
        if not os.path.exists(path):
            print(f"  writing {path}", file=sys.stderr)
            make(path)

    for n in s["many"]:
        want(f"many_{n}.pt", lambda p, n=n: gen._save(gen.many(n), p))
    n, w = s["recipe_features"], s["wide"]
    want(f"recipe_{n}.pt", lambda p: gen._save(gen.SomeModule(n).state_dict(), p))
    want(f"recipe_{n}.spec.json", lambda p: gen._write_text(p, json.dumps(gen.recipe_spec(n))))
    want(f"wide_{w}.pt", lambda p: gen._save(gen.wide_module(w).state_dict(), p))
    want(f"wide_{w}.spec.json", lambda p: gen._write_text(p, json.dumps(gen.wide_spec(w))))
    want(f"wide_{w}.safetensors", lambda p: gen._save_st(gen.wide_module(w).state_dict(), p))
    c = 256 * gen.MiB  # large enough for the copy path's threads, small enough to repeat
    want("f32_256m.pt", lambda p: gen._save(gen.random_tensors(c, gen.torch.float32), p))
    return s, paths


def cases(s, paths):
    """(label, arguments of the bench example, the JSON keys whose medians are compared)."""
    n, w = s["recipe_features"], s["wide"]
    out = []
    for m in s["many"]:
        out.append((f"open {m} tensors", ["open", paths[f"many_{m}.pt"], 21], ["open_s"]))
    for name in (f"recipe_{n}", f"wide_{w}"):
        out.append((f"recipe {name}", ["recipe", paths[f"{name}.pt"],
                                       paths[f"{name}.spec.json"], 7],
                    ["open_s", "spec_s", "assign_s", "total_s"]))
    out.append(("copy f32 256 MiB", ["copy", paths["f32_256m.pt"], "same", 5],
                ["load_warm_s", "load_fresh_s"]))
    out.append(("convert f32->bf16 256 MiB", ["copy", paths["f32_256m.pt"], "bfloat16", 5],
                ["load_warm_s", "load_fresh_s"]))
    out.append((f"safetensors wide_{w}", ["safetensors", paths[f"wide_{w}.safetensors"],
                                          paths[f"wide_{w}.pt"], paths[f"wide_{w}.spec.json"], 7],
                ["mmckpt_open_s", "mmckpt_open_spec_assign_s"]))
    return out


def run(exe, args):
    out = subprocess.run([exe, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--a", required=True, help="the baseline bench executable")
    ap.add_argument("--b", required=True, help="the candidate bench executable")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/mmckpt/bench/full"))
    ap.add_argument("--json", default=None, help="write every repetition here")
    a = ap.parse_args()
    s, paths = inputs(a.cache)
    samples = {}  # (case, key, side) -> [seconds]
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
        for label, args, keys in cases(s, paths):
            # Alternate which side goes first, so neither always runs on a warmer machine.
            order = [("A", a.a), ("B", a.b)] if r % 2 == 0 else [("B", a.b), ("A", a.a)]
            for side, exe in order:
                out = run(exe, args)
                for k in keys:
                    samples.setdefault((label, k, side), []).extend(out[k])
    print(f"{'case':34} {'measure':28} {'A median':>12} {'B median':>12} {'B/A':>6}")
    table = []
    for label, _, keys in cases(s, paths):
        for k in keys:
            ma = statistics.median(samples[(label, k, "A")])
            mb = statistics.median(samples[(label, k, "B")])
            table.append({"case": label, "measure": k, "a_s": ma, "b_s": mb, "ratio": mb / ma})
            print(f"{label:34} {k:28} {ma*1e3:10.3f}ms {mb*1e3:10.3f}ms {mb/ma:6.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"a": a.a, "b": a.b, "rounds": a.rounds, "table": table,
                       "samples": {"|".join(k): v for k, v in samples.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
