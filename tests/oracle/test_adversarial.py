"""Adversarial-but-valid checkpoints (see adversarial.py) against torch: the rule is "match torch
or refuse". A case passes when

- torch loads it (`torch.load(weights_only=True)`; for TorchScript `torch.jit.load(...)
  .state_dict()`) and `mmckpt ls --json --hash` reports exactly what torch returned, or refuses
  it: exits 1 (not a crash or panic) with a message; or
- torch refuses it and mmckpt refuses it too.

A file that both load but read differently fails, and so does one that torch refuses and mmckpt
reads (its reading is a third answer). One distinction: torch's weights-only unpickler refuses
any global off its allowlist, and mmckpt's strict open is that mode (`--strict`), so such a file
must be refused by `ls --strict`; a plain open keeps foreign globals as opaque values by design
(LIMITS.md, "The allowlist is a boundary") and is not compared with a refusal. Nothing here is
expected to fail: a failure is a defect."""
import random
import warnings

import pytest
import torch

from adversarial import make_case
from compare import check_tensor_list, check_tensors, check_values
from conftest import run_ls_status

# The exit status of a refusal with a message (`mmckpt` exits 1 on every error it reports; a
# panic is 101, a signal is negative).
REFUSED = 1


def torch_reading(kind, path):
    """(result, None) or (None, why torch refused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if kind == "torchscript":
                return torch.jit.load(path).state_dict(), None
            return torch.load(path, weights_only=True), None
        except Exception as e:  # noqa: BLE001 (any refusal by torch is an answer)
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")),
                       lines[0] if lines else "")
            return None, f"{type(e).__name__}: {why[:300]}"


def test_adversarial_checkpoint(adversarial_index, request, tmp_path, mmckpt_bin):
    seed = request.config.oracle_seed * 1_000_003 + 500_000_000 + adversarial_index
    rng = random.Random(seed)
    path = str(tmp_path / "adversarial.pt")
    kind, what = make_case(rng, path)
    label = f"seed {request.config.oracle_seed} adversarial {adversarial_index}: {what}"
    loaded, torch_refusal = torch_reading(kind, path)
    where = f"{label} (file kept at {path})"
    if torch_refusal is not None and "Unsupported global" in torch_refusal:
        status, _, err = run_ls_status(mmckpt_bin, path, "--strict")
        assert status == REFUSED and err, \
            f"{where}: torch refuses a global ({torch_refusal}) but `ls --strict` exits " \
            f"{status}: {err!r}"
        return
    status, doc, err = run_ls_status(mmckpt_bin, path)
    if status != 0:
        assert status == REFUSED and err, \
            f"{where}: mmckpt exited {status} without a status message: {err!r}"
        return  # a refusal with a message: always acceptable
    if torch_refusal is not None:
        pytest.fail(f"{where}: torch refuses the file ({torch_refusal}) but mmckpt reads it")
    try:
        if kind == "torchscript":
            check_tensor_list(list(loaded.items()), doc["tensors"], detached=True)
        else:
            # A rebuild argument changed after the call: torch's reading follows unpickling
            # time, which mmckpt refuses to model (LIMITS.md, "Tensors as torch builds them").
            check_tensors(loaded, doc, refusals=("changed after torch read it",))
            check_values(loaded, doc)
    except AssertionError as e:
        raise AssertionError(f"{where}: {e}") from None
