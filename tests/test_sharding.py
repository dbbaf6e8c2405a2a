"""Data parallelism with jax.sharding: compile(devices=...), `nircomp run --devices`, the data-parallel
training example and the multi-process launch recipe.

Several devices need XLA_FLAGS=--xla_force_host_platform_device_count=N before jax starts, and this
process started jax with one CPU device; so the multi-device checks run in subprocesses, started together
by the `background` fixture (tests/sharding_check.py: every graph; examples/train_data_parallel.py;
examples/multihost.py as two processes over loopback) while the tests below that need only one device
run here. Why the reference is "the one-device model on each device's part of the batch" and not the
one-device model on the whole batch: XLA:CPU picks kernels by shape (a dot with 8 or more rows goes to
YNNPACK, convolutions differ between a batch of 1 and more), so even without sharding, a sample's last
bit can depend on how many samples share the call. Sharding adds no difference of its own: each device
runs the one-device program on its part, which these tests check bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest
from conftest import EXAMPLES, NIRCOMP, ROOT
from graphs import ALL_GRAPHS, DT, sample_input

import nircomp
from nircomp.errors import CompileError
from nircomp.sharding import ShardedModel


def _env(devices: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    return dict(os.environ, XLA_FLAGS=flags.strip())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _popen(args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or dict(os.environ), cwd=ROOT)


def _json(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def background():
    """The multi-device subprocesses, started at once (they run while the one-device tests run here)."""
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = {"check": _popen([ROOT / "tests" / "sharding_check.py"], _env(8)),
             "train": _popen([EXAMPLES / "train_data_parallel.py", "--steps", "30", "--json"], _env(4)),
             **{f"host{i}": _popen([EXAMPLES / "multihost.py", "--process-id", i, "--num-processes", 2,
                                    "--coordinator", coordinator, "--local-devices", 2]) for i in (0, 1)}}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def check(background) -> dict:
    return _json(background["check"])


# ----------------------------------------------------------------------------- CLI (subprocesses of its own)
def test_cli_run_devices_streams_chunks_and_equals_one_device(background, tmp_path):
    """`nircomp run --devices 4` streams 24 samples in 2 chunks of 12 (3 per device) with the progress line,
    for a .nir file and for an AOT artifact with a symbolic batch (--chunk 10 rounds up to 12), and writes
    exactly what the one-device model computes on the same 3-sample parts."""
    data = tmp_path / "x.npy"
    x = (np.random.default_rng(0).random((24, 30, 16)) < 0.3).astype(np.float32)
    np.save(data, x)
    net, art = EXAMPLES / "cubalif_chain.nir", tmp_path / "art"
    env = _env(4)
    nir_run = subprocess.Popen([NIRCOMP, "run", net, "--dt", "1e-3", "-i", data, "-o", tmp_path / "nir.npz",
                                "--devices", "4", "--chunk", "12", "--progress", "--record", "lif1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    compiled = subprocess.run([NIRCOMP, "compile", net, "-o", art, "--aot", "--batch", "B", "--dt", "1e-3",
                               "--record", "lif1"], env=env, capture_output=True, text=True, check=False)
    assert compiled.returncode == 0, compiled.stderr
    art_run = subprocess.run([NIRCOMP, "run", art, "-i", data, "-o", tmp_path / "art.npz", "--devices", "all",
                              "--chunk", "10", "--progress", "--record", "lif1"], env=env, capture_output=True,
                             text=True, check=False)
    _, err = nir_run.communicate()
    for rc, stderr in ((nir_run.returncode, err), (art_run.returncode, art_run.stderr)):
        assert rc == 0, stderr
        assert "run: 24/24 samples, 2/2 chunks" in stderr
    model = nircomp.compile(net, dt=1e-3, solver="step").model
    one = eqx.filter_jit(jax.vmap(lambda x: model(x, record=["lif1"])))
    parts = [one(x[i:i + 3]) for i in range(0, 24, 3)]
    expected = {"output": np.concatenate([p[0] for p in parts]), "lif1": np.concatenate([p[1]["lif1"] for p in parts])}
    assert expected["lif1"].sum() > 0
    for name in ("nir.npz", "art.npz"):
        with np.load(tmp_path / name) as got:
            assert sorted(got) == ["lif1", "output"]
            for k, want in expected.items():
                np.testing.assert_array_equal(got[k], want)


# ----------------------------------------------------------------------------- one device, in this process
def test_devices_none_keeps_the_plain_model():
    """devices=None (the default) returns the StepModel itself, equal leaf for leaf to a compile without it."""
    graph = ALL_GRAPHS["recurrent"]
    plain = nircomp.compile(graph(), dt=DT, solver="step").model
    same = nircomp.compile(graph(), dt=DT, solver="step", devices=None).model
    assert type(same).__name__ == "StepModel" and not isinstance(same, ShardedModel)
    assert bool(eqx.tree_equal(plain, same))


def test_one_device_sharded_model_is_the_vmapped_model():
    """devices=1 (or a list of one jax device) gives a ShardedModel whose batch results, recorded nodes
    included, are bit for bit jax.vmap of the plain model; the Program still prints its schedule and
    exports its parameters."""
    graph = ALL_GRAPHS["two_io"]
    prog = nircomp.compile(graph(), dt=DT, solver="step", devices=[jax.devices()[0]])
    assert isinstance(prog.model, ShardedModel) and prog.model.devices == [jax.devices()[0]]
    xs = [sample_input(graph(), T=20, seed=s) for s in range(5)]
    x = jax.tree.map(lambda *a: np.stack(a), *xs)
    plain = nircomp.compile(graph(), dt=DT, solver="step", devices=1).model.model
    expected = eqx.filter_jit(jax.vmap(lambda x: plain(x, record=["lif"])))(x)
    got = prog.model(x, record=["lif"])
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "// schedule:" in prog.as_text()
    assert prog.ir_with_params().op("lif").params.keys() == prog.ir.op("lif").params.keys()


@pytest.mark.parametrize("devices, message", [
    (2, "devices=2: this process sees 1 device(s)"),
    (0, "devices=0: this process sees 1 device(s)"),
    ("gpu", "devices='gpu': expected None, 'all'"),
    ([], "devices=[]: expected None, 'all'"),
    (True, "devices=True: expected None, 'all'"),
])
def test_bad_devices_are_refused(devices, message):
    """A device count this process does not have, or anything that is not 'all', a count or a list of jax
    devices, is a CompileError naming the value (with the XLA_FLAGS hint for a count)."""
    with pytest.raises(CompileError) as e:
        nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", devices=devices)
    assert message in str(e.value)
    if devices == 2:
        assert "--xla_force_host_platform_device_count" in str(e.value)


def test_bad_batch_axis_model_and_batch_are_refused(tmp_path):
    """batch_axis other than 0/1, batch_axis without devices, a model other than the equinox step model,
    inputs disagreeing on the batch size and an unknown recorded node are clear CompileErrors."""
    graph = ALL_GRAPHS["two_io"]
    with pytest.raises(CompileError, match=r"batch_axis=2: expected 0 \(\[B, T, \.\.\.\]\) or 1"):
        nircomp.compile(graph(), dt=DT, solver="step", devices=1, batch_axis=2)
    with pytest.raises(CompileError, match="batch_axis=1 applies only to a sharded model"):
        nircomp.compile(graph(), dt=DT, solver="step", batch_axis=1)
    with pytest.raises(CompileError, match=r"shards the step model of the equinox backend \(got a AotModel\)"):
        nircomp.compile(graph(), dt=DT, solver="step", backend="aot{batch=B}", out=tmp_path / "a", devices=1)
    model = nircomp.compile(graph(), dt=DT, solver="step", devices=1).model
    x = {"xa": np.zeros((3, 10, 3), np.float32), "xb": np.zeros((4, 10, 2), np.float32)}
    with pytest.raises(CompileError, match="the batch on axis 0; the input.s. have shapes"):
        model(x)
    with pytest.raises(CompileError, match="cannot record unknown node 'nope'"):
        model({"xa": x["xa"], "xb": x["xb"][:3]}, record=["nope"])


def test_artifact_without_batch_axis_cannot_be_sharded(tmp_path):
    """`run --devices` on an artifact exported without a batch axis is refused, naming the fix."""
    from nircomp import runio

    prog = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend="aot", out=tmp_path / "a")
    with pytest.raises(CompileError, match="no batch axis.*--aot --batch B"):
        runio.chunk_runner(prog.model, (), batched=True, chunk=4, devices=1)


# ----------------------------------------------------------------------------- several devices (subprocesses)
def test_sharded_outputs_equal_one_device_outputs_on_every_graph(check):
    """On 8 virtual devices, every test graph's sharded outputs and recorded values equal bit for bit the
    one-device model on each device's part of the batch, on 2 and 8 devices (8: a batch padded to a
    multiple of the device count), and for three graphs also on 1 and 4 devices and without record=."""
    assert check["devices"] == 8
    assert set(check["equal"]) == set(ALL_GRAPHS)
    bad = {g: r for g, r in check["equal"].items() if not all(r.values())}
    assert not bad, bad
    assert all({"2", "8"} <= set(r) for r in check["equal"].values())
    assert sum(set(r) == {"1", "2", "4", "8", "plain"} for r in check["equal"].values()) == 3


def test_batch_axis_and_noise_keys_under_sharding(check):
    """batch_axis=1 ([T, B, ...]) gives the transposed batch_axis=0 results; a noisy model's sample b uses
    key split(key, B)[b] whatever the padding, so it equals the model on that sample alone."""
    assert check["batch_axis1"] is True
    assert check["noise"] == {"equal": True, "key_matters": True}


def test_memory_per_device_falls_with_devices(check):
    """The compiled executable's per-device argument and output bytes are exactly the replicated parameters
    plus 1/n of the batch (arithmetic on the shapes), and temporaries shrink too, for n = 1, 2, 4, 8."""
    mem = {int(n): v for n, v in check["memory"].items()}
    assert sorted(mem) == [1, 2, 4, 8]
    for v in mem.values():
        assert v["argument"] == v["argument_expected"]
        assert v["output"] == v["output_expected"]
    totals = [mem[n]["argument"] + mem[n]["output"] + mem[n]["temp"] for n in (1, 2, 4, 8)]
    temps = [mem[n]["temp"] for n in (1, 2, 4, 8)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4
    assert temps == sorted(temps, reverse=True) and temps[-1] < temps[0] / 4


def test_train_data_parallel_example(background):
    """examples/train_data_parallel.py on 4 devices: the sharded jit's gradient equals the one-device
    gradient of the whole batch to float32 rounding (XLA's all-reduce sums in another order), the weights
    stay replicated, and 30 steps lift test accuracy from chance (0.25) above 0.8."""
    res = _json(background["train"])
    assert res["devices"] == 4 and res["weights_replicated"] is True
    assert res["grad_abs_max"] > 0 and res["grad_rel_diff"] < 1e-5
    assert res["loss_last"] < 0.6 * res["loss_first"]
    assert res["acc_before"] == 0.25 and res["acc_after"] > 0.8


def test_multihost_recipe_runs_two_processes_over_loopback(background):
    """examples/multihost.py as 2 processes x 2 CPU devices (jax.distributed, gloo over loopback): both see
    4 devices; the sharded outputs gathered from both hosts equal the one-device runs bit for bit, and the
    cross-process gradient matches the one-device gradient to float32 rounding."""
    reports = [_json(background[f"host{i}"]) for i in (0, 1)]
    assert [r["process"] for r in reports] == [0, 1]
    for r in reports:
        assert r["processes"] == 2 and r["devices"] == 4 and r["batch"] == 12 and r["spikes"] > 0
        assert r["forward_equal"] is True
        assert r["grad_abs_max"] > 0 and r["grad_rel_diff"] < 1e-5
