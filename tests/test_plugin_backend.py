"""The example backend plug-in `examples/plugin_backend` (numpy-ref, a NumPy interpreter of the step schedule).

Installed into a fresh venv next to a nircomp wheel (tests/venvtools.py), it is found through the
`nircomp.backends` entry points: listed by `nircomp passes` and used by `nircomp.compile(...,
backend="numpy-ref")`, from a directory outside the repository. Its outputs must equal the Equinox
backend's (allclose 1e-5): both implement the default "nir" convention, written independently (NumPy
loops and stride slicing against the JAX kernels). The in-process tests import the plug-in from its
folder and unregister it afterwards, so the other tests see the registry unchanged.
"""

from __future__ import annotations

import importlib
import json
import sys

import nir
import numpy as np
import pytest
from conftest import ROOT
from graphs import ALL_GRAPHS, DT, chain, sample_input
from venvtools import build_wheels, make_venv, pip, run

import nircomp
from nircomp.backends import BACKENDS
from nircomp.errors import CompileError

PLUGIN = ROOT / "examples" / "plugin_backend"
VENV_GRAPHS = ("recurrent", "conv2d_net", "delay_loop", "two_io")  # cycles, windows, delays, two inputs/outputs


def _as_dict(y) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in (y.items() if isinstance(y, dict) else [("y", y)])}


def _assert_close(got, want) -> None:
    got, want = _as_dict(got), _as_dict(want)
    assert got.keys() == want.keys()
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=1e-5, err_msg=k)


# ----------------------------------------------------------------------------- in process
@pytest.fixture
def numpy_ref():
    """The plug-in imported from its source folder (registering "numpy-ref"), unregistered afterwards."""
    sys.path.insert(0, str(PLUGIN))
    try:
        yield importlib.import_module("nircomp_numpy_ref")
    finally:
        sys.path.remove(str(PLUGIN))
        BACKENDS.pop("numpy-ref", None)
        for name in [m for m in sys.modules if m.startswith("nircomp_numpy_ref")]:
            del sys.modules[name]


@pytest.mark.parametrize("name", ALL_GRAPHS)
def test_numpy_ref_matches_equinox_on_every_test_graph(numpy_ref, name):
    """Every primitive and topology of the test graphs: the NumPy interpreter gives Equinox's outputs."""
    graph = ALL_GRAPHS[name]()
    x = sample_input(graph, 40)
    want = nircomp.compile(graph, dt=DT, solver="step").model(x)
    got = nircomp.compile(graph, dt=DT, solver="step", backend="numpy-ref").model(x)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in _as_dict(got).values())
    _assert_close(got, want)


def test_numpy_ref_lif_by_hand(numpy_ref):
    """LIF with dt/tau = 1/2, r = 2, v_threshold = 1 under a constant input 1: Euler gives v = 1.0 (not above
    the threshold: no spike), then 1 + (2 - 1)/2 = 1.5 (spike, reset to 0), and so on: spikes 0, 1, 0, 1."""
    one = np.ones(1, np.float32)
    graph = chain(1, ("lif", nir.LIF(tau=2 * DT * one, r=2 * one, v_leak=0 * one, v_threshold=one, v_reset=0 * one)))
    y = nircomp.compile(graph, dt=DT, backend="numpy-ref").model(np.ones((4, 1), np.float32))
    np.testing.assert_array_equal(y[:, 0], [0, 1, 0, 1])


@pytest.mark.parametrize("options, named", [({"convention": "snntorch", "dt": 1e-4}, "honour_v_reset=False"),
                                            ({"method": "exact"}, "method='exact'"),
                                            ({"reset": "subtract", "threshold": "ge"}, "reset='subtract'")])
def test_numpy_ref_refuses_other_semantics(numpy_ref, options, named):
    """Any step-solver option other than the "nir" defaults is one CompileError naming it, at compile time."""
    options = {"dt": DT, **options}
    with pytest.raises(CompileError, match=r'backend "numpy-ref" implements only the default "nir" convention') as e:
        nircomp.compile(ALL_GRAPHS["affine_lif"](), backend="numpy-ref", **options)
    assert named in str(e.value) and "[lower:numpy-ref]" in str(e.value)


def test_numpy_ref_accepts_gradient_only_options(numpy_ref):
    """The surrogate gradient does not change forward values, so choosing one is not refused."""
    graph = ALL_GRAPHS["affine_lif"]()
    x = sample_input(graph, 20)
    got = nircomp.compile(graph, dt=DT, backend="numpy-ref", surrogate="arctan", slope=2.0).model(x)
    _assert_close(got, nircomp.compile(graph, dt=DT, solver="step").model(x))


# ----------------------------------------------------------------------------- installed in a venv
SCRIPT = """
import importlib.metadata, json, sys
import numpy as np
import nircomp, nircomp_numpy_ref
from nircomp.errors import CompileError
report = {"nircomp": nircomp.__file__, "plugin": nircomp_numpy_ref.__file__,
          "entry_points": [ep.name for ep in importlib.metadata.entry_points(group="nircomp.backends")]}
data = np.load("inputs.npz")
outputs = {}
for name in sys.argv[1:]:
    x = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(name + "/")}
    y = nircomp.compile(name + ".nir", dt=float(data["dt"]), solver="step", backend="numpy-ref").model(x)
    outputs.update({name + "/" + k: v for k, v in (y.items() if isinstance(y, dict) else [("y", y)])})
np.savez("outputs.npz", **outputs)
try:
    nircomp.compile(sys.argv[1] + ".nir", dt=float(data["dt"]), backend="numpy-ref", method="exact")
except CompileError as e:
    report["refused"] = str(e)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    """A venv with the nircomp wheel and the numpy-ref plug-in wheel installed (no dependencies fetched)."""
    wheels = build_wheels(tmp_path_factory.mktemp("wheels"), ROOT, PLUGIN)
    bin_dir = make_venv(tmp_path_factory.mktemp("numpy_ref") / "venv")
    pip("install", "--no-deps", wheels["nircomp"], wheels["nircomp_numpy_ref"], python=bin_dir / "python")
    return bin_dir


def test_installed_plugin_is_listed_by_nircomp_passes(plugin_venv, tmp_path):
    """`nircomp passes` ends with the backend listing, which names the plug-in next to the built-ins."""
    listing = run(plugin_venv / "nircomp", "passes", cwd=tmp_path).stdout
    backends = next(line for line in listing.splitlines() if line.startswith("backends:"))
    names = [n.strip() for n in backends.removeprefix("backends:").split(",")]
    assert {"numpy-ref", "equinox", "nir"} <= set(names)


def test_installed_plugin_compiles_like_equinox(plugin_venv, tmp_path):
    """In the venv, from a directory outside the repository, compile(file, backend="numpy-ref") finds the
    plug-in through its entry point and gives the Equinox backend's outputs; other semantics are refused."""
    inputs, want = {"dt": np.asarray(DT)}, {}
    for name in VENV_GRAPHS:
        graph = ALL_GRAPHS[name]()
        nircomp.save(nircomp.load(graph), tmp_path / f"{name}.nir")
        x = sample_input(graph, 30)
        inputs.update({f"{name}/{k}": v for k, v in (x.items() if isinstance(x, dict) else [("in", x)])})
        y = nircomp.compile(tmp_path / f"{name}.nir", dt=DT, solver="step").model(x)
        want.update({f"{name}/{k}": v for k, v in _as_dict(y).items()})
    np.savez(tmp_path / "inputs.npz", **inputs)
    (tmp_path / "check.py").write_text(SCRIPT)
    report = json.loads(run(plugin_venv / "python", "check.py", *VENV_GRAPHS, cwd=tmp_path).stdout)
    site = plugin_venv.parent
    assert report["nircomp"].startswith(str(site)) and report["plugin"].startswith(str(site))
    assert "numpy-ref" in report["entry_points"]
    assert "implements only the default \"nir\" convention" in report["refused"] and "method='exact'" in report["refused"]
    with np.load(tmp_path / "outputs.npz") as got:
        _assert_close({k: got[k] for k in got.files}, want)
