"""Event-driven kernels of the analytical solver: exact spike times and EventProp gradients.

A network (`Net` with its populations `Pop`, defined in nircomp.backends.event; like every kernel module
this one imports only jax and the standard library) is a set of spiking populations (CubaLIF or LIF, one
parameter value per population) whose neurons are numbered 0..n-1 in one flat vector, fed by input
channels through `W_in` [n, m] and by each other (feed-forward or recurrent alike) through `W_rec` [n, n]. Both hold *jumps*: an input spike of
channel j adds `W_in[:, j]` to the synaptic current of CubaLIF targets and to the membrane of LIF targets.

Between events the state evolves in closed form (NIR's equations, state starting at zero):
    I(t) = I0 e^{-t/τs};   v(t) = v_leak + A e^{-t/τs} + (v0 - v_leak - A) e^{-t/τm},  A = r I0 τs/(τs - τm)
(τs = τm: v_leak + (v0 - v_leak + r I0 t/τm) e^{-t/τm}; LIF: v_leak + (v0 - v_leak) e^{-t/τm}). A neuron
fires when v > v_th and is reset to v_reset. Spike times are exact: closed form for LIF (a logarithm)
and τm = 2τs (a quadratic in e^{-t/τm}); otherwise a Newton iteration inside a bracket. The bracket
never misses a crossing: v - v_th = c + a e^{-t/τs} + b e^{-t/τm} (+ k t e^{-t/τm}) has at most one
extremum, so splitting the window there leaves monotone pieces with at most one root each.

`simulate` processes one event per iteration (the next input, or the earliest threshold crossing) in a
`lax.while_loop` bounded by the number of inputs + the populations' spike budgets + 1. It is a
`jax.custom_vjp`: the backward pass is EventProp (Wunderlich & Pehle 2021), a reverse sweep over the
recorded events carrying the adjoint (λ_I, λ_v) of every neuron. Between events the adjoint ODE is
integrated exactly (the transpose of the closed-form propagation); at each event the jump conditions
come from the vjp of that event's transition, in which a crossing time obeys the implicit-function rule
dt_k = -(∂v_n/∂state · dstate) / v̇_n(t_k).
"""

import functools

import jax
import jax.numpy as jnp

NEWTON_ITERS = 48  # bracketed Newton: bisection fallback halves the bracket, so 48 reach float64 precision


def propagate(c, i, v, d):
    """The state (i, v) after a free evolution of d (scalar or per neuron, finite) time units."""
    ds, dm = jnp.exp(-d / c["ts"]), jnp.exp(-d / c["tm"])
    a = c["coef"] * i
    v = c["v_leak"] + a * ds + (v - c["v_leak"] - a + c["eq"] * i * d) * dm
    return i * ds * c["cuba"], v


def _terms(p, nc, i, v):
    """v(t) - v_th = c + a e^{-t/τs} + (b + k t) e^{-t/τm} for population p's neurons (constants nc: the
    per-neuron slices of `Net.consts`, so a population may have per-neuron values of one closed-form kind)."""
    if p.kind == "LIF":
        return nc["v_leak"] - nc["v_th"], jnp.zeros_like(v), v - nc["v_leak"], jnp.zeros_like(v)
    if p.method == "equal":
        return nc["v_leak"] - nc["v_th"], jnp.zeros_like(v), v - nc["v_leak"], nc["eq"] * i
    a = nc["coef"] * i
    return nc["v_leak"] - nc["v_th"], a, v - nc["v_leak"] - a, jnp.zeros_like(v)


def _crossing(p, nc, i, v, horizon):
    """Time to the first t in [0, horizon] with v(t) > v_th (0 if v already is), +inf if none."""
    c, a, b, k = _terms(p, nc, i, v)
    f0 = v - nc["v_th"]
    inf = jnp.full_like(v, jnp.inf)
    if p.method == "lif":
        ratio = -c / jnp.where(b < 0, b, -1.0)  # e^{-t/τ} at the crossing: c + b e^{-t/τ} = 0
        ok = (c > 0) & (b < 0) & (ratio <= 1)
        d = -nc["tm"] * jnp.log(jnp.where(ok, ratio, 1.0))
        ok = ok & (d <= horizon)
    elif p.method == "quadratic":  # x = e^{-t/τm}: c + a x^2 + b x = 0, the largest root x <= 1
        disc = b * b - 4 * a * c
        q = -0.5 * (b + jnp.where(b >= 0, 1.0, -1.0) * jnp.sqrt(jnp.maximum(disc, 0.0)))
        roots = jnp.stack([q / jnp.where(a == 0, jnp.inf, a), c / jnp.where(q == 0, jnp.inf, q)])
        x_h = jnp.exp(-horizon / nc["tm"])
        good = (disc >= 0) & (roots > 0) & (roots <= 1) & (roots >= x_h) & jnp.isfinite(roots)
        x = jnp.max(jnp.where(good, roots, -1.0), axis=0)
        ok = x > 0
        d = -nc["tm"] * jnp.log(jnp.where(ok, x, 1.0))
    else:
        d, ok = _bracketed(p, nc, c, a, b, k, horizon)
    return jnp.where(f0 > 0, 0.0, jnp.where(ok, jnp.minimum(d, horizon), inf))


def _bracketed(p, nc, c, a, b, k, horizon):
    """Newton safeguarded by a bracket on the monotone piece that holds the first crossing."""
    ts, tm = nc["ts"], nc["tm"]

    def f(d):
        ds, dm = jnp.exp(-d / ts), jnp.exp(-d / tm)
        return c + a * ds + (b + k * d) * dm, -a / ts * ds + (k - (b + k * d) / tm) * dm

    if p.method == "equal":  # f' = 0 at t = τm - b/k
        ext, valid = tm - b / jnp.where(k == 0, 1.0, k), k != 0
    else:  # f' = 0 where e^{-t(1/τs - 1/τm)} = -(b τs)/(a τm)
        ratio = -(b * ts) / jnp.where(a == 0, 1.0, a * tm)
        ext = -jnp.log(jnp.where(ratio > 0, ratio, 1.0)) / (1 / ts - 1 / tm)
        valid = (a != 0) & (ratio > 0)
    mid = jnp.where(valid, jnp.clip(ext, 0.0, horizon), horizon)
    f_mid, f_end = f(mid)[0], f(jnp.broadcast_to(horizon, mid.shape))[0]
    first = f_mid > 0
    lo = jnp.where(first, 0.0, mid)
    hi = jnp.where(first, mid, horizon)
    ok = first | (f_end > 0)

    def body(_, state):
        lo, hi, x = state
        fx, dfx = f(x)
        lo, hi = jnp.where(fx <= 0, x, lo), jnp.where(fx > 0, x, hi)
        nx = x - fx / jnp.where(dfx == 0, 1.0, dfx)
        inside = (nx > lo) & (nx < hi) & (dfx != 0)
        return lo, hi, jnp.where(inside, nx, 0.5 * (lo + hi))

    lo, hi, x = jax.lax.fori_loop(0, NEWTON_ITERS, body, (lo, hi, 0.5 * (lo + hi)))
    return x, ok


def crossings(net, c, i, v, horizon):
    """Per neuron: time to its next threshold crossing within [0, horizon], +inf if none (c: `net.consts()`)."""
    return jnp.concatenate([_crossing(p, {k: a[p.lo:p.hi] for k, a in c.items()}, i[p.lo:p.hi], v[p.lo:p.hi],
                                      horizon) for p in net.pops])


def max_events(net, n_inputs: int) -> int:
    """The event loop's bound: every input, every budgeted spike, and one more to see the end."""
    return n_inputs + sum(p.budget for p in net.pops) + 1


def _forward(net, w_in, w_rec, t_in, ch_in):
    """Event-by-event simulation. Returns the event record and the state before each event."""
    dtype = jnp.result_type(w_rec.dtype, t_in.dtype)
    c = {k: jnp.asarray(a, dtype) for k, a in net.consts().items()}
    n, n_in = net.n, t_in.shape[0]
    k_max = max_events(net, n_in)
    cuba = jnp.asarray(c["cuba"], dtype)
    zeros = jnp.zeros(n, dtype)
    init = (jnp.int32(0), jnp.int32(0), jnp.asarray(0.0, dtype), zeros, zeros, jnp.asarray(False),
            jnp.full(k_max, jnp.inf, dtype), jnp.zeros(k_max, jnp.int32), jnp.zeros(k_max, jnp.int32),
            jnp.zeros((k_max, 2, n), dtype), jnp.zeros(k_max, dtype))

    def cond(s):
        return (s[0] < k_max) & ~s[5]

    def body(s):
        k, j, t, i, v, _, ev_t, ev_kind, ev_idx, st, st_t = s
        jj = jnp.minimum(j, n_in - 1)
        t_next = jnp.where(j < n_in, t_in[jj], jnp.inf)
        end = jnp.minimum(t_next, net.t_max)
        d = crossings(net, c, i, v, jnp.maximum(end - t, 0.0))
        who = jnp.argmin(d)
        spike = jnp.isfinite(d[who])
        inp = ~spike & (t_next < net.t_max)
        done = ~spike & ~inp
        t_ev = jnp.where(spike, t + d[who], jnp.where(inp, t_next, t))
        st, st_t = st.at[k].set(jnp.stack([i, v])), st_t.at[k].set(t)
        i2, v2 = propagate(c, i, v, t_ev - t)
        immediate = spike & (v[who] > c["v_th"][who])
        v2 = jnp.where(spike & (jnp.arange(n) == who), c["v_reset"], v2)
        col = jnp.where(spike, w_rec[:, who], w_in[:, ch_in[jj]]) * (spike | inp)
        i2, v2 = i2 + col * cuba, v2 + col * (1 - cuba)
        kind = jnp.where(spike, jnp.where(immediate, 3, 2), jnp.where(inp, 1, 0))
        ev_t = ev_t.at[k].set(jnp.where(done, jnp.inf, t_ev))
        ev_kind = ev_kind.at[k].set(kind.astype(jnp.int32))
        ev_idx = ev_idx.at[k].set(jnp.where(spike, who, j).astype(jnp.int32))
        keep = lambda new, old: jnp.where(done, old, new)
        return (k + (~done).astype(jnp.int32), j + inp.astype(jnp.int32), keep(t_ev, t), keep(i2, i),
                keep(v2, v), done, ev_t, ev_kind, ev_idx, st, st_t)

    out = jax.lax.while_loop(cond, body, init)
    return out[6:]


def _transition(net, c, s_prev, t_prev, col, t_input, t_star, kind, who):
    """One event as a differentiable map (state before, previous time, jump column, input time) ->
    (state after, event time). A crossing time is `t_star` in value with the implicit-function derivative."""
    i, v = s_prev[0], s_prev[1]
    i_star, v_star = propagate(c, i, v, jax.lax.stop_gradient(t_star) - t_prev)
    g = v_star[who]
    rate = (c["v_leak"][who] - g + c["r"][who] * i_star[who] * c["cuba"][who]) / c["tm"][who]
    rate = jax.lax.stop_gradient(jnp.where((kind == 2) & (rate != 0), rate, 1.0))
    t_cross = jax.lax.stop_gradient(t_star) - (g - jax.lax.stop_gradient(g)) / rate
    t_k = jnp.where(kind == 2, t_cross, jnp.where(kind == 1, t_input, t_prev))
    i2, v2 = propagate(c, i, v, t_k - t_prev)
    v2 = jnp.where((kind >= 2) & (jnp.arange(net.n) == who), c["v_reset"], v2)
    cuba = c["cuba"]
    return jnp.stack([i2 + col * cuba, v2 + col * (1 - cuba)]), t_k


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def simulate(net, w_in, w_rec, t_in, ch_in):
    """Run the network on input events sorted by time (`t_in` [L >= 1], +inf padded; `ch_in` [L] channels).

    Returns (times [K], kind [K], idx [K]) of every processed event in order, K = `max_events`: kind 1 =
    input (idx = its position in t_in), 2 = a threshold crossing of neuron idx, 3 = a spike of neuron idx
    pushed over threshold by the event before it (same time), 0 = unused slot (time +inf).
    """
    ev_t, ev_kind, ev_idx, _, _ = _forward(net, w_in, w_rec, t_in, ch_in)
    return ev_t, ev_kind, ev_idx


def _simulate_fwd(net, w_in, w_rec, t_in, ch_in):
    ev_t, ev_kind, ev_idx, st, st_t = _forward(net, w_in, w_rec, t_in, ch_in)
    return (ev_t, ev_kind, ev_idx), (w_in, w_rec, t_in, ch_in, ev_t, ev_kind, ev_idx, st, st_t)


def _simulate_bwd(net, res, cts):
    """EventProp: the adjoint swept backwards over the events, jump conditions by each event's vjp."""
    w_in, w_rec, t_in, ch_in, ev_t, ev_kind, ev_idx, st, st_t = res
    c = {k: jnp.asarray(a, st.dtype) for k, a in net.consts().items()}
    g_t = jnp.where(ev_kind > 0, cts[0], 0.0)

    def step(carry, k):
        s_bar, t_bar, gw_in, gw_rec, gt_in = carry
        kind, idx = ev_kind[k], ev_idx[k]
        valid = kind > 0
        who = jnp.where(kind >= 2, idx, 0)
        pos = jnp.where(kind == 1, idx, 0)
        ch = ch_in[pos]
        col = jnp.where(kind >= 2, w_rec[:, who], w_in[:, ch])
        t_star = jnp.where(valid, ev_t[k], st_t[k])
        t_input = jnp.where(kind == 1, t_in[pos], st_t[k])

        def f(s_prev, t_prev, col, t_input):
            return _transition(net, c, s_prev, t_prev, col, t_input, t_star, kind, who)

        _, vjp = jax.vjp(f, st[k], st_t[k], col, t_input)
        sp_bar, tp_bar, col_bar, tin_bar = vjp((s_bar, t_bar + g_t[k]))
        gw_rec = gw_rec.at[:, who].add(jnp.where(valid & (kind >= 2), col_bar, 0.0))
        gw_in = gw_in.at[:, ch].add(jnp.where(kind == 1, col_bar, 0.0))
        gt_in = gt_in.at[pos].add(jnp.where(kind == 1, tin_bar, 0.0))
        s_bar = jnp.where(valid, sp_bar, s_bar)
        t_bar = jnp.where(valid, tp_bar, t_bar)
        return (s_bar, t_bar, gw_in, gw_rec, gt_in), None

    init = (jnp.zeros_like(st[0]), jnp.zeros((), st.dtype), jnp.zeros_like(w_in), jnp.zeros_like(w_rec),
            jnp.zeros_like(t_in))
    (_, _, gw_in, gw_rec, gt_in), _ = jax.lax.scan(step, init, jnp.arange(ev_t.shape[0]), reverse=True)
    return gw_in, gw_rec, gt_in, None


simulate.defvjp(_simulate_fwd, _simulate_bwd)
