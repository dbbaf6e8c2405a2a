"""Install modes (STYLE §8.9): the wheel, the editable install and a pass plug-in, each in a fresh venv.

`passes/` and `backends/` install as `nircomp.passes` / `nircomp.backends`. These tests install the
project as a user would and run it from a directory outside the repository (where the source folder
`nircomp/`, which lacks `passes`, cannot shadow the installed package). How the venvs are made and what
they see: tests/venvtools.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nir
import numpy as np
import pytest
from conftest import ROOT
from venvtools import BUILD, build_wheels, copy_tree, make_venv, pip, run

PLUGIN = ROOT / "examples" / "plugin_pass"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Wheels of nircomp and of the example plug-in, built once for the module."""
    return build_wheels(tmp_path_factory.mktemp("wheels"), ROOT, PLUGIN)


@pytest.fixture(scope="module")
def wheel_venv(wheels, tmp_path_factory) -> Path:
    bin_dir = make_venv(tmp_path_factory.mktemp("wheel") / "venv")
    pip("install", "--no-deps", wheels["nircomp"], python=bin_dir / "python")
    return bin_dir


@pytest.fixture(scope="module")
def editable_venv(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("editable")
    src = copy_tree(ROOT, tmp / "src")
    bin_dir = make_venv(tmp / "venv")
    pip("install", "--no-deps", *BUILD, "-e", src, python=bin_dir / "python")
    return bin_dir, src


@pytest.fixture(scope="module")
def plugin_venv(wheels, tmp_path_factory) -> Path:
    bin_dir = make_venv(tmp_path_factory.mktemp("plugin") / "venv")
    pip("install", "--no-deps", wheels["nircomp"], wheels["nircomp_count_neurons"], python=bin_dir / "python")
    return bin_dir


IMPORTS = ("import importlib.resources as r, nircomp, nircomp.passes, nircomp.backends; "
           "print(nircomp.passes.__file__); print(nircomp.backends.__file__); "
           "print(r.files('nircomp').joinpath('pipelines.toml').is_file())")


def _check_passes_listing(text: str) -> None:
    for name in ("verify", "infer-shapes", "canonicalize", "mark-recurrence", "fuse-affine-cubalif", "select-solver"):
        assert f"  {name} " in text, name
    assert "named pipelines" in text and "select-solver{solver=analytical}" in text


def test_wheel_install_provides_subpackages_and_cli(wheel_venv, tmp_path):
    """From the wheel, nircomp.passes/backends and pipelines.toml live in site-packages/nircomp; the top-level
    `passes` is not installed; `nircomp passes` and `nircomp inspect` work from an unrelated directory."""
    passes_file, backends_file, toml = run(wheel_venv / "python", "-c", IMPORTS, cwd=tmp_path).stdout.split()
    site = Path(passes_file).parents[2]
    assert Path(passes_file) == site / "nircomp" / "passes" / "__init__.py"
    assert Path(backends_file) == site / "nircomp" / "backends" / "__init__.py"
    assert site.is_relative_to(wheel_venv.parent) and toml == "True"
    res = subprocess.run([wheel_venv / "python", "-c", "import passes"], capture_output=True, text=True, cwd=tmp_path,
                         check=False)
    assert "No module named 'passes'" in res.stderr
    _check_passes_listing(run(wheel_venv / "nircomp", "passes", cwd=tmp_path).stdout)
    out = run(wheel_venv / "nircomp", "inspect", ROOT / "examples" / "cubalif_chain.nir", cwd=tmp_path).stdout
    assert out.startswith("// pipeline: verify,infer-shapes,") and "select-solver{solver=auto}" in out


def test_editable_install_maps_subpackages_to_the_source(editable_venv, tmp_path):
    """With `pip install -e`, nircomp.passes is the source folder passes/, and a module added there later is
    importable without reinstalling."""
    bin_dir, src = editable_venv
    passes_file, backends_file, toml = run(bin_dir / "python", "-c", IMPORTS, cwd=tmp_path).stdout.split()
    assert Path(passes_file) == src / "passes" / "__init__.py"
    assert Path(backends_file) == src / "backends" / "__init__.py" and toml == "True"
    _check_passes_listing(run(bin_dir / "nircomp", "passes", cwd=tmp_path).stdout)
    (src / "passes" / "probe_added_later.py").write_text("VALUE = 42\n")
    out = run(bin_dir / "python", "-c", "from nircomp.passes import probe_added_later as p; print(p.VALUE)",
               cwd=tmp_path).stdout
    assert out.strip() == "42"


@pytest.fixture
def two_populations(tmp_path) -> Path:
    """A NIR file with a LIF population of 2 and a CubaLIF population of 3 (5 neurons), written by nir."""
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([3])), "fc1": nir.Linear(np.ones((2, 3))),
               "lif": nir.LIF(np.full(2, 0.01), np.ones(2), np.zeros(2), np.ones(2)),
               "fc2": nir.Linear(np.ones((3, 2))),
               "cuba": nir.CubaLIF(np.full(3, 0.005), np.full(3, 0.01), np.ones(3), np.zeros(3), np.ones(3)),
               "output": nir.Output(np.array([3]))},
        edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "cuba"), ("cuba", "output")])
    path = tmp_path / "two_populations.nir"
    nir.write(path, graph)
    return path


def test_plugin_pass_is_listed_and_runs(plugin_venv, two_populations, tmp_path):
    """An installed package registering `count-neurons` through the `nircomp.passes` entry points is listed as
    a plug-in by `nircomp passes` and runs in a pipeline with its option (2 + 3 neurons, fused or not)."""
    listing = run(plugin_venv / "nircomp", "passes", cwd=tmp_path).stdout
    _check_passes_listing(listing)
    summary = r"^  count-neurons +Count the neurons of the graph into graph\.attrs\[attr\]"
    assert re.search(summary, listing, re.MULTILINE)
    assert re.search(r"^ +option attr=neurons \(str\)$", listing, re.MULTILINE)
    assert "(plug-in: nircomp_count_neurons:count_neurons)" in listing
    for pipeline, attr in [("verify,infer-shapes,count-neurons", "neurons"),
                           ("verify,infer-shapes,fuse-affine-cubalif,count-neurons{attr=n}", "n")]:
        out = run(plugin_venv / "nircomp", "inspect", two_populations, "--pipeline", pipeline, cwd=tmp_path).stdout
        header = next(line for line in out.splitlines() if line.startswith("graph "))
        assert header.endswith(f"{{{attr}=5}}"), out
        assert f"// {pipeline.split(',')[-1]}: 5 neurons" in out
