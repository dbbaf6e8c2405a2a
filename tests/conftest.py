"""Shared fixtures. Tests import only `nircomp...` (never the top-level `passes`/`backends` folders)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples_dir() -> pathlib.Path:
    return EXAMPLES


NIRCOMP = pathlib.Path(sys.executable).parent / "nircomp"


def run_cli(*args: str, cwd: str | pathlib.Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `nircomp` console script in a subprocess, as a user would.

    (Not `python -c`: that puts the working directory first on sys.path, where the source folder
    `nircomp/` would shadow the installed package, which alone contains `nircomp.passes`.)
    """
    return subprocess.run([str(NIRCOMP), *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.txt from the current output (review the diff!)")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))
