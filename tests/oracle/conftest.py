"""Options and shared fixtures of the oracle suite (see README.md)."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SEED = 20260415
DEFAULT_CASES = 300
DEFAULT_ADVERSARIAL_CASES = 200


def pytest_addoption(parser):
    group = parser.getgroup("mmckpt oracle")
    group.addoption("--seed", type=int, default=None,
                    help=f"base seed (default $MMCKPT_ORACLE_SEED or {DEFAULT_SEED})")
    group.addoption("--cases", type=int, default=None,
                    help=f"random checkpoints (default $MMCKPT_ORACLE_CASES or {DEFAULT_CASES})")
    group.addoption("--adversarial-cases", type=int, default=None,
                    help="hand-made adversarial files (default $MMCKPT_ADVERSARIAL_CASES or "
                         f"{DEFAULT_ADVERSARIAL_CASES})")


def _setting(config, name, env, default):
    value = config.getoption(name)
    if value is None:
        value = int(os.environ.get(env, default))
    return value


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "legacy: a checkpoint in torch's legacy (non-zip) format; skipped, with the "
        "reason, while `mmckpt ls` cannot read that format (MMCKPT_ORACLE_REQUIRE_LEGACY=1 makes "
        "it a failure instead)")
    # torch warns that complex32 is experimental each time it makes one.
    config.addinivalue_line("filterwarnings", "ignore:ComplexHalf support is experimental")
    config.oracle_seed = _setting(config, "seed", "MMCKPT_ORACLE_SEED", DEFAULT_SEED)
    config.oracle_cases = _setting(config, "cases", "MMCKPT_ORACLE_CASES", DEFAULT_CASES)
    config.adversarial_cases = _setting(config, "adversarial_cases", "MMCKPT_ADVERSARIAL_CASES",
                                        DEFAULT_ADVERSARIAL_CASES)


def pytest_report_header(config):
    return (f"mmckpt oracle: seed {config.oracle_seed}, {config.oracle_cases} cases, "
            f"{config.adversarial_cases} adversarial cases "
            f"(reproduce with --seed {config.oracle_seed} -k 'case_N]' or -k 'adversarial_N]')")


def pytest_generate_tests(metafunc):
    if "case_index" in metafunc.fixturenames:
        n = metafunc.config.oracle_cases
        metafunc.parametrize("case_index", range(n), ids=[f"case_{i}" for i in range(n)])
    if "adversarial_index" in metafunc.fixturenames:
        n = metafunc.config.adversarial_cases
        metafunc.parametrize("adversarial_index", range(n),
                             ids=[f"adversarial_{i}" for i in range(n)])


@pytest.fixture(scope="session")
def mmckpt_bin():
    path = os.environ.get("MMCKPT_BIN", os.path.join(REPO, "target", "release", "mmckpt"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} does not exist: run `cargo build --release` first (or set MMCKPT_BIN)")
    return path


def run_ls_status(mmckpt_bin, path, *extra):
    """`mmckpt ls PATH --json --hash`: (exit status, parsed JSON or None, stderr text)."""
    proc = subprocess.run([mmckpt_bin, "ls", path, "--json", "--hash", *extra],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return proc.returncode, None, proc.stderr.strip()
    return 0, json.loads(proc.stdout), proc.stderr


def run_ls(mmckpt_bin, path, *extra):
    """`mmckpt ls PATH --json --hash`: (parsed JSON or None, stderr text)."""
    _, doc, err = run_ls_status(mmckpt_bin, path, *extra)
    return doc, err


@pytest.fixture(scope="session")
def legacy_support(mmckpt_bin):
    """None when `mmckpt ls` reads a legacy checkpoint and reports format "legacy", else why
    not. Probed once per run, so the legacy cases start running as soon as the reader lands."""
    import torch
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "probe.pt")
        torch.save({"w": torch.arange(6.0).view(2, 3)}, path, _use_new_zipfile_serialization=False)
        doc, err = run_ls(mmckpt_bin, path)
    if doc is None:
        return f"mmckpt ls cannot read the legacy format yet: {err}"
    if doc.get("format") != "legacy":
        return f"mmckpt ls reports format {doc.get('format')!r} for a legacy file, not 'legacy'"
    return None
