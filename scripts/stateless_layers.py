#!/usr/bin/env python3
"""Derives from torch itself the torch.nn layers a module spec accepts as stateless: the ones
that hold no parameter, no buffer (persistent or not) and no submodule in ANY configuration, so
that `{"type": "<name>", ...}` contributes nothing to a state dict (docs/module-spec.md).

Usage:  $(bash scripts/setup-venv.sh)/bin/python scripts/stateless_layers.py [--check]

Writes src/module/stateless_layers.json: the torch version and, per layer, the constructor
arguments it was built with here (the oracle's random specs use them: tests/oracle). `--check`
compares instead and exits 1 on a difference. The Rust table (src/module/layers.rs) is checked
against the committed file by a unit test, so neither can drift silently.

A class of torch.nn.modules counts when all of these hold:
  * its source (every class of its MRO below nn.Module) never registers state: no
    `Parameter`, `register_buffer`, `register_parameter`, `add_module`, `register_module`,
    no lazy initialisation — this excludes what is stateless only in some configurations
    (BatchNorm/InstanceNorm with affine=False and no running stats, losses whose `weight`
    becomes a buffer, FractionalMaxPool with `_random_samples`);
  * no constructor argument is typed as a callable or a module (it could be stored as a
    submodule: TripletMarginWithDistanceLoss's distance_function, Transformer's activation);
  * built with its required arguments, it has no parameters, buffers, children or state dict.
The containers (Module, Sequential, ModuleList, ModuleDict, ...) are the spec's own types.
"""
import argparse
import inspect
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.modules as modules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "src", "module", "stateless_layers.json")

# Values for required constructor arguments, by name (any valid value: state never depends on
# them, which the source check above guarantees).
ARGUMENTS = {
    "kernel_size": 2,
    "output_size": 1,
    "padding": 1,
    "value": 0.0,
    "groups": 1,
    "size": 2,
    "norm_type": 2.0,
    "upscale_factor": 2,
    "downscale_factor": 2,
    "threshold": 0.5,
    "dim": 1,
    "unflattened_size": [2, 2],
    # AdaptiveLogSoftmaxWithLoss: built to be seen holding its Linear layers.
    "in_features": 4,
    "n_classes": 4,
    "cutoffs": [2],
}
STATE_TOKENS = ("Parameter", "register_buffer", "register_parameter", "add_module",
                "register_module", "Lazy")


def class_source(cls):
    parts = []
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        parts.append(inspect.getsource(klass))
    return "\n".join(parts)


def may_hold_state(cls):
    if any(token in class_source(cls) for token in STATE_TOKENS):
        return True
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return any("Callable" in str(p.annotation) or "Module" in str(p.annotation) for p in params)


def required_arguments(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def derive():
    layers = {}
    for name in sorted(modules.__all__):
        cls = getattr(modules, name)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or cls is nn.Module:
            continue
        if may_hold_state(cls):
            continue
        missing = [a for a in required_arguments(cls) if a not in ARGUMENTS]
        if missing:
            sys.exit(f"{name}: no value for required argument(s) {missing}: extend ARGUMENTS")
        args = {a: ARGUMENTS[a] for a in required_arguments(cls)}
        module = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
        state = (list(module.parameters()), list(module.buffers()), list(module.children()),
                 module.state_dict())
        if any(state):
            continue  # state made by code the source check does not see (Transformer's layers)
        layers[name] = args
    return {"torch": torch.__version__.split("+")[0], "layers": layers}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed file")
    text = json.dumps(derive(), indent=1) + "\n"
    if ap.parse_args().check:
        with open(OUT) as f:
            if f.read() != text:
                sys.exit(f"{OUT} differs from what torch {torch.__version__} derives: rerun "
                         "scripts/stateless_layers.py and update src/module/layers.rs")
        print(f"{OUT}: up to date")
        return
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
