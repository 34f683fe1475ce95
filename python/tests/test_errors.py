"""Every failure is an mmckpt.Error subclass carrying the C status and the library's message."""
import os

import pytest

import mmckpt
from conftest import FIXTURES


def test_missing_file_is_an_io_error(tmp_path):
    with pytest.raises(mmckpt.IoError) as info:
        mmckpt.open(tmp_path / "nope.pt")
    assert info.value.status == 3 and "nope.pt" in info.value.message
    assert isinstance(info.value, OSError)


def test_garbage_is_a_format_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(mmckpt.FormatError) as info:
        mmckpt.open(path)
    assert info.value.status == 4


def test_unknown_name_is_not_found_and_a_key_error():
    with mmckpt.open(os.path.join(FIXTURES, "forms.pt")) as ckpt:
        with pytest.raises(KeyError):
            ckpt["nope"]
        with pytest.raises(mmckpt.NotFoundError) as info:
            ckpt.value("no.such.path")
        assert info.value.status == 8
        assert ckpt.get("nope") is None


def test_unsupported_tensor_names_itself():
    with mmckpt.open(os.path.join(FIXTURES, "exotic.pt")) as ckpt:
        refused = [n for n in ckpt if n.startswith("quantized")]
        assert refused
        with pytest.raises(mmckpt.UnsupportedError) as info:
            ckpt[refused[0]]
        assert info.value.status == 5


def test_strict_open_refuses_unsafe_globals():
    path = os.path.join(FIXTURES, "nested.pt")  # argparse.Namespace is outside the allowlist
    with pytest.raises(mmckpt.UnsafeError) as info:
        mmckpt.open(path, strict=True)
    assert info.value.status == 6
    assert mmckpt.open(path).value("epoch") == 3


def test_values_and_read_mode():
    with mmckpt.open(os.path.join(FIXTURES, "nested.pt"), read=True) as ckpt:
        assert ckpt.value("optimizer.param_groups.0.lr") == pytest.approx(1e-3)
        assert ckpt.value("step") == 2**70
        assert ckpt.value("flags") == [True, None]
        assert len(ckpt) > 0
        assert not any(t.is_mapped for t in ckpt.values())  # read in, not mapped
