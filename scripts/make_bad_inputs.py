#!/usr/bin/env python3
"""Writes hand-made malformed checkpoints into tests/data/bad/ plus expected.tsv.

These are deliberately broken files for bad-input tests, so they are hand-made (plain Python,
no torch): pickles are written with stand-in `torch` modules that only provide names, and
archives with zipfile. Valid test data always comes from real torch (make_fixtures.py).

expected.tsv columns: file (relative to tests/data/bad; shard indexes sit in subfolders);
flags (0, or STRICT for a strict open, or TENSOR when the open
succeeds and reading the first tensor fails); the expected status name; a substring the error
message must contain. Run: python3 scripts/make_bad_inputs.py
"""
import collections
import io
import json
import os
import pickle
import random
import struct
import sys
import types
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "bad")

# Stand-ins for the torch globals a checkpoint names: pickle only records module and name.
torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    raise AssertionError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch_mod.FloatStorage = FloatStorage
torch_mod._utils = utils_mod
sys.modules["torch"] = torch_mod
sys.modules["torch._utils"] = utils_mod


class Tensor:
    """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, key, numel, offset, size, stride):
        self.key, self.numel = key, numel
        self.args = (offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, (StorageRef(self.key, self.numel),) + self.args)


class StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def archive(records, prefix="archive", compress=None):
    """A torch-style zip: data.pkl first, stored entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in records:
            method = compress.get(name, zipfile.ZIP_STORED) if compress else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(f"{prefix}/{name}"), data, compress_type=method)
    return buf.getvalue()


class LegacyPickler(pickle.Pickler):
    """The legacy format's persistent id: a 6-tuple whose last item is view metadata."""

    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel, None)
        return None


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
GOOD_SYS_INFO = {"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 8}}


def legacy_file(tensors, storages, sys_info=None, counts=None):
    """A legacy torch.save stream: magic, 1001, sys info, the object, the key list, then per
    key an 8-byte little-endian element count and the bytes (float32 storages)."""
    out = io.BytesIO()
    for value in (LEGACY_MAGIC, 1001, GOOD_SYS_INFO if sys_info is None else sys_info):
        pickle.dump(value, out, protocol=2)
    LegacyPickler(out, protocol=2).dump(collections.OrderedDict(tensors))
    keys = list(storages)
    pickle.dump(keys, out, protocol=2)
    for key in keys:
        data = storages[key]
        count = len(data) // 4 if counts is None else counts[key]
        out.write(struct.pack("<q", count) + data)
    return out.getvalue()


def state_dict_archive(tensors, storages):
    sd = collections.OrderedDict(tensors)
    records = [("data.pkl", torch_pickle(sd)), ("byteorder", b"little")]
    records += [(f"data/{k}", v) for k, v in storages.items()]
    records.append(("version", b"3\n"))
    return archive(records)


FOUR_FLOATS = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


def state_dict_archive_with_byteorder(byteorder):
    sd = collections.OrderedDict({"w": Tensor("0", 4, 0, [4], [1])})
    return archive([("data.pkl", torch_pickle(sd)), ("byteorder", byteorder),
                    ("data/0", FOUR_FLOATS), ("version", b"3\n")])


def good():
    return state_dict_archive({"w": Tensor("0", 4, 0, [2, 2], [2, 1])}, {"0": FOUR_FLOATS})


class UntypedStorage:
    """`torch.UntypedStorage`: a spelling torch's weights_only unpickler refuses (it allows
    `torch.storage.UntypedStorage`)."""


UntypedStorage.__module__ = "torch"
torch_mod.UntypedStorage = UntypedStorage


class DoubleStorage:
    pass


DoubleStorage.__module__ = "torch"
torch_mod.DoubleStorage = DoubleStorage


tensor_mod = types.ModuleType("torch._tensor")


class TensorSpelling:
    """`torch._tensor.Tensor`: the class torch.Tensor under a name torch's weights_only
    unpickler refuses (it allows `torch.Tensor`)."""


TensorSpelling.__module__ = "torch._tensor"
TensorSpelling.__qualname__ = TensorSpelling.__name__ = "Tensor"
tensor_mod.Tensor = TensorSpelling


def _rebuild_from_type_v2(*args):
    raise AssertionError("never called")


_rebuild_from_type_v2.__module__ = "torch._tensor"
tensor_mod._rebuild_from_type_v2 = _rebuild_from_type_v2
sys.modules["torch._tensor"] = tensor_mod


class FromTypeV2:
    def __init__(self, new_type, storage, rest):
        self.new_type, self.storage, self.rest = new_type, storage, rest

    def __reduce__(self):
        return (_rebuild_from_type_v2,
                (_rebuild_tensor_v2, self.new_type, (self.storage,) + self.rest, None))


class ClassStorageRef(StorageRef):
    """A storage reference naming its storage class."""

    def __init__(self, key, numel, cls):
        super().__init__(key, numel)
        self.cls = cls


class ClassPickler(TorchPickler):
    def persistent_id(self, obj):
        if isinstance(obj, ClassStorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return super().persistent_id(obj)


class OddTensor:
    """_rebuild_tensor_v2 with chosen arguments after the storage (requires_grad, metadata)
    and optionally BUILD state, as torch's weights_only unpickler reads them."""

    def __init__(self, storage, rest, state=None):
        self.storage, self.rest, self.state = storage, rest, state

    def __reduce__(self):
        if self.state is None:
            return (_rebuild_tensor_v2, (self.storage,) + self.rest)
        return (_rebuild_tensor_v2, (self.storage,) + self.rest, self.state)


def odd_archive(tensors, storages, byteorder=b"little"):
    buf = io.BytesIO()
    ClassPickler(buf, protocol=2).dump(collections.OrderedDict(tensors))
    records = [("data.pkl", buf.getvalue()), ("byteorder", byteorder)]
    records += [(f"data/{k}", v) for k, v in storages.items()]
    records.append(("version", b"3\n"))
    return archive(records)


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []

    def write(name, data, status, needle, flags="0"):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        cases.append((name, flags, status, needle))

    rng = random.Random(1234)
    write("empty.pt", b"", "MMCKPT_ERR_FORMAT", "empty")
    write("random.pt", bytes(rng.randrange(256) for _ in range(1024)), "MMCKPT_ERR_FORMAT", "zip")
    write("no_data_pkl.pt", archive([("version", b"3\n")]), "MMCKPT_ERR_FORMAT", "data.pkl")
    whole = good()
    cd_start = struct.unpack_from("<I", whole, len(whole) - 22 + 16)[0]
    write("truncated_before_cd.pt", whole[:cd_start - 3], "MMCKPT_ERR_FORMAT", "")
    # The central directory says data/0 lies past the end of the file.
    past = bytearray(whole)
    cd = cd_start
    while past[cd:cd + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", past, cd + 28)
        name = bytes(past[cd + 46:cd + 46 + name_len])
        if name == b"archive/data/0":
            struct.pack_into("<I", past, cd + 42, len(whole) + 100)
        cd += 46 + name_len + extra_len + comment_len
    write("record_past_eof.pt", bytes(past), "MMCKPT_ERR_FORMAT", "archive/data/0")
    dup = archive([("data.pkl", torch_pickle({})), ("data/0", FOUR_FLOATS), ("data/0", FOUR_FLOATS)])
    write("duplicate_record.pt", dup, "MMCKPT_ERR_FORMAT", "data/0")
    write(
        "compressed_pickle.pt",
        # bzip2 (method 12): torch's reader (miniz) refuses it too; deflate is read.
        archive([("data.pkl", torch_pickle({"a": 1}))], compress={"data.pkl": zipfile.ZIP_BZIP2}),
        "MMCKPT_ERR_UNSUPPORTED",
        "archive/data.pkl",
    )
    # A storage compressed with a method torch cannot read (bzip2) fails that tensor only (when
    # it is asked for), not the open.
    sd = {"w": Tensor("0", 4, 0, [4], [1]), "v": Tensor("1", 4, 0, [4], [1])}
    write(
        "compressed_storage.pt",
        archive(
            [("data.pkl", torch_pickle(collections.OrderedDict(sd))), ("data/0", FOUR_FLOATS * 8),
             ("data/1", FOUR_FLOATS)],
            compress={"data/0": zipfile.ZIP_BZIP2},
        ),
        "MMCKPT_ERR_UNSUPPORTED",
        "archive/data/0",
        "TENSOR",
    )
    pkl = torch_pickle(collections.OrderedDict({"w": Tensor("0", 4, 0, [4], [1])}))
    write("pickle_cut.pt", archive([("data.pkl", pkl[: len(pkl) // 2]), ("data/0", FOUR_FLOATS)]),
          "MMCKPT_ERR_FORMAT", "data.pkl")
    write("unknown_opcode.pt", archive([("data.pkl", b"\x80\x02\xff.")]), "MMCKPT_ERR_FORMAT", "0xff")
    write("stack_underflow.pt", archive([("data.pkl", b"\x80\x02\x85.")]), "MMCKPT_ERR_FORMAT", "TUPLE1")
    write("missing_storage.pt",
          state_dict_archive({"w": Tensor("7", 4, 0, [4], [1])}, {"0": FOUR_FLOATS}),
          "MMCKPT_ERR_FORMAT", "data/7")
    write("view_past_storage.pt",
          state_dict_archive({"w": Tensor("0", 4, 1, [4], [1])}, {"0": FOUR_FLOATS}),
          "MMCKPT_ERR_FORMAT", "past the storage")
    write("negative_size.pt",
          state_dict_archive({"w": Tensor("0", 4, 0, [-1], [1])}, {"0": FOUR_FLOATS}),
          "MMCKPT_ERR_FORMAT", "negative size")
    write("negative_stride.pt",
          state_dict_archive({"w": Tensor("0", 4, 0, [2], [-1])}, {"0": FOUR_FLOATS}),
          "MMCKPT_ERR_FORMAT", "negative stride")
    write("size_overflow.pt",
          state_dict_archive({"w": Tensor("0", 4, 0, [2**40, 2**40], [1, 1])}, {"0": FOUR_FLOATS}),
          "MMCKPT_ERR_FORMAT", "overflow")
    # 100,000 nested lists: [[[[...]]]] built with MARK/LIST would need marks; EMPTY_LIST + APPEND
    # keeps the pickle machine flat, so nesting is caught while naming tensors.
    depth = 100_000
    deep = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    write("deep_nesting.pt", archive([("data.pkl", deep)]), "MMCKPT_ERR_LIMIT", "deeper")
    # MARK nesting 100,000 deep: caught by the pickle machine's mark limit.
    marks = b"\x80\x02" + b"(" * depth + b"l" * depth + b"."
    write("deep_marks.pt", archive([("data.pkl", marks)]), "MMCKPT_ERR_LIMIT", "")
    huge = b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc."
    write("huge_string.pt", archive([("data.pkl", huge)]), "MMCKPT_ERR_FORMAT", "")
    command = b"touch /tmp/mmckpt-pwned-marker"
    evil = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."
    write("global_os_system.pt", archive([("data.pkl", evil)]), "MMCKPT_ERR_UNSAFE", "os.system", "STRICT")

    # Legacy format (`_use_new_zipfile_serialization=False`).
    legacy_sd = {"w": Tensor("10", 4, 0, [4], [1]), "v": Tensor("20", 2, 0, [2], [1])}
    legacy_storages = {"10": FOUR_FLOATS, "20": FOUR_FLOATS[:8]}
    whole = legacy_file(legacy_sd, legacy_storages)
    write("legacy_cut.pt", whole[:-5], "MMCKPT_ERR_FORMAT", "legacy storage '20'")
    write("legacy_count_too_large.pt",
          legacy_file(legacy_sd, legacy_storages, counts={"10": 4, "20": 1000}),
          "MMCKPT_ERR_FORMAT", "declares 1000 elements")
    write("legacy_bad_type_sizes.pt",
          legacy_file(legacy_sd, legacy_storages, sys_info={
              "protocol_version": 1001, "little_endian": False,
              "type_sizes": {"short": 2, "int": 4, "long": 16}}),
          "MMCKPT_ERR_FORMAT", "type_sizes says 'long' is 16 bytes")
    write("legacy_bad_magic.pt", pickle.dumps(12345, protocol=2) + whole[20:],
          "MMCKPT_ERR_FORMAT", "magic number")
    # torch compares the byteorder record's bytes exactly (issue 11, A.6).
    for name, spelling in [("byteorder_newline.pt", b"big\n"), ("byteorder_space.pt", b" big"),
                           ("byteorder_little_space.pt", b"little ")]:
        write(name, state_dict_archive_with_byteorder(spelling), "MMCKPT_ERR_FORMAT", "byteorder")
    # Tensor metadata and requires_grad as torch checks them (issue 11, A.1 / A.4).
    plain = (0, (4,), (1,))
    four = {"0": FOUR_FLOATS}
    write("metadata_conj_on_float.pt",
          odd_archive({"w": OddTensor(StorageRef("0", 4), plain + (False, collections.OrderedDict(),
                                                                   {"conj": True}))}, four),
          "MMCKPT_ERR_FORMAT", "conj on a float32")
    write("metadata_value_str.pt",
          odd_archive({"w": OddTensor(StorageRef("0", 4), plain + (False, collections.OrderedDict(),
                                                                   {"neg": "yes"}))}, four),
          "MMCKPT_ERR_FORMAT", "'neg' is a str")
    write("requires_grad_int.pt",
          odd_archive({"w": OddTensor(StorageRef("0", 4), plain + (1, collections.OrderedDict()))},
                      four),
          "MMCKPT_ERR_FORMAT", "requires_grad is a int")
    # BUILD's set_ with a storage of another class: torch raises "Expected a Storage of type".
    write("build_set_other_dtype.pt",
          odd_archive({"w": OddTensor(StorageRef("0", 4), plain + (False, collections.OrderedDict()),
                                      (ClassStorageRef("1", 2, DoubleStorage), 0, (2,), (1,)))},
                      {"0": FOUR_FLOATS, "1": FOUR_FLOATS}),
          "MMCKPT_ERR_FORMAT", "DoubleStorage")
    # A storage class spelled as torch refuses: no tensor is built through it, strict or not.
    write("storage_class_torch_untyped.pt",
          odd_archive({"w": OddTensor(ClassStorageRef("0", 16, UntypedStorage),
                                      (0, (16,), (1,), False, collections.OrderedDict()))}, four),
          "MMCKPT_ERR_UNSAFE", "torch.UntypedStorage")
    write("tensor_type_torch_tensor_module.pt",
          odd_archive({"w": FromTypeV2(TensorSpelling, StorageRef("0", 4),
                                       (0, (4,), (1,), False, collections.OrderedDict()))}, four),
          "MMCKPT_ERR_UNSAFE", "torch._tensor.Tensor")
    # Hugging Face shard indexes.
    os.makedirs(os.path.join(OUT, "shards_escape"), exist_ok=True)
    escape = {"metadata": {}, "weight_map": {"w": "pytorch_model-00001-of-00001.bin",
                                             "v": "../good_shard.bin"}}
    write(os.path.join("shards_escape", "pytorch_model.bin.index.json"),
          json.dumps(escape, indent=2, sort_keys=True).encode(), "MMCKPT_ERR_FORMAT",
          "'../good_shard.bin'")
    write("not_json.index.json", b'{"weight_map": {"w": "a.bin",,}}', "MMCKPT_ERR_FORMAT",
          "not valid JSON")
    # TorchScript archive (constants.pkl, code/) without its data.pkl.
    write("torchscript_no_data_pkl.pt",
          archive([("code/__torch__.py", b"class M(Module): pass\n"),
                   ("constants.pkl", b"\x80\x02).") , ("version", b"1\n")]),
          "MMCKPT_ERR_FORMAT", "TorchScript archive has no 'archive/data.pkl'")
    # Record names equal up to ASCII case: torch's reader (miniz) finds records
    # case-insensitively and reads whichever of the two its sorted directory search hits. The
    # first hides code in DATA.PKL that torch.load(weights_only=False) would run while a strict
    # scan of data.pkl passes.
    clean = torch_pickle(collections.OrderedDict({"w": Tensor("0", 4, 0, [4], [1])}))
    write("case_data_pkl.pt",
          archive([("data.pkl", clean), ("data/0", FOUR_FLOATS), ("DATA.PKL", evil)]),
          "MMCKPT_ERR_FORMAT", "'archive/data.pkl' and 'archive/DATA.PKL'", "STRICT")
    write("case_data_0.pt",
          archive([("DATA/0", FOUR_FLOATS[::-1]), ("data.pkl", clean), ("data/0", FOUR_FLOATS)]),
          "MMCKPT_ERR_FORMAT", "differ only in case")
    write("case_byteorder.pt",
          archive([("data.pkl", clean), ("byteorder", b"little"), ("BYTEORDER", b"big"),
                   ("data/0", FOUR_FLOATS)]),
          "MMCKPT_ERR_FORMAT", "'archive/byteorder' and 'archive/BYTEORDER'")

    # safetensors headers (hand-made: the safetensors package writes only valid ones).
    def st(header, data=b"", length=None):
        text = header if isinstance(header, bytes) else json.dumps(header).encode()
        n = len(text) if length is None else length
        return struct.pack("<Q", n) + text + data

    def one(dtype="F32", shape=(1,), offsets=(0, 4)):
        return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}

    write("st_header_past_end.safetensors", st({"a": one()}, b"\0" * 4, length=1000),
          "MMCKPT_ERR_FORMAT", "header length 1000 runs past the end of the file")
    write("st_header_too_large.safetensors", st({"a": one()}, b"\0" * 4, length=200_000_000),
          "MMCKPT_ERR_LIMIT", "max_header_bytes")
    write("st_not_json.safetensors", st(b'{"a": {"dtype": "F32",,}}'), "MMCKPT_ERR_FORMAT",
          "safetensors header is not valid")
    write("st_not_utf8.safetensors", st(b'{"\xff": 1}'), "MMCKPT_ERR_FORMAT", "not UTF-8")
    write("st_overlap.safetensors",
          st({"a": one("F32", [2], [0, 8]), "b": one("F32", [2], [4, 12])}, b"\0" * 12),
          "MMCKPT_ERR_FORMAT", "tensor 'b' has data_offsets [4, 12], overlapping")
    write("st_gap.safetensors",
          st({"a": one("F32", [1], [0, 4]), "b": one("F32", [1], [8, 12])}, b"\0" * 12),
          "MMCKPT_ERR_FORMAT", "leaving bytes 4..8")
    write("st_outside.safetensors", st({"a": one("F32", [25], [0, 100])}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "outside the data area of 4 bytes")
    write("st_end_before_begin.safetensors", st({"a": one("F32", [1], [4, 0])}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "ends before it begins")
    write("st_size_mismatch.safetensors", st({"a": one("F32", [2], [0, 4])}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "shape [2] of F32 takes 8 bytes")
    write("st_uncovered.safetensors", st({"a": one()}, b"\0" * 8), "MMCKPT_ERR_FORMAT",
          "the data area holds 8 bytes")
    write("st_duplicate.safetensors",
          st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
             b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8),
          "MMCKPT_ERR_FORMAT", "names tensor 'a' twice")
    write("st_two_metadata.safetensors",
          st(b'{"__metadata__":{},"__metadata__":{},"a":{"dtype":"U8","shape":[1],'
             b'"data_offsets":[0,1]}}', b"\0"),
          "MMCKPT_ERR_FORMAT", 'two "__metadata__"')
    write("st_unknown_dtype.safetensors", st({"a": one("F128")}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "dtype \"F128\", which safetensors does not define")
    write("st_metadata_not_str.safetensors", st({"__metadata__": {"epoch": 3}, "a": one()},
          b"\0" * 4), "MMCKPT_ERR_FORMAT", "expected a string")
    write("st_negative_dim.safetensors", st({"a": one("F32", [-1])}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "safetensors header is not valid")
    write("st_no_offsets.safetensors", st({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "tensor 'a' has no \"data_offsets\"")
    write("st_three_offsets.safetensors", st({"a": one("F32", [1], [0, 4, 8])}, b"\0" * 4),
          "MMCKPT_ERR_FORMAT", "data_offsets")
    write("st_half_byte.safetensors", st({"a": one("F4", [], [0, 0])}), "MMCKPT_ERR_FORMAT",
          "is 4 bits, not whole bytes")
    write("st_overflow.safetensors", st({"a": one("F32", [1 << 62, 8], [0, 0])}),
          "MMCKPT_ERR_FORMAT", "overflows 64 bits")
    write("st_too_many_dims.safetensors", st({"a": one("U8", [1] * 65, [0, 1])}, b"\0"),
          "MMCKPT_ERR_FORMAT", "at most 64")
    write("st_f6.safetensors", st({"a": one("F6_E2M3", [4], [0, 3])}, b"\0" * 3),
          "MMCKPT_ERR_UNSUPPORTED", "tensor 'a' has dtype F6_E2M3, which torch has no dtype for",
          "TENSOR")
    write("st_f4_odd.safetensors", st({"a": one("F4", [2, 3], [0, 3])}, b"\0" * 3),
          "MMCKPT_ERR_UNSUPPORTED", "needs an even last dimension", "TENSOR")

    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        f.write("# file\tflags\tstatus\tmessage substring (generated by scripts/make_bad_inputs.py)\n")
        for row in cases:
            f.write("\t".join(row) + "\n")


if __name__ == "__main__":
    main()
