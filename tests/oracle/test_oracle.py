"""The oracle: random checkpoints written by real torch, read back by torch.load and by mmckpt
(`mmckpt ls --json --hash`); every tensor's dtype, shape, strides, storage offset, element bytes,
parameter flags and storage sharing, and every non-tensor value, must agree."""
import os
import random

import pytest
import torch
import torch.utils.serialization  # noqa: F401  (torch.utils.serialization.config)

from compare import check_tensors, check_values
from conftest import run_ls
from gen import make_case

ser_config = torch.utils.serialization.config


def save(case, path):
    obj = case["obj"]
    if case["format"] == "legacy":
        torch.save(obj, path, pickle_protocol=case["protocol"],
                   _use_new_zipfile_serialization=False)
        return
    old = ser_config.save.storage_alignment
    ser_config.save.storage_alignment = case["alignment"]
    try:
        torch.save(obj, path, pickle_protocol=case["protocol"])
    finally:
        ser_config.save.storage_alignment = old


def test_random_checkpoint(case_index, request, tmp_path, mmckpt_bin, legacy_support):
    seed = request.config.oracle_seed * 1_000_003 + case_index
    rng = random.Random(seed)
    case = make_case(rng)
    label = (f"seed {request.config.oracle_seed} case {case_index}: {case['format']}, "
             f"protocol {case['protocol']}, alignment {case['alignment']}")
    if case["format"] == "legacy" and legacy_support is not None:
        if os.environ.get("MMCKPT_ORACLE_REQUIRE_LEGACY") == "1":
            pytest.fail(f"{label}: {legacy_support}")
        pytest.skip(legacy_support)
    path = str(tmp_path / "ckpt.pt")
    save(case, path)
    loaded = torch.load(path, weights_only=False)
    doc, err = run_ls(mmckpt_bin, path)
    assert doc is not None, f"{label}: mmckpt ls failed: {err}"
    assert doc["format"] == case["format"], label
    try:
        check_tensors(loaded, doc)
        check_values(loaded, doc)
    except AssertionError as e:
        raise AssertionError(f"{label} (file kept at {path}): {e}") from None


def test_fixtures_agree_with_the_manifest_values(mmckpt_bin):
    """The committed nested.pt's values, as torch recorded them."""
    import json
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fixtures = os.path.join(repo, "tests", "fixtures")
    with open(os.path.join(fixtures, "manifest.json")) as f:
        manifest = json.load(f)
    doc, err = run_ls(mmckpt_bin, os.path.join(fixtures, "nested.pt"))
    assert doc is not None, err
    for want in manifest["nested.pt"]["values"]:
        assert want in doc["values"], want
