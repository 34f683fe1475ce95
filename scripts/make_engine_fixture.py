#!/usr/bin/env python3
"""Writes the worked engine's fixture (examples/engine.cpp) with real PyTorch.

Usage:  $(bash scripts/setup-venv.sh)/bin/python scripts/make_engine_fixture.py [OUT_DIR]

OUT_DIR defaults to <repo>/tests/fixtures/engine. It receives

  net.pt         the state dict of `Net` (a small conv net with an MLP head), as users save it;
                 some weights are stored as torch leaves them after common manipulations:
                 features.4.weight channels_last, classifier.1.weight a transposed view
                 (strides (1, 16)), classifier.3.weight in float16
  net.spec.json  the module spec (docs/module-spec.md) mirroring Net
  reference.pt   {"input": x, "features": Net.features(x) flattened, "output": Net(x)}
                 computed by torch in float32, eval mode

Deterministic (fixed seed); torch.save of the same tensors gives byte-identical files.
"""
import json
import os
import sys

import torch
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


# The spec mirrors __init__ line for line: stateless layers (ReLU, MaxPool2d, Flatten) add no
# entries, so the Sequential keeps torch's numbering; padding and the like are ignored.
SPEC = {"name": "Net", "type": "Module", "children": {
    "features": {"type": "Sequential", "items": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d", "num_features": 4},
        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}]},
    "classifier": {"type": "Sequential", "items": [
        {"type": "Flatten"}, {"type": "Linear", "in_features": 32, "out_features": 16},
        {"type": "ReLU"}, {"type": "Linear", "in_features": 16, "out_features": 10}]}}}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "fixtures", "engine")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(12)
    net = Net()
    bn = net.features[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(7)
        conv2 = net.features[4]
        conv2.weight = nn.Parameter(conv2.weight.contiguous(memory_format=torch.channels_last))
        fc1 = net.classifier[1]
        fc1.weight = nn.Parameter(fc1.weight.t().contiguous().t())
        fc2 = net.classifier[3]
        # Saved as float16: the float32 network computes with the float16-rounded values.
        fc2.weight.copy_(fc2.weight.half().float())
    net.eval()

    sd = net.state_dict()
    assert sd["features.4.weight"].stride() == (36, 1, 12, 4)
    assert sd["classifier.1.weight"].stride() == (1, 16)
    sd["classifier.3.weight"] = sd["classifier.3.weight"].half()
    torch.save(sd, os.path.join(out, "net.pt"))

    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        features = net.features(x).flatten(1)
        output = net(x)
    torch.save({"input": x, "features": features, "output": output},
               os.path.join(out, "reference.pt"))
    with open(os.path.join(out, "net.spec.json"), "w") as f:
        json.dump(SPEC, f, indent=1)
        f.write("\n")

    # The spec mirrors the state dict exactly (names, shapes).
    with torch.device("meta"):
        meta = Net()
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in sd.items()}


if __name__ == "__main__":
    main()
