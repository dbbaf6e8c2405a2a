"""Interop with sinabs: nircomp under convention="sinabs" reproduces sinabs' own NIR import.

Each network is built in sinabs, exported with `sinabs.to_nir`, and run twice on the same random input: by
`sinabs.from_nir` of that graph (its GraphExecutor over the batch-and-time-flattened tensor, as sinabs'
Squeeze layers expect) and by `nircomp.compile(graph, dt=1, convention="sinabs")`. sinabs counts time in
steps (tau is in steps: the decay is exp(-1/tau)), hence dt = 1. Spike counts must agree (<= 0.1 % flips,
for float32 ties at the threshold); membrane traces, read from sinabs' state recordings and nircomp's
`model.step` state, to 1e-5 relative.

What sinabs cannot round-trip (docs/peers/sinabs.md has the source references):
- CubaLIF, CubaLI, I, Linear (bias-free), Scale, Delay, AvgPool2d, Threshold: the importer maps none of them
  and nirtorch silently drops the node (its consumer gets the input of the dropped node). Conv1d imports
  with float64 weights and crashes on float32 input. The exporter writes none of them (Linear is always
  written as Affine) and refuses recurrent layers (LIFRecurrent, IAFRecurrent: NotImplementedError).
- A recurrent NIR graph imports, but its back edge only carries the previous *call's* output: it is a
  one-step recurrence only when the model is driven one time step per call, as the test does.
- Conv2d and Flatten are exported without input shapes (the graph cannot be written with `nir.write`), so
  the conv network is compiled from the graph in memory (nircomp infers the shapes).
- A LIF layer with one scalar threshold cannot be exported (nir asserts equal parameter shapes); the tests
  give per-neuron thresholds.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sinabs")
pytest.importorskip("nirtorch")

import nir
import sinabs.layers as sl
from peertools import assert_spikes, assert_trace, run_with_states
from sinabs import from_nir, to_nir

import nircomp
from nircomp.errors import CompileWarning

DT = 1.0  # sinabs' time unit is the step
# sinabs/nir.py copies the graph's torch tensors with torch.tensor(tensor), which torch warns about
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
T, B = 60, 3


def _export(net, sample: torch.Tensor) -> nir.NIRGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.extract_nir_graph is deprecated
        return to_nir(net, sample)


def _import(graph: nir.NIRGraph, record: tuple[str, ...] = ()):
    """sinabs' import of `graph` (it edits node arrays: give it a copy), recording the v_mem of `record`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = from_nir(copy.deepcopy(graph), batch_size=B)
    for name in record:
        model.get_submodule(name).record_states = True
    return model


def _peer(graph: nir.NIRGraph, x: np.ndarray, record: tuple[str, ...] = ()):
    """sinabs' import run on x [B, T, ...] at once (flattened to [B*T, ...]): spikes [B, T, ...] and the
    recorded v_mem [B, T, ...] of the modules in `record`."""
    model = _import(graph, record)
    with torch.no_grad():
        y, _ = model(torch.from_numpy(x.reshape(B * T, *x.shape[2:])))
    traces = {n: model.get_submodule(n).recordings["v_mem"].numpy() for n in record}
    return y.numpy().reshape(B, T, *y.shape[1:]), traces


def _ours(graph, x: np.ndarray, convention: str = "sinabs", **options):
    return run_with_states(graph, x, dt=DT, convention=convention, **options)


def _input(shape, seed, scale=2.0):
    return (np.random.default_rng(seed).uniform(0.0, scale, (B, T, *shape))).astype(np.float32)


def _linear(n_in, n_out, mean=0.2, std=0.5):
    """torch Linear with weights N(mean, std^2): mixed signs, but a positive input drives most neurons."""
    layer = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.normal_(mean, std)
    return layer


# ----------------------------------------------------------------------------- feedforward neurons
def test_dense_network_matches_peer():
    """Linear -> LIF -> Linear -> IAF -> Linear -> ExpLeak: spike counts and every layer's membrane equal
    those of sinabs' import.

    LIF: v = exp(-1/tau) v + x (norm_input=False), MultiSpike emits floor(v / v_th) spikes and
    MembraneSubtract removes that many thresholds; IAF: v += x, the same spikes, then v >= -v_threshold
    (min_v_mem); ExpLeak: v = exp(-1/tau) v + x. The input is strong enough for multiple spikes in one step
    and for the IAF floor to act, so both are checked, not only the single-spike case."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        _linear(5, 8), sl.LIFSqueeze(tau_mem=5.0 + 10.0 * torch.rand(8), spike_threshold=torch.full((8,), 0.5),
                                     batch_size=B),
        _linear(8, 6, mean=0.0), sl.IAFSqueeze(spike_threshold=0.8 + 0.4 * torch.rand(6), batch_size=B),
        _linear(6, 3), sl.ExpLeakSqueeze(tau_mem=torch.tensor([2.0, 4.0, 8.0]), batch_size=B))
    x = _input((5,), seed=1)
    graph = _export(net, torch.from_numpy(x.reshape(B * T, 5)))
    assert [type(graph.nodes[k]).__name__ for k in "135"] == ["LIF", "IF", "LI"]
    y_peer, v_peer = _peer(graph, x, record=("1", "3", "5"))
    y, states = _ours(graph, x)
    np.testing.assert_allclose(y, y_peer, rtol=1e-5, atol=1e-5 * np.abs(y_peer).max())  # LI output: v
    assert_trace(states["1"][0], v_peer["1"])
    assert_trace(states["3"][0], v_peer["3"])
    assert_trace(states["5"], v_peer["5"])
    spikes_lif = np.asarray(states["1"][1])
    assert_spikes(spikes_lif, _peer_spikes(graph, x, "1"))
    assert spikes_lif.max() >= 2, "some step should emit several spikes (MultiSpike)"
    floor = -np.asarray(graph.nodes["3"].v_threshold)
    assert np.any(np.isclose(v_peer["3"], floor)), "the IAF membrane should reach its floor -v_threshold"
    _, unclipped = _ours(graph, x, v_floor=())
    assert np.min(unclipped["3"][0] - floor) < -0.1


def _peer_spikes(graph: nir.NIRGraph, x: np.ndarray, node: str) -> np.ndarray:
    """The spike counts sinabs' import emits at `node` [B, T, ...] (from its GraphExecutor cache)."""
    model = _import(graph)
    with torch.no_grad():
        _, state = model(torch.from_numpy(x.reshape(B * T, *x.shape[2:])))
    out = state.cache[node].numpy()
    return out.reshape(B, T, *out.shape[1:])


def test_spiking_output_matches_peer_and_differs_without_multi_spikes():
    """Linear -> LIF as the output: the multi-spike counts equal sinabs'; with spike_count="single" (one
    spike per step) they do not, since the strong input drives v above 2 v_th."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(_linear(4, 6), sl.LIFSqueeze(tau_mem=torch.full((6,), 6.0),
                                                           spike_threshold=torch.full((6,), 0.6), batch_size=B))
    x = _input((4,), seed=2)
    graph = _export(net, torch.from_numpy(x.reshape(B * T, 4)))
    y_peer, _ = _peer(graph, x)
    y, _ = _ours(graph, x)
    assert_spikes(y, y_peer)
    assert y_peer.max() >= 2
    single, _ = _ours(graph, x, spike_count="single")
    assert np.mean(single != y_peer) > 0.01


# ----------------------------------------------------------------------------- convolution
def test_conv_pool_flatten_network_matches_peer():
    """Conv2d -> IAF -> SumPool2d -> Flatten -> Linear -> LIF (channels-first in both), compiled from the
    exported graph in memory: the spike counts equal sinabs', and so does the IAF membrane over [C, H, W]."""
    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        sl.IAFSqueeze(spike_threshold=torch.full((4, 8, 8), 0.4), batch_size=B),
        sl.SumPool2d(2), torch.nn.Flatten(), _linear(64, 5, mean=0.05, std=0.3),
        sl.LIFSqueeze(tau_mem=torch.full((5,), 8.0), spike_threshold=torch.full((5,), 1.0), batch_size=B))
    x = (_input((2, 8, 8), seed=3, scale=1.0) < 0.3).astype(np.float32)
    graph = _export(net, torch.from_numpy(x.reshape(B * T, 2, 8, 8)))
    y_peer, v_peer = _peer(graph, x, record=("1",))
    y, states = _ours(graph, x)
    assert_spikes(y, y_peer)
    assert_trace(states["1"][0], v_peer["1"])


# ----------------------------------------------------------------------------- recurrence
def test_recurrent_graph_driven_step_by_step_matches_peer():
    """A hand-built cycle Affine -> LIF -> Affine(rec) -> LIF (sinabs cannot export recurrent layers):
    sinabs' GraphExecutor feeds the back edge from the previous call's output, so driven one step per call
    the recurrent input is W_rec s[t-1], nircomp's one-step back edge."""
    rng = np.random.default_rng(4)
    n = 6
    f = lambda v: np.full(n, v, np.float32)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([4])}),
               "fc": nir.Affine(rng.normal(0.3, 0.5, (n, 4)).astype(np.float32), f(0.0)),
               "lif": nir.LIF(tau=f(5.0), r=f(1.0), v_leak=f(0.0), v_threshold=f(1.0)),
               "rec": nir.Affine(rng.normal(-0.2, 0.4, (n, n)).astype(np.float32), f(0.0)),
               "output": nir.Output({"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    x = _input((4,), seed=5)
    model, state, ys = _import(graph), None, []
    with torch.no_grad():
        for t in range(T):
            y, state = model(torch.from_numpy(x[:, t]), state)
            ys.append(y.numpy())
    y_peer = np.stack(ys, 1)
    y, _ = _ours(graph, x)
    assert_spikes(y, y_peer)
    graph.nodes["rec"].weight = np.zeros((n, n), np.float32)  # the recurrence matters: without it, other spikes
    without, _ = _ours(graph, x)
    assert np.mean(without != y_peer) > 0.01


def test_peer_cannot_export_recurrent_layers():
    """sinabs.to_nir maps only IAF/LIF/ExpLeak, Linear, Conv, SumPool2d and Flatten (sinabs/nir.py
    `_extract_sinabs_module`): LIFRecurrent raises."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), sl.LIFRecurrent(
        tau_mem=torch.full((6,), 5.0), rec_connect=torch.nn.Linear(6, 6, bias=False),
        spike_threshold=torch.full((6,), 1.0)))
    with pytest.raises(NotImplementedError, match="LIFRecurrent"):
        _export(net, torch.zeros(1, 5, 4))


# ----------------------------------------------------------------------------- foreign graphs
def _foreign(neuron, n=5) -> nir.NIRGraph:
    w = np.random.default_rng(6).normal(0.3, 0.5, (n, 3)).astype(np.float32)
    return nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([3])}),
                               "fc": nir.Affine(w, np.zeros(n, np.float32)), "n": neuron,
                               "output": nir.Output({"output": np.array([n])})},
                        edges=[("input", "fc"), ("fc", "n"), ("n", "output")])


@pytest.mark.parametrize("kind", ["LIF", "IF"])
def test_ignored_parameters_of_a_foreign_graph(kind):
    """sinabs' importer passes only tau and v_threshold: r and v_reset of a graph from another tool are
    dropped (v += x, reset by subtracting v_threshold). The preset does the same; honouring r and v_reset
    (as NIR does) gives other spike counts."""
    f = lambda v: np.full(5, v, np.float32)
    neuron = (nir.LIF(tau=f(4.0), r=f(2.5), v_leak=f(0.0), v_threshold=f(1.0), v_reset=f(0.3)) if kind == "LIF"
              else nir.IF(r=f(2.5), v_threshold=f(1.0), v_reset=f(0.3)))
    graph = _foreign(neuron)
    x = _input((3,), seed=7, scale=1.0)
    y_peer, _ = _peer(graph, x)
    y, _ = _ours(graph, x)
    assert_spikes(y, y_peer)
    honoured, _ = _ours(graph, x, honour_r=True, honour_v_reset=True)
    assert np.mean(honoured != y_peer) > 0.01


def test_peer_refuses_li_with_r_other_than_one():
    """sinabs imports LI only with r = 1 and v_leak = 0 (sinabs/nir.py, the nir.LI branch): so the preset's
    honour_r=False changes nothing for an LI sinabs accepts."""
    f = lambda v: np.full(5, v, np.float32)
    with pytest.raises(ValueError, match="`r` must be 1"):
        _import(_foreign(nir.LI(tau=f(4.0), r=f(2.0), v_leak=f(0.0))))


def test_other_dt_warns():
    """sinabs' tau is in time steps (decay exp(-1/tau)): the preset reproduces it only at dt = 1."""
    graph = _foreign(nir.IF(r=np.ones(5, np.float32), v_threshold=np.ones(5, np.float32)))
    with pytest.warns(CompileWarning, match="dt=1"):
        nircomp.compile(graph, dt=1e-3, solver="step", convention="sinabs")
