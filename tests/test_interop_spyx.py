"""Interop with spyx: nircomp under convention="spyx" reproduces spyx's own NIR import.

Each network is built in spyx (flax.nnx modules), exported with `spyx.nir.to_nir`, and run twice on the same
random input: by `spyx.nir.from_nir` of that graph (its Sequential scanned over time, channels-last) and by
`nircomp.compile(graph, convention="spyx")` (channels-first, batched with jax.vmap). Spike trains must
agree (<= 0.1 % flips, for float32 ties at the threshold); membrane and synaptic-current traces, read from
spyx's per-step states and nircomp's `model.step` state, to 1e-5 relative.

What spyx cannot round-trip (docs/peers/spyx.md has the source references):
- CubaLI, I, Scale, Delay, AvgPool2d, Conv1d: the exporter emits none of them and the importer silently
  drops them from the chain; a lone LI (without the Threshold of a PSU_LIF) raises in the importer.
- Recurrent layers (RIF/RLIF/RCuBaLIF) are exported mis-wired: the subgraph sends its input through the
  recurrent weights (input -> w_rec), while the importer ignores the subgraph's edges and runs
  V += x + s W_rec. nircomp keeps the graph's meaning; the tests show that it matches the peer once the
  input edge goes to the neuron, the wiring the importer really uses.
- SumPool2d "SAME" is exported with the total pad as NIR's per-side pad, so only VALID pooling is compared.
- CuBaLIF runs only 1-D in spyx (its state doubles every axis but splits the last), so the conv network
  uses LIF after the conv and CuBaLIF after the Flatten.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("spyx")
nnx = pytest.importorskip("flax.nnx")

import jax
import jax.numpy as jnp
import nir
import spyx.nn as snn
from spyx.nir import from_nir, to_nir

import nircomp

DT = 1e-3
T, B = 100, 4


def _export(model, in_shape, out_shape) -> nir.NIRGraph:
    return to_nir(model, {"input": np.array(in_shape)}, {"output": np.array(out_shape)}, dt=DT)


def _peer(graph: nir.NIRGraph, x: np.ndarray):
    """spyx's import of `graph` run on x [T, B, ...] (channels-first, moved to spyx's channels-last):
    (spikes [T, B, ...], per-layer states [T, B, ...]); the importer edits its argument, so it gets a copy."""
    if x.ndim == 5:
        x = np.moveaxis(x, 2, -1)
    _, (y, states) = from_nir(copy.deepcopy(graph), jnp.asarray(x), dt=DT, return_all_states=True)
    return np.asarray(y), states


def _ours(graph, x: np.ndarray, **options):
    """nircomp's model of `graph` under convention="spyx" on x [T, B, ...]: (spikes [T, B, ...], the
    per-entry neuron state after every step, from `model.step`)."""
    model = nircomp.compile(graph, dt=DT, solver="step", convention="spyx", **options).model

    def run(xs):
        def body(s, x_t):
            s, _ = model.step(s, x_t)
            return s, s["state"]
        return model(xs), jax.lax.scan(body, model.init_state(), xs)[1]

    y, states = jax.jit(jax.vmap(run, in_axes=1, out_axes=1))(jnp.asarray(x))
    return np.asarray(y), states


def _assert_spikes(ours, peer):
    assert ours.shape == peer.shape
    flips = np.mean(ours != peer)
    assert flips <= 1e-3, f"{flips:.2%} of the spikes differ"
    rate = peer.mean()
    assert 0.01 < rate < 0.9, f"the test input is too weak or too strong (rate {rate:.3f})"


def _assert_trace(ours, peer):
    ours, peer = np.asarray(ours), np.asarray(peer)
    np.testing.assert_allclose(ours, peer, rtol=1e-5, atol=1e-5 * np.abs(peer).max())


def _fc(n_in, n_out, rngs, mean=0.1):
    """nnx.Linear with weights N(mean, 0.5^2): mixed signs, but a positive input drives most neurons."""
    init = lambda key, shape, dtype=jnp.float32: mean + 0.5 * jax.random.normal(key, shape, dtype)
    return nnx.Linear(n_in, n_out, kernel_init=init, rngs=rngs)


def _input(shape, seed, scale=2.0):
    return np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), (T, B, *shape)) * scale, dtype=np.float32)


# ----------------------------------------------------------------------------- feedforward neurons
@pytest.mark.parametrize("kind", ["LIF", "CuBaLIF", "IF"])
def test_dense_network_matches_peer(kind):
    """Linear -> neuron -> Linear -> neuron, per-neuron beta/alpha: same spikes, same membranes.

    spyx fires on the membrane before the step (nn.py LIF.__call__), so a two-layer network's output lags
    two steps behind NIR's reading; the preset reproduces that, and the layer-1 membrane after every step."""
    rngs = nnx.Rngs(1)
    cls = getattr(snn, kind)
    extra = {} if kind == "IF" else {"rngs": rngs}
    model = snn.Sequential(_fc(5, 8, rngs), cls((8,), threshold=0.8, **extra),
                           _fc(8, 4, rngs), cls((4,), **extra))
    graph = _export(model, [5], [4])
    x = _input((5,), seed=2)
    y_peer, states = _peer(graph, x)
    y, ours = _ours(graph, x)
    _assert_spikes(y, y_peer)
    v_peer = states[1]
    if kind == "CuBaLIF":  # spyx keeps [V, I] concatenated on the last axis
        v_peer, i_peer = np.split(np.asarray(v_peer), 2, axis=-1)
        _assert_trace(ours["layer_1"][0], i_peer)
        _assert_trace(ours["layer_1"][1], v_peer)
    else:
        _assert_trace(ours["layer_1"][0], v_peer)


def test_before_update_emits_the_previous_steps_spike():
    """fire_timing="before-update": with the same reset, spyx's spikes are NIR-order spikes one step late.

    A single IF layer under the preset equals the same preset with fire_timing="after-update" shifted
    by one step (the membrane dynamics are the same; only the emitted step moves)."""
    rngs = nnx.Rngs(3)
    graph = _export(snn.Sequential(_fc(3, 6, rngs), snn.IF((6,))), [3], [6])
    x = _input((3,), seed=4, scale=1.0)
    late, _ = _ours(graph, x)
    now, _ = _ours(graph, x, fire_timing="after-update")
    assert not late[0].any()
    np.testing.assert_array_equal(late[1:], now[:-1])
    _assert_spikes(late, _peer(graph, x)[0])


def test_psu_lif_exports_li_and_threshold():
    """PSU_LIF (reset-free) exports as LI -> Threshold; spyx re-imports the pair as V = beta V + x,
    spike on the updated V (no lag: Threshold is stateless). The LI membrane matches spyx's state."""
    from spyx.experimental import PSU_LIF

    rngs = nnx.Rngs(5)
    graph = _export(snn.Sequential(_fc(4, 6, rngs), PSU_LIF((6,), threshold=1.5, rngs=rngs)), [4], [6])
    assert isinstance(graph.nodes["layer_1"], nir.LI) and isinstance(graph.nodes["layer_1_threshold"], nir.Threshold)
    x = _input((4,), seed=6)
    y_peer, states = _peer(graph, x)
    y, ours = _ours(graph, x)
    _assert_spikes(y, y_peer)
    _assert_trace(ours["layer_1"], states[1])


# ----------------------------------------------------------------------------- convolution
def test_conv_pool_flatten_network_matches_peer(tmp_path):
    """Conv2d -> LIF -> SumPool2d (VALID) -> Flatten -> Affine -> CuBaLIF, compiled from a written file.

    spyx runs channels-last and flattens [H, W, C] while declaring NIR's [C, H, W] (flatten_order): the
    Affine after the Flatten was trained for that order, and reading it channels-first changes the output."""
    rngs = nnx.Rngs(7)
    model = snn.Sequential(nnx.Conv(2, 4, (3, 3), rngs=rngs), snn.LIF((8, 8, 4), rngs=rngs),
                           snn.SumPool((2, 2), (2, 2), "VALID"), snn.Flatten(),
                           _fc(64, 5, rngs), snn.CuBaLIF((5,), rngs=rngs))
    graph = _export(model, [2, 8, 8], [5])
    path = tmp_path / "spyx_conv.nir"
    nir.write(path, graph)
    x = 0.5 * (_input((2, 8, 8), seed=8, scale=1.0) < 0.4).astype(np.float32)
    y_peer, states = _peer(graph, x)
    y, ours = _ours(str(path), x)
    _assert_spikes(y, y_peer)
    _assert_trace(ours["layer_1"][0], np.moveaxis(np.asarray(states[1]), -1, 2))  # spyx's [H, W, C] state
    chw, _ = _ours(str(path), x, flatten_order="channels-first")
    assert np.mean(chw != y_peer) > 0.01


# ----------------------------------------------------------------------------- recurrence
def _rewired(graph: nir.NIRGraph) -> nir.NIRGraph:
    """spyx's recurrent subgraph with its input edge moved from w_rec to the neuron (what from_nir runs)."""
    graph = copy.deepcopy(graph)
    for key, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            node.edges = [(a, f"{key}.lif") if (a, b) == (f"{key}.input", f"{key}.w_rec") else (a, b)
                          for a, b in node.edges]
    return graph


@pytest.mark.parametrize(("kind", "schedule"), [("RLIF", "scc"), ("RLIF", "per-step"), ("RCuBaLIF", "scc"),
                                                ("RIF", "per-step")])
def test_recurrent_layer_matches_peer_with_the_edge_it_runs(kind, schedule):
    """A recurrent layer: spyx runs V_t = beta V + x_t + s_t W - s_t th with s_t its emitted spike, so the
    loop closes with the neuron's own one-step lag (no extra back-edge delay), whatever the schedule.

    spyx's exported subgraph wires input -> w_rec; its importer ignores those edges (the output on the
    rewired graph is identical), and nircomp on the rewired graph matches it."""
    rngs = nnx.Rngs(9)
    layer = getattr(snn, kind)((6,), rngs=rngs)
    layer.recurrent_w[...] = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (6, 6))  # feedback that matters
    model = snn.Sequential(_fc(4, 6, rngs), layer, _fc(6, 3, rngs), snn.LIF((3,), rngs=rngs))
    graph = _export(model, [4], [3])
    assert ("layer_1.input", "layer_1.w_rec") in graph.nodes["layer_1"].edges
    rewired = _rewired(graph)
    x = _input((4,), seed=10)
    y_peer, states = _peer(graph, x)
    np.testing.assert_array_equal(_peer(rewired, x)[0], y_peer)
    y, ours = _ours(rewired, x, schedule=schedule)
    _assert_spikes(y, y_peer)
    v_peer = np.split(np.asarray(states[1]), 2, axis=-1)[0] if kind == "RCuBaLIF" else states[1]
    _assert_trace(ours["layer_1.layer_1.lif"][-2], v_peer)


# ----------------------------------------------------------------------------- foreign graphs
def _foreign(neuron) -> nir.NIRGraph:
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(11), (5, 3)), dtype=np.float32)
    return nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([3])}), "fc": nir.Linear(w), "n": neuron,
                               "output": nir.Output({"output": np.array([5])})},
                        edges=[("input", "fc"), ("fc", "n"), ("n", "output")])


@pytest.mark.parametrize("kind", ["LIF", "CubaLIF", "IF"])
def test_ignored_parameters_of_a_foreign_graph(kind):
    """spyx's importer reads only tau (tau_syn, tau_mem) and v_threshold: r, w_in, v_leak and v_reset of a
    graph from another tool are dropped, and the reset subtracts v_threshold. The preset does the same;
    under "nir" the same graph gives other spikes."""
    ones = np.ones(5, dtype=np.float32)
    common = {"r": 2.0 * ones, "v_threshold": ones}
    neuron = {"LIF": lambda: nir.LIF(tau=5e-3 * ones, v_leak=0.3 * ones, v_reset=0.4 * ones, **common),
              "CubaLIF": lambda: nir.CubaLIF(tau_syn=4e-3 * ones, tau_mem=6e-3 * ones, v_leak=0.3 * ones,
                                             v_reset=0.4 * ones, w_in=0.5 * ones, **common),
              "IF": lambda: nir.IF(v_reset=0.4 * ones, **common)}[kind]()
    graph = _foreign(neuron)
    x = _input((3,), seed=12, scale=0.5)
    y_peer, _ = _peer(graph, x)
    y, _ = _ours(graph, x)
    _assert_spikes(y, y_peer)
    nir_y = jax.vmap(nircomp.compile(graph, dt=DT, solver="step").model, in_axes=1, out_axes=1)(jnp.asarray(x))
    assert np.mean(np.asarray(nir_y) != y_peer) > 0.01


# ----------------------------------------------------------------------------- gradients
def test_input_gradient_matches_peer():
    """Both use SuperSpike with k = 25 (spyx.axn.superspike) and let the reset carry gradient: the gradient
    of a readout of the spikes with respect to the input agrees."""
    rngs = nnx.Rngs(13)
    model = snn.Sequential(_fc(4, 6, rngs), snn.LIF((6,), rngs=rngs),
                           _fc(6, 3, rngs), snn.CuBaLIF((3,), rngs=rngs))
    graph = _export(model, [4], [3])
    x = _input((4,), seed=14)[:, :1]
    readout = jax.random.normal(jax.random.PRNGKey(15), (T, 1, 3))
    peer_model = from_nir(copy.deepcopy(graph), jnp.asarray(x), dt=DT)[0]
    ours = nircomp.compile(graph, dt=DT, solver="step", convention="spyx").model

    g_peer = jax.grad(lambda x: jnp.sum(snn.run(peer_model, x)[0] * readout))(jnp.asarray(x))
    g = jax.grad(lambda x: jnp.sum(ours(x[:, 0]) * readout[:, 0]))(jnp.asarray(x))
    assert np.abs(np.asarray(g_peer)).max() > 0
    np.testing.assert_allclose(g, g_peer, rtol=1e-4, atol=1e-5 * np.abs(np.asarray(g_peer)).max())
