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


def run_cli(*args: str, cwd: str | pathlib.Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `nircomp` console entry point in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-c", "import sys; from nircomp.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli
