"""Numerical tests of the step solver against independent references.

References: closed-form solutions of the neuron ODEs and of their Euler recursions (solved by hand),
floor arithmetic for integrate-and-fire, naive numpy loops for convolution and pooling, the definition
of Delay/Threshold/Scale/Affine, convergence orders, and central finite differences for gradients.
Time constants are in seconds with dt = 1 ms unless a test says otherwise.
"""

from __future__ import annotations

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from graphs import ALL_GRAPHS, DT, chain, li, lif, sample_input, x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp.errors import CompileError


def run(graph, x, dt=DT, **options):
    return np.asarray(nircomp.compile(graph, dt=dt, solver="step", **options).model(jnp.asarray(x)))


def _f(x):
    return np.asarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------- closed-form responses
@pytest.mark.parametrize("method", ["euler", "exact"])
def test_li_impulse_response(method):
    """LI after a one-step pulse a at t=0: Euler v_n = (dt/tau) r a (1 - dt/tau)^n; exact (input held
    over the step) v_n = r a (1 - e^{-dt/tau}) e^{-n dt/tau}."""
    tau, r, a = np.array([2e-3, 5e-3, 1e-2]), np.array([1.0, 2.0, 0.5]), np.array([1.0, 0.5, 3.0])
    g = chain(3, ("li", nir.LI(tau=_f(tau), r=_f(r), v_leak=_f(np.zeros(3)))))
    x = np.zeros((25, 3), np.float32)
    x[0] = a
    n = np.arange(25)[:, None]
    if method == "euler":
        want = DT / tau * r * a * (1 - DT / tau) ** n
    else:
        want = r * a * (1 - np.exp(-DT / tau)) * np.exp(-n * DT / tau)
    np.testing.assert_allclose(run(g, x, method=method), want, rtol=2e-5, atol=1e-7)


def test_cubali_impulse_response_euler():
    """CubaLI Euler after a pulse a: I_n = c a_s^n with c = (dt/ts) w_in a, and the membrane recursion
    v_n = a_m v_{n-1} + (dt/tm) r I_n solves to v_n = (dt/tm) r c (a_m^{n+1} - a_s^{n+1}) / (a_m - a_s)
    (a_s = 1 - dt/ts, a_m = 1 - dt/tm); first values by hand for ts=2dt, tm=5dt: 0.1, 0.13."""
    ts, tm, r, w = np.array([2e-3, 3e-3]), np.array([5e-3, 8e-3]), np.array([1.0, 0.5]), np.array([1.0, 2.0])
    g = chain(2, ("li", nir.CubaLI(tau_syn=_f(ts), tau_mem=_f(tm), r=_f(r), v_leak=_f([0, 0]), w_in=_f(w))))
    x = np.zeros((30, 2), np.float32)
    x[0] = 1.0
    a_s, a_m, n = 1 - DT / ts, 1 - DT / tm, np.arange(30)[:, None]
    c = DT / ts * w
    want = DT / tm * r * c * (a_m ** (n + 1) - a_s ** (n + 1)) / (a_m - a_s)
    y = run(g, x)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(y[:2, 0], [0.1, 0.13], rtol=1e-6)


def test_cubali_impulse_response_exact():
    """CubaLI exact after a pulse a over [0, dt]: i(dt) = w a (1 - e^{-dt/ts}),
    v(dt) = r w a [1 - (ts e^{-dt/ts} - tm e^{-dt/tm}) / (ts - tm)], then the free two-exponential decay
    v(dt + s) = v(dt) e^{-s/tm} + r i(dt) ts / (ts - tm) (e^{-s/ts} - e^{-s/tm})."""
    ts, tm, r, w = np.array([2e-3, 6e-3]), np.array([5e-3, 4e-3]), np.array([1.0, 0.7]), np.array([1.5, 2.0])
    g = chain(2, ("li", nir.CubaLI(tau_syn=_f(ts), tau_mem=_f(tm), r=_f(r), v_leak=_f([0, 0]), w_in=_f(w))))
    x = np.zeros((30, 2), np.float32)
    x[0] = 1.0
    i1 = w * (1 - np.exp(-DT / ts))
    v1 = r * w * (1 - (ts * np.exp(-DT / ts) - tm * np.exp(-DT / tm)) / (ts - tm))
    s = np.arange(30)[:, None] * DT
    want = v1 * np.exp(-s / tm) + r * i1 * ts / (ts - tm) * (np.exp(-s / ts) - np.exp(-s / tm))
    np.testing.assert_allclose(run(g, x, method="exact"), want, rtol=2e-5, atol=1e-7)


def test_if_spike_counts_constant_input():
    """IF with constant input c, threshold th, reset to 0: a spike when n c > th, so every
    p = floor(th/c) + 1 steps (c=0.25, th=1: 4 c = 1 is not > 1, p = 5); over T steps floor(T/p) spikes
    at steps p-1, 2p-1, ..."""
    c, th = np.array([0.37, 0.26, 0.55, 1.3, 0.25]), np.array([1.0, 0.5, 2.0, 1.0, 1.0])
    g = chain(5, ("if", nir.IF(r=_f(np.ones(5)), v_threshold=_f(th), v_reset=_f(np.zeros(5)))))
    T = 60
    y = run(g, np.tile(_f(c), (T, 1)))
    p = np.floor(th / c).astype(int) + 1
    assert list(p) == [3, 2, 4, 1, 5]
    np.testing.assert_array_equal(y.sum(0), T // p)
    want = ((np.arange(T)[:, None] + 1) % p == 0).astype(np.float32)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("method", ["exact", "euler"])
def test_lif_first_spike_time_constant_drive(method):
    """LIF from rest with constant drive x: exactly, v(t) = r x (1 - e^{-t/tau}) crosses th at
    t* = -tau ln(1 - th/(r x)), so the first spike is at step index floor(t*/dt) (v after step k is
    v((k+1) dt)); under Euler v_k = r x (1 - (1 - dt/tau)^{k+1}) gives k = floor(ln(1 - th/(r x)) /
    ln(1 - dt/tau))."""
    tau, x = 1e-2, np.array([1.2, 1.5, 2.0, 4.0, 0.9])
    g = chain(5, ("lif", lif(5, tau=tau, thr=1.0)))
    y = run(g, np.tile(_f(x), (40, 1)), method=method)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "exact":
            q = -tau * np.log(1 - 1.0 / x) / DT
        else:
            q = np.log(1 - 1.0 / x) / np.log(1 - DT / tau)
    first = [int(np.argmax(col)) if col.any() else None for col in y.T]
    assert first[:4] == [int(k) for k in np.floor(q[:4])]
    assert np.all(np.abs(q[:4] - np.round(q[:4])) > 1e-3)  # no crossing within rounding of a step edge
    assert first[4] is None  # r x = 0.9 < th: never spikes
    if method == "exact":  # the spike is reported within one step after t*
        t_spike = (np.array(first[:4]) + 1) * DT
        assert np.all((t_spike >= q[:4] * DT) & (t_spike < q[:4] * DT + DT))


# ----------------------------------------------------------------------------- stateless ops
def _conv_ref(x, w, b, stride, pads, dilation, groups):
    """Naive PyTorch-convention cross-correlation of one sample x [C, *S] with weight [O, C/g, *K]."""
    nd = w.ndim - 2
    xp = np.pad(x, [(0, 0)] + list(pads))
    cg, og = w.shape[1], w.shape[0] // groups
    size = [(xp.shape[1 + i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    y = np.zeros((w.shape[0], *size))
    for o in range(w.shape[0]):
        g = o // og
        for idx in np.ndindex(*size):
            win = tuple(slice(idx[i] * stride[i], idx[i] * stride[i] + dilation[i] * (w.shape[2 + i] - 1) + 1,
                              dilation[i]) for i in range(nd))
            y[(o, *idx)] = np.sum(xp[(slice(g * cg, (g + 1) * cg), *win)] * w[o]) + b[o]
    return y


def _same(kernel, dilation):
    """PyTorch's 'same' padding: total d (k - 1), the odd one at the high end."""
    return [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]


CONV_CASES = {  # name: (in_shape, weight shape, stride, padding, dilation, groups)
    "conv2d-stride-pad": ((2, 7, 6), (3, 2, 3, 2), (2, 1), (1, 0), (1, 1), 1),
    # strided, few input channels: run as space-to-depth (rows padded up to whole blocks, or cut)
    "conv2d-s2d-5x5-stride2": ((2, 11, 10), (4, 2, 5, 5), (2, 2), (1, 1), (1, 1), 1),
    "conv2d-s2d-stride3x2-cut": ((3, 13, 9), (2, 3, 3, 3), (3, 2), (0, 2), (1, 1), 1),
    "conv2d-same-dil-groups": ((4, 6, 5), (4, 2, 4, 3), (1, 1), "same", (2, 1), 2),
    "conv2d-valid": ((1, 5, 5), (2, 1, 2, 2), (1, 1), "valid", (1, 1), 1),
    "conv1d-stride-dil": ((2, 11), (3, 2, 3), (2,), (1,), (2,), 1),
    "conv1d-same-groups": ((3, 8), (6, 1, 4), (1,), "same", (1,), 3),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_naive_loops(case):
    """Conv1d/Conv2d with stride, padding (ints, 'same' with the odd pad high, 'valid'), dilation, groups
    and bias equal a naive loop over output positions (PyTorch cross-correlation)."""
    in_shape, wshape, stride, padding, dilation, groups = CONV_CASES[case]
    rng = np.random.default_rng(0)
    w, b = _f(rng.normal(size=wshape)), _f(rng.normal(size=wshape[0]))
    nd = len(wshape) - 2
    cls = nir.Conv1d if nd == 1 else nir.Conv2d
    node = cls(in_shape[1] if nd == 1 else in_shape[1:], w, stride if nd == 2 else stride[0],
               padding if isinstance(padding, str) else (padding if nd == 2 else padding[0]),
               dilation if nd == 2 else dilation[0], groups, b)
    pads = _same(wshape[2:], dilation) if padding == "same" else \
        [(0, 0)] * nd if padding == "valid" else [(p, p) for p in padding]
    want_shape = tuple(_conv_ref(np.zeros(in_shape), w, b, stride, pads, dilation, groups).shape)
    g = chain(in_shape, ("conv", node), out_shape=want_shape)
    x = _f(rng.normal(size=(2, *in_shape)))
    want = np.stack([_conv_ref(xt, w, b, stride, pads, dilation, groups) for xt in x])
    np.testing.assert_allclose(run(g, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["SumPool2d", "AvgPool2d"])
@pytest.mark.parametrize("k,s,p", [((3, 2), (2, 1), (1, 0)), ((5, 4), (1, 2), (2, 1))])
def test_pool_matches_naive_loops(kind, k, s, p):
    """SumPool2d/AvgPool2d: window sums over the zero-padded input; the average divides by the window
    size, padding included (PyTorch's count_include_pad default). A 3x2 window is summed as strided
    slices, a 5x4 one (more than POOL_SLICES elements) by reduce_window: both paths."""
    rng = np.random.default_rng(1)
    x = _f(rng.normal(size=(3, 2, 7, 5)))
    xp = np.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])])
    oh, ow = (7 + 2 * p[0] - k[0]) // s[0] + 1, (5 + 2 * p[1] - k[1]) // s[1] + 1
    want = np.zeros((3, 2, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        want[:, :, i, j] = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].sum((2, 3))
    if kind == "AvgPool2d":
        want /= k[0] * k[1]
    node = getattr(nir, kind)(np.array(k), np.array(s), np.array(p))
    np.testing.assert_allclose(run(chain((2, 7, 5), ("pool", node), out_shape=(2, oh, ow)), x), want,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("start,end,out", [(1, 2, (2, 12)), (0, -1, (24,)), (0, 1, (6, 4))])
def test_flatten(start, end, out):
    """Flatten(start_dim, end_dim) without batch axis is numpy's reshape of those dims, C order."""
    x = _f(np.random.default_rng(2).normal(size=(3, 2, 3, 4)))
    node = nir.Flatten({"input": np.array([2, 3, 4])}, start, end)
    np.testing.assert_array_equal(run(chain((2, 3, 4), ("flat", node), out_shape=out), x), x.reshape(3, *out))


def test_delay_shifts_by_rounded_steps():
    """Delay d: y[t] = x[t - d/dt] per neuron (zero before), d/dt rounded (3e-3/1e-3 is not exactly 3 in
    floating point)."""
    d = np.array([0.0, 1e-3, 3e-3, 5e-3])
    x = _f(np.random.default_rng(3).normal(size=(12, 4)))
    y = run(chain(4, ("delay", nir.Delay(_f(d)))), x)
    for i, k in enumerate([0, 1, 3, 5]):
        np.testing.assert_array_equal(y[k:, i], x[:12 - k, i])
        np.testing.assert_array_equal(y[:k, i], 0.0)


def test_delay_not_multiple_of_dt_is_compile_error():
    """A delay that is not a whole number of steps is refused (no silent rounding), naming the node."""
    g = chain(2, ("delay", nir.Delay(_f([1e-3, 1.5e-3]))))
    with pytest.raises(CompileError, match="multiple of dt") as err:
        nircomp.compile(g, dt=DT, solver="step")
    assert "delay" in str(err.value)


def test_threshold_scale_affine():
    """Threshold: y = x > th per element (0 at equality); Scale: y = s x; Affine: y = W x + b."""
    rng = np.random.default_rng(4)
    x = _f(rng.normal(size=(6, 3)))
    x[0] = [0.5, -0.2, 1.0]  # exactly at the thresholds
    th, s = _f([0.5, -0.2, 1.0]), _f([2.0, -0.5, 0.0])
    w, b = _f(rng.normal(size=(2, 3))), _f([0.3, -1.0])
    np.testing.assert_array_equal(run(chain(3, ("t", nir.Threshold(th))), x), (x > th).astype(np.float32))
    np.testing.assert_array_equal(run(chain(3, ("t", nir.Threshold(th))), x)[0], [0, 0, 0])
    np.testing.assert_allclose(run(chain(3, ("s", nir.Scale(s))), x), x * s, rtol=1e-6)
    np.testing.assert_allclose(run(chain(3, ("a", nir.Affine(w, b)), out_shape=2), x), x @ w.T + b, rtol=1e-5)


# ----------------------------------------------------------------------------- convergence
def _li_closed(t, tau, r, x, v_leak):
    return (v_leak + r * x) * (1 - np.exp(-t / tau))


def _cubali_closed(t, ts, tm, r, w, x, v_leak):
    """Step response from rest: i = w x (1 - e^{-t/ts}); v = v_leak (1 - e^{-t/tm})
    + r w x [1 - (ts e^{-t/ts} - tm e^{-t/tm}) / (ts - tm)]."""
    return v_leak * (1 - np.exp(-t / tm)) + r * w * x * (1 - (ts * np.exp(-t / ts) - tm * np.exp(-t / tm)) / (ts - tm))


@pytest.mark.parametrize("kind", ["LI", "CubaLI"])
@pytest.mark.usefixtures("x64")
def test_convergence_to_continuous_solution(kind):
    """With constant input, v at t = 1 converges to the continuous closed form as dt -> 0: Euler with
    order 1 (error ratio 2 per halving of dt), exact integration exactly (input is constant over every
    step, so each step is the exact flow), float64 throughout."""
    tau, ts, r, w, x, v_leak, t_end = 0.4, 0.15, 0.8, 1.5, 1.2, 0.2, 1.0
    if kind == "LI":
        node = nir.LI(tau=np.array([tau]), r=np.array([r]), v_leak=np.array([v_leak]))
        exact = _li_closed(t_end, tau, r, x, v_leak)
    else:
        node = nir.CubaLI(tau_syn=np.array([ts]), tau_mem=np.array([tau]), r=np.array([r]),
                          v_leak=np.array([v_leak]), w_in=np.array([w]))
        exact = _cubali_closed(t_end, ts, tau, r, w, x, v_leak)
    g = chain(1, ("n", node))
    errors = {}
    for method in ("euler", "exact"):
        errors[method] = []
        for steps in (25, 50, 100):
            dt = t_end / steps
            y = nircomp.compile(g, dt=dt, solver="step", method=method, dtype=jnp.float64).model(
                jnp.full((steps, 1), x, jnp.float64))
            assert y.dtype == jnp.float64
            errors[method].append(abs(float(y[-1, 0]) - exact))
    orders = np.log2(np.array(errors["euler"][:-1]) / np.array(errors["euler"][1:]))
    assert np.all((orders > 0.9) & (orders < 1.1)), orders
    assert max(errors["exact"]) < 1e-13, errors["exact"]


@pytest.mark.usefixtures("x64")
def test_exact_cubali_equal_time_constants():
    """tau_syn = tau_mem = tau (the repeated root): the step response from rest is
    v = r w x [1 - e^{-t/tau} (1 + t/tau)], which exact integration reproduces at every step."""
    tau, r, w, x, steps = 0.3, 0.8, 1.5, 1.2, 20
    node = nir.CubaLI(tau_syn=np.array([tau]), tau_mem=np.array([tau]), r=np.array([r]), v_leak=np.array([0.0]),
                      w_in=np.array([w]))
    y = nircomp.compile(chain(1, ("n", node)), dt=0.05, solver="step", method="exact", dtype=jnp.float64).model(
        jnp.full((steps, 1), x, jnp.float64))
    t = np.arange(1, steps + 1) * 0.05
    np.testing.assert_allclose(y[:, 0], r * w * x * (1 - np.exp(-t / tau) * (1 + t / tau)), rtol=1e-12, atol=1e-14)


def test_exact_cubali_nearly_equal_time_constants_float32():
    """float32 time constants 2 ulp apart respond as equal ones, v = 1 - e^{-t/tau} (1 + t/tau) (the
    two-exponential formula divides by tau_syn - tau_mem and must not lose all precision to it)."""
    ts = np.float32(5e-3)
    tm = np.nextafter(np.nextafter(ts, np.float32(1)), np.float32(1))
    node = nir.CubaLI(tau_syn=_f([ts, ts]), tau_mem=_f([ts, tm]), r=_f([1, 1]), v_leak=_f([0, 0]), w_in=_f([1, 1]))
    y = run(chain(2, ("n", node)), np.ones((10, 2), np.float32), method="exact")
    t = np.arange(1, 11) * DT
    np.testing.assert_allclose(y, np.tile((1 - np.exp(-t / 5e-3) * (1 + t / 5e-3))[:, None], 2), rtol=1e-5)


# ----------------------------------------------------------------------------- gradients
def _ff_graph():
    """Affine -> CubaLIF -> Linear -> LI (float64 parameters)."""
    rng = np.random.default_rng(5)
    n = 4
    return chain(3, ("fc", nir.Affine(rng.normal(0, 2.0, (n, 3)), rng.normal(0, 0.3, n))),
                 ("lif", nir.CubaLIF(tau_syn=np.full(n, 2e-3), tau_mem=np.full(n, 5e-3), r=np.ones(n),
                                     v_leak=np.zeros(n), v_threshold=np.full(n, 0.3), v_reset=np.zeros(n),
                                     w_in=np.ones(n))),
                 ("fc2", nir.Linear(rng.normal(0, 1.0, (2, n)))), ("li", li(2)), out_shape=2)


GRAD_GRAPHS = {"affine-cubalif-li": _ff_graph, "recurrent": ALL_GRAPHS["recurrent"]}


def _loss(model, x):
    y = model(x)
    return jnp.sum(y * jnp.linspace(-1.0, 2.0, y.size).reshape(y.shape)) + jnp.sum(y ** 2)


@pytest.mark.parametrize("name", GRAD_GRAPHS)
@pytest.mark.usefixtures("x64")
def test_gradient_matches_finite_differences(name):
    """With forward="smooth" the spike is sigmoid(slope x) in the forward pass too, so autodiff is the exact
    derivative: the directional derivative along random directions of all parameters (weights, time
    constants, thresholds) and of the input equals central finite differences (float64, rel. err < 1e-5)."""
    g = GRAD_GRAPHS[name]()
    model = nircomp.compile(g, dt=DT, solver="step", forward="smooth", surrogate="sigmoid", slope=5.0,
                            dtype=jnp.float64).model
    x = jnp.asarray(sample_input(g, 25, seed=1), jnp.float64) * 3.0
    loss = eqx.filter_jit(_loss)
    grad_m, grad_x = eqx.filter_jit(eqx.filter_grad(lambda xm: _loss(*xm)))((model, x))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(np.asarray, model.params)
    for _ in range(2):  # directions in numpy: eager jax ops would compile a kernel per shape
        d_params = jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape) * np.abs(p), params)
        d_x = rng.normal(size=x.shape)
        analytic = sum(float(np.vdot(a, b)) for a, b in zip(jax.tree_util.tree_leaves(grad_m.params),
                                                           jax.tree_util.tree_leaves(d_params)))
        analytic += float(np.vdot(grad_x, d_x))
        eps = 1e-6

        def shifted(h, d_params=d_params, d_x=d_x):
            moved = jax.tree_util.tree_map(lambda p, d: jnp.asarray(p + h * d), params, d_params)
            return float(loss(eqx.tree_at(lambda m: m.params, model, moved), jnp.asarray(np.asarray(x) + h * d_x)))

        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert abs(numeric - analytic) <= 1e-5 * abs(analytic), (numeric, analytic)
        assert abs(analytic) > 1e-3


def test_default_surrogate_gradients_are_finite_and_nonzero():
    """With the default Heaviside forward and SuperSpike surrogate, jax.grad through a spiking graph
    runs and yields finite, nonzero gradients for the input weights."""
    g = ALL_GRAPHS["cubalif_chain"]()
    model = nircomp.compile(g, dt=DT, solver="step").model
    x = jnp.asarray(sample_input(g, 30))
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(m(x) ** 2)))(model)
    gw = grads.params["lif1"]["weight"]
    assert bool(jnp.all(jnp.isfinite(gw))) and float(jnp.abs(gw).sum()) > 0
    assert math.isfinite(float(jnp.abs(grads.params["lif1"]["tau_mem"]).sum()))
