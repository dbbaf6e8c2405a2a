"""`nircomp compile --aot` / `nircomp run` and the AOT artifact (backends/aot.py, nircomp/runio.py).

The reference everywhere is the Equinox module under `jit`, the step solver's tested implementation: the
artifact is the same jitted function with the parameters as arguments, so on the same machine XLA gives
the same bits. Data files are built by hand here, with expectations from the rules of nircomp/runio.py.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import equinox as eqx
import nir
import numpy as np
import pytest
from conftest import EXAMPLES, run_cli
from graphs import ALL_GRAPHS, DT, sample_input

import nircomp
from nircomp import runio
from nircomp.backends.aot import load_artifact
from nircomp.cli import main
from nircomp.errors import CompileError

PNG = b"\x89PNG\r\n\x1a\n"


def _as_dict(y, names):
    return y if isinstance(y, dict) else {names[0]: y}


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a) and a.keys() == b.keys()


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory):
    """The example recurrent_subgraph.nir compiled for dt=1e-3 with the Equinox backend, and one input."""
    x = (np.random.default_rng(3).random((60, 12)) < 0.3).astype(np.float32) * 3
    model = nircomp.compile(EXAMPLES / "recurrent_subgraph.nir", dt=1e-3, solver="step").model
    return model, x


# ----------------------------------------------------------------------------- the artifact, via the API
@pytest.mark.parametrize("name", sorted(ALL_GRAPHS))
def test_artifact_is_bitwise_the_equinox_module(name, tmp_path):
    """One artifact with a symbolic time axis, written, loaded back from disk and run at two lengths, gives
    exactly the jitted Equinox module's outputs (same computation, same parameter arguments)."""
    graph = ALL_GRAPHS[name]()
    ref = nircomp.compile(graph, dt=DT, solver="step").model
    prog = nircomp.compile(graph, dt=DT, solver="step", backend="aot", out=tmp_path / "art")
    assert set(prog.artifacts) == {"exported", "params", "meta"} and all(p.is_file() for p in prog.artifacts.values())
    model = load_artifact(tmp_path / "art")
    outs = list(ref.schedule.outputs)
    for T in (40, 17):
        x = sample_input(graph, T, seed=T)
        want = _as_dict(eqx.filter_jit(ref)(x), outs)
        assert _same(_as_dict(model(x), outs), want)
        assert _same(_as_dict(prog.model(x), outs), want)  # Program.model: the deserialised artifact


@pytest.mark.parametrize("batch", ["B", "3"])
def test_batched_artifact_is_bitwise_the_vmapped_module(batch, tmp_path):
    """`batch=B` (any size) and `batch=3` export the vmapped model; with record= the recorded node comes
    back too; both equal the jitted, vmapped Equinox module bit for bit."""
    graph = ALL_GRAPHS["heterogeneous"]()
    ref = nircomp.compile(graph, dt=DT, solver="step").model
    model = nircomp.compile(graph, dt=DT, solver="step", backend=f"aot{{batch={batch} record=lif1}}").model
    xb = np.stack([sample_input(graph, 30, seed=s) for s in range(3)])
    y, rec = model(xb, record=["lif1"])
    y_ref, rec_ref = eqx.filter_jit(eqx.filter_vmap(lambda m, x: m(x, record=["lif1"]), in_axes=(None, 0)))(ref, xb)
    assert np.array_equal(y, y_ref) and np.array_equal(rec["lif1"], rec_ref["lif1"])
    assert rec["lif1"].shape == (3, 30, 5)


def test_fixed_time_artifact_refuses_other_lengths(tmp_path):
    """An artifact exported for 50 steps runs 50 steps and names the expected shape for any other length."""
    graph = ALL_GRAPHS["affine_lif"]()
    model = nircomp.compile(graph, dt=DT, solver="step", backend="aot{input_shape=50}").model
    assert model(sample_input(graph, 50)).shape[0] == 50
    with pytest.raises(CompileError, match=r"expected \[50, 3\]"):
        model(sample_input(graph, 49))
    with pytest.raises(CompileError, match="records only the nodes named at compile time"):
        model(sample_input(graph, 50), record=["lif"])


def test_multi_platform_artifact_runs_here():
    """platforms=cpu,cuda lowers for both (no GPU needed to export); the CPU variant runs here, bitwise."""
    graph = ALL_GRAPHS["self_loop"]()
    ref = nircomp.compile(graph, dt=DT, solver="step").model
    model = nircomp.compile(graph, dt=DT, solver="step", backend="aot{platforms=cpu,cuda}").model
    assert model.meta["platforms"] == ["cpu", "cuda"]
    x = sample_input(graph, 25)
    assert np.array_equal(model(x), eqx.filter_jit(ref)(x))


def test_precompiled_artifact_loads_its_executable_only_on_the_same_host(tmp_path):
    """precompile=true stores this machine's XLA executable: loading runs it (bitwise the module's output);
    an artifact whose key names another jax version falls back to the portable export, same output; with
    a symbolic time axis there is nothing fixed to compile for."""
    import json

    graph = ALL_GRAPHS["delay_loop"]()
    ref = nircomp.compile(graph, dt=DT, solver="step").model
    prog = nircomp.compile(graph, dt=DT, solver="step", backend="aot{input_shape=30 precompile=true}", out=tmp_path)
    assert prog.artifacts["compiled"].is_file()
    x = sample_input(graph, 30)
    model = load_artifact(tmp_path)
    assert model.precompiled and np.array_equal(model(x), eqx.filter_jit(ref)(x))
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["compiled"]["jax"] = "0.0.0"
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    model = load_artifact(tmp_path)
    assert not model.precompiled and np.array_equal(model(x), eqx.filter_jit(ref)(x))
    with pytest.raises(CompileError, match="precompiling needs fixed shapes"):
        nircomp.compile(graph, dt=DT, solver="step", backend="aot{precompile=true}")


# ----------------------------------------------------------------------------- the CLI, end to end
def test_compile_then_run_end_to_end(cli, tmp_path, recurrent):
    """compile --aot writes the three files; with the .nir file deleted, run gives the Equinox module's
    output and recorded spikes bit for bit, writes them as .npz and draws a PNG raster."""
    model, x = recurrent
    net = shutil.copy(EXAMPLES / "recurrent_subgraph.nir", tmp_path / "net.nir")
    res = cli("compile", net, "-o", tmp_path / "art", "--aot", "--dt", "1e-3", "--record", "lif1.lif")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["meta.json", "model.jaxexport", "params.npz"]
    os.remove(net)
    np.save(tmp_path / "spikes.npy", x)
    res = cli("run", "art", "--input", "spikes.npy", "--record", "lif1.lif", "--plot", "raster.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    y_ref, rec_ref = eqx.filter_jit(lambda m, x: m(x, record=["lif1.lif"]))(model, x)
    with np.load(tmp_path / "spikes.out.npz") as out:  # the default name: <input stem>.out.npz
        assert sorted(out) == ["lif1.lif", "output"]
        assert np.array_equal(out["output"], y_ref) and np.array_equal(out["lif1.lif"], rec_ref["lif1.lif"])
        assert set(np.unique(out["lif1.lif"])) == {0.0, 1.0}  # spikes of amplitude 1
    png = (tmp_path / "raster.png").read_bytes()
    assert png[:8] == PNG and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 400 and height >= 300 and len(png) > 10_000  # two drawn panels, not an empty image


def test_run_of_an_artifact_traces_nothing(tmp_path, recurrent):
    """Running an artifact imports neither the runner, the kernels, the Equinox backend nor equinox: the
    model is never traced again (checked in a fresh interpreter, outside the repository)."""
    model, x = recurrent
    nircomp.compile(EXAMPLES / "recurrent_subgraph.nir", dt=1e-3, solver="step", backend="aot", out=tmp_path / "a")
    np.save(tmp_path / "x.npy", x)
    code = ("import sys; from nircomp.cli import main; rc = main(['run', 'a', '-i', 'x.npy']); "
            "print(rc, sorted(m for m in sys.modules if m.startswith(('nircomp.', 'equinox'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    rc, modules = res.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "0", res.stderr
    for forbidden in ("nircomp.runner", "nircomp.kernels.step", "nircomp.backends.equinox", "equinox", "nircomp.passes"):
        assert f"'{forbidden}'" not in modules
    assert np.array_equal(np.load(tmp_path / "x.out.npz")["output"], eqx.filter_jit(model)(x))


def test_batched_data_in_chunks_with_progress(cli, tmp_path):
    """N samples of two inputs (.npz by input name) run in chunks: a fixed-batch artifact pads the last
    chunk, the .nir file runs --chunk at a time; every sample equals its own unbatched run, and
    --progress reports the samples done."""
    graph = ALL_GRAPHS["two_io"]()
    nir.write(tmp_path / "two.nir", graph)
    samples = [sample_input(graph, 20, seed=s) for s in range(5)]
    np.savez(tmp_path / "data.npz", **{k: np.stack([s[k] for s in samples]) for k in ("xa", "xb")})
    res = cli("compile", "two.nir", "-o", "art", "--aot", "--dt", str(DT), "--batch", "2",
              "--input-shape", "xa=T,3", "--input-shape", "xb=T", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    runs = [cli("run", "art", "-i", "data.npz", "-o", "aot.npz", "--progress", cwd=tmp_path),
            cli("run", "two.nir", "--dt", str(DT), "-i", "data.npz", "-o", "nir.npz", "--chunk", "2", cwd=tmp_path)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert "run: 5/5 samples, 3/3 chunks" in runs[0].stderr
    ref = eqx.filter_jit(nircomp.compile(graph, dt=DT, solver="step").model)
    want = [ref(s) for s in samples]
    for file in ("aot.npz", "nir.npz"):
        with np.load(tmp_path / file) as out:
            for k in ("ya", "yb"):
                assert out[k].shape == (5, 20, 2)
                np.testing.assert_allclose(out[k], np.stack([w[k] for w in want]), rtol=1e-6, atol=1e-6)


def test_nir_data_in_and_out(cli, tmp_path, recurrent):
    """NIR data in (EventData, binned on the dt grid) and out (-o .nir: TimeGriddedData per node, spikes
    as bool), equal to running the binned array."""
    model, _ = recurrent
    shutil.copy(EXAMPLES / "recurrent_subgraph.nir", tmp_path / "net.nir")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 12, (2, 200))
    time = np.round(rng.uniform(0, 0.0499, (2, 200)), 4)  # within the recording [0, t_max)
    nir.write_data(tmp_path / "in.nir", nir.NIRGraphData(
        {"input": nir.NIRNodeData({"spikes": nir.EventData(idx, time, n_neurons=12, t_max=0.05)})}))
    res = cli("run", "net.nir", "--dt", "1e-3", "-i", "in.nir", "-o", "out.nir", "--record", "lif1.lif", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    grid = np.zeros((2, 50, 12), np.float32)
    for s in range(2):
        for i, t in zip(idx[s], time[s], strict=True):
            grid[s, int(np.floor(t / 1e-3 + 1e-9)), i] += 1
    out = nir.read_data(tmp_path / "out.nir")
    y = out.nodes["output"].observables["output"]
    assert isinstance(y, nir.TimeGriddedData) and y.dt == 1e-3 and y.data.shape == (2, 50, 7)
    want = eqx.filter_jit(eqx.filter_vmap(lambda m, x: m(x, record=["lif1.lif"]), in_axes=(None, 0)))(model, grid)
    np.testing.assert_allclose(y.data, want[0], rtol=1e-6, atol=1e-6)
    spikes = out.nodes["lif1.lif"].observables["output"].data
    assert spikes.dtype == bool and np.array_equal(spikes, np.asarray(want[1]["lif1.lif"]) == 1)


def test_connectivity_flag_lowers_and_keeps_results(tmp_path, monkeypatch, capsys):
    """`run --connectivity` and `compile --connectivity` apply lower-connectivity: on a 512x512 identity
    layer (as large as min_weights) the source module embeds the connectivity kernels, and the run's
    outputs equal the dense run's (the identity kernel passes x through: exactly)."""
    n = 512
    lif = nir.LIF(tau=np.full(n, 1e-3), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5),
                  v_reset=np.zeros(n))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([n])), "fc": nir.Linear(np.eye(n)), "lif": lif,
                                "output": nir.Output(np.array([n]))},
                         edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    nir.write(tmp_path / "eye.nir", graph)
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((30, n)) < 0.3).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "eye.nir", "-i", "x.npy", "-o", "dense.npz"]) == 0
    assert main(["run", "eye.nir", "-i", "x.npy", "-o", "lowered.npz", "--connectivity"]) == 0
    dense, lowered = np.load("dense.npz"), np.load("lowered.npz")
    assert dense["output"].any()
    np.testing.assert_array_equal(lowered["output"], dense["output"])
    assert main(["compile", "eye.nir", "-o", "src", "--backend", "source", "--solver", "step",
                 "--connectivity"]) == 0
    assert main(["compile", "eye.nir", "-o", "plain", "--backend", "source", "--solver", "step"]) == 0
    assert "def connected(" in (tmp_path / "src" / "model.py").read_text()
    assert "def connected(" not in (tmp_path / "plain" / "model.py").read_text()
    capsys.readouterr()


def test_event_binning_rule(tmp_path):
    """Events go to step floor(t/dt) (t = 3 dt exactly lands in step 3, not 2 by rounding error); events in
    one step add up; padding (idx -1, time inf) and events at or after t_max are ignored; T = t_max/dt."""
    ev = nir.EventData(idx=np.array([[0, 1, 1, 2, -1, 0]]), time=np.array([[0.0, 0.003, 0.0031, 0.0049, np.inf,
                                                                             0.005]]), n_neurons=3, t_max=0.005)
    nir.write_data(tmp_path / "ev.nir", nir.NIRGraphData({"x": nir.NIRNodeData({"spikes": ev})}))
    got = runio.read_inputs(tmp_path / "ev.nir", {"x": (3,)}, dt=1e-3)["x"]
    want = np.zeros((1, 5, 3))
    want[0, 0, 0] = 1
    want[0, 3, 1] = 2
    want[0, 4, 2] = 1
    assert np.array_equal(got, want)
    gridded = nir.TimeGriddedData(np.zeros((1, 5, 3), bool), dt=1e-4)
    nir.write_data(tmp_path / "g.nir", nir.NIRGraphData({"x": nir.NIRNodeData({"v": gridded})}))
    with pytest.raises(CompileError, match=r"sampled at dt=0.0001, but the model runs at dt=0.001"):
        runio.read_inputs(tmp_path / "g.nir", {"x": (3,)}, dt=1e-3)


def test_plot_without_matplotlib_is_one_line(tmp_path, recurrent):
    """--plot with matplotlib missing fails before running, with one line saying how to install it."""
    _, x = recurrent
    np.save(tmp_path / "x.npy", x)
    code = ("import sys; sys.modules['matplotlib'] = None; from nircomp.cli import main; "
            f"sys.exit(main(['run', {str(EXAMPLES / 'recurrent_subgraph.nir')!r}, '-i', 'x.npy', '--plot', 'r.png']))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert res.returncode == 1 and res.stderr == "error: --plot needs matplotlib: pip install 'nircomp[plot]'\n"
    assert not (tmp_path / "x.out.npz").exists()


# ----------------------------------------------------------------------------- bad input: one line, exit != 0
CHAIN = str(EXAMPLES / "cubalif_chain.nir")
BAD = {  # name: (arguments, exit code, text of the one error line)
    "missing .nir": (["compile", "nope.nir", "-o", "o", "--aot"], 1, "nope.nir [load]: file not found"),
    "missing target": (["run", "nope", "-i", "x16.npy"], 1, "nope: no such file or directory"),
    "missing data": (["run", "art", "-i", "nope.npy"], 1, "nope.npy: no such input file"),
    "not an artifact": (["run", ".", "-i", "x16.npy"], 1, ".: not an AOT artifact (no meta.json)"),
    "unknown backend": (["compile", CHAIN, "-o", "o", "--backend", "bogus"], 1, "unknown backend 'bogus'"),
    "equinox writes nothing": (["compile", CHAIN, "-o", "o"], 1, "add --aot"),
    "aot with source": (["compile", CHAIN, "-o", "o", "--aot", "--backend", "source"], 1, "does not combine"),
    "aot option without --aot": (["compile", CHAIN, "-o", "o", "--batch", "2"], 1, "--batch only applies with --aot"),
    "zero steps": (["compile", CHAIN, "-o", "o", "--aot", "--input-shape", "0,16"], 1,
                   "time axis '0' is neither a positive integer nor 'T'"),
    "wrong per-step shape": (["compile", CHAIN, "-o", "o", "--aot", "--input-shape", "T,15"], 1,
                             "does not match the graph: expected T,16"),
    "unknown input name": (["compile", CHAIN, "-o", "o", "--aot", "--input-shape", "x=T,16"], 1,
                           "names unknown input 'x'"),
    "bad batch": (["compile", CHAIN, "-o", "o", "--aot", "--batch", "two"], 1, "batch 'two' is neither"),
    "unknown platform": (["compile", CHAIN, "-o", "o", "--aot", "--platforms", "tpu9"], 1, "unknown platform(s) tpu9"),
    "precompile any length": (["compile", CHAIN, "-o", "o", "--aot", "--precompile"], 1,
                              "precompiling needs fixed shapes"),
    "wrong data shape": (["run", "art", "-i", "x12.npy"], 1,
                         "x12.npy: input 'input' has shape [20, 12], expected [T, 16] or [N, T, 16]"),
    "wrong length": (["run", "art", "-i", "x16_30.npy"], 1, "the inputs have 30 time steps; the artifact was compiled"),
    "dt differs": (["run", "art", "-i", "x16.npy", "--dt", "1e-3"], 1, "compiled for dt=0.0001, not --dt 0.001"),
    "not recorded": (["run", "art", "-i", "x16.npy", "--record", "lif1"], 1, "the artifact records no node"),
    "unknown node": (["run", CHAIN, "-i", "x16.npy", "--record", "nope"], 1, "cannot record unknown node 'nope'"),
    "output format": (["run", "art", "-i", "x16.npy", "-o", "y.txt"], 1, "y.txt: unsupported output format"),
    "connectivity of an artifact": (["run", "art", "-i", "x16.npy", "--connectivity"], 1,
                                    "an artifact's connectivity is fixed when it is compiled"),
    "bad float": (["compile", CHAIN, "-o", "o", "--aot", "--dt", "x"], 2, "argument --dt: invalid float value"),
}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    """A directory with a 20-step artifact of cubalif_chain.nir (dt=1e-4) and input files."""
    d = tmp_path_factory.mktemp("bad")
    nircomp.compile(CHAIN, solver="step", backend="aot{input_shape=20}", out=d / "art")
    np.save(d / "x16.npy", np.zeros((20, 16), np.float32))
    np.save(d / "x16_30.npy", np.zeros((30, 16), np.float32))
    np.save(d / "x12.npy", np.zeros((20, 12), np.float32))
    return d


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_line(case, bad_dir, monkeypatch, capsys):
    """Each bad input exits non-zero with exactly one stderr line, `error: ...` naming the problem, no
    traceback (the CLI's main, in this process: the console script only wraps it, see the next test)."""
    args, code, text = BAD[case]
    monkeypatch.chdir(bad_dir)
    try:
        rc = main(args)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], err


def test_bad_input_through_the_console_script(bad_dir):
    """The same through the installed `nircomp` script: a missing file, a wrong input shape and an
    unknown backend each give one `error:` line, exit status 1, no traceback."""
    cases = ["missing .nir", "wrong data shape", "unknown backend"]
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = list(pool.map(lambda c: run_cli(*BAD[c][0], cwd=bad_dir), cases))
    for case, res in zip(cases, runs, strict=True):
        assert res.returncode == 1 and res.stderr.count("\n") == 1 and BAD[case][2] in res.stderr, res.stderr
        assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
