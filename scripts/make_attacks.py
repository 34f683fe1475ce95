#!/usr/bin/env python3
"""Writes hand-made malicious checkpoints into tests/data/attacks/ plus expected.tsv.

Each file is a torch-style zip (archive/data.pkl, archive/data/0, byteorder, version) whose
pickle tries, in the style of known pickle attacks, to run code: a callable outside the
allowlist reached by GLOBAL, STACK_GLOBAL, INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD state,
REDUCE chains, persistent ids, or torch names that only look allowed. If any of them were
executed it would create its marker file (/tmp/mmckpt-attack-<file stem>); the tests assert
that no marker appears, that a default open succeeds or fails cleanly with the listed status,
and that an MMCKPT_OPEN_STRICT open fails with MMCKPT_ERR_UNSAFE naming the global.

The pickles are written opcode by opcode (no torch, no pickle.dumps of live objects): these
are attack inputs, not torch output. Run: python3 scripts/make_attacks.py

expected.tsv columns: file; status of a default open (MMCKPT_OK or an error status);
status of a strict open; a substring the strict error must contain (the global's quoted dotted
name);
the marker path that must never exist.
"""
import io
import os
import struct
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "attacks")

FOUR_FLOATS = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


def marker(stem):
    return f"/tmp/mmckpt-attack-{stem}"


# ---- opcode helpers (protocol 2 unless noted) ----
def proto(n):
    return b"\x80" + bytes([n])


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def ustr(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def short_ustr(s):  # protocol 4
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def stack_glob(module, name):  # protocol 4
    return short_ustr(module) + short_ustr(name) + b"\x93"


def tensor_call(pid=None):
    """_rebuild_tensor_v2(pid, 0, (4,), (1,), False, OrderedDict()) with pid on the stack."""
    if pid is None:
        pid = (b"(" + ustr("storage") + glob("torch", "FloatStorage") + ustr("0") + ustr("cpu")
               + b"J" + struct.pack("<i", 4) + b"t")
    return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + b"K\x00"
            + b"K\x04\x85" + b"K\x01\x85" + b"\x89" + glob("collections", "OrderedDict")
            + b")R" + b"tR")


def state_dict(*items):
    """An OrderedDict {key: value_bytes, ...} ending in STOP."""
    out = glob("collections", "OrderedDict") + b")R"
    for key, value in items:
        out += ustr(key) + value + b"s"
    return out + b"."


def touch(stem):
    return f"touch {marker(stem)}"


def pywrite(stem):
    return f"open({marker(stem)!r}, 'w').write('pwned')"


def archive(pkl):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in [("data.pkl", pkl), ("byteorder", b"little"), ("data/0", FOUR_FLOATS),
                           ("version", b"3\n")]:
            z.writestr(zipfile.ZipInfo(f"archive/{name}"), data, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def attacks():
    """(stem, pickle bytes, default status, strict needle)."""
    ok, fmt = "MMCKPT_OK", "MMCKPT_ERR_FORMAT"
    w = ("w", tensor_call())  # one good tensor next to the payload
    out = []

    def add(stem, payload_fn, default, needle, top=False):
        payload = payload_fn(stem)
        pkl = proto(2) + (payload + b"." if top else state_dict(w, ("x", payload)))
        out.append((stem, pkl, default, needle))

    def add4(stem, payload_fn, default, needle):
        out.append((stem, proto(4) + state_dict(w, ("x", payload_fn(stem))), default, needle))

    add("global_os_system", lambda s: glob("os", "system") + ustr(touch(s)) + b"\x85R", ok, "os.system")
    add("global_posix_system", lambda s: glob("posix", "system") + ustr(touch(s)) + b"\x85R", ok,
        "posix.system")
    add("global_subprocess_popen",
        lambda s: glob("subprocess", "Popen") + b"(" + ustr("touch") + ustr(marker(s)) + b"l\x85R",
        ok, "subprocess.Popen")
    add4("stack_global_subprocess_popen",
         lambda s: stack_glob("subprocess", "Popen") + b"(" + short_ustr("touch")
         + short_ustr(marker(s)) + b"l\x85R", ok, "subprocess.Popen")
    add("builtins_eval", lambda s: glob("builtins", "eval") + ustr(pywrite(s)) + b"\x85R", ok,
        "builtins.eval")
    add("builtins_exec", lambda s: glob("builtins", "exec") + ustr(pywrite(s)) + b"\x85R", ok,
        "builtins.exec")
    add("py2_builtin_eval", lambda s: glob("__builtin__", "eval") + ustr(pywrite(s)) + b"\x85R", ok,
        "__builtin__.eval")
    add4("stack_global_builtins_exec",
         lambda s: stack_glob("builtins", "exec") + short_ustr(pywrite(s)) + b"\x85R", ok,
         "builtins.exec")
    # getattr(__import__('os'), 'system')('touch …'): a REDUCE whose result is REDUCEd again.
    add("reduce_chain_import_getattr",
        lambda s: glob("builtins", "getattr") + b"(" + glob("builtins", "__import__") + ustr("os")
        + b"\x85R" + ustr("system") + b"tR" + ustr(touch(s)) + b"\x85R", ok, "builtins.getattr")
    add("builtins_import", lambda s: glob("builtins", "__import__") + ustr("os") + b"\x85R", ok,
        "builtins.__import__")
    # A dotted name: pickle's find_class walks attributes (getattr.__call__).
    add("dotted_name_getattr_call",
        lambda s: glob("builtins", "getattr.__call__") + b"(" + glob("os", "system") + ustr("x")
        + b"tR", ok, "builtins.getattr.__call__")
    add("dotted_module_os_path",
        lambda s: glob("os.path", "os.system") + ustr(touch(s)) + b"\x85R", ok, "os.path.os.system")
    # INST (protocol 0): MARK args INST module name
    add("inst_os_system", lambda s: b"(" + ustr(touch(s)) + b"ios\nsystem\n", ok, "os.system")
    # OBJ: MARK cls args OBJ
    add("obj_os_system", lambda s: b"(" + glob("os", "system") + ustr(touch(s)) + b"o", ok,
        "os.system")
    # NEWOBJ: cls args NEWOBJ  (cls.__new__(cls, *args))
    add("newobj_subprocess_popen",
        lambda s: glob("subprocess", "Popen") + b"(" + ustr("touch") + ustr(marker(s)) + b"l\x85\x81",
        ok, "subprocess.Popen")
    add4("newobj_ex_subprocess_popen",
         lambda s: stack_glob("subprocess", "Popen") + b"(" + short_ustr("touch")
         + short_ustr(marker(s)) + b"l\x85}\x92", ok, "subprocess.Popen")
    # BUILD with a __setstate__-style state on an object whose class is not allowed.
    add("build_setstate_os_system",
        lambda s: glob("torch.nn.modules.module", "Module") + b")\x81" + b"}" + ustr("__setstate__")
        + glob("os", "system") + b"s" + ustr("cmd") + ustr(touch(s)) + b"sb", ok,
        "torch.nn.modules.module.Module")
    # BUILD on an allowed OrderedDict with a state naming os.system: only the state is hostile.
    add("build_state_holds_os_system",
        lambda s: glob("collections", "OrderedDict") + b")R" + b"(N}" + ustr("__reduce__")
        + glob("os", "system") + b"st" + b"b", ok, "os.system")
    # Persistent ids that are not storage tuples.
    add("persid_string_pid", lambda s: b"P" + f"os.system {touch(s)}".encode() + b"\n", ok,
        "persistent id")
    add("persid_global_in_tensor",
        lambda s: tensor_call(pid=glob("os", "system") + ustr(touch(s)) + b"\x85R"), fmt,
        "os.system")
    add("persid_tuple_with_os_system",
        lambda s: tensor_call(pid=b"(" + ustr("storage") + glob("os", "system") + ustr("0")
                              + ustr("cpu") + b"K\x04t"), ok, "os.system")
    # torch paths that are not on the allowlist, and lookalikes of those that are.
    add("torch_load", lambda s: glob("torch", "load") + ustr(marker(s)) + b"\x85R", ok, "torch.load")
    add("torch_serialization_load",
        lambda s: glob("torch.serialization", "load") + ustr(marker(s)) + b"\x85R", ok,
        "torch.serialization.load")
    add("torch_dynamo_eval_frame",
        lambda s: glob("torch._C._dynamo.eval_frame", "set_eval_frame") + b"N\x85R", ok,
        "torch._C._dynamo.eval_frame.set_eval_frame")
    add("torch_utils_lookalike_v2x",
        lambda s: tensor_call().replace(b"_rebuild_tensor_v2\n", b"_rebuild_tensor_v2x\n"), ok,
        "torch._utils._rebuild_tensor_v2x")
    add("torch_utils_module_space",
        lambda s: tensor_call().replace(b"torch._utils\n", b"torch._utils \n"), ok,
        "torch._utils ._rebuild_tensor_v2")
    add("torch_utils_dotted_globals",
        lambda s: glob("torch._utils", "_rebuild_tensor_v2.__globals__") + b"N\x85R", ok,
        "torch._utils._rebuild_tensor_v2.__globals__")
    add("torch_storage_lookalike",
        lambda s: tensor_call(pid=b"(" + ustr("storage") + glob("torch", "os.FloatStorage")
                              + ustr("0") + ustr("cpu") + b"K\x04t"), ok, "torch.os.FloatStorage")
    add("copyreg_reconstructor_os",
        lambda s: glob("copyreg", "_reconstructor") + b"(" + glob("os", "system") + glob("builtins", "object")
        + b"Nt" + b"R", ok, "os.system")
    add("codecs_encode_then_eval",
        lambda s: glob("builtins", "eval") + glob("_codecs", "encode") + b"(" + ustr(pywrite(s))
        + ustr("latin1") + b"tR\x85R", ok, "builtins.eval")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for stem, pkl, default, needle in attacks():
        name = f"{stem}.pt"
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(archive(pkl))
        needle = needle if needle.startswith("persistent id") else f"'{needle}'"
        rows.append((name, default, "MMCKPT_ERR_UNSAFE", needle, marker(stem)))
    with open(os.path.join(OUT, "expected.tsv"), "w") as f:
        f.write("# file\tdefault open\tstrict open\tstrict message substring\tmarker that must "
                "never exist (generated by scripts/make_attacks.py)\n")
        for row in rows:
            f.write("\t".join(row) + "\n")


if __name__ == "__main__":
    main()
