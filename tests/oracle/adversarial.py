"""Adversarial-but-valid checkpoints (issue 11, class A): files that torch loads, but whose
meaning depends on a torch rule a reader can miss. Each case is a random combination of:

- dict keys that Python treats as one (1 / 1.0 / True / 1+0j, 0 / -0.0 / False, equal tuples,
  2**64 and its float, NaN twice as two objects or one memoized object), float keys that need
  Python's repr (1e+16, 1e-05), big-int keys;
- state on rebuilt tensors: BUILD with a `set_` tuple (storage, offset, size, stride), with
  `(tensor,)` or `(storage,)`; BUILD on a Parameter (Tensor.__setstate__'s 3/4/5-tuples);
  `_rebuild_parameter_with_state` and `_rebuild_from_type_v2` with a state holding `data`;
- `conj` / `neg` metadata with odd values (False, None, 1.0, 0, "");
- typed (`FloatStorage`, ...) against untyped storages and `_rebuild_tensor_v2` against `_v3`,
  in archives whose byteorder is `big`, `little`, or spelled with whitespace or capitals;
- zip record names that collide case-insensitively (data.pkl / DATA.PKL, data/K / DATA/K, an
  upper-case archive folder) or exist only upper-case (BYTEORDER, DATA.PKL);
- legacy (non-zip) views whose view key is another storage's root key;
- TorchScript modules with tuple (and list) attributes holding tensors;
- a rebuild's argument (a size list, the metadata dict, a state dict) changed by APPEND /
  SETITEM after the call, or filled before it; `collections.Counter` and torch's Python 2
  renames (`UserDict.Counter`, `UserDict.OrderedDict`) holding tensors;
- one zip storage key behind storage classes of the same or another byte length, reached or
  not; legacy storage keys that are ints, beside strs or not.

`make_case(rng, path)` writes one case and returns its description; everything follows from the
rng, so a seed reproduces a file.
"""

from pickle_asm import (
    Build, Call, Dict, Global, Memo, Mutate, Storage, ordered_dict, assemble, tensor_v2,
    tensor_v3, write_legacy, write_zip,
)

# storage class -> (element size, dtype name); the element size is torch's byteswap unit.
STORAGES = {
    "FloatStorage": (4, "float32"),
    "DoubleStorage": (8, "float64"),
    "HalfStorage": (2, "float16"),
    "BFloat16Storage": (2, "bfloat16"),
    "LongStorage": (8, "int64"),
    "IntStorage": (4, "int32"),
    "ShortStorage": (2, "int16"),
    "ByteStorage": (1, "uint8"),
    "ComplexFloatStorage": (8, "complex64"),
    "ComplexDoubleStorage": (16, "complex128"),
}
V3_DTYPES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
             "int16": 2, "uint8": 1, "complex64": 8, "uint16": 2, "float8_e4m3fn": 1}
FLOAT_STORAGES = ["FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage"]


class Ctx:
    """Storages of one zip case: keys, classes and random bytes, in record order."""

    def __init__(self, rng):
        self.rng = rng
        self.records = []  # (key, bytes)
        self.n = 0

    def storage(self, cls=None, numel=None):
        rng = self.rng
        cls = cls or rng.choice(list(STORAGES))
        numel = numel if numel is not None else rng.randint(1, 24)
        elem = 1 if cls == "UntypedStorage" else STORAGES[cls][0]
        key = str(self.n)
        self.n += 1
        self.records.append((key, rng.randbytes(numel * elem)))
        # `torch.UntypedStorage` is a spelling torch's weights_only unpickler refuses (it allows
        # `torch.storage.UntypedStorage` only); a reader must refuse it too.
        module = "torch" if cls == "UntypedStorage" and rng.random() < 0.05 else None
        return Storage(cls, key, numel, module=module), numel, elem

    def tensor(self, cls=None, requires_grad=False, metadata=None, v3=None):
        """A random in-bounds view of a new storage, as _rebuild_tensor_v2 or v3."""
        rng = self.rng
        v3 = rng.random() < 0.3 if v3 is None else v3
        if v3:
            dtype = rng.choice(list(V3_DTYPES))
            size = V3_DTYPES[dtype]
            # untyped (torch's own v3), the matching typed class, or any typed class: the
            # byteswap unit follows the storage's class, not the tensor's dtype
            cls = cls or rng.choice(["UntypedStorage", "UntypedStorage", "matching", "any"])
            if cls == "matching":
                # dtypes newer than the typed storage classes have none: untyped, as torch
                cls = next((c for c, (e, d) in STORAGES.items() if d == dtype), "UntypedStorage")
            elif cls == "any":
                cls = rng.choice(list(STORAGES))
            elem = 1 if cls == "UntypedStorage" else STORAGES[cls][0]
            elems = rng.randint(1, 16)
            st, _, _ = self.storage(cls, -(-elems * size // elem))
            return tensor_v3(st, *self._view(elems), dtype, requires_grad, metadata)
        cls = cls or rng.choice(list(STORAGES))
        st, numel, _ = self.storage(cls)
        return tensor_v2(st, *self._view(numel), requires_grad, metadata)

    def _view(self, numel):
        rng = self.rng
        offset = rng.randint(0, numel - 1)
        left = numel - offset
        if left >= 4 and rng.random() < 0.4:
            rows = rng.randint(1, 2)
            cols = left // rows
            return offset, (rows, cols), (cols, 1)
        n = rng.randint(0, left)
        return offset, (n,), (1,)


# ---- entries ---------------------------------------------------------------------------------

def equal_key_dict(ctx):
    """A dict whose keys Python folds together (the later value wins, the first key stays)."""
    rng = ctx.rng
    groups = [
        [1, 1.0, True, complex(1, 0)],
        [0, -0.0, 0.0, False],
        [(1, 2), (1.0, 2), (True, 2.0)],
        [2**64, float(2**64)],
        [10**16, 1e16],
        [-2**80, float(-2**80)],
        ["w", "w"],
    ]
    chunks = []  # runs of pairs whose order is kept; the runs are shuffled
    for group in rng.sample(groups, rng.randint(1, 3)):
        keys = [group[0]] + rng.sample(group[1:], rng.randint(1, len(group) - 1))
        rng.shuffle(keys)
        if isinstance(keys[0], complex):  # a complex key's name is not agreed on: never first
            keys.append(keys.pop(0))
        chunks.append([(k, value(ctx)) for k in keys])
    # Spellings: Python's repr of floats, str of big ints; NaN as two objects or one memo.
    for k in rng.sample([1e16, 1e-05, 2.5, -0.0, 1e300, float("inf"), 2**70, -2**70, 10**40],
                        rng.randint(0, 3)):
        chunks.append([(k, value(ctx))])
    if rng.random() < 0.3:
        nan = Memo(float("nan")) if rng.random() < 0.5 else None
        chunks.append([(nan or float("nan"), value(ctx)), (nan or float("nan"), value(ctx))])
    rng.shuffle(chunks)
    pairs = [pair for chunk in chunks for pair in chunk]
    if any(isinstance(k, complex) for k, _ in pairs):
        # only after an equal int, so that the int's spelling names the entry
        first = next(i for i, (k, _) in enumerate(pairs) if k == 1 and not isinstance(k, complex))
        assert first < next(i for i, (k, _) in enumerate(pairs) if isinstance(k, complex))
    return Dict(pairs, ordered=rng.random() < 0.3)


def value(ctx):
    rng = ctx.rng
    r = rng.random()
    if r < 0.5:
        return ctx.tensor()
    return rng.choice([None, True, 7, -3, 2**65, 1.5, "s", (1, "t"), [2, 3]])


def state_tensor(ctx):
    """A tensor whose final data comes from state applied after its rebuild."""
    rng = ctx.rng
    kind = rng.choice(["set_tuple", "set_tensor", "set_storage", "param_setstate",
                       "param_with_state", "from_type_v2", "from_type_v2_param"])
    float_cls = rng.choice(FLOAT_STORAGES)
    base = ctx.tensor(float_cls, v3=False)
    if kind == "set_tuple":
        st, numel, _ = ctx.storage(rng.choice([float_cls, float_cls, None]))
        offset, size, stride = ctx._view(numel)
        return Build(base, (st, offset, size, stride))
    if kind == "set_tensor":
        return Build(base, (ctx.tensor(float_cls, v3=False),))
    if kind == "set_storage":
        st, _, _ = ctx.storage(float_cls)
        return Build(base, (st,))
    if kind == "param_setstate":
        param = Call("torch._utils", "_rebuild_parameter", base, rng.random() < 0.5,
                     ordered_dict())
        other = ctx.tensor(float_cls, v3=False)
        st, numel, _ = ctx.storage(float_cls)
        offset, size, stride = ctx._view(numel)
        state = rng.choice([
            (st, offset, size, stride),
            # Variable's 5-tuple: (data, _, hooks, requires_grad, _)
            (other, None, ordered_dict(), rng.random() < 0.5, None),
            (rng.random() < 0.5, None, ordered_dict()),
        ])
        return Build(param, state)
    data = ctx.tensor(float_cls, v3=False)
    state = rng.choice([
        Dict([("data", data)]),
        Dict([("requires_grad", rng.random() < 0.5)]),
        (None, Dict([("data", data)])),
        (Dict([("data", data)]), None),
        Dict([]),
        None,
    ])
    if kind == "param_with_state":
        return Call("torch._utils", "_rebuild_parameter_with_state", base, rng.random() < 0.5,
                    ordered_dict(), state)
    new_type = (Global("torch.nn.parameter", "Parameter") if kind == "from_type_v2_param"
                # torch allows `torch.Tensor` only: `torch._tensor.Tensor` must be refused
                else Global("torch._tensor", "Tensor") if rng.random() < 0.1
                else Global("torch", "Tensor"))
    rebuild = base
    return Call("torch._tensor", "_rebuild_from_type_v2", rebuild.func, new_type, rebuild.args,
                state)


def odd_metadata_tensor(ctx):
    rng = ctx.rng
    odd = rng.choice([True, False, None, 1.0, 0, 1, 0.0, "", "x", 2])
    key = rng.choice(["conj", "neg"])
    meta = Dict([(key, odd)] + ([("neg" if key == "conj" else "conj", rng.choice([True, 0]))]
                                if rng.random() < 0.3 else []),
                ordered=rng.random() < 0.3)
    # conj on a real tensor fails an internal assert in torch (a refusal); rarely
    cls = rng.choice(["ComplexFloatStorage", "ComplexDoubleStorage"] if key == "conj"
                     and rng.random() < 0.95
                     else ["FloatStorage", "DoubleStorage", "ComplexFloatStorage"])
    return ctx.tensor(cls, metadata=meta, v3=False)


def shared_tensor(ctx):
    """A plain tensor, typed or untyped, v2 or v3: what the byteorder twists act on."""
    return ctx.tensor()


def changed_argument(ctx):
    """A tensor whose rebuild argument is a memoized list or dict, changed (or not) after the
    call: {"t": tensor, "z": the container, fetched again and changed}."""
    rng = ctx.rng
    st, numel, _ = ctx.storage(rng.choice(FLOAT_STORAGES))
    kind = rng.choice(["size", "metadata", "state", "before"])
    hooks = ordered_dict()
    if kind in ("size", "before"):
        n = rng.randint(0, numel)
        size = Memo([n] if kind == "size" else [])
        args = (st, 0, size, (1,), False, hooks)
        change = Mutate(size, append=[rng.randint(0, 1)] if kind == "size" else [])
        if kind == "before":  # filled by APPEND before the call: the same reading
            size.node = [n]
        t = Call("torch._utils", "_rebuild_tensor_v2", *args)
        return Dict([("t", t), ("z", change)])
    if kind == "metadata":
        meta = Memo(Dict([]))
        t = Call("torch._utils", "_rebuild_tensor_v2", st, 0, (numel,), (1,), False, hooks, meta)
        return Dict([("t", t), ("z", Mutate(meta, setitems=[("neg", True)]))])
    state = Memo(Dict([]))
    base = Call("torch._utils", "_rebuild_tensor_v2", st, 0, (numel,), (1,), False, hooks)
    t = Call("torch._utils", "_rebuild_parameter_with_state", base, False, ordered_dict(),
             state)
    return Dict([("t", t), ("z", Mutate(state, setitems=[("requires_grad", True)]))])


def counter(ctx):
    """collections.Counter (or a Python 2 spelling torch renames) holding tensors."""
    rng = ctx.rng
    pairs = [(f"k{i}", value(ctx)) for i in range(rng.randint(0, 3))]
    module = rng.choice(["collections", "collections", "UserDict"])
    if rng.random() < 0.3:  # an OrderedDict, filled by SETITEMS
        return Dict(pairs, ordered=True) if module == "collections" else Mutate(
            Memo(Call("UserDict", "OrderedDict")), setitems=pairs)
    source = Memo(Dict(pairs))
    made = Call(module, "Counter", source)
    if rng.random() < 0.3:  # the dict changes after Counter copied it
        return Dict([("c", made), ("d", Mutate(source, setitems=[("late", value(ctx))]))])
    return made


def storage_class_mix(ctx):
    """Two references to one storage key through storage classes of the same or another
    byte length; the second one reached by the walk or not."""
    rng = ctx.rng
    cls_a, cls_b = rng.choice(list(STORAGES)), rng.choice(list(STORAGES))
    elem_a, elem_b = STORAGES[cls_a][0], STORAGES[cls_b][0]
    st_a, numel_a, _ = ctx.storage(cls_a, rng.randint(0, 4) * 16 // elem_a)
    nbytes = numel_a * elem_a
    numel_b = nbytes // elem_b if rng.random() < 0.7 else rng.randint(0, 8)
    st_b = Storage(cls_b, st_a.key, numel_b)
    a = tensor_v2(st_a, 0, (numel_a,), (1,))
    b = tensor_v2(st_b, 0, (min(numel_b, nbytes // elem_b),), (1,))
    if rng.random() < 0.3:
        # The second reference where no walk reaches it (an attribute torch sets on a
        # parameter): torch still loads it.
        return Call("torch._utils", "_rebuild_parameter_with_state", a, False, ordered_dict(),
                    Dict([("x", (st_b,))]))
    return Dict([("a", a), ("b", b)] if rng.random() < 0.5 else [("b", b), ("a", a)])


ENTRY_KINDS = {
    "equal_keys": equal_key_dict,
    "state": state_tensor,
    "metadata": odd_metadata_tensor,
    "plain": shared_tensor,
    "changed_argument": changed_argument,
    "counter": counter,
    "storage_class_mix": storage_class_mix,
}


# ---- archive twists --------------------------------------------------------------------------

def twist(rng, ctx, records):
    """Changes to the archive's records: (records, renames, description)."""
    kind = rng.choice(["none", "byteorder", "byteorder", "dup_pickle", "dup_data",
                       "only_upper_byteorder", "only_upper_pickle", "upper_folder"])
    renames = {}
    if kind == "byteorder":
        spelling = rng.choice([b"big", b"little", b"big\n", b" big", b"little ", b"BIG",
                               b"big\x00"])
        records.insert(rng.randint(0, len(records)), ("byteorder", spelling))
        return records, renames, f"byteorder {spelling!r}"
    if kind == "dup_pickle":
        # A second, different pickle under DATA.PKL: torch reads one of the two.
        other = assemble(Dict([("decoy", 1)]))
        at = rng.randint(0, len(records))
        records.insert(at, ("DATA.PKL", other))
        return records, renames, "data.pkl and DATA.PKL"
    if kind == "dup_data" and ctx.records:
        key, data = rng.choice(ctx.records)
        upper = f"DATA/{key}"
        records.insert(rng.randint(0, len(records)), (upper, ctx.rng.randbytes(len(data))))
        return records, renames, f"data/{key} and {upper}"
    if kind == "only_upper_byteorder":
        spelling = rng.choice([b"big", b"little"])
        records.insert(rng.randint(0, len(records)), ("byteorder", spelling))
        renames["byteorder"] = "{A}/BYTEORDER"
        return records, renames, f"only BYTEORDER {spelling!r}"
    if kind == "only_upper_pickle":
        renames["data.pkl"] = "{A}/DATA.PKL"
        return records, renames, "only DATA.PKL"
    if kind == "upper_folder" and ctx.records:
        key, _ = rng.choice(ctx.records)
        if records[0][0] != f"data/{key}":
            renames[f"data/{key}"] = "{A_UPPER}/data/" + key
            return records, renames, f"upper-case folder: ARCHIVE/data/{key}"
    return records, renames, "no twist"


def write_zip_case(rng, path):
    ctx = Ctx(rng)
    pairs = []
    kinds = []
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(list(ENTRY_KINDS))
        kinds.append(kind)
        pairs.append((f"e{i}", ENTRY_KINDS[kind](ctx)))
    if rng.random() < 0.25:  # the colliding keys at the top level, as a state dict's
        top = equal_key_dict(ctx)
        top.pairs[:0] = pairs
        kinds.append("equal_keys(top)")
    else:
        top = Dict(pairs, ordered=rng.random() < 0.5)
    records = [("data.pkl", assemble(top))]
    records += [(f"data/{k}", data) for k, data in ctx.records]
    records, renames, what = twist(rng, ctx, records)
    write_zip(path, records, renames)
    return f"zip [{', '.join(kinds)}], {what}"


def write_legacy_views_case(rng, path):
    """Legacy storages whose view key is another storage's root key: torch reads the second
    storage's bytes into the view, over part of the first."""
    cls = rng.choice(list(STORAGES))
    elem = STORAGES[cls][0]
    n_a = rng.randint(4, 16)
    n_b = rng.randint(1, n_a)
    offset = rng.randint(0, n_a - n_b)
    a = Storage(cls, "A", n_a, legacy=True)
    view_b = Storage(cls, "A", n_a, view=("B", offset, n_b), legacy=True)
    root_b = Storage(cls, "B", n_b, legacy=True)
    entries = [("a", tensor_v2(a, 0, (n_a,), (1,))), ("b_view", tensor_v2(view_b, 0, (n_b,), (1,)))]
    if rng.random() < 0.5:
        entries.append(("b_root", tensor_v2(root_b, 0, (n_b,), (1,))))
    order = rng.choice([["A", "B"], ["B", "A"]])
    data = {"A": rng.randbytes(n_a * elem), "B": rng.randbytes(n_b * elem)}
    write_legacy(path, assemble(Dict(entries, ordered=True)), [(k, elem, data[k]) for k in order])
    return f"legacy, view key B is a root key too, {cls}, records {order}"


def write_legacy_int_keys_case(rng, path):
    """Legacy storage keys that are ints: torch keeps 1 and '1' apart."""
    cls = rng.choice(list(STORAGES))
    elem = STORAGES[cls][0]
    n = rng.randint(1, 8)
    used = rng.choice([[1], [1, "1"], ["1"], [1, 2]])
    listed = list(used) if rng.random() < 0.7 else [str(k) for k in used]
    entries = [(f"t{i}", tensor_v2(Storage(cls, k, n, legacy=True), 0, (n,), (1,)))
               for i, k in enumerate(used)]
    write_legacy(path, assemble(Dict(entries, ordered=True)),
                 [(k, elem, rng.randbytes(n * elem)) for k in listed])
    return f"legacy, storage keys {used!r} listed as {listed!r}"


def write_torchscript_case(rng, path):
    import torch
    from typing import List, Tuple

    class Tup(torch.nn.Module):
        tup: Tuple[torch.Tensor, int]
        lst: List[torch.Tensor]

        def __init__(self, n):
            super().__init__()
            self.lin = torch.nn.Linear(n, 2)
            self.register_buffer("buf", torch.arange(float(n)))
            self.tup = (torch.full((n,), 3.0), n)
            self.lst = [torch.ones(n)]
            self.plain = torch.zeros(n)

        def forward(self, x):
            return self.lin(x) + self.tup[0].sum() + self.lst[0].sum() + self.plain.sum()

    torch.manual_seed(rng.randint(0, 2**31))
    module = torch.jit.script(Tup(rng.randint(1, 4)))
    module.save(path)
    return "torchscript: tuple and list attributes holding tensors"


def make_case(rng, path):
    r = rng.random()
    if r < 0.08:
        return "legacy", write_legacy_views_case(rng, path)
    if r < 0.12:
        return "legacy", write_legacy_int_keys_case(rng, path)
    if r < 0.2:
        return "torchscript", write_torchscript_case(rng, path)
    return "zip", write_zip_case(rng, path)
