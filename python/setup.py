"""Builds the Rust library with cargo and bundles it in the wheel as mmckpt/libmmckpt.so.

The package talks to the library only through its C ABI (ctypes), so the wheel is
platform-specific but not tied to a Python version's C API. Set MMCKPT_CARGO to use another
cargo, MMCKPT_CARGO_PROFILE (default: release) for another profile.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class BuildWithCargo(build_py):
    """Runs `cargo build` on the repository's library and copies the .so into the package."""

    def run(self) -> None:
        cargo = os.environ.get("MMCKPT_CARGO", "cargo")
        profile = os.environ.get("MMCKPT_CARGO_PROFILE", "release")
        if not (REPO / "Cargo.toml").is_file():
            raise RuntimeError(f"mmckpt's Cargo.toml is not at {REPO}: build from the repository")
        subprocess.run(
            [cargo, "build", "--profile", profile, "--lib", "-p", "mmckpt"], cwd=REPO, check=True
        )
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        built = target / profile / "libmmckpt.so"
        dest = HERE / "mmckpt" / "libmmckpt.so"
        shutil.copyfile(built, dest)
        super().run()


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for the platform, not `any`."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithCargo}, distclass=BinaryDistribution)
