"""Meta modules: random specs of docs/module-spec.md, built by torch under torch.device('meta') and by
mmckpt (`mmckpt_module_from_spec` through ctypes); the entries — names, order, shapes, dtypes,
parameter or buffer — must be equal, and mmckpt's entries must have no data."""
import ctypes
import json
import os
import random
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import make_fixtures  # noqa: E402  (the torch-side spec interpreter)

SPEC_CASES = int(os.environ.get("MMCKPT_ORACLE_SPECS", "200"))
DTYPES = ["float32", "float32", "float64", "bfloat16", "float16"]


class Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_uint32), ("ndim", ctypes.c_uint32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("storage_offset", ctypes.c_int64), ("numel", ctypes.c_uint64),
                ("data", ctypes.c_void_p), ("nbytes", ctypes.c_uint64),
                ("storage_id", ctypes.c_uint64), ("file_offset", ctypes.c_uint64),
                ("flags", ctypes.c_uint32)]


TENSOR_BUFFER = 1 << 6


@pytest.fixture(scope="session")
def lib():
    path = os.environ.get("MMCKPT_LIB", os.path.join(REPO, "target", "release", "libmmckpt.so"))
    if not os.path.exists(path):
        pytest.fail(f"{path} does not exist: run `cargo build --release` first (or set MMCKPT_LIB)")
    lib = ctypes.CDLL(path)
    lib.mmckpt_module_from_spec.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
    lib.mmckpt_module_count.argtypes = [ctypes.c_void_p]
    lib.mmckpt_module_count.restype = ctypes.c_size_t
    lib.mmckpt_module_at.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(Tensor)]
    lib.mmckpt_module_free.argtypes = [ctypes.c_void_p]
    lib.mmckpt_last_error.restype = ctypes.c_char_p
    lib.mmckpt_dtype_name.argtypes = [ctypes.c_uint32]
    lib.mmckpt_dtype_name.restype = ctypes.c_char_p
    return lib


def mmckpt_entries(lib, spec_text):
    handle = ctypes.c_void_p()
    data = spec_text.encode()
    status = lib.mmckpt_module_from_spec(data, len(data), ctypes.byref(handle))
    assert status == 0, lib.mmckpt_last_error().decode()
    try:
        out = []
        for i in range(lib.mmckpt_module_count(handle)):
            t = Tensor()
            assert lib.mmckpt_module_at(handle, i, ctypes.byref(t)) == 0
            assert t.data is None and t.storage_id == 0, "a meta module has no data"
            out.append({"name": t.name.decode(), "shape": [t.shape[d] for d in range(t.ndim)],
                        "dtype": lib.mmckpt_dtype_name(t.dtype).decode(),
                        "kind": "buffer" if t.flags & TENSOR_BUFFER else "parameter"})
        return out
    finally:
        lib.mmckpt_module_free(handle)


def kernel(rng, dims):
    if rng.random() < 0.5:
        return rng.randint(1, 3)
    return [rng.randint(1, 3) for _ in range(dims)]


def random_stateless_layer(rng):
    """A layer without state, with the arguments torch's derivation built it with."""
    kind = rng.choice(sorted(make_fixtures.STATELESS_LAYERS))
    return {"type": kind, **make_fixtures.STATELESS_LAYERS[kind]}


def random_layer(rng):
    if rng.random() < 0.3:
        return random_stateless_layer(rng)
    kind = rng.choice(list(make_fixtures.LAYERS))
    node = {"type": kind}
    if kind == "Linear":
        node.update(in_features=rng.randint(1, 9), out_features=rng.randint(1, 9))
    elif kind.startswith("Conv"):
        groups = rng.choice([1, 1, 2, 3])
        node.update(in_channels=groups * rng.randint(1, 3), out_channels=groups * rng.randint(1, 3),
                    kernel_size=kernel(rng, int(kind[-2])))
        if groups > 1 or rng.random() < 0.3:
            node["groups"] = groups
    elif kind == "Embedding":
        node.update(num_embeddings=rng.randint(1, 20), embedding_dim=rng.randint(1, 8))
    elif kind in ("LayerNorm", "RMSNorm"):
        node["normalized_shape"] = (rng.randint(1, 6) if rng.random() < 0.5
                                    else [rng.randint(1, 4) for _ in range(rng.randint(1, 3))])
        if rng.random() < 0.3:
            node["elementwise_affine"] = False
    elif kind == "GroupNorm":
        g = rng.randint(1, 4)
        node.update(num_groups=g, num_channels=g * rng.randint(1, 3))
        if rng.random() < 0.3:
            node["affine"] = False
    elif kind.startswith("BatchNorm"):
        node["num_features"] = rng.randint(1, 8)
        if rng.random() < 0.3:
            node["affine"] = False
        if rng.random() < 0.3:
            node["track_running_stats"] = False
    elif kind == "MultiheadAttention":
        heads = rng.randint(1, 3)
        node.update(embed_dim=heads * rng.randint(1, 4), num_heads=heads)
    elif kind == "PReLU":
        if rng.random() < 0.5:
            node["num_parameters"] = rng.randint(1, 6)
    _, optional, _ = make_fixtures.LAYERS[kind]
    for flag in ("bias",):
        if flag in optional and rng.random() < 0.3:
            node[flag] = False
    return node


def random_node(rng, depth):
    if depth > 2 or rng.random() < 0.45:
        node = random_layer(rng)
    else:
        kind = rng.choice(["Module", "ModuleList", "ModuleList", "Sequential", "ModuleDict"])
        node = {"type": kind}
        if kind == "Module":
            node["children"] = {f"c{i}": random_node(rng, depth + 1) for i in range(rng.randint(0, 3))}
            if rng.random() < 0.4:
                node["params"] = {f"p{i}": {"shape": [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]}
                                  for i in range(rng.randint(1, 2))}
            if rng.random() < 0.4:
                node["buffers"] = {f"b{i}": {"shape": [rng.randint(1, 4)], "persistent": rng.random() < 0.7}
                                   for i in range(rng.randint(1, 2))}
        elif kind == "ModuleDict":
            node["children"] = {f"k{i}": random_node(rng, depth + 1) for i in range(rng.randint(1, 3))}
        elif rng.random() < 0.5:
            node.update(repeat=rng.randint(1, 3), item=random_node(rng, depth + 1))
        else:
            node["items"] = [random_node(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.2:
        node["dtype"] = rng.choice(DTYPES)
    return node


def torch_entries(spec):
    """Every parameter and buffer (non-persistent ones too), in state_dict order."""
    import torch
    with torch.device("meta"):
        root = make_fixtures.build(spec)

    def walk(m, prefix):
        for name, p in m._parameters.items():
            if p is not None:
                yield {"name": prefix + name, "shape": list(p.shape),
                       "dtype": make_fixtures.dtype_name(p.dtype), "kind": "parameter"}
        for name, b in m._buffers.items():
            if b is not None:
                yield {"name": prefix + name, "shape": list(b.shape),
                       "dtype": make_fixtures.dtype_name(b.dtype), "kind": "buffer"}
        for name, child in m._modules.items():
            if child is not None:
                yield from walk(child, prefix + name + ".")

    return list(walk(root, ""))


def test_random_specs_match_torch_meta_modules(request, lib):
    seed = request.config.oracle_seed
    rng = random.Random(seed)
    for case in range(SPEC_CASES):
        spec = random_node(rng, 0)
        spec.setdefault("type", "Module")
        spec["name"] = f"Case{case}"
        text = json.dumps(spec)
        assert mmckpt_entries(lib, text) == torch_entries(spec), f"seed {seed}, spec case {case}: {text}"


def test_stateless_layers_are_torchs():
    """src/module/stateless_layers.json (which the Rust table is checked against) is what
    scripts/stateless_layers.py derives from this torch."""
    import subprocess
    script = os.path.join(REPO, "scripts", "stateless_layers.py")
    done = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout


def test_committed_spec_cases(lib):
    """The committed spec-fidelity cases (tests/fixtures/specs.json) through the C ABI too."""
    with open(os.path.join(REPO, "tests", "fixtures", "specs.json")) as f:
        cases = json.load(f)
    checked = 0
    for case in cases:
        if "expected" not in case:
            continue
        assert mmckpt_entries(lib, case["spec_text"]) == torch_entries(case["spec"]), case["name"]
        checked += 1
    assert checked >= 40
