"""solver="hardware": executor forward + EventProp backward (nircomp.hardware), and the shipped Emulator
(quantised weights, seeded fixed-pattern noise, spike-time jitter) checked against the analytical solver
run on the same (quantised / patterned) parameters, closed forms and hand-set statistics (DESIGN §5)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from eventnets import cuba, random_inputs, random_net, single
from graphs import x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp.errors import CheckError, CompileError, CompileWarning
from nircomp.events import Events
from nircomp.hardware import Emulator, HardwareRun, quantize

pytestmark = pytest.mark.usefixtures("x64")
T_MAX = 0.02
BUDGET = {"lif0": 40, "lif1": 40}
BASE = ("verify,infer-shapes,canonicalize,check-feedforward,mark-recurrence,fuse-affine-cubalif,{}"
        "select-solver{{solver=hardware}}")
IDEAL = BASE.format("")  # no quantisation, no noise: the ideal chip
GRAPH = random_net(3, recurrent=False, last_lif=True)  # CubaLIF -> LIF; 9 hidden and 24 output spikes
TIMES, INDEX = random_inputs(3)


def _hardware(graph, pipeline=None, **options):
    return nircomp.compile(graph, solver="hardware", pipeline=pipeline, t_max=T_MAX, n_spikes=BUDGET, **options)


def _analytical(graph, weights=None):
    model = nircomp.compile(graph, solver="analytical", t_max=T_MAX, n_spikes=BUDGET).model
    for node, w in (weights or {}).items():
        model = eqx.tree_at(lambda m, node=node: m.params[node]["weight"], model, jnp.asarray(w))
    return model


def _loss(model, times, index, **kw):
    """Weighted sums of output and hidden spike times (the test_eventprop loss shape)."""
    out, rec = model(Events(times, index), record=("lif0",), **kw)
    coef = jnp.linspace(-1.0, 1.0, 40)
    return (jnp.sum(jnp.where(jnp.isfinite(out.times), coef * out.times, 0.0))
            + jnp.sum(jnp.where(jnp.isfinite(rec["lif0"].times), coef[::-1] * rec["lif0"].times, 0.0)))


class AnalyticalOnHost:
    """A fake external executor: runs an analytical model on the host (numpy in, numpy out)."""

    def __init__(self, graph):
        self.model, self.calls = _analytical(graph), 0

    def __call__(self, net, w_in, w_rec, t_in, ch_in, key, sample_times=None):
        assert isinstance(w_in, np.ndarray) and isinstance(t_in, np.ndarray)
        self.calls += 1
        _, rec = self.model(Events(t_in, ch_in), record=[p.name for p in net.pops])
        return HardwareRun({p.name: (np.asarray(rec[p.name].times), np.asarray(rec[p.name].index)) for p in net.pops})


def test_external_executor_gives_the_analytical_eventprop_gradients():
    """A host executor returning the analytical solver's events: the same spike times, and the replay +
    EventProp gradients (weights and input times) equal the analytical solver's own, under jit and vmap
    (the LIF output's spikes are jumps tied to their cause: replayed as such)."""
    graph, times, index = GRAPH, TIMES, INDEX
    executor = AnalyticalOnHost(graph)
    hw, an = _hardware(graph, IDEAL, executor=executor).model, _analytical(graph)
    out_h, out_a = hw(Events(times, index)), an(Events(times, index))
    np.testing.assert_array_equal(out_h.times, out_a.times)
    assert int(out_a.count()) > 3 and executor.calls == 1
    grad = eqx.filter_jit(eqx.filter_grad(lambda mt: _loss(mt[0], mt[1], index)))
    g_h, g_a = grad((hw, jnp.asarray(times))), grad((an, jnp.asarray(times)))
    for node in an.params:
        np.testing.assert_allclose(g_h[0].params[node]["weight"], g_a[0].params[node]["weight"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g_h[1], g_a[1], rtol=1e-9, atol=1e-12)
    batch = Events(np.stack([times, times]), np.stack([index, (index + 1) % 3]))
    got = jax.vmap(hw)(batch)
    for b in range(2):
        np.testing.assert_array_equal(got.times[b], an(Events(batch.times[b], batch.index[b])).times)


def test_ideal_emulator_equals_the_analytical_solver():
    """Without quantisation and noise the emulator's spike times (CubaLIF hidden, LIF output) equal the
    analytical solver's bit for bit."""
    out_h, rec_h = _hardware(GRAPH, IDEAL).model(Events(TIMES, INDEX), record=["lif0"])
    out_a, rec_a = _analytical(GRAPH)(Events(TIMES, INDEX), record=["lif0"])
    assert int(out_a.count()) > 3 and int(rec_a["lif0"].count()) > 3
    np.testing.assert_array_equal(out_h.times, out_a.times)
    np.testing.assert_array_equal(out_h.index, out_a.index)
    np.testing.assert_array_equal(rec_h["lif0"].times, rec_a["lif0"].times)


def test_quantised_weights_run_as_the_analytical_solver_on_the_grid():
    """The default hardware pipeline quantises (6 bit); every run puts the current weights on the pass's grid:
    spike times equal the analytical solver's on round(W/scale)*scale (hand-quantised here) and differ from
    those on the float weights; weights grown past the range saturate, with a warning and a count."""
    graph, times, index = GRAPH, TIMES, INDEX
    prog = _hardware(graph, BASE.format("quantize-weights{bits=4},"))
    grid = {n: op.attrs["quantized"] for n, op in prog.ir.ops() if "quantized" in op.attrs}
    assert set(grid) == {"lif0", "lif1"} and grid["lif0"]["levels"] == 7
    rng = np.random.default_rng(0)
    trained = {n: np.asarray(prog.model.params[n]["weight"]) * rng.uniform(0.85, 1.0, prog.model.params[n]["weight"].shape)
               for n in grid}
    model = prog.model
    for n, w in trained.items():
        model = eqx.tree_at(lambda m, n=n: m.params[n]["weight"], model, jnp.asarray(w))
    on_grid = {n: np.clip(np.round(w / grid[n]["scale"]), -7, 7) * grid[n]["scale"] for n, w in trained.items()}
    out = model(Events(times, index))
    np.testing.assert_allclose(out.times, _analytical(graph, on_grid)(Events(times, index)).times, rtol=1e-12)
    assert not np.allclose(out.times, _analytical(graph, trained)(Events(times, index)).times, rtol=1e-6)
    assert model.saturation() == {"lif0": 0, "lif1": 0}
    grown = eqx.tree_at(lambda m: m.params["lif1"]["weight"], model, jnp.asarray(trained["lif1"] * 1.5))
    clipped = int(np.sum(np.abs(np.round(trained["lif1"] * 1.5 / grid["lif1"]["scale"])) > 7))
    assert clipped > 0 and grown.saturation()["lif1"] == clipped
    with pytest.warns(CompileWarning, match=f"{clipped} weight\\(s\\) of 'lif1'.*saturate"):
        out = grown(Events(times, index))
        jax.block_until_ready(out.times)
    w_sat, _ = quantize(trained["lif1"] * 1.5, grid["lif1"]["scale"], 7)
    want = _analytical(graph, {**on_grid, "lif1": w_sat})(Events(times, index))
    np.testing.assert_allclose(out.times, want.times, rtol=1e-12)


def test_fixed_pattern_noise_is_seeded_and_per_neuron():
    """Neuron n of a patterned population fires as the analytical neuron with v_th·f_n and both τ·g_n (the
    pattern of seed s, drawn by numpy) and the same current jump (weight·g_n, as NIR's jump is w_in·W/τs);
    the same seed gives the same pattern and spikes, another seed another pattern."""
    weights = np.array([[0.012], [0.015], [0.02]])
    graph = single(cuba(3, 3e-3, 1e-2), weight=weights)
    times, index = np.array([1e-3, 4e-3]), np.array([0, 0])
    budget = {"cubalif": 10}

    def emulated(seed):
        pipe = BASE.format(f"emulator-noise{{seed={seed} threshold_std=0.05 tau_std=0.1}},")
        prog = nircomp.compile(graph, solver="hardware", pipeline=pipe, t_max=T_MAX, n_spikes=budget)
        return prog.model, prog.model(Events(times, index))

    model, out = emulated(5)
    th, tau = model.executor.pattern(model.net)
    z = np.random.default_rng(5).standard_normal((2, 3))
    np.testing.assert_allclose(th, 1 + 0.05 * z[0])
    np.testing.assert_allclose(tau, 1 + 0.1 * z[1])
    nodes, edges = {"input": nir.Input(np.array([1]))}, []
    for n in range(3):  # three one-neuron populations with neuron n's values, one compile
        nodes |= {f"fc{n}": nir.Linear(weights[n:n + 1] * tau[n]), f"out{n}": nir.Output(np.array([1])),
                  f"lif{n}": cuba(1, 3e-3 * tau[n], 1e-2 * tau[n], thr=th[n])}
        edges += [("input", f"fc{n}"), (f"fc{n}", f"lif{n}"), (f"lif{n}", f"out{n}")]
    ref = nircomp.compile(nir.NIRGraph(nodes=nodes, edges=edges), solver="analytical", t_max=T_MAX,
                          n_spikes={f"lif{n}": 10 for n in range(3)}).model(Events(times, index))
    t_out, i_out = np.asarray(out.times), np.asarray(out.index)
    for n in range(3):
        want = np.asarray(ref[f"out{n}"].times)
        want = want[np.isfinite(want)]
        assert want.size >= 1
        np.testing.assert_allclose(t_out[i_out == n], want, rtol=1e-9)
    np.testing.assert_array_equal(emulated(5)[1].times, out.times)
    other = Emulator(seed=6, threshold_std=0.05, tau_std=0.1).pattern(model.net)
    assert not np.allclose(other[0], th) and not np.allclose(other[1], tau)


def test_jitter_is_gaussian_timestamp_noise_drawn_from_the_key():
    """jitter=σ: over 128 keys the emulated minus ideal spike times have mean ~0 and std σ (to 4 standard
    errors); the same key repeats the draw, another key does not; without a key the call is refused."""
    graph, times, index = GRAPH, TIMES, INDEX
    sigma = 1e-5
    model = _hardware(graph, BASE.format(f"emulator-noise{{jitter={sigma}}},")).model
    ideal = _analytical(graph)(Events(times, index))
    keys = jax.random.split(jax.random.PRNGKey(0), 128)
    run = eqx.filter_jit(jax.vmap(lambda k: model(Events(times, index), key=k)))
    got = run(keys)

    def by_neuron(t, i):  # each neuron's spikes in time order (σ << one neuron's spike spacing)
        t, i = np.asarray(t), np.asarray(i)
        return t[np.lexsort((t, np.where(np.isfinite(t), i, i.size)))][: int(np.isfinite(t).sum())]

    want = by_neuron(ideal.times, ideal.index)
    diff = np.stack([by_neuron(t, i) for t, i in zip(got.times, got.index)]) - want
    n = diff.size
    assert n > 2000
    assert abs(diff.mean()) < 4 * sigma / np.sqrt(n)
    assert abs(diff.std() / sigma - 1) < 4 / np.sqrt(2 * n)
    np.testing.assert_array_equal(run(keys).times, got.times)
    assert not np.allclose(diff[0], diff[1], rtol=0, atol=1e-12)
    with pytest.raises(CompileError, match="needs a PRNG key"):
        model(Events(times, index))


def test_membrane_samples_follow_the_closed_form():
    """model.execute(ev, sample_times=...) returns the emulator's membrane: after one input spike of weight w
    at t0 (below threshold) v = (w/τs)·τs/(τs-τm)·(e^{-d/τs} - e^{-d/τm}), d = t - t0, and 0 before."""
    ts, tm, w, t0 = 3e-3, 1e-2, 0.005, 2e-3
    prog = nircomp.compile(single(cuba(1, ts, tm), weight=[[w]]), solver="hardware", pipeline=IDEAL, t_max=T_MAX)
    s = np.linspace(0, T_MAX, 41)
    run = prog.model.execute(Events([t0], [0]), sample_times=s)
    d = np.maximum(s - t0, 0)
    want = w / ts * ts / (ts - tm) * (np.exp(-d / ts) - np.exp(-d / tm))
    np.testing.assert_allclose(np.asarray(run.membrane["cubalif"])[:, 0], want, rtol=1e-9, atol=1e-15)
    assert np.all(np.isinf(np.asarray(run.spikes["cubalif"][0])))


def test_check_mapping_refuses_through_compile():
    """compile(solver="hardware") runs check-mapping: a fan-in of 200 (400 synapse rows > 256) is a CheckError
    naming the pass and the node."""
    graph = single(cuba(2), n_in=200, weight=np.full((2, 200), 1e-3))
    with pytest.raises(CheckError) as e:
        nircomp.compile(graph, solver="hardware", t_max=T_MAX)
    text = str(e.value)
    assert "check-mapping" in text and "cubalif" in text and "400 synapse rows" in text


def test_options_go_to_the_right_solver():
    """executor= with the analytical solver is refused by name; a non-callable executor too."""
    graph = single(cuba(1))
    with pytest.raises(CompileError, match="executor= applies to solver='hardware'"):
        nircomp.compile(graph, solver="analytical", t_max=T_MAX, executor=lambda *a: {})
    with pytest.raises(CompileError, match="executor must be callable"):
        nircomp.compile(graph, solver="hardware", t_max=T_MAX, executor=3)


def test_gradients_through_the_noisy_emulator_train():
    """With 6-bit weights, threshold/τ patterns and jitter, EventProp on the emulator's events gives finite
    gradients, and 20 Adam steps halve a time-to-first-spike loss (targets 6, 9, 12 ms), every output neuron
    still firing."""
    import optax

    graph = random_net(4, recurrent=False, gain=0.6)
    times, index = random_inputs(4)
    pipe = BASE.format("quantize-weights{headroom=2},emulator-noise{seed=1 threshold_std=0.03 tau_std=0.03 "
                       "jitter=2e-5},")
    model = _hardware(graph, pipe).model
    target = jnp.array([6e-3, 9e-3, 12e-3])

    def first(m, key):
        out = m(Events(times, index), key=key)
        return jnp.min(jnp.where(out.index[None, :] == jnp.arange(3)[:, None], out.times[None, :], T_MAX), axis=1)

    def loss(m, key):
        return jnp.sum((first(m, key) - target) ** 2) / 1e-6

    step = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    keys = jax.random.split(jax.random.PRNGKey(1), 21)
    start, _ = step(model, keys[0])
    adam = optax.adam(3e-4)  # weights ~5e-3: steps of a few grid levels
    state = adam.init(eqx.filter(model, eqx.is_array))
    for k in keys[1:]:
        _, grad = step(model, k)
        assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grad))
        updates, state = adam.update(grad, state)
        model = eqx.apply_updates(model, updates)
    end, _ = step(model, keys[0])
    assert float(end) < 0.5 * float(start) and bool(jnp.all(first(model, keys[0]) < T_MAX))
