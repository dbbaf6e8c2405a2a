"""Interop with jaxsnn: nircomp's analytical solver under convention="jaxsnn" reproduces jaxsnn's own NIR
import (`jaxsnn.event.utils.from_nir`, jaxsnn 0.3.0, event-based LIF with τm = 2τs or τm = τs).

Each random feed-forward network Input -> Linear -> CubaLIF -> Linear -> CubaLIF -> Output is run on the
same input spikes by jaxsnn (its Topology's apply, float64) and by `nircomp.compile(graph,
solver="analytical", convention="jaxsnn", t_max=...)`; the output spike times must agree to 1e-9 (τm = 2τs:
both closed forms) or 1e-7 (τm = τs: jaxsnn's Lambert W is 5 fixed-point iterations).

What convention="jaxsnn" encodes (docs/peers/jaxsnn.md has the source references): an input spike makes the
synaptic current jump by W (not w_in W/τs), r, w_in and v_leak are ignored, τ is read in ms (x 1e-3) with
times in s, and a Linear's weight is indexed as [pre, post] (so only square layers run there).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("jaxsnn")

import jax
import jax.numpy as jnp
import nir
from graphs import x64  # noqa: F401 (the fixture, used by name)
from jaxsnn.event.types import Spike
from jaxsnn.event.utils.from_nir import ConversionConfig, from_nir

import nircomp
from nircomp.events import Events

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout
T_MAX = 0.03  # s; the graphs' τ are in ms as jaxsnn reads them
N = 3


def _cuba(tau_syn, tau_mem, thr=1.0, v_reset=0.0):
    f = lambda v: np.full(N, v, dtype=np.float64)
    # r, w_in, v_leak away from their neutral values: jaxsnn ignores them, and so must the convention
    return nir.CubaLIF(tau_syn=f(tau_syn), tau_mem=f(tau_mem), r=f(1.7), v_leak=f(0.3), v_threshold=f(thr),
                       v_reset=f(v_reset), w_in=f(2.0))


def _net(seed, tau_syn, tau_mem):
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(np.array([N])), "fc1": nir.Linear(rng.uniform(0.5, 2.0, (N, N))),
             "lif1": _cuba(tau_syn, tau_mem), "fc2": nir.Linear(rng.uniform(0.5, 2.0, (N, N))),
             "lif2": _cuba(tau_syn, tau_mem, v_reset=-0.2), "output": nir.Output(np.array([N]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


@functools.lru_cache
def _jaxsnn_run(seed, tau_syn, tau_mem, steps1, steps2):
    """jaxsnn's output spikes (time, idx) of lif2 for `_net(seed, ...)` on `_inputs(seed)` (cached: each run
    compiles jaxsnn's scan anew)."""
    t, i = _inputs(seed)
    return _jaxsnn(_net(seed, tau_syn, tau_mem), t, i, {"lif1": steps1, "lif2": steps2})


def _jaxsnn(graph, t, i, n_steps):
    """jaxsnn's output spikes (time, idx) of lif2: its record mixes input events (internal=False) in."""
    init, apply = from_nir(graph, ConversionConfig(t_max=T_MAX, n_steps=n_steps)).done()
    t, i = jnp.asarray(t)[None], jnp.asarray(i)[None]
    inputs = Spike(time=t, idx=i, current=jnp.zeros_like(t), layer_idx=jnp.zeros_like(i),
                   internal=jnp.ones_like(i, dtype=bool))
    rec = apply({"input": inputs}, init(jax.random.PRNGKey(0)))["lif2"]
    own = np.asarray(rec.internal[0]) & (np.asarray(rec.time[0]) < T_MAX)
    return np.asarray(rec.time[0])[own], np.asarray(rec.idx[0])[own]


def _inputs(seed, count=8):
    rng = np.random.default_rng(seed + 50)
    return np.sort(rng.uniform(0, 0.5 * T_MAX, count)), rng.integers(0, N, count)


@pytest.mark.parametrize(("tau_syn", "tau_mem", "tol"), [(5.0, 10.0, 1e-9), (8.0, 8.0, 1e-7)],
                         ids=["tau_mem=2tau_syn", "tau_mem=tau_syn"])
@pytest.mark.parametrize("seed", [1])
def test_spike_times_match_jaxsnn(seed, tau_syn, tau_mem, tol):
    """Output spike times and indices of jaxsnn's from_nir equal nircomp's under convention='jaxsnn'."""
    graph = _net(seed, tau_syn, tau_mem)
    t, i = _inputs(seed)
    want_t, want_i = _jaxsnn_run(seed, tau_syn, tau_mem, 150, 150)
    out = nircomp.compile(graph, solver="analytical", convention="jaxsnn", t_max=T_MAX,
                          n_spikes={"lif1": 100, "lif2": 100}).model(Events(t, i))
    got = np.isfinite(np.asarray(out.times))
    assert len(want_t) >= 2 and not bool(out.any_overflow)
    np.testing.assert_array_equal(np.asarray(out.index)[got], want_i)
    np.testing.assert_allclose(np.asarray(out.times)[got], want_t, rtol=0, atol=tol * T_MAX)


def test_jaxsnn_budget_counts_inputs_and_truncates_silently():
    """jaxsnn's n_steps bounds input events and own spikes together and drops the rest without a flag, so a
    budget of lif1's own spike count changes jaxsnn's output silently; nircomp's n_spikes counts own spikes:
    that budget suffices, and one less sets lif1's overflow flag."""
    graph = _net(1, 5.0, 10.0)
    t, i = _inputs(1)
    big = {"lif1": 150, "lif2": 150}
    full_t, _ = _jaxsnn_run(1, 5.0, 10.0, 150, 150)
    prog = nircomp.compile(graph, solver="analytical", convention="jaxsnn", t_max=T_MAX, n_spikes=big)
    _, rec = prog.model(Events(t, i), record=["lif1"])
    n_lif1 = int(np.isfinite(np.asarray(rec["lif1"].times)).sum())
    cut_t, _ = _jaxsnn_run(1, 5.0, 10.0, n_lif1, 150)
    assert len(full_t) >= 2 and (len(cut_t) != len(full_t) or not np.allclose(cut_t, full_t))
    for budget, overflow in ((n_lif1, False), (n_lif1 - 1, True)):
        out = nircomp.compile(graph, solver="analytical", convention="jaxsnn", t_max=T_MAX,
                              n_spikes={"lif1": budget, "lif2": 150}).model(Events(t, i))
        assert bool(out.overflow["lif1"]) == overflow
        if not overflow:
            np.testing.assert_allclose(np.asarray(out.times)[np.isfinite(np.asarray(out.times))], full_t,
                                       rtol=0, atol=1e-9 * T_MAX)
