"""Interop with Rockpool: nircomp under convention="rockpool" reproduces Rockpool's own NIR import.

Networks are built in Rockpool (torch backend), exported with `rockpool.nn.modules.to_nir`, and run twice
on the same random input: by `rockpool.nn.modules.from_nir` of that graph (nirtorch's GraphExecutor over
the whole [B, T, N] sequence) and by `nircomp.compile(graph, convention="rockpool")`, vmapped over the
batch. Spike counts must agree (<= 0.1 % flips, for float32 ties at the threshold); synaptic-current and
membrane traces, from Rockpool's state records and nircomp's `model.step` state, to 1e-5 relative.

What Rockpool cannot round-trip (docs/peers/rockpool.md has the source references):
- Its exporter keeps the batch dimension in the Input/Output shapes ([1, N]); the tests write [N].
- LIF (LIFNeuronTorch) is exported but cannot be imported: the importer reads `node.tau_mem` of a nir.LIF
  (AttributeError). The test pins the crash and checks the preset against the LIFNeuronTorch the
  importer's code means to build.
- LI (ExpSynTorch) imports with tau cast to int: every tau < 1 s gives a zero output. The preset keeps tau
  (not reproduced, pinned); LI is compared with whole-second taus. An ExpSynTorch with one scalar tau
  exports a 0-d LI, which the importer cannot read (IndexError); the tests give per-neuron taus.
- Recurrent weights of LIFTorch(has_rec=True) are dropped by the exporter; the importer reads a nested
  CubaLIF + Linear/Affine subgraph as a recurrent LIFTorch, which the tests build by hand.
- IF, CubaLI, I, Conv, pooling, Flatten, Scale, Delay, Threshold: neither exported nor imported
  (NotImplementedError); LIFTorch is one-dimensional, so there is no conv network to compare.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rockpool")
pytest.importorskip("nirtorch")

import nir
from peertools import assert_spikes, assert_trace, run_with_states
from rockpool.nn.combinators import Sequential
from rockpool.nn.modules import LIFNeuronTorch, LIFTorch, LinearTorch, from_nir, to_nir

DT = 1e-3
# rockpool/parameters.py passes copy=False to np.array of torch tensors, which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")
T, B = 100, 3


def _export(net) -> nir.NIRGraph:
    """Rockpool's export with the batch dimension dropped from the Input/Output shapes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.extract_nir_graph is deprecated
        graph = to_nir(net)
    graph.nodes["input"] = nir.Input({"input": np.array([net.size_in])})
    graph.nodes["output"] = nir.Output({"output": np.array([net.size_out])})
    return graph


def _import(graph: nir.NIRGraph):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nirtorch.load is deprecated; Affine biases warn in recurrent layers
        return from_nir(copy.deepcopy(graph))


def _peer(graph: nir.NIRGraph, x: np.ndarray, record: str | None = None):
    """Rockpool's import run on x [B, T, N]: spikes [B, T, N] and, for module `record`, its (isyn, vmem)."""
    model = _import(graph)
    if record is not None:
        model.get_submodule(record)._record = True
    with torch.no_grad():
        y, _ = model(torch.from_numpy(x))
    if record is None:
        return y.numpy(), None
    rec = model.get_submodule(record)._record_dict
    return y.numpy(), (rec["isyn"].numpy()[..., 0], rec["vmem"].numpy())


def _ours(graph, x: np.ndarray, dt: float = DT, **options):
    return run_with_states(graph, x, dt=dt, convention="rockpool", **options)


def _spikes_in(shape, seed, p=0.3):
    return (np.random.default_rng(seed).uniform(size=(B, T, *shape)) < p).astype(np.float32)


def _linear(n_in, n_out, mean=0.05, std=0.06, bias=False):
    """LinearTorch with weights N(mean, std^2) (Rockpool's weight is [in, out]): mostly excitatory."""
    w = mean + std * torch.randn(n_in, n_out)
    return LinearTorch((n_in, n_out), weight=w, bias=0.01 * torch.randn(n_out) if bias else None, has_bias=bias)


def _cubalif_net(seed=0):
    torch.manual_seed(seed)
    return Sequential(
        _linear(5, 8, bias=True),
        LIFTorch(8, tau_mem=0.01 + 0.02 * torch.rand(8), tau_syn=0.005, threshold=0.5, dt=DT),
        _linear(8, 4),
        LIFTorch(4, tau_mem=0.02, tau_syn=0.005 + 0.005 * torch.rand(4), threshold=0.8, dt=DT))


# ----------------------------------------------------------------------------- CubaLIF (LIFTorch)
def test_cubalif_chain_matches_peer_spikes_and_traces():
    """Affine -> LIFTorch -> Linear -> LIFTorch (exported as CubaLIF, re-imported as LIFTorch): spike counts
    and the first layer's synaptic current and membrane after every step equal Rockpool's.

    LIFTorch: i = beta (i + x), v = alpha v + i + b, n = floor(v / th) spikes when v >= th, v -= n th, with
    alpha, beta = exp(-dt'/tau) at the importer's dt' = min(tau_mem / (1 + r)). Some steps emit two spikes."""
    graph = _export(_cubalif_net())
    x = _spikes_in((5,), seed=1)
    y_peer, (i_peer, v_peer) = _peer(graph, x, record="1_LIFTorch")
    y, states = _ours(graph, x)
    assert_spikes(y, y_peer)
    assert_trace(states["1_LIFTorch"][0], i_peer)
    assert_trace(states["1_LIFTorch"][1], v_peer)
    assert np.asarray(states["1_LIFTorch"][2]).max() >= 2, "some step should emit several spikes"
    _, after_decay = _ours(graph, x, decayed_input=())  # the input added after the decay: other currents
    assert not np.allclose(after_decay["1_LIFTorch"][0], i_peer, rtol=1e-5, atol=1e-5 * np.abs(i_peer).max())


def test_importer_derives_dt_from_r():
    """The exporter writes r = tau_mem exp(-dt/tau_mem) / dt and the importer steps each module by
    dt' = min(tau_mem / (1 + r)), which is not the dt the network was built with. The preset's
    layer_dt="tau/(1+r)" reproduces that; stepping every node by the built dt (layer_dt="global") does not
    give Rockpool's membranes."""
    graph = _export(_cubalif_net(seed=2))
    node = graph.nodes["1_LIFTorch"]
    dt_peer = np.min(node.tau_mem / (1 + node.r))
    assert abs(dt_peer - DT) > 1e-3 * DT
    x = _spikes_in((5,), seed=3)
    _, (_, v_peer) = _peer(graph, x, record="1_LIFTorch")
    _, states = _ours(graph, x, layer_dt="global")
    assert not np.allclose(states["1_LIFTorch"][1], v_peer, rtol=1e-5, atol=1e-5 * np.abs(v_peer).max())


# ----------------------------------------------------------------------------- recurrence
def _recurrent_graph(n=6, seed=6) -> nir.NIRGraph:
    """Linear -> a nested {input, CubaLIF, Linear w_rec, output} subgraph, the form the importer reads as a
    recurrent LIFTorch (nir.py, the NIRGraph branch): input -> lif, lif -> w_rec -> lif, lif -> output."""
    rng = np.random.default_rng(seed)
    f = lambda v: np.full(n, v, np.float32)
    tau_mem = rng.uniform(0.01, 0.03, n).astype(np.float32)
    sub = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([n])}),
               "lif": nir.CubaLIF(tau_syn=f(5e-3), tau_mem=tau_mem, r=tau_mem / DT - 1, v_leak=f(0.0),
                                  v_threshold=f(0.5)),
               "w_rec": nir.Linear(rng.normal(-0.05, 0.1, (n, n)).astype(np.float32)),
               "output": nir.Output({"output": np.array([n])})},
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    return nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([5])}),
               "fc": nir.Linear(rng.normal(0.05, 0.06, (n, 5)).astype(np.float32)), "rnn": sub,
               "output": nir.Output({"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "rnn"), ("rnn", "output")])


def test_recurrent_subgraph_matches_peer():
    """The importer's recurrent LIFTorch adds W_rec s[t-1] to the synaptic current with the input, before
    the decay; nircomp's one-step back edge into the CubaLIF does the same. With r = tau_mem/dt - 1 the
    importer's dt' is exactly dt."""
    graph = _recurrent_graph()
    x = _spikes_in((5,), seed=7)
    y_peer, (i_peer, v_peer) = _peer(graph, x, record="rnn")
    y, states = _ours(graph, x)
    assert_spikes(y, y_peer)
    assert_trace(states["rnn.lif"][0], i_peer)
    assert_trace(states["rnn.lif"][1], v_peer)
    graph.nodes["rnn"].nodes["w_rec"].weight[:] = 0.0  # the recurrence matters: without it, other spikes
    assert np.mean(_ours(graph, x)[0] != y_peer) > 0.01


def test_exporter_drops_recurrent_weights():
    """LIFTorch(has_rec=True) is exported as a plain CubaLIF (nir.py `_extract_rockpool_module`): no
    recurrent edge or weight is left in the graph."""
    graph = _export(Sequential(_linear(5, 6), LIFTorch(6, has_rec=True, dt=DT)))
    assert sorted(type(n).__name__ for n in graph.nodes.values()) == ["CubaLIF", "Input", "Linear", "Output"]
    assert len(graph.edges) == 3


# ----------------------------------------------------------------------------- LIF and LI
def test_lif_import_crashes_and_preset_matches_the_module_it_means():
    """nir.LIF import reads `node.tau_mem` (nir.py, the nir.LIF branch), which nir.LIF lacks. The module it
    means to build, LIFNeuronTorch(tau_mem=tau, threshold, bias=v_leak, dt=min(tau/(1+r))), runs
    v = alpha v + x + b, floor(v / th) spikes, subtract; the preset gives its spikes and membrane."""
    torch.manual_seed(8)
    graph = _export(Sequential(_linear(5, 6), LIFNeuronTorch(6, tau_mem=0.02, threshold=0.3, dt=DT)))
    lif = graph.nodes["1_LIFNeuronTorch"]
    assert isinstance(lif, nir.LIF)
    with pytest.raises(AttributeError, match="tau_mem"):
        _import(graph)
    lif.v_leak = np.full(6, 0.01, np.float32)  # a foreign v_leak: the importer passes it as the bias
    f = lambda a: torch.from_numpy(a.copy())
    module = LIFNeuronTorch(shape=(6,), tau_mem=f(lif.tau), threshold=f(lif.v_threshold), bias=f(lif.v_leak),
                            dt=float(np.min(lif.tau / (1 + lif.r))))
    module.to_torch()
    module._record = True
    x = _spikes_in((5,), seed=9)
    w = torch.as_tensor(graph.nodes["0_LinearTorch"].weight)  # the exporter writes the torch tensor
    with torch.no_grad():
        y_peer = module(torch.from_numpy(x) @ w.T).numpy()
    y, states = _ours(graph, x)
    assert_spikes(y, y_peer)
    assert_trace(states["1_LIFNeuronTorch"][0], module._record_dict["vmem"].numpy())


def _li_graph(tau, r) -> nir.NIRGraph:
    w = np.random.default_rng(10).normal(0.5, 0.5, (3, 4)).astype(np.float32)
    return nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([4])}), "fc": nir.Linear(w),
                               "li": nir.LI(tau=tau, r=r, v_leak=np.zeros(3, np.float32)),
                               "output": nir.Output({"output": np.array([3])})},
                        edges=[("input", "fc"), ("fc", "li"), ("li", "output")])


def test_li_matches_peer():
    """nir.LI becomes ExpSynTorch(tau=int(tau), dt=min(tau/(1+r))): v = exp(-dt'/tau) (v + x), the input
    decayed in its own step (decayed_input). With whole-second taus (the int() changes nothing) and r such
    that one neuron sets dt' = 0.375, the preset gives Rockpool's output; the first step by hand."""
    tau = np.array([2.0, 3.0, 5.0], np.float32)
    graph = _li_graph(tau, r=np.array([3.0, 7.0, 9.0], np.float32))  # tau/(1+r) = 0.5, 0.375, 0.5
    x = _spikes_in((4,), seed=11)
    y_peer, _ = _peer(graph, x)
    y, _ = _ours(graph, x)
    assert_trace(y, y_peer)
    w = graph.nodes["fc"].weight
    np.testing.assert_allclose(y[0, 0], np.exp(-0.375 / tau) * (w @ x[0, 0]), rtol=1e-5)


def test_peer_truncates_li_tau_to_whole_seconds():
    """The importer casts LI's tau to int (nir.py, the nir.LI branch): any tau < 1 s becomes 0, a decay of
    exp(-dt/0) = 0, and Rockpool's output is identically zero. The preset does not reproduce this: it keeps
    tau, as the ExpSynTorch that was exported had it."""
    tau = np.full(3, 0.02, np.float32)
    graph = _li_graph(tau, r=tau * np.exp(-DT / tau) / DT)  # what the exporter writes
    x = _spikes_in((4,), seed=12)
    y_peer, _ = _peer(graph, x)
    np.testing.assert_array_equal(y_peer, 0.0)
    assert np.abs(_ours(graph, x)[0]).max() > 0.1


# ----------------------------------------------------------------------------- foreign graphs
def test_foreign_cubalif_parameters():
    """A CubaLIF from another tool (w_in = 3, r = 2 tau_mem/dt, v_leak = 0.02, v_reset = -0.5): Rockpool
    ignores w_in and v_reset, uses r only to derive dt' = tau_mem / (1 + r), and adds v_leak to the membrane
    every step as LIFTorch's bias. The preset matches; reading v_leak as NIR's rest value does not."""
    n = 6
    f = lambda v: np.full(n, v, np.float32)
    tau_mem = np.linspace(0.01, 0.03, n).astype(np.float32)
    w = np.random.default_rng(12).normal(0.05, 0.06, (n, 5)).astype(np.float32)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([5])}), "fc": nir.Linear(w),
               "lif": nir.CubaLIF(tau_syn=f(5e-3), tau_mem=tau_mem, r=2 * tau_mem / DT, v_leak=f(0.02),
                                  v_threshold=f(0.5), v_reset=f(-0.5), w_in=f(3.0)),
               "output": nir.Output({"output": np.array([n])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    x = _spikes_in((5,), seed=13)
    y_peer, _ = _peer(graph, x)
    y, _ = _ours(graph, x)
    assert_spikes(y, y_peer)
    rest, _ = _ours(graph, x, v_leak_as="rest")
    assert np.mean(rest != y_peer) > 0.01
