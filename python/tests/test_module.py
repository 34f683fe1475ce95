"""mmckpt.Module against torch: random module specs (the oracle's) built on torch.device('meta')
and by Module.from_spec, loaded from checkpoints with keys missing and extra: the entries, the
missing and unexpected keys, torch's messages (strict and not), and the values; callbacks,
entry exports and lifetimes, and errors."""
import collections
import gc
import json
import os
import random
import sys

import numpy as np
import pytest
import torch

import mmckpt
from conftest import FIXTURES, REPO, mapped_paths

sys.path.insert(0, os.path.join(REPO, "scripts"))
import make_fixtures  # noqa: E402  (the torch-side spec interpreter)
from test_modules import random_node, torch_entries  # noqa: E402  (tests/oracle)

CASES = int(os.environ.get("MMCKPT_PY_MODULE_CASES", "60"))


def random_case(rng, case, tmp_path):
    """A spec, its torch module (real memory, random values), and a checkpoint of its state
    dict with some keys dropped and some added."""
    spec = random_node(rng, 0)
    spec.setdefault("type", "Module")
    torch.manual_seed(case)
    model = make_fixtures.build(spec)
    spec["name"] = type(model).__name__  # torch's messages name the class
    state = model.state_dict()
    for key in list(state):
        if rng.random() < 0.2:
            del state[key]
    for i in range(rng.choice([0, 0, 1, 2])):
        state[f"extra{i}.weight"] = torch.randn(2)
    path = tmp_path / f"case{case}.pt"
    torch.save(state, path)
    return spec, model, path


def same_bits(a, b):
    """Equal dtype, shape and bytes (uninitialised buffers may hold NaNs)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.contiguous().reshape(-1).view(torch.uint8).tolist()
            == b.contiguous().reshape(-1).view(torch.uint8).tolist())


def torch_load_state_dict(spec, path, strict):
    """torch's recipe on a meta module: the result, or the error's text."""
    with torch.device("meta"):
        model = make_fixtures.build(spec)
    state = torch.load(path, mmap=True, weights_only=True)
    return model, model.load_state_dict(state, strict=strict, assign=True)


def test_random_specs_load_as_torch_does(request, tmp_path):
    seed = request.config.getoption("--oracle-seed", default=None)
    seed = int(seed) if seed not in (None, "") else 1234
    rng = random.Random(seed)
    for case in range(CASES):
        spec, model, path = random_case(rng, case, tmp_path)
        where = f"seed {seed}, case {case}: {json.dumps(spec)}"
        module = mmckpt.Module.from_spec(spec)
        got_entries = [{"name": e.name, "shape": list(e.shape), "dtype": e.dtype,
                        "kind": "buffer" if e.is_buffer else "parameter"} for e in
                       module.entries()]
        assert got_entries == torch_entries(spec), where
        assert all(e.data_ptr == 0 for e in module.entries()), where

        # strict=False: the report is torch's _IncompatibleKeys.
        meta, want = torch_load_state_dict(spec, path, strict=False)
        with mmckpt.open(path) as ckpt:
            got = module.load(ckpt, strict=False)
        assert got.missing_keys == want.missing_keys, where
        assert got.unexpected_keys == want.unexpected_keys, where
        assert got.message == repr(want), where
        assert got.copied == [], where

        # Loaded entries are the saved values, zero-copy views of the mapping.
        saved = torch.load(path, weights_only=True)
        for name, entry in module.items():
            if name in saved:
                value = torch.from_dlpack(entry)
                assert same_bits(value, saved[name]), f"{where}: {name}"
                assert entry.is_mapped, f"{where}: {name}"
                if saved[name].dtype != torch.bfloat16:  # numpy has no bfloat16
                    array = entry.numpy()
                    assert array.tobytes() == saved[name].numpy().tobytes(), f"{where}: {name}"

        # strict=True: the same error as torch, or the same success.
        fresh = mmckpt.Module.from_spec(spec)
        try:
            torch_load_state_dict(spec, path, strict=True)
            torch_error = None
        except RuntimeError as e:
            torch_error = str(e)
        with mmckpt.open(path) as ckpt:
            if torch_error is None:
                assert fresh.load(ckpt).message == "<All keys matched successfully>", where
            else:
                with pytest.raises(mmckpt.KeyMismatchError) as info:
                    fresh.load(ckpt)
                assert info.value.message == torch_error, where
                # A strict load that fails changes nothing.
                assert all(e.data_ptr == 0 for e in fresh.entries()), where


def test_from_checkpoint_mirrors_the_table():
    with mmckpt.open(os.path.join(FIXTURES, "recipe.pt")) as ckpt:
        module = mmckpt.Module.from_checkpoint(ckpt)
        assert list(module) == list(ckpt)
        for name in ckpt:
            assert module[name].shape == ckpt[name].shape
            assert module[name].dtype == ckpt[name].dtype
        report = module.load(ckpt)
    assert report.missing_keys == [] and report.unexpected_keys == []
    state = torch.load(os.path.join(FIXTURES, "recipe.pt"), weights_only=True)
    for name, entry in module.items():
        assert torch.equal(torch.from_dlpack(entry), state[name])


def linear_checkpoint(tmp_path, name="lin.pt", prefix=""):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    path = tmp_path / name
    torch.save({prefix + k: v for k, v in lin.state_dict().items()}, path)
    return lin, path


LINEAR = {"name": "Linear", "type": "Linear", "in_features": 4, "out_features": 3}


def test_an_exception_in_on_tensor_stops_the_load_and_is_raised_as_it_was(tmp_path):
    _, path = linear_checkpoint(tmp_path)
    module = mmckpt.Module.from_spec(LINEAR)
    calls = []
    error = ValueError("stop here")

    def on_tensor(info):
        calls.append(info.name)
        raise error

    with mmckpt.open(path) as ckpt:
        with pytest.raises(ValueError) as info:
            module.load(ckpt, on_tensor=on_tensor)
    assert info.value is error
    assert len(calls) == 1


def test_on_tensor_sees_every_entry_and_false_stops(tmp_path):
    lin, path = linear_checkpoint(tmp_path)
    module = mmckpt.Module.from_spec(LINEAR)
    seen = []
    with mmckpt.open(path) as ckpt:
        module.load(ckpt, on_tensor=lambda t: seen.append((t.name, t.shape, t.dtype)))
        assert sorted(seen) == [("bias", (3,), "float32"), ("weight", (3, 4), "float32")]
        with pytest.raises(mmckpt.CallbackError) as info:
            mmckpt.Module.from_spec(LINEAR).load(ckpt, on_tensor=lambda t: False)
        assert info.value.status == 14


def test_prefix_dtype_and_contiguous(tmp_path):
    lin, path = linear_checkpoint(tmp_path, prefix="module.")
    as_saved = mmckpt.Module.from_spec({**LINEAR, "dtype": "float64"})
    module = mmckpt.Module.from_spec({**LINEAR, "dtype": "float64"})
    with mmckpt.open(path) as ckpt:
        # dtype=None: the checkpoint's dtypes, as torch's assign takes them.
        report = as_saved.load(ckpt, prefix="module", dtype=None)
        assert report.copied == [] and as_saved["weight"].dtype == "float32"
        assert as_saved["weight"].is_mapped
        report = module.load(ckpt, prefix="module", dtype="module")
    assert sorted(report.copied) == ["bias", "weight"]
    assert module["weight"].dtype == "float64" and not module["weight"].is_mapped
    assert torch.equal(torch.from_dlpack(module["weight"]), lin.weight.detach().double())
    with pytest.raises(mmckpt.InvalidArgumentError):
        module.load(mmckpt.open(path), dtype="float16")

    # A transposed checkpoint tensor is copied row-major with contiguous=True.
    with mmckpt.open(os.path.join(FIXTURES, "transposed.pt")) as ckpt:
        strided = [name for name in ckpt if not ckpt[name].is_contiguous]
        assert strided
        m = mmckpt.Module.from_checkpoint(ckpt)
        report = m.load(ckpt, contiguous=True)
        assert set(strided) <= set(report.copied)
        for name in strided:
            assert m[name].is_contiguous
            assert torch.equal(torch.from_dlpack(m[name]), torch.from_dlpack(ckpt[name]))


def test_copy_loads_into_materialized_memory_export_copies(tmp_path):
    lin, path = linear_checkpoint(tmp_path)
    module = mmckpt.Module.from_spec(LINEAR)
    with pytest.raises(mmckpt.StateError):
        module.load(mmckpt.open(path), assign=False)  # no memory to copy into
    module.materialize()
    with mmckpt.open(path) as ckpt:
        module.load(ckpt, assign=False)
    weight = module["weight"]
    assert not weight.is_mapped and weight.data_ptr != 0
    exported = torch.from_dlpack(weight)
    assert exported.data_ptr() != weight.data_ptr  # a copy: later loads cannot change it
    assert torch.equal(exported, lin.weight.detach())
    array = weight.numpy()
    assert array.flags.writeable and np.array_equal(array, lin.weight.detach().numpy())
    with pytest.raises(BufferError):
        weight.__dlpack__(max_version=(1, 0), copy=False)


def test_prefetched_and_direct_copy_loads_give_the_same_bytes(tmp_path):
    state = collections.OrderedDict()
    torch.manual_seed(3)
    for i in range(4):
        state[f"w{i}"] = torch.randn(257, 129)  # 129 KiB: read directly, at odd offsets
    state["small"] = torch.randn(5)  # below 64 KiB: copied as usual
    path = tmp_path / "direct.pt"
    torch.save(state, path)
    spec = {
        "name": "M",
        "entries": [{"name": k, "shape": list(v.shape)} for k, v in state.items()],
    }
    with mmckpt.open(path) as ckpt:
        for options in ({}, {"prefetch": True}, {"direct_reads": True},
                        {"prefetch": True, "direct_reads": True}):
            module = mmckpt.Module.from_spec(json.dumps(spec))
            module.materialize()
            module.load(ckpt, assign=False, **options)
            for name, want in state.items():
                got = torch.from_dlpack(module[name])
                assert torch.equal(got, want), (options, name)


def test_assigned_entries_are_zero_copy_and_outlive_module_and_checkpoint(tmp_path):
    lin, path = linear_checkpoint(tmp_path)
    module = mmckpt.Module.from_spec(LINEAR)
    ckpt = mmckpt.open(path)
    module.load(ckpt)
    entry = module["weight"]
    assert ckpt["weight"].data_ptr == entry.data_ptr
    tensor = torch.from_dlpack(entry)
    array = entry.numpy()
    assert tensor.data_ptr() == entry.data_ptr == array.ctypes.data
    assert not array.flags.writeable
    ckpt.close()
    module.free()
    del entry
    gc.collect()
    assert str(path) in mapped_paths()
    assert torch.equal(tensor, lin.weight.detach())
    assert np.array_equal(array, lin.weight.detach().numpy())
    del tensor, array
    gc.collect()
    assert str(path) not in mapped_paths()


def test_entries_taken_before_a_new_load_are_stale(tmp_path):
    _, path = linear_checkpoint(tmp_path)
    module = mmckpt.Module.from_spec(LINEAR)
    with mmckpt.open(path) as ckpt:
        module.load(ckpt)
        old = module["weight"]
        module.load(ckpt)
    with pytest.raises(mmckpt.StateError):
        torch.from_dlpack(old)
    torch.from_dlpack(module["weight"])


def test_add_and_errors(tmp_path):
    module = mmckpt.Module("Net")
    module.add("fc.weight", "float32", [3, 4])
    module.add("fc.bias", "float32", [3])
    module.add("stats", "float32", [3], buffer=True)
    module.add("cache", "float32", [3], persistent=False)
    assert list(module) == ["fc.weight", "fc.bias", "stats", "cache"]
    assert module["stats"].is_buffer and not module["fc.weight"].is_buffer
    with pytest.raises(mmckpt.InvalidArgumentError):
        module.add("fc.bias", "float32", [3])  # a duplicate
    with pytest.raises(mmckpt.InvalidArgumentError):
        module.add("x", "float33", [3])
    with pytest.raises(mmckpt.NotFoundError):
        module["nope"]
    with pytest.raises(mmckpt.StateError):
        torch.from_dlpack(module["fc.weight"])  # meta: no data

    _, path = linear_checkpoint(tmp_path)
    with mmckpt.open(path) as ckpt:
        with pytest.raises(mmckpt.KeyMismatchError) as info:
            module.load(ckpt)
    assert info.value.message.startswith("Error(s) in loading state_dict for Net:")

    with pytest.raises(mmckpt.InvalidArgumentError):
        mmckpt.Module.from_spec('{"type": "NoSuchLayer"}')
    with pytest.raises(TypeError):
        mmckpt.Module.from_spec(42)
    module.free()
    with pytest.raises(mmckpt.StateError):
        len(module)


def test_bind_caller_memory_then_copy_load_into_it(tmp_path):
    """bind: copy loads write into the caller's numpy array / torch tensor / bytearray; the
    module keeps them alive; too small, read-only and non-contiguous buffers are refused with
    the module unchanged."""
    lin, path = linear_checkpoint(tmp_path)
    module = mmckpt.Module.from_spec(LINEAR)
    weight = np.zeros(tuple(lin.weight.shape), dtype=np.float32)
    bias = torch.zeros(lin.bias.shape)
    with pytest.raises(mmckpt.BufferTooSmallError):
        module.bind("weight", np.zeros(weight.size - 1, dtype=np.float32))
    assert module["weight"].data_ptr == 0  # unchanged: still meta
    with pytest.raises(mmckpt.InvalidArgumentError):
        module.bind("weight", bytes(weight.nbytes))  # read-only
    with pytest.raises(mmckpt.InvalidArgumentError):
        module.bind("weight", np.zeros((weight.shape[1], weight.shape[0]), np.float32).T)
    with pytest.raises(mmckpt.NotFoundError):
        module.bind("nope", bytearray(64))
    module.bind("weight", weight)
    module.bind("bias", bias)
    assert module["weight"].data_ptr == weight.ctypes.data
    assert module["bias"].data_ptr == bias.data_ptr()
    with mmckpt.open(path) as ckpt:
        report = module.load(ckpt, assign=False)
    assert not report.missing_keys and not report.unexpected_keys
    assert np.array_equal(weight, lin.weight.detach().numpy())
    assert torch.equal(bias, lin.bias.detach())
    # The module holds the memory: dropping the caller's reference and loading again is safe.
    raw = bytearray(weight.nbytes)
    module.bind("weight", raw)
    del raw
    gc.collect()
    with mmckpt.open(path) as ckpt:
        module.load(ckpt, assign=False)
    assert torch.equal(torch.from_dlpack(module["weight"]), lin.weight.detach())
