"""Writes tests/data/tar/: checkpoints in torch's pre-1.0 tar format, and what torch 2.15 reads.

No torch old enough to write the format installs on this Python, so the files are written by
`save_tar` below, which follows torch v0.1.12's `torch/serialization.py` `_save` (and its
`_add_to_tar`, `Tensor._write_metadata`, `Storage._write_file`) step by step:

- a PAX-format tar (`tarfile.open(fileobj=f, mode='w:', format=tarfile.PAX_FORMAT)`) whose
  members are added in this order: `sys_info`, `pickle`, `tensors`, `storages`;
- `sys_info`: pickle of {protocol_version: 1001, little_endian, type_sizes: {short, int, long}};
- `pickle`: the object, pickled with `persistent_id` returning `str(id(obj))` for tensors and
  storages (so tensors are persistent ids, not `_rebuild_tensor` calls);
- `tensors`: pickle(count), then per tensor pickle((id, id(storage), type(tensor))) and the
  metadata `_write_metadata` wrote: ndim as an 8-byte integer, sizes and strides as int64s,
  storage offset as int64;
- `storages`: pickle(count), then per storage pickle((id, location, storage class)) and
  `_write_file`'s bytes: the element count as int64, then the elements; then pickle(views),
  the (view id, root id, offset, numel) of storage views (none here).

torch 2.15 refuses these files under `weights_only=True` ("Cannot use ``weights_only=True``
with files saved in the legacy .tar format") and reads them with `weights_only=False`
(`serialization.py`, `_legacy_load`, `legacy_load`). expected.json records, for each file,
what that read returns (name, dtype, shape, stride, storage offset, SHA-256 of the row-major
bytes, storage sharing) and the weights_only=True error, checked here when written.

Run with the torch virtualenv: ~/.cache/mmckpt/venv/bin/python scripts/make_tar_cases.py
"""

import hashlib
import io
import json
import pathlib
import pickle
import struct
import sys
import tarfile
from collections import OrderedDict

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tar"
PROTOCOL_VERSION = 1001
LONG_SIZE = struct.Struct("=l").size
INT_SIZE = struct.Struct("=i").size
SHORT_SIZE = struct.Struct("=h").size

STORAGE_CLASSES = {
    torch.float32: torch.FloatStorage,
    torch.float64: torch.DoubleStorage,
    torch.float16: torch.HalfStorage,
    torch.int64: torch.LongStorage,
    torch.int32: torch.IntStorage,
    torch.int16: torch.ShortStorage,
    torch.int8: torch.CharStorage,
    torch.uint8: torch.ByteStorage,
}


class OldTensor:
    """A tensor as torch 0.1.12 saw it: a storage, an offset, sizes and strides."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class OldStorage:
    """A storage: its dtype and its elements (little-endian bytes)."""

    def __init__(self, tensor):
        self.dtype = tensor.dtype
        self.numel = tensor.numel()
        self.data = tensor.contiguous().numpy().tobytes()


def add_to_tar(fn, tar, name):
    # _add_to_tar wrote through a temporary file; a buffer gives the same member.
    buf = io.BytesIO()
    fn(buf)
    info = tarfile.TarInfo(name)
    info.size = buf.tell()
    buf.seek(0)
    tar.addfile(info, buf)


def save_tar(obj, path, protocol=2):
    serialized_tensors = OrderedDict()
    serialized_storages = OrderedDict()

    def persistent_id(o):
        if isinstance(o, OldTensor):
            serialized_tensors[id(o)] = o
            return str(id(o))
        if isinstance(o, OldStorage):
            serialized_storages[id(o)] = o
            return str(id(o))
        return None

    def save_sys_info(f):
        sys_info = dict(
            protocol_version=PROTOCOL_VERSION,
            little_endian=sys.byteorder == "little",
            type_sizes=dict(short=SHORT_SIZE, int=INT_SIZE, long=LONG_SIZE),
        )
        pickle.dump(sys_info, f, protocol=protocol)

    def pickle_objects(f):
        pickler = pickle.Pickler(f, protocol=protocol)
        pickler.persistent_id = persistent_id
        pickler.dump(obj)

    def save_tensors(f):
        pickle.dump(len(serialized_tensors), f, protocol=protocol)
        for key, tensor in serialized_tensors.items():
            storage = tensor.storage
            serialized_storages[id(storage)] = storage
            # type(tensor) was torch.FloatTensor & co.: the class of the storage's dtype.
            tensor_type = getattr(torch, STORAGE_CLASSES[storage.dtype].__name__.replace("Storage", "Tensor"))
            pickle.dump((key, id(storage), tensor_type), f, protocol=protocol)
            ndim = len(tensor.size)
            f.write(struct.pack("<q", ndim))
            f.write(struct.pack(f"<{ndim}q", *tensor.size))
            f.write(struct.pack(f"<{ndim}q", *tensor.stride))
            f.write(struct.pack("<q", tensor.offset))

    def save_storages(f):
        pickle.dump(len(serialized_storages), f, protocol=protocol)
        for key, storage in serialized_storages.items():
            pickle.dump((key, "cpu", STORAGE_CLASSES[storage.dtype]), f, protocol=protocol)
            f.write(struct.pack("<q", storage.numel))
            f.write(storage.data)
        pickle.dump([], f, protocol=protocol)

    with open(path, "wb") as f:
        with tarfile.open(fileobj=f, mode="w:", format=tarfile.PAX_FORMAT) as tar:
            add_to_tar(save_sys_info, tar, "sys_info")
            add_to_tar(pickle_objects, tar, "pickle")
            add_to_tar(save_tensors, tar, "tensors")
            add_to_tar(save_storages, tar, "storages")


def describe(obj):
    rows, groups = [], {}
    for name, t in obj.items():
        if not isinstance(t, torch.Tensor):
            continue
        key = t.untyped_storage().data_ptr()
        rows.append(dict(
            name=name, dtype=str(t.dtype).removeprefix("torch."), shape=list(t.shape),
            stride=list(t.stride()), storage_offset=t.storage_offset(),
            sha256=hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
            storage_group=groups.setdefault(key, len(groups)),
        ))
    return rows


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(5)
    w = OldStorage(torch.randn(12, generator=g))
    b = OldStorage(torch.arange(7, dtype=torch.int64))
    h = OldStorage(torch.randn(5, generator=g).half())
    u = OldStorage(torch.arange(3, dtype=torch.uint8))
    cases = {
        "state_dict.pt": OrderedDict([
            ("fc.weight", OldTensor(w, 0, (3, 4), (4, 1))),
            ("fc.bias", OldTensor(b, 0, (7,), (1,))),
            ("tail", OldTensor(w, 8, (4,), (1,))),           # a view at an offset
            ("transposed", OldTensor(w, 0, (4, 3), (1, 4))),  # a strided view
            ("half", OldTensor(h, 0, (5,), (1,))),
            ("bytes", OldTensor(u, 0, (3,), (1,))),           # misaligned after it
            ("tied", None),
        ]),
    }
    cases["state_dict.pt"]["tied"] = cases["state_dict.pt"]["fc.weight"]
    expected = {}
    for name, obj in cases.items():
        path = OUT / name
        save_tar(obj, path)
        try:
            torch.load(path, weights_only=True)
            raise SystemExit(f"{name}: torch loaded it with weights_only=True")
        except RuntimeError as e:
            refused = str(e).splitlines()[0]
            assert "legacy .tar format" in refused, refused
        loaded = torch.load(path, weights_only=False)
        expected[name] = dict(weights_only_error=refused, tensors=describe(loaded))
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
