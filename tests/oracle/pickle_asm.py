"""A small pickle assembler and archive writers for hand-made (hostile but valid) checkpoints.

`torch.save` cannot write most of what the adversarial suite needs (duplicate dict keys, state
attached to a rebuilt tensor, odd tensor metadata, case-colliding record names), so the pickle is
assembled opcode by opcode from a tiny tree of nodes, using only opcodes that torch's
`weights_only` unpickler accepts, and the archive is written with torch's own zip writer
(`torch._C.PyTorchFileWriter`, so records are 64-byte aligned as torch writes them).
"""
import io
import pickle
import struct
import sys
import zipfile


# ---- nodes -----------------------------------------------------------------------------------

class Dict:
    """A dict written as SETITEMS of these (key, value) pairs, duplicates and all."""
    def __init__(self, pairs, ordered=False):
        self.pairs = list(pairs)
        self.ordered = ordered


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """GLOBAL module.name, the args tuple, REDUCE."""
    def __init__(self, module, name, *args):
        self.func = Global(module, name)
        self.args = tuple(args)


class Build:
    """obj, state, BUILD."""
    def __init__(self, obj, state):
        self.obj, self.state = obj, state


class Storage:
    """A persistent id `('storage', torch.<cls>, key, 'cpu', numel[, view_metadata])`."""
    def __init__(self, cls, key, numel, view=None, legacy=False, module=None):
        self.cls, self.key, self.numel, self.view = cls, key, numel, view
        self.module = module  # torch writes `torch.storage.UntypedStorage`, `torch.FloatStorage`
        self.legacy = legacy  # legacy ids always carry view_metadata (None for a root)


class Memo:
    """The same object in several places: pickled once (BINPUT), then BINGET."""
    def __init__(self, node):
        self.node = node


class Mutate:
    """The memoized list or dict `memo` (already pickled earlier) fetched again (BINGET) and
    changed: APPEND of each of `append`, SETITEM of each of `setitems`; its value is the
    container. torch reads a rebuild's arguments at the call, so a change after it matters."""
    def __init__(self, memo, append=(), setitems=()):
        self.memo, self.append, self.setitems = memo, list(append), list(setitems)


def ordered_dict(pairs=()):
    return Dict(pairs, ordered=True)


def tensor_v2(storage, offset, size, stride, requires_grad=False, metadata=None):
    args = [storage, offset, tuple(size), tuple(stride), requires_grad, ordered_dict()]
    if metadata is not None:
        args.append(metadata)
    return Call("torch._utils", "_rebuild_tensor_v2", *args)


def tensor_v3(storage, offset, size, stride, dtype, requires_grad=False, metadata=None):
    args = [storage, offset, tuple(size), tuple(stride), requires_grad, ordered_dict(),
            Global("torch", dtype)]
    if metadata is not None:
        args.append(metadata)
    return Call("torch._utils", "_rebuild_tensor_v3", *args)


# ---- the assembler ---------------------------------------------------------------------------

def _le_twos(n):
    if n == 0:
        return b""
    nbytes = (n.bit_length() >> 3) + 1
    data = n.to_bytes(nbytes, "little", signed=True)
    if n < 0 and nbytes > 1 and data[-1] == 0xFF and (data[-2] & 0x80):
        data = data[:-1]
    return data


def assemble(root):
    """Protocol-2 pickle bytes of the node tree `root` (iterative: trees may be deep)."""
    out = bytearray(b"\x80\x02")
    memo = {}  # id(Memo) -> memo index

    def put():
        i = len(memo)
        out.extend(b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i))
        return i

    todo = [("node", root)]
    while todo:
        kind, x = todo.pop()
        if kind == "raw":
            out.extend(x)
            continue
        if kind == "put":
            memo[id(x)] = put()
            continue
        if isinstance(x, Memo):
            if id(x) in memo:
                i = memo[id(x)]
                out.extend(b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i))
            else:
                todo.append(("put", x))
                todo.append(("node", x.node))
            continue
        if x is None:
            out.extend(b"N")
        elif x is True:
            out.extend(b"\x88")
        elif x is False:
            out.extend(b"\x89")
        elif isinstance(x, int):
            if 0 <= x < 256:
                out.extend(b"K" + bytes([x]))
            elif -2**31 <= x < 2**31:
                out.extend(b"J" + struct.pack("<i", x))
            else:
                data = _le_twos(x)
                out.extend(b"\x8a" + bytes([len(data)]) + data)
        elif isinstance(x, float):
            out.extend(b"G" + struct.pack(">d", x))
        elif isinstance(x, str):
            data = x.encode("utf-8", "surrogatepass")
            out.extend(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(x, complex):
            todo.append(("node", Call("builtins", "complex", x.real, x.imag)))
        elif isinstance(x, tuple):
            todo.append(("raw", b"t"))
            todo.extend(("node", item) for item in reversed(x))
            todo.append(("raw", b"("))
        elif isinstance(x, list):
            todo.append(("raw", b"e"))
            todo.extend(("node", item) for item in reversed(x))
            todo.append(("raw", b"]("))
        elif isinstance(x, Dict):
            todo.append(("raw", b"u"))
            for k, v in reversed(x.pairs):
                todo.append(("node", v))
                todo.append(("node", k))
            todo.append(("raw", b"("))
            if x.ordered:
                todo.append(("raw", b")R"))
                todo.append(("node", Global("collections", "OrderedDict")))
            else:
                todo.append(("raw", b"}"))
        elif isinstance(x, Global):
            out.extend(f"c{x.module}\n{x.name}\n".encode())
        elif isinstance(x, Call):
            todo.append(("raw", b"R"))
            todo.append(("node", x.args))
            todo.append(("node", x.func))
        elif isinstance(x, Build):
            todo.append(("raw", b"b"))
            todo.append(("node", x.state))
            todo.append(("node", x.obj))
        elif isinstance(x, Mutate):
            for k, v in reversed(x.setitems):
                todo.append(("raw", b"s"))
                todo.append(("node", v))
                todo.append(("node", k))
            for item in reversed(x.append):
                todo.append(("raw", b"a"))
                todo.append(("node", item))
            todo.append(("node", x.memo))
        elif isinstance(x, Storage):
            module = x.module or ("torch.storage" if x.cls == "UntypedStorage" else "torch")
            pid = ["storage", Global(module, x.cls), x.key, "cpu", x.numel]
            if x.view is not None or x.legacy:
                pid.append(x.view)
            todo.append(("raw", b"Q"))
            todo.append(("node", tuple(pid)))
        else:
            raise TypeError(f"cannot pickle node {x!r}")
    out.extend(b".")
    return bytes(out)


# ---- archives --------------------------------------------------------------------------------

def write_zip(path, records, renames=None):
    """A torch zip archive of `records` ([(name, bytes)], in that order), written by torch's own
    writer (which puts them under a folder named after the file); then each record in `renames`
    ({record name: new full name}, where `{A}` stands for the folder) is patched to its new
    spelling of the same length, in the local header and the central directory, so that offsets
    and alignment stay as torch wrote them."""
    import torch
    writer = torch._C.PyTorchFileWriter(path)
    for name, data in records:
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del writer
    if renames:
        patch_names(path, renames)


def patch_names(path, renames):
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    with zipfile.ZipFile(io.BytesIO(bytes(buf))) as z:
        infos = z.infolist()
    folder = infos[0].filename.split("/")[0]
    renames = {f"{folder}/{old}": new.replace("{A_UPPER}", folder.upper()).replace("{A}", folder) for old, new in renames.items()}
    for old, new in renames.items():
        assert len(old.encode()) == len(new.encode()), (old, new)
    done = set()
    for info in infos:
        new = renames.get(info.filename)
        if new is None:
            continue
        start = info.header_offset + 30
        assert buf[start:start + len(info.filename)] == info.filename.encode()
        buf[start:start + len(new)] = new.encode()
        done.add(info.filename)
    assert done == set(renames), f"records not found: {set(renames) - done}"
    # The central directory: walk it from the end-of-central-directory record.
    eocd = buf.rfind(b"PK\x05\x06")
    count = struct.unpack_from("<H", buf, eocd + 10)[0]
    cd = struct.unpack_from("<I", buf, eocd + 16)[0]
    if cd == 0xFFFFFFFF or count == 0xFFFF:
        raise ValueError("zip64 archives are not patched")
    pos = cd
    for _ in range(count):
        assert buf[pos:pos + 4] == b"PK\x01\x02"
        nlen, xlen, clen = struct.unpack_from("<HHH", buf, pos + 28)
        name = bytes(buf[pos + 46:pos + 46 + nlen]).decode()
        if name in renames:
            buf[pos + 46:pos + 46 + nlen] = renames[name].encode()
        pos += 46 + nlen + xlen + clen
    with open(path, "wb") as f:
        f.write(buf)


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def write_legacy(path, main_pickle, storages):
    """A legacy (non-zip) torch checkpoint: magic number, protocol version, sys info, the main
    pickle, the list of storage keys, then per key its element count (int64 LE) and bytes.
    `storages` is [(key, element_size, bytes)] in file order."""
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": sys.byteorder == "little",
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with open(path, "wb") as f:
        for head in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info):
            f.write(pickle.dumps(head, protocol=2))
        f.write(main_pickle)
        f.write(pickle.dumps([key for key, _, _ in storages], protocol=2))
        for _, elem, data in storages:
            f.write(struct.pack("<q", len(data) // elem))
            f.write(data)

