"""mmckpt.torch.load against torch.load: keys, dtypes, shapes, strides, values bit for bit,
parameters, and storage sharing, on every fixture and on the oracle's random checkpoints."""
import collections
import gc
import hashlib
import os
import random
import shutil

import pytest
import torch

import mmckpt
import mmckpt.torch
from compare import raw_bytes, walk
from conftest import FIXTURES, mapped_paths
from gen import make_case
import torch.utils.serialization  # noqa: F401  (its config)


def save(case, path):
    """Writes an oracle case as tests/oracle/test_oracle.py does."""
    if case["format"] == "legacy":
        torch.save(case["obj"], path, pickle_protocol=case["protocol"],
                   _use_new_zipfile_serialization=False)
        return
    config = torch.utils.serialization.config.save
    old, config.storage_alignment = config.storage_alignment, case["alignment"]
    try:
        torch.save(case["obj"], path, pickle_protocol=case["protocol"])
    finally:
        config.storage_alignment = old

STATE_DICTS = [
    "forms.pt", "proto4.pt", "align4096.pt", "legacy.pt", "legacy_proto4.pt",
    "dtypes.pt", "transposed.pt", "recipe.pt", "bigendian.pt", "location.pt",
]


def torch_load(path):
    """torch's own answer: mmap + weights_only where torch accepts it, else a plain load."""
    try:
        return torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except Exception:
        return torch.load(path, weights_only=False, map_location="cpu")


def check_same(got, want, where):
    assert list(got) == list(want), where
    want_groups, got_groups = {}, {}
    for name, w in want.items():
        g = got[name]
        label = f"{where}: {name}"
        assert type(g) is type(w), label
        assert g.dtype == w.dtype, label
        assert g.shape == w.shape, label
        assert g.stride() == w.stride(), label
        assert g.storage_offset() == w.storage_offset(), label
        assert g.untyped_storage().nbytes() == w.untyped_storage().nbytes(), label
        assert g._base is None and g._base is w._base, label
        assert g.requires_grad == w.requires_grad, label
        assert g.is_conj() == w.is_conj() and g.is_neg() == w.is_neg(), label
        # torch's element types' alignment (complex128: 16); an 8-aligned complex128 crashes
        # torch's vectorised copy.
        assert g.data_ptr() % min(g.element_size(), 16) == 0, label
        assert raw_bytes(g) == raw_bytes(w), label
        want_groups.setdefault(w.untyped_storage().data_ptr(), set()).add(name)
        got_groups.setdefault(g.untyped_storage().data_ptr(), set()).add(name)
    # Aliasing: the same partition of names into storages.
    assert sorted(map(sorted, want_groups.values())) == sorted(map(sorted, got_groups.values())), where


@pytest.mark.parametrize("name", STATE_DICTS)
def test_fixture_state_dicts(name):
    path = os.path.join(FIXTURES, name)
    check_same(mmckpt.torch.load(path), torch_load(path), name)


# Every other file torch.load reads (TorchScript archives need torch.jit.load; exotic.pt holds
# tensors mmckpt refuses, tested in test_errors.py): all their tensors, by dotted name.
OTHER_FILES = ["nested.pt", "legacy_odd.pt", "shards/pytorch_model-00001-of-00002.bin",
               "shards/pytorch_model-00002-of-00002.bin"]


@pytest.mark.parametrize("name", STATE_DICTS + OTHER_FILES)
def test_fixture_tensors(name):
    path = os.path.join(FIXTURES, name)
    want = collections.OrderedDict()
    for leaf_name, leaf in walk(torch.load(path, weights_only=False, map_location="cpu")):
        if isinstance(leaf, torch.Tensor):
            want.setdefault(leaf_name, leaf)
    check_same(mmckpt.torch.tensors(path), want, name)


def test_legacy_odd_is_not_a_state_dict():
    with pytest.raises(mmckpt.UnsupportedError, match="not a flat state dict"):
        mmckpt.torch.load(os.path.join(FIXTURES, "legacy_odd.pt"))


def test_nested_checkpoint_is_refused_or_taken_by_root():
    path = os.path.join(FIXTURES, "nested.pt")
    with pytest.raises(mmckpt.UnsupportedError, match="root="):
        mmckpt.torch.load(path)
    want = torch.load(path, weights_only=False, map_location="cpu")
    check_same(mmckpt.torch.load(path, root="model"), want["model"], "nested.pt model")
    flat = collections.OrderedDict()
    for name, leaf in walk(want):
        if isinstance(leaf, torch.Tensor):
            flat.setdefault(name, leaf)
    check_same(mmckpt.torch.tensors(path), flat, "nested.pt tensors")


@pytest.mark.parametrize("case_index", range(int(os.environ.get("MMCKPT_PY_ORACLE_CASES", 60))))
def test_random_checkpoints(case_index, tmp_path):
    rng = random.Random(20260501 * 1_000_003 + case_index)
    case = make_case(rng, large_ok=False)
    path = str(tmp_path / "case.pt")
    save(case, path)
    want = collections.OrderedDict()
    for name, leaf in walk(torch.load(path, weights_only=False, map_location="cpu")):
        if isinstance(leaf, torch.Tensor):
            want.setdefault(name, leaf)
    check_same(mmckpt.torch.tensors(path), want, f"case {case_index} ({case['format']})")


def test_writes_are_private_as_torchs(tmp_path):
    path = str(tmp_path / "w.pt")
    shutil.copyfile(os.path.join(FIXTURES, "proto4.pt"), path)
    before = hashlib.sha256(open(path, "rb").read()).hexdigest()
    state = mmckpt.torch.load(path)
    name = next(iter(state))
    original = state[name].clone()
    state[name].add_(1)  # no fault: the mapping is copy-on-write
    assert torch.equal(state[name], original + 1)
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == before
    assert torch.equal(mmckpt.torch.load(path)[name], original)


def test_mapping_lives_until_the_last_tensor(tmp_path):
    path = str(tmp_path / "life.pt")
    shutil.copyfile(os.path.join(FIXTURES, "forms.pt"), path)
    state = mmckpt.torch.load(path)
    keep = state["transpose"]
    del state
    gc.collect()
    assert path in mapped_paths()
    assert keep.sum().item() == keep.sum().item()  # readable
    del keep
    gc.collect()
    assert path not in mapped_paths()


def test_load_into_meta_module():
    path = os.path.join(FIXTURES, "recipe.pt")
    state = torch.load(path, weights_only=True)
    with torch.device("meta"):
        module = torch.nn.Sequential(*[torch.nn.Linear(1000, 1000) for _ in range(10)])
    module.load_state_dict  # the keys of recipe.pt are SomeModule's: build the same names
    names = list(state)
    with torch.device("meta"):
        holder = torch.nn.Module()
        for key in names:
            parts = key.split(".")
            target = holder
            for part in parts[:-2]:
                if not hasattr(target, part):
                    target.add_module(part, torch.nn.Module())
                target = getattr(target, part)
            if not hasattr(target, parts[-2]):
                target.add_module(parts[-2], torch.nn.Linear(1000, 1000))
    result = mmckpt.torch.load_into(holder, path)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in holder.state_dict().items():
        assert value.device.type == "cpu"
        assert torch.equal(value, state[key]), key
    with pytest.raises(RuntimeError, match="Missing key"):
        with torch.device("meta"):
            other = torch.nn.Linear(3, 3)
        mmckpt.torch.load_into(other, path)


def test_plain_state_dicts_take_the_columnwise_path_and_match_torch(tmp_path):
    """A state dict of distinct, mapped, flag-free tensors is built without the per-row loop
    (mmckpt.torch._is_plain), through numpy when every tensor spans its whole storage; one that
    shares a storage or holds a Parameter is not. Every answer equals torch's, aliasing and
    storage lengths included."""
    from mmckpt._checkpoint import Checkpoint
    from mmckpt.torch import _ITEMSIZE_BY_CODE, _is_plain

    g = torch.Generator().manual_seed(7)
    plain = collections.OrderedDict(
        (f"layer{i}.{kind}", torch.randn(shape, generator=g).to(dtype))
        for i in range(40)
        for kind, shape, dtype in [("weight", (6, 5), torch.float32), ("bias", (6,), torch.bfloat16),
                                   ("scale", (), torch.float64), ("t", (5, 6), torch.float16)]
    )
    plain["layer0.t"] = plain["layer0.t"].t().contiguous().t()  # a transposed layout
    shared = collections.OrderedDict(plain)
    shared["alias"] = plain["layer3.weight"][1:]
    param = collections.OrderedDict(plain)
    param["p"] = torch.nn.Parameter(torch.ones(3))
    # numpy has every dtype: one numpy array per storage...
    native = collections.OrderedDict((k, v) for k, v in plain.items() if v.dtype != torch.bfloat16)
    # ...unless a tensor is a part of its own storage.
    partial = collections.OrderedDict(native)
    partial["part"] = torch.arange(10.0).as_strided((3,), (2,), 1)
    cases = [("plain", plain, True, False), ("native", native, True, True),
             ("shared", shared, False, False), ("param", param, False, False),
             ("partial", partial, True, False)]
    for label, obj, want_plain, want_numpy in cases:
        path = str(tmp_path / f"{label}.pt")
        torch.save(obj, path)
        with Checkpoint(path) as ckpt:
            table = ckpt._table()
            itemsizes = [_ITEMSIZE_BY_CODE[c] for c in table.dtype_code]
            assert _is_plain(table, itemsizes) is want_plain, label
            if want_plain:
                base = table.data[0] - table.file_offset[0]
                region = mmckpt.torch._storage_buffer(ckpt._live(), base, os.path.getsize(path))
                offsets = [f - o * i for f, o, i in
                           zip(table.file_offset, table.storage_offset, itemsizes)]
                whole = mmckpt.torch._whole_storage_tensors(table, region, offsets)
                assert (whole is not None) is want_numpy, label
        check_same(mmckpt.torch.load(path), torch_load(path), label)
