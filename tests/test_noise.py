"""Wiener noise on neuron state (compile(..., noise=...), model(x, key=k)) against closed forms.

Statistics use n = 20000 independent samples (2000 neurons x 10 keys). For Gaussian samples of known mean
0 the second moment m over n samples has relative standard deviation sqrt(2/n) = 1 %, so `|m / var - 1|
< 5 sqrt(2/n)` (5 %) fails a correct implementation with probability < 1e-6 (the keys are fixed, so a
run is deterministic; the bound justifies the tolerance); a correlation coefficient has standard
deviation 1/sqrt(n), bounded by 5/sqrt(n).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from graphs import ALL_GRAPHS, DT, _graph, chain, cubali, cubalif, io, li, lif, sample_input

import nircomp
from nircomp.errors import CompileError

N, KEYS = 2000, 10
SAMPLES = N * KEYS
TOL = 5 * np.sqrt(2 / SAMPLES)


def _runs(model, x):
    """Outputs [KEYS, T, ...] (float64) of KEYS independent noisy runs of model on x."""
    keys = jax.random.split(jax.random.PRNGKey(42), KEYS)
    y = jax.jit(jax.vmap(lambda k: model(x, key=k)))(keys)
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), y)


def _li_model(tau, sigma, method="euler"):
    g = chain(N, ("li", li(N, tau=tau)))
    return nircomp.compile(g, dt=DT, solver="step", method=method, noise={"membrane": sigma}).model


def _twins():
    """Input -> two identical LI nodes a, b without leak (tau = 1e6 s) -> Outputs oa, ob."""
    return _graph({"in": io(N)[0], "a": li(N, tau=1e6), "b": li(N, tau=1e6), "oa": io(N)[1], "ob": io(N)[1]},
                  [("in", "a"), ("in", "b"), ("a", "oa"), ("b", "ob")])


def test_membrane_without_leak_is_a_wiener_process():
    """With no leak and no input, v_t is sigma * W(t): mean 0, Var v_t = sigma^2 t (t = (n+1) dt after step
    n), independent increments, neurons and nodes; a node override (b: 2 sigma) replaces the global sigma
    for that node only."""
    sigma, T = 0.7, 40
    model = nircomp.compile(_twins(), dt=DT, solver="step",
                            noise={"membrane": sigma, "nodes": {"b": {"membrane": 2 * sigma}}}).model
    y = _runs(model, np.zeros((T, N), np.float32))  # {output: [KEYS, T, N]}
    for out, s in (("oa", sigma), ("ob", 2 * sigma)):
        v = y[out]
        for n in (0, 9, 39):
            var = s**2 * (n + 1) * DT
            assert abs(np.mean(v[:, n] ** 2) / var - 1) < TOL
            assert abs(np.mean(v[:, n])) < 5 * np.sqrt(var / SAMPLES)
    v = y["oa"]
    inc = np.diff(v, axis=1)
    bound = 5 / np.sqrt(SAMPLES)
    assert abs(np.corrcoef(inc[:, 10].ravel(), inc[:, 11].ravel())[0, 1]) < bound
    assert abs(np.corrcoef(v[:, -1, :-1].ravel(), v[:, -1, 1:].ravel())[0, 1]) < bound
    assert abs(np.corrcoef(v[:, -1].ravel(), y["ob"][:, -1].ravel())[0, 1]) < bound


@pytest.mark.parametrize("method", ["euler", "exact"])
def test_leaky_membrane_has_the_discrete_ou_variance(method):
    """With leak, v_n = b v_(n-1) + sigma sqrt(dt) xi (b = 1 - dt/tau, Euler; exp(-dt/tau), exact) has
    Var v_n = sigma^2 dt (1 - b^(2(n+1))) / (1 - b^2): checked at a transient step and at stationarity,
    whose value differs from the continuous OU's sigma^2 tau / 2 by O(dt/tau) (dt/tau = 0.1 here: 5 % for
    Euler, 10 % for the exact decay, whose noise increment is still Euler-Maruyama's)."""
    sigma, tau, T = 2.0, 10 * DT, 120
    b = 1 - DT / tau if method == "euler" else np.exp(-DT / tau)
    v = _runs(_li_model(tau, sigma, method), np.zeros((T, N), np.float32))
    for n in (4, T - 1):
        var = sigma**2 * DT * (1 - b ** (2 * (n + 1))) / (1 - b**2)
        assert abs(np.mean(v[:, n] ** 2) / var - 1) < TOL
    assert abs(sigma**2 * DT / (1 - b**2) / (sigma**2 * tau / 2) - 1) < 1.1 * DT / tau


def test_current_noise_reaches_the_membrane_one_step_later():
    """Current noise on a CubaLI without synaptic leak is a Wiener process in I (Var I_n = sigma^2 (n+1) dt);
    with tau_mem = dt (Euler: v = this step's deterministic I) the membrane copies the previous step's
    noisy current (to rounding). Stepping online with keys split(k, T) reproduces model(x, key=k)."""
    sigma, T = 1.5, 12
    node = cubali(N, tau_syn=1e6, tau_mem=DT)
    model = nircomp.compile(chain(N, ("cli", node)), dt=DT, solver="step", noise={"current": sigma}).model
    x = jnp.zeros((T, N))

    def online(key):
        def body(s, k):
            s, y = model.step(s, x[0], key=k)
            return s, (s["state"]["cli"][0], y)
        return jax.lax.scan(body, model.init_state(), jax.random.split(key, T))[1]

    keys = jax.random.split(jax.random.PRNGKey(7), KEYS)
    i, v = (np.asarray(a) for a in jax.jit(jax.vmap(online))(keys))
    np.testing.assert_allclose(v[:, 1:], i[:, :-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(v[:, 0], 0.0)
    for n in (0, T - 1):
        assert abs(np.mean(i[:, n].astype(np.float64) ** 2) / (sigma**2 * (n + 1) * DT) - 1) < TOL
    whole = jax.jit(jax.vmap(lambda k: model(x, key=k)))(keys)
    np.testing.assert_allclose(whole, v, rtol=1e-6, atol=1e-7)


def test_spikes_test_the_noisy_membrane():
    """The noise enters before the threshold test: with reset="none" a LIF spikes exactly where its
    (noisy) membrane state exceeds the threshold, and zero input with noise makes it spike at all."""
    model = nircomp.compile(chain(50, ("lif", lif(50, tau=1e6, thr=0.05))), dt=DT, solver="step", reset="none",
                            noise={"membrane": 1.0}).model

    def body(s, k):
        s, z = model.step(s, jnp.zeros(50), key=k)
        return s, (s["state"]["lif"][0], z)

    _, (v, z) = jax.lax.scan(body, model.init_state(), jax.random.split(jax.random.PRNGKey(3), 30))
    np.testing.assert_array_equal(np.asarray(z), np.asarray(v) > 0.05)
    assert 0 < np.asarray(z).mean() < 1


def test_seeded_reproducible_and_schedule_independent():
    """The same key gives bitwise the same run, another key another one, and the noise does not depend on
    the schedule (per-step vs scc: equal to rounding, as without noise)."""
    g = ALL_GRAPHS["recurrent"]()
    x = sample_input(g, 30)
    k = jax.random.PRNGKey(0)
    noise = {"membrane": 0.5, "current": 0.3}
    run = eqx.filter_jit(lambda m, x, k: m(x, key=k))
    scc = nircomp.compile(g, dt=DT, solver="step", schedule="scc", noise=noise).model
    per_step = nircomp.compile(g, dt=DT, solver="step", schedule="per-step", noise=noise).model
    np.testing.assert_array_equal(run(scc, x, k), run(scc, x, k))
    np.testing.assert_allclose(run(scc, x, k), run(per_step, x, k), rtol=1e-6, atol=1e-6)
    assert not np.array_equal(run(scc, x, k), run(scc, x, jax.random.PRNGKey(1)))


def test_noise_off_is_todays_model():
    """Without noise= the model has no noise, takes no key (a key is refused) and traces no PRNG op, on
    graphs with every neuron kind; with every sigma 0 it needs a key and gives bitwise the outputs without
    noise."""
    for name in ("neurons", "heterogeneous", "recurrent"):
        g = ALL_GRAPHS[name]()
        x = sample_input(g, 25)
        plain = nircomp.compile(g, dt=DT, solver="step").model
        assert plain.noise is None
        jaxpr = str(jax.make_jaxpr(plain)(x))
        assert "random" not in jaxpr and "threefry" not in jaxpr
    with pytest.raises(CompileError, match="compiled without noise"):
        plain(x, key=jax.random.PRNGKey(0))
    g = ALL_GRAPHS["neurons"]()
    x = sample_input(g, 25)
    plain = nircomp.compile(g, dt=DT, solver="step").model
    zero = nircomp.compile(g, dt=DT, solver="step", noise={"membrane": 0.0, "current": 0.0}).model
    with pytest.raises(CompileError, match="needs a PRNG key"):
        zero(x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, zero(x, key=jax.random.PRNGKey(0)), plain(x))


@pytest.mark.parametrize(("options", "match"), [
    ({"noise": {"membrane": -1.0}}, "must be finite and >= 0"),
    ({"noise": {"voltage": 1.0}}, "unknown key"),
    ({"noise": {"nodes": {"nope": {"membrane": 1.0}}}}, "node 'nope': unknown"),
    ({"noise": {"nodes": {"fc": {"membrane": 1.0}}}}, "not a neuron node"),
    ({"noise": {"nodes": {"lif": {"current": 1.0}}}}, "has no synaptic current"),
    ({"noise": {"current": 1.0}}, "no CubaLI/CubaLIF node"),
    ({"noise": {"membrane": 1.0}, "backend": "source"}, "backend 'source' does not support noise"),
    ({"noise": {"membrane": 1.0}, "backend": "aot"}, "backend 'aot' does not support noise"),
    ({"noise": {"membrane": 1.0}, "backend": "nir"}, "backend 'nir' does not support noise"),
])
def test_bad_noise_options_are_compile_errors(options, match, tmp_path):
    """Negative sigma, unknown keys or nodes, noise on a non-neuron or a current a node lacks, and backends
    that cannot draw noise (source, aot, nir) are refused with a CompileError naming the problem."""
    with pytest.raises(CompileError, match=match):
        nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", out=tmp_path / "o", **options)


def test_noise_runs_on_the_step_solver_only():
    """A graph that solver="auto" runs analytically (Linear -> CubaLIF, no bias) runs on the step solver
    when noise= is given (auto means step for a step-only option), with the noise; solver="analytical"
    with noise= is a CompileError, never a model that silently drops the noise."""
    g = chain(3, ("fc", nir.Linear(np.ones((4, 3), np.float32))), ("lif", cubalif(4)), out_shape=4)
    assert nircomp.compile(g, dt=DT, t_max=0.02).options["solver"] == "analytical"
    prog = nircomp.compile(g, dt=DT, noise={"membrane": 1.0})
    assert prog.options["solver"] == "step" and prog.model.noise is not None
    with pytest.raises(CompileError, match="noise"):
        nircomp.compile(g, dt=DT, solver="analytical", t_max=0.02, noise={"membrane": 1.0})
