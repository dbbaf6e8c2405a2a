"""Interop with Norse: nircomp under convention="norse" reproduces Norse's own NIR import.

Each network is built in Norse, exported with `norse.torch.to_nir`, written to a `.nir` file and read back,
then run on the same random input by `norse.torch.from_nir` of that file (stepped one time step per call,
as its nirtorch GraphExecutor is driven) and by `nircomp.compile(file, dt=1e-3, convention="norse")`.
Spike trains must agree (<= 0.1 % flips, for float32 ties at the threshold); membrane and synaptic-current
traces to 1e-5 relative (nircomp's through its online `step` API, Norse's from the executor state).

Export workarounds and what Norse cannot round-trip (docs/peers/norse.md has the source references):
- `to_nir` writes tau as dt / tau_mem_inv (norse/norse#411): the tests export with dt=1.0, which writes
  the true tau, and with an unbatched sample (a batched one puts the batch axis into the Input type and
  `nir.write` rejects the graph) and per-neuron parameters (scalar ones do not pass `nir.write`).
- LI: the exporter writes it but the importer maps it to nothing and silently returns the output of the node
  before it; `test_peer_drops_li` pins that, and the LI readout is compared with the Norse cells exported.
- SumPool2d/Flatten and recurrent networks cannot be exported (unknown modules become None nodes; nirtorch
  traces a feed-forward call): those graphs extend a Norse export with `nir` nodes, or are written with
  `nir` directly, and only Norse's import is compared.
- `LIFCell` (Norse's current-based LIF) is exported as CubaLIF, which the importer reads with a different
  discretisation; the preset follows the importer, so it is compared with the import, not the original cell.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
norse = pytest.importorskip("norse.torch")
pytest.importorskip("nirtorch")

import equinox as eqx
import jax
import jax.numpy as jnp
import nir

import nircomp

# norse's to_nir/from_nir call nirtorch's deprecated extract_nir_graph/load
pytestmark = pytest.mark.filterwarnings("ignore:nirtorch.*deprecated:DeprecationWarning")

DT = 1e-3  # norse.torch.from_nir's default step
T = 200
MAX_FLIPS = 1e-3


@pytest.fixture(autouse=True)
def _quiet_norse():
    """Norse logs a warning for every r != 1 it ignores (the behaviour under test)."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _vec(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


def _write(graph: nir.NIRGraph, tmp_path, name="g.nir") -> str:
    path = str(tmp_path / name)
    nir.write(path, graph)
    return path


def _export(module, sample_shape, tmp_path) -> str:
    """Norse's exporter with the workarounds of the module docstring, written to a file."""
    graph = norse.to_nir(module, torch.zeros(sample_shape), dt=1.0)
    return _write(graph, tmp_path)


def _peer(path: str, x: np.ndarray):
    """Norse's import of the file stepped over x [T, ...]: outputs [T, ...] and the executor's neuron state
    after every step ({node: tuple of tensors per step})."""
    model = norse.from_nir(nir.read(path), dt=DT, ignore_warnings=True)
    state, ys, states = None, [], []
    with torch.no_grad():
        for x_t in torch.from_numpy(x):
            y, state = model(x_t, state)
            ys.append(y.numpy().copy())
            states.append(dict(state.state))
    return np.stack(ys), states


def _ours(path: str, x: np.ndarray, convention: str = "norse"):
    """nircomp's model of the file: outputs [T, ...], and every neuron state after every step
    (through the online step API, scanned)."""
    model = nircomp.compile(path, dt=DT, solver="step", convention=convention).model
    y = np.asarray(model(jnp.asarray(x)))

    def body(state, x_t):
        state, _ = model.step(state, x_t)
        return state, state["state"]

    _, states = jax.lax.scan(body, model.init_state(), jnp.asarray(x))
    return y, jax.tree_util.tree_map(np.asarray, states)


def _peer_trace(states, node, pick) -> np.ndarray:
    return np.stack([pick(s[node]).numpy() for s in states])


def _assert_spikes(ours, peer, low=0.02, high=0.6):
    """Identical spike trains up to rare threshold ties, and a spike rate that makes the check meaningful."""
    assert ours.shape == peer.shape
    assert set(np.unique(peer)) <= {0.0, 1.0}
    assert low < peer.mean() < high, f"spike rate {peer.mean():.3f} makes a weak test"
    assert np.mean(ours != peer) <= MAX_FLIPS, f"{int((ours != peer).sum())} of {ours.size} spikes differ"


def _assert_trace(ours, peer):
    np.testing.assert_allclose(ours, peer, rtol=1e-5, atol=1e-6)


def _rng(seed):
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _dense(n_in, n_out, rng, gain=1.0) -> torch.nn.Linear:
    layer = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(_vec(rng.normal(0, gain / np.sqrt(n_in), (n_out, n_in))))
        layer.bias.copy_(_vec(rng.normal(0, 0.1, n_out)))
    return layer


# ---------------------------------------------------------------------------------------- exported networks
def test_lif_network_exported_by_norse(tmp_path):
    """LIF (Norse's LIFBoxCell): v += dt/tau (v_leak - v + x), spike v > v_th, reset to 0, v starts at
    v_leak; spikes and membranes equal Norse's import of its own export."""
    rng = _rng(0)
    n = 8
    p = norse.LIFBoxParameters(tau_mem_inv=_vec(1 / rng.uniform(5e-3, 2e-2, n)), v_leak=_vec(rng.uniform(-0.2, 0.3, n)),
                               v_th=_vec(rng.uniform(0.5, 1.2, n)))
    path = _export(norse.SequentialState(_dense(6, n, rng, 2.0), norse.LIFBoxCell(p)), (6,), tmp_path)
    x = rng.uniform(0, 1.5, (T, 6)).astype(np.float32)
    y_peer, s_peer = _peer(path, x)
    y, s = _ours(path, x)
    _assert_spikes(y, y_peer)
    _assert_trace(s["1"][0], _peer_trace(s_peer, "1", lambda st: st[0].v))


def test_cubalif_network_exported_by_norse(tmp_path):
    """CubaLIF (exported from LIFCell, imported as two box cells): the current leaks to v_leak and drives
    the membrane in the same step; currents, membranes and spikes equal Norse's import."""
    rng = _rng(1)
    n = 8
    p = norse.LIFParameters(tau_syn_inv=_vec(1 / rng.uniform(2e-3, 8e-3, n)),
                            tau_mem_inv=_vec(1 / rng.uniform(5e-3, 2e-2, n)),
                            v_leak=_vec(rng.uniform(-0.1, 0.2, n)), v_th=_vec(rng.uniform(0.4, 1.0, n)))
    path = _export(norse.SequentialState(_dense(6, n, rng, 4.0), norse.LIFCell(p)), (6,), tmp_path)
    x = rng.uniform(0, 2.0, (T, 6)).astype(np.float32)
    y_peer, s_peer = _peer(path, x)
    y, s = _ours(path, x)
    _assert_spikes(y, y_peer)
    i, v, _ = s["1"]
    _assert_trace(i, _peer_trace(s_peer, "1", lambda st: st[0][0].v))
    _assert_trace(v, _peer_trace(s_peer, "1", lambda st: st[0][1].v))


def test_if_network_exported_by_norse(tmp_path):
    """IF (IAFCell): v += x, spike v > v_th, reset to 0; spikes and membranes equal Norse's import."""
    rng = _rng(2)
    n = 8
    cell = norse.IAFCell(norse.IAFParameters(v_th=_vec(rng.uniform(1.0, 3.0, n))))
    path = _export(norse.SequentialState(_dense(6, n, rng), cell), (6,), tmp_path)
    x = rng.uniform(0, 1, (T, 6)).astype(np.float32)
    y_peer, s_peer = _peer(path, x)
    y, s = _ours(path, x)
    _assert_spikes(y, y_peer)
    _assert_trace(s["1"][0], _peer_trace(s_peer, "1", lambda st: st[0].v))


def test_peer_drops_li(tmp_path):
    """Norse's importer maps LI to nothing and returns the Affine before it (docs/peers/norse.md, bug 5);
    nircomp's LI readout equals the LIBoxCell that was exported: v += dt/tau (v_leak - v + x), from v_leak."""
    rng = _rng(3)
    n, m = 8, 3
    fc1, fc2 = _dense(6, n, rng, 2.0), _dense(n, m, rng, 2.0)
    lif = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=_vec(np.full(n, 100.0)), v_leak=_vec(np.zeros(n)),
                                                  v_th=_vec(np.full(n, 0.6))))
    li = norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=_vec(1 / rng.uniform(5e-3, 2e-2, m)),
                                               v_leak=_vec(rng.uniform(-0.5, 0.5, m))))
    path = _export(norse.SequentialState(fc1, lif, fc2, li), (6,), tmp_path)
    x = rng.uniform(0, 1.5, (T, 6)).astype(np.float32)

    s_lif = s_li = None
    readout, before_li = [], []
    with torch.no_grad():
        for x_t in torch.from_numpy(x):
            z, s_lif = lif(fc1(x_t), s_lif)
            a = fc2(z)
            v, s_li = li(a, s_li)
            before_li.append(a.numpy().copy())
            readout.append(v.numpy().copy())
    y_peer, _ = _peer(path, x)
    np.testing.assert_allclose(y_peer, np.stack(before_li), rtol=1e-5, atol=1e-6)
    y, _ = _ours(path, x)
    _assert_trace(y, np.stack(readout))


# ---------------------------------------------------------------------------------------- what Norse misreads
def _single_neuron_graph(kind: str, n: int, rng) -> nir.NIRGraph:
    """Input -> Affine -> one neuron layer with r != 1, w_in != 1, v_leak != 0, v_reset != 0 -> Output."""
    def u(lo, hi):
        return rng.uniform(lo, hi, n).astype(np.float32)

    w = rng.normal(0, 1.5, (n, 5)).astype(np.float32)
    if kind == "LIF":
        neuron = nir.LIF(tau=u(5e-3, 2e-2), r=u(0.5, 2.0), v_leak=u(-0.3, 0.3), v_threshold=u(0.4, 1.0),
                         v_reset=u(-0.5, 0.3))
    elif kind == "CubaLIF":
        neuron = nir.CubaLIF(tau_syn=u(2e-3, 8e-3), tau_mem=u(5e-3, 2e-2), r=u(0.5, 2.0), v_leak=u(-0.3, 0.3),
                             v_threshold=u(0.4, 1.0), v_reset=u(-0.5, 0.3), w_in=u(0.5, 2.0))
    else:
        neuron = nir.IF(r=u(0.2, 0.8), v_threshold=u(1.0, 2.0), v_reset=u(-0.5, 0.3))
    return nir.NIRGraph.from_list(nir.Input(np.array([5])), nir.Affine(w, np.zeros(n, np.float32)), neuron,
                                  nir.Output(np.array([n])))


@pytest.mark.parametrize("kind", ["LIF", "CubaLIF", "IF"])
def test_parameters_norse_ignores_or_misreads(kind, tmp_path):
    """Norse ignores r for LIF/IF (not CubaLIF) and v_reset everywhere, leaks the CubaLIF current to v_leak
    and starts cells at v_leak: the preset reproduces its spikes, NIR's own reading does not."""
    rng = _rng(4)
    path = _write(_single_neuron_graph(kind, 8, rng), tmp_path)
    x = rng.uniform(0, 1.0, (T, 5)).astype(np.float32)
    y_peer, _ = _peer(path, x)
    _assert_spikes(_ours(path, x)[0], y_peer)
    y_nir, _ = _ours(path, x, convention="nir")
    assert np.mean(y_nir != y_peer) > 0.01, "the graph does not exercise the parameters Norse misreads"


def test_conv_pool_flatten_network(tmp_path):
    """Conv2d -> LIF (exported by Norse) -> SumPool2d -> Flatten -> Affine -> LIF (appended with nir, which
    Norse cannot export): spikes equal Norse's import, run unbatched so Flatten's dims mean the same."""
    rng = _rng(5)
    c, h = 4, 8
    conv = torch.nn.Conv2d(2, c, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(_vec(rng.normal(0, 0.5, (c, 2, 3, 3))))
    shape = (c, h, h)
    lif = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=_vec(1 / rng.uniform(5e-3, 2e-2, shape)),
                                                  v_leak=_vec(np.zeros(shape)), v_th=_vec(np.full(shape, 0.5))))
    exported = norse.to_nir(norse.SequentialState(conv, lif), torch.zeros(2, h, h), dt=1.0)
    nodes = {k: v for k, v in exported.nodes.items() if k != "output"}
    n = 10
    nodes.update(
        pool=nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        flat=nir.Flatten({"input": np.array([c, h // 2, h // 2])}, start_dim=0, end_dim=-1),
        fc=nir.Affine(rng.normal(0, 0.3, (n, c * h * h // 4)).astype(np.float32), np.zeros(n, np.float32)),
        lif2=nir.LIF(tau=np.full(n, 1e-2, np.float32), r=np.ones(n, np.float32), v_leak=np.zeros(n, np.float32),
                     v_threshold=np.full(n, 0.5, np.float32)),
        output=nir.Output(np.array([n])))
    edges = [("input", "0"), ("0", "1"), ("1", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "lif2"),
             ("lif2", "output")]
    path = _write(nir.NIRGraph(nodes, edges), tmp_path)
    x = (rng.uniform(0, 1, (T // 2, 2, h, h)) < 0.3).astype(np.float32)
    y_peer, s_peer = _peer(path, x)
    y, s = _ours(path, x)
    _assert_spikes(y, y_peer)
    _assert_trace(s["1"][0], _peer_trace(s_peer, "1", lambda st: st[0].v))


def _recurrent_graph(kind: str, n: int, rng) -> nir.NIRGraph:
    def u(lo, hi):
        return rng.uniform(lo, hi, n).astype(np.float32)

    if kind == "LIF":
        neuron = nir.LIF(tau=u(5e-3, 2e-2), r=np.ones(n, np.float32), v_leak=u(-0.1, 0.1), v_threshold=u(0.4, 0.8))
    else:
        neuron = nir.CubaLIF(tau_syn=u(2e-3, 8e-3), tau_mem=u(5e-3, 2e-2), r=u(0.8, 1.5), v_leak=u(-0.1, 0.1),
                             v_threshold=u(0.3, 0.6), w_in=u(0.8, 1.5))
    nodes = {"input": nir.Input(np.array([4])),
             "fc": nir.Affine(rng.normal(0, 1.5, (n, 4)).astype(np.float32), np.zeros(n, np.float32)),
             "lif": neuron, "rec": nir.Linear(rng.normal(0, 1.0, (n, n)).astype(np.float32)),
             "output": nir.Output(np.array([n]))}
    # Norse returns the last node of a depth-first pre-order walk (bug 7): lif -> output must come last.
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes, edges)


@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
def test_recurrent_network(kind, tmp_path):
    """A recurrent layer (lif -> rec -> lif, which Norse cannot export): the back edge carries the previous
    step's spikes in both; spikes equal Norse's import."""
    rng = _rng(6)
    path = _write(_recurrent_graph(kind, 10, rng), tmp_path)
    x = rng.uniform(0, 1.0, (T, 4)).astype(np.float32)
    y_peer, _ = _peer(path, x)
    y, _ = _ours(path, x)
    _assert_spikes(y, y_peer)


def test_peer_returns_last_node_in_preorder(tmp_path):
    """Norse's executor returns the last node of its pre-order walk, not the Output (bug 7): with the edge
    lif -> output listed before lif -> rec, it returns rec's output, W_rec z, where nircomp returns z."""
    rng = _rng(6)
    graph = _recurrent_graph("LIF", 10, rng)
    graph = nir.NIRGraph(graph.nodes, [("input", "fc"), ("fc", "lif"), ("lif", "output"), ("lif", "rec"),
                                       ("rec", "lif")])
    path = _write(graph, tmp_path)
    x = rng.uniform(0, 1.0, (T, 4)).astype(np.float32)
    y_peer, _ = _peer(path, x)
    y, _ = _ours(path, x)
    np.testing.assert_allclose(y_peer, y @ graph.nodes["rec"].weight.T, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- gradients
def test_surrogate_gradient_matches_norse(tmp_path):
    """Norse's SuperSpike is 1 / (|v - v_th| + 1)^2 (its alpha is unused), i.e. slope 1: the gradient of a
    loss on the spikes with respect to the input weights equals torch autograd through Norse's import."""
    rng = _rng(7)
    n = 6
    p = norse.LIFBoxParameters(tau_mem_inv=_vec(1 / rng.uniform(5e-3, 2e-2, n)), v_leak=_vec(np.zeros(n)),
                               v_th=_vec(rng.uniform(0.5, 1.0, n)))
    fc = _dense(4, n, rng, 2.0)
    with torch.no_grad():
        fc.weight.abs_()
    path = _export(norse.SequentialState(fc, norse.LIFBoxCell(p)), (4,), tmp_path)
    t = 60
    x = rng.uniform(0, 1.0, (t, 4)).astype(np.float32)
    c = rng.normal(0, 1, (t, n)).astype(np.float32)

    peer = norse.from_nir(nir.read(path), dt=DT, ignore_warnings=True)
    state, ys = None, []
    for x_t in torch.from_numpy(x):
        y, state = peer(x_t, state)
        ys.append(y)
    spikes = torch.stack(ys)
    assert 0.05 < spikes.mean().item() < 0.5, "the reset path of the gradient needs spikes"
    (spikes * torch.from_numpy(c)).sum().backward()
    grad_peer = peer.get_submodule("0").weight.grad.numpy()

    model = nircomp.compile(path, dt=DT, solver="step", convention="norse").model
    grads = eqx.filter_grad(lambda m: jnp.sum(m(jnp.asarray(x)) * c))(model)
    (grad,) = [g["weight"] for g in grads.params.values() if "weight" in g]
    assert np.abs(grad_peer).max() > 1e-3
    np.testing.assert_allclose(np.asarray(grad), grad_peer, rtol=1e-4, atol=1e-6)
