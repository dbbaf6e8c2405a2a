"""The analytical (event-driven) solver: exact spike times against hand-derived closed forms, convergence
of the step solver (spike="dirac") to it as dt -> 0, overflow flags, batching, Events converters, and the
refusal of graphs it cannot run (DESIGN §5, §7)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from eventnets import cuba, lif, random_inputs, random_net, single
from graphs import x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp import CompileError
from nircomp.events import Events

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout
T_MAX = 0.02
BUDGET = {"lif0": 40, "lif1": 40}  # one budget for the random nets: equal models share their jit cache


def _times(ev: Events, neuron: int | None = None) -> np.ndarray:
    t, i = np.asarray(ev.times), np.asarray(ev.index)
    keep = np.isfinite(t) & ((i == neuron) if neuron is not None else True)
    return t[keep]


def _run(graph, t, i, t_max=T_MAX, **options):
    prog = nircomp.compile(graph, solver="analytical", t_max=t_max, **options)
    return prog.model(Events(np.asarray(t, float), np.asarray(i)))


# ------------------------------------------------------------------ closed forms (float64, 1e-9)
def test_quadratic_case_matches_hand_derived_times():
    """τm = 2τs: after a spike at t0, v = r I0 (x - x²) with x = e^{-(t-t0)/τm}, I0 = w_in W/τs, so the
    first crossing is x = (1 + sqrt(1 - 4θ/(r I0)))/2; after the reset the same rule with the decayed I."""
    ts, tm, w, w_in, r, thr, t0 = 2e-3, 4e-3, 0.015, 1.5, 1.2, 1.0, 1e-3
    out = _run(single(cuba(1, ts, tm, thr=thr, r=r, w_in=w_in), weight=[[w]]), [t0], [0], n_spikes={"cubalif": 30})
    want, t_last, i0 = [], t0, w_in * w / ts
    while True:
        disc = 1 - 4 * thr / (r * i0)
        if disc < 0:
            break
        x = (1 + np.sqrt(disc)) / 2
        t_spk = t_last - tm * np.log(x)
        if t_spk >= T_MAX:
            break
        want.append(t_spk)
        i0, t_last = i0 * x * x, t_spk  # I decays by e^{-d/τs} = x²; v resets to 0
    assert len(want) >= 3
    np.testing.assert_allclose(_times(out), want, rtol=0, atol=1e-9 * T_MAX)


def test_equal_time_constants_match_lambert_w():
    """τm = τs = τ: v = r I0 (d/τ) e^{-d/τ} after one input, so the first crossing is d = -τ W0(-θ/(r I0))."""
    from scipy.special import lambertw

    tau, w, t0 = 3e-3, 0.04, 2e-3
    out = _run(single(cuba(1, tau, tau), weight=[[w]]), [t0], [0], n_spikes={"cubalif": 4})
    i0 = w / tau
    want = t0 - tau * lambertw(-1.0 / i0, 0).real
    np.testing.assert_allclose(_times(out)[0], want, rtol=0, atol=1e-9 * T_MAX)


def test_general_time_constants_match_a_reference_root():
    """τs ≠ τm: the first crossing of r I0 τs/(τs - τm)(e^{-d/τs} - e^{-d/τm}) = θ, found by scipy's brentq
    on a bracket from a dense grid (an independent root finder)."""
    from scipy.optimize import brentq

    ts, tm, w = 3e-3, 1e-2, 0.02
    out = _run(single(cuba(1, ts, tm), weight=[[w]]), [0.0], [0], n_spikes={"cubalif": 4})
    f = lambda d: w / ts * ts / (ts - tm) * (np.exp(-d / ts) - np.exp(-d / tm)) - 1.0
    grid = np.linspace(0, T_MAX, 20001)
    k = int(np.argmax(f(grid) > 0))
    assert k > 0
    np.testing.assert_allclose(_times(out)[0], brentq(f, grid[k - 1], grid[k], xtol=1e-16), rtol=0, atol=1e-9 * T_MAX)


def test_lif_constant_drive_and_jumps_match_logarithms():
    """LIF with v_leak > θ fires with period τ ln((v_reset - v_leak)/(θ - v_leak)) (the first from v = 0);
    an input of weight W raises v by r W/τ and fires at once when that crosses θ."""
    tau, v_leak, thr, v_reset = 5e-3, 1.5, 1.0, 0.2
    out = _run(single(lif(1, tau, thr=thr, v_leak=v_leak, v_reset=v_reset)), [], [], n_spikes={"lif": 20})
    first = tau * np.log((0 - v_leak) / (thr - v_leak))
    period = tau * np.log((v_reset - v_leak) / (thr - v_leak))
    want = first + period * np.arange(20)
    np.testing.assert_allclose(_times(out), want[want < T_MAX], rtol=0, atol=1e-9 * T_MAX)
    # v_leak = 0 and a jump of r W / τ = 1.25 > θ: the input at 3 ms fires at 3 ms, once
    out = _run(single(lif(1, tau, thr=thr, r=0.5), weight=[[1.25 * tau / 0.5]]), [3e-3], [0], n_spikes={"lif": 2})
    np.testing.assert_allclose(_times(out), [3e-3], rtol=0, atol=1e-12)


# ------------------------------------------------------------------ against the step solver, dt -> 0
def _step_times(graph, t_in, i_in, dt, n_in=3):
    steps = round(T_MAX / dt)
    model = nircomp.compile(graph, dt=dt, solver="step", spike="dirac", method="exact").model
    y = np.asarray(model(jnp.asarray(Events(t_in, i_in).to_grid(n_in, steps, dt) / dt))) * dt
    return Events.from_grid(np.rint(y), dt)


@pytest.mark.parametrize(("recurrent", "last_lif"), [(False, False), (True, False), (False, True)],
                         ids=["feedforward", "recurrent", "cubalif-lif"])
def test_step_solver_converges_to_exact_spike_times(recurrent, last_lif):
    """The step solver with Dirac spikes (amplitude 1/dt, exact integration) gives the same spikes per
    neuron, and its spike-time error shrinks in proportion to dt (recurrent: the one-step delay too; a LIF
    output population: jumps of r W/τ into v, v_leak = 0.5)."""
    graph = random_net(0, recurrent, last_lif=last_lif)
    t_in, i_in = random_inputs(0)
    exact = _run(graph, t_in, i_in, n_spikes=BUDGET)
    assert not bool(exact.any_overflow) and len(_times(exact)) > 10
    errors = []
    for dt in (2e-5, 4e-6):
        step = _step_times(graph, t_in, i_in, dt)
        err = 0.0
        for n in range(3):
            a, b = _times(exact, n), _times(step, n)
            assert len(a) == len(b), f"neuron {n}: {len(a)} exact spikes, {len(b)} at dt={dt}"
            err = max(err, float(np.max(np.abs(a - b), initial=0.0)))
        errors.append(err)
    assert errors[1] < errors[0] / 3, errors  # dt / 5 -> error / 5 (first order), with slack
    assert errors[1] < 10 * 4e-6


# ------------------------------------------------------------------ budget, batching, records
def test_overflow_is_flagged_never_silent():
    """A population firing more than n_spikes sets its flag and keeps its first n_spikes spikes; with a
    budget that suffices the flag is clear and the spikes are the same."""
    graph = random_net(0, recurrent=False)
    t_in, i_in = random_inputs(0)
    full = _run(graph, t_in, i_in, n_spikes=BUDGET)
    n = len(_times(full))
    assert n > 4 and not bool(full.overflow["lif1"])
    cut = _run(graph, t_in, i_in, n_spikes={"lif0": 40, "lif1": n - 3})
    assert bool(cut.overflow["lif1"]) and not bool(cut.overflow["lif0"]) and bool(cut.any_overflow)
    np.testing.assert_array_equal(np.asarray(cut.times), np.asarray(full.times)[:n - 3])


def test_vmap_over_a_batch_of_events_equals_one_by_one():
    """jax.vmap(prog.model) over Events with a leading batch axis equals running each sample alone."""
    graph = random_net(0, recurrent=True)
    prog = nircomp.compile(graph, solver="analytical", t_max=T_MAX, n_spikes=BUDGET)
    samples = [random_inputs(s) for s in range(3)]
    batch = Events(np.stack([t for t, _ in samples]), np.stack([i for _, i in samples]))
    out = eqx.filter_jit(jax.vmap(prog.model))(batch)
    model = eqx.filter_jit(prog.model)
    for b, (t, i) in enumerate(samples):
        one = model(Events(t, i))
        np.testing.assert_allclose(np.asarray(out.times[b]), np.asarray(one.times), rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(out.index[b]), np.asarray(one.index))


def test_record_returns_events_of_any_population():
    """record=["lif0"] returns lif0's spikes, which drive lif1: removing them silences lif1."""
    graph = random_net(0, recurrent=False)
    t_in, i_in = random_inputs(0)
    prog = nircomp.compile(graph, solver="analytical", t_max=T_MAX, n_spikes=BUDGET)
    run = eqx.filter_jit(prog.model)
    out, rec = run(Events(t_in, i_in), record=("lif0", "input"))
    assert len(_times(rec["lif0"])) > 0 and set(rec) == {"lif0", "input"}
    np.testing.assert_allclose(_times(rec["input"]), t_in)
    silent, _ = run(Events(np.full(8, np.inf), np.zeros(8, int)), record=("lif0", "input"))
    assert len(_times(silent)) == 0 and len(_times(out)) > 0
    with pytest.raises(CompileError, match="cannot record 'fc0'"):
        prog.model(Events(t_in, i_in), record=["fc0"])


# ------------------------------------------------------------------ Events converters
def test_events_grid_and_nir_round_trips():
    """Grid -> events puts a count-c spike at step k as c events at k*dt; events -> grid uses floor(t/dt)
    (NIR's rule); both round-trip, and nir.EventData round-trips with padding (-1, +inf)."""
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 3, (50, 4)) * (rng.random((50, 4)) < 0.2)
    ev = Events.from_grid(grid, 1e-3)
    assert len(np.asarray(ev.times)) == grid.sum()
    np.testing.assert_array_equal(ev.to_grid(4, 50, 1e-3), grid)
    data = ev.to_nir(4, 0.05)
    assert isinstance(data, nir.EventData) and data.idx.shape == (1, grid.sum())
    back = Events.from_nir(nir.EventData(np.array([[1, 2, -1]]), np.array([[0.1, 0.2, 0.0]]), 4, 1.0))
    np.testing.assert_array_equal(np.asarray(back.times), [[0.1, 0.2, np.inf]])
    np.testing.assert_array_equal(np.asarray(back.index), [[1, 2, -1]])
    with pytest.raises(CompileError, match="outside the grid"):
        Events(np.array([0.06]), np.array([0])).to_grid(4, 50, 1e-3)


# ------------------------------------------------------------------ refusals
def test_bad_graphs_and_options_are_refused_by_name():
    """A nonzero bias or per-neuron τ is a CompileError naming the check and node and suggesting
    solver='step'; t_max is required by, and only accepted for, the analytical solver; an input index
    outside the Input or a negative time is refused."""
    affine = nir.NIRGraph.from_list(nir.Input(np.array([2])), nir.Affine(np.ones((2, 2)), np.array([0.0, 0.3])),
                                    cuba(2), nir.Output(np.array([2])))
    with pytest.raises(CompileError) as e:
        nircomp.compile(affine, solver="analytical", t_max=T_MAX)
    text = str(e.value)
    assert "check-zero-bias" in text and "affine" in text and "solver='step'" in text
    hetero = cuba(2)
    hetero.tau_mem = np.array([1e-2, 2e-2])
    with pytest.raises(CompileError) as e:
        nircomp.compile(single(hetero), solver="analytical", t_max=T_MAX)
    assert "check-homogeneous" in str(e.value) and "tau_mem" in str(e.value) and "solver='step'" in str(e.value)
    with pytest.raises(CompileError, match="t_max"):
        nircomp.compile(single(cuba(1)), solver="analytical")
    with pytest.raises(CompileError, match="apply to solver='analytical'|applies to solver='analytical'"):
        nircomp.compile(single(cuba(1)), solver="step", t_max=T_MAX)
    with pytest.raises(CompileError, match="n_spikes names 'nope'"):
        nircomp.compile(single(cuba(1)), solver="analytical", t_max=T_MAX, n_spikes={"nope": 3})
    model = nircomp.compile(single(cuba(1)), solver="analytical", t_max=T_MAX).model
    with pytest.raises(CompileError, match="index 3 outside 0..0"):
        model(Events([1e-3], [3]))
    with pytest.raises(CompileError, match="negative or NaN"):
        model(Events([-1e-3], [0]))


def test_auto_picks_analytical_for_eligible_graphs_unless_step_options():
    """solver='auto' runs an eligible graph on the analytical solver (with t_max) and on the step solver
    when a step-only option (a Semantics field or a step convention) is given or t_max is not."""
    assert nircomp.compile(single(cuba(1)), t_max=T_MAX).ir.attrs["solver"] == "analytical"
    no_window = nircomp.compile(single(cuba(1))).ir.attrs
    assert no_window["solver"] == "step" and "no t_max" in no_window["solver_reason"]
    assert nircomp.compile(single(cuba(1)), method="exact").ir.attrs["solver"] == "step"
    assert nircomp.compile(single(cuba(1)), convention="snntorch").ir.attrs["solver"] == "step"
