"""In one Python process: mmckpt.torch.load against torch.load(mmap=True, weights_only=True) on
state dicts of 10,000 and 100,000 tensors, and the recipe (mmckpt.torch.load_into against
torch's mmap + meta + assign) on SomeModule(1000) and a 10,000-entry module. Times are end to
end in Python, torch tensors included; each is the best of --repeat runs (the page cache is
warm for both: the files are read once before timing).

    python bench/python_load.py [--repeat 5] [--dir /tmp/mmckpt-pybench] [--json out.json]
                                [--dtype bfloat16]

Needs the package installed (pip install ./python) and torch.
"""
import argparse
import collections
import gc
import json
import os
import sys
import time

import torch

import mmckpt
import mmckpt.torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen import SomeModule, wide_module  # noqa: E402


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


def state_dict_file(directory, count, dtype="float32"):
    suffix = "" if dtype == "float32" else f"_{dtype}"
    path = os.path.join(directory, f"py_state_{count}{suffix}.pt")
    if not os.path.exists(path):
        g = torch.Generator().manual_seed(count)
        sd = collections.OrderedDict(
            (f"layers.{i}.weight", torch.randn(8, 4, generator=g).to(getattr(torch, dtype)))
            for i in range(count))
        torch.save(sd, path)
    return path


def module_file(directory, name, make):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        torch.save(make().state_dict(), path)
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/tmp/mmckpt-pybench")
    parser.add_argument("--json")
    parser.add_argument("--tiny", action="store_true", help="small sizes: checks that it runs")
    parser.add_argument("--dtype", default="float32",
                        help="the state dicts' dtype (bfloat16: one numpy lacks, the other path)")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    counts = [100, 1000] if args.tiny else [10_000, 100_000]
    rows = []

    def report(name, t_mmckpt, t_torch):
        rows.append({"scenario": name, "mmckpt_s": t_mmckpt, "torch_s": t_torch,
                     "speedup": t_torch / t_mmckpt})
        print(f"{name:<44} mmckpt {t_mmckpt * 1e3:9.2f} ms   torch {t_torch * 1e3:9.2f} ms   "
              f"{t_torch / t_mmckpt:6.1f}x", flush=True)

    for count in counts:
        path = state_dict_file(args.dir, count, args.dtype)
        open(path, "rb").read()
        ours = mmckpt.torch.load(path)
        theirs = torch.load(path, mmap=True, weights_only=True)
        assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
        del ours, theirs
        report(f"load, {count} tensors" + ("" if args.dtype == "float32" else f" {args.dtype}"),
               best(lambda: mmckpt.torch.load(path), args.repeat),
               best(lambda: torch.load(path, mmap=True, weights_only=True), args.repeat))

    n = 100 if args.tiny else 1000
    entries = 1000 if args.tiny else 10_000
    recipes = [
        (f"load_into, SomeModule({n})", module_file(args.dir, f"py_recipe_{n}.pt",
                                                     lambda: SomeModule(n)), lambda: SomeModule(n)),
        (f"load_into, {entries}-entry module",
         module_file(args.dir, f"py_wide_{entries}.pt", lambda: wide_module(entries)),
         lambda: wide_module(entries)),
    ]
    for name, path, make in recipes:
        open(path, "rb").read()

        def with_mmckpt():
            with torch.device("meta"):
                model = make()
            mmckpt.torch.load_into(model, path)
            return model

        def with_torch():
            with torch.device("meta"):
                model = make()
            model.load_state_dict(torch.load(path, mmap=True, weights_only=True), assign=True)
            return model

        a, b = with_mmckpt(), with_torch()
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                      b.state_dict().values()))
        report(name, best(with_mmckpt, args.repeat), best(with_torch, args.repeat))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mmckpt": mmckpt.__version__, "torch": torch.__version__, "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
