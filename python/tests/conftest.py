"""Shared helpers of the binding's tests: the repository's fixtures and the oracle's helpers."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
sys.path.insert(0, os.path.join(REPO, "tests", "oracle"))


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:ComplexHalf support is experimental")
    config.addinivalue_line("filterwarnings", "ignore:Detected pickle protocol")


@pytest.fixture
def fixture_path():
    return lambda name: os.path.join(FIXTURES, name)


def mapped_paths():
    """The files this process maps, from /proc/self/maps."""
    with open("/proc/self/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
