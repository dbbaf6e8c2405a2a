"""Fresh virtual environments for install tests (STYLE §8.9): wheels, venvs and commands run in them.

A test venv is made with `--system-site-packages` plus a `.pth` naming the folders of the test runner's
dependencies, so it sees those but not the runner's nircomp; every install into it is `--no-deps`, so
nothing but (at most) the build backend is fetched. Builds use `--no-build-isolation` when the runner's
setuptools can build wheels by itself. Projects are copied before building, which keeps build artefacts
out of the checkout.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

DEPS = ("nir", "networkx", "numpy", "h5py", "jax", "equinox", "jinja2")


def _can_build_offline() -> bool:
    """setuptools >= 70.1 ships bdist_wheel; older ones need the `wheel` package."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


BUILD = ["--no-build-isolation"] if _can_build_offline() else []


def run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command; a non-zero exit fails the test with its output."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}"
    return res


def pip(*args: str | Path, python: Path | None = None) -> None:
    """The runner's pip, acting on the environment of `python` when given."""
    target = ["--python", python] if python else []
    run(sys.executable, "-m", "pip", *target, "--disable-pip-version-check", *args)


def copy_tree(src: Path, dst: Path) -> Path:
    """A clean copy of a project to build from."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "tests",
                                                            "examples", "benchmarks", ".*"))
    return dst


def build_wheels(tmp: Path, *projects: Path) -> dict[str, Path]:
    """Wheels of the projects, built in one pip call; distribution name (underscored) -> wheel file."""
    out = tmp / "dist"
    pip("wheel", "--no-deps", *BUILD, "-w", out, *(copy_tree(p, tmp / f"src{i}") for i, p in enumerate(projects)))
    return {w.name.split("-")[0]: w for w in out.glob("*.whl")}


def make_venv(path: Path) -> Path:
    """A fresh venv that sees the runner's dependencies but not its nircomp; returns its bin folder."""
    run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", path)
    site = run(path / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    dirs = dict.fromkeys(Path(importlib.util.find_spec(m).origin).parents[1] for m in DEPS)
    folders = [_without_nircomp(d, path / f"runner-deps-{i}") for i, d in enumerate(dirs)]
    (Path(site) / "_runner_deps.pth").write_text("\n".join(map(str, folders)) + "\n")
    return path / "bin"


_OURS = ("nircomp", "__editable__.nircomp", "__editable___nircomp")


def _without_nircomp(folder: Path, shadow: Path) -> Path:
    """`folder`, or (when the runner installed nircomp there too, as CI's venv does) `shadow` filled with
    links to everything in it but nircomp, so the test venv's own nircomp is the only one it can import."""
    entries = list(folder.iterdir())
    if not any(e.name.startswith(_OURS) for e in entries):
        return folder
    shadow.mkdir(parents=True)
    for e in entries:
        if not e.name.startswith(_OURS):
            (shadow / e.name).symlink_to(e)
    return shadow
