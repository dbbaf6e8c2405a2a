"""solver="hardware": the forward pass by an executor, the backward by EventProp on the events it returned.

An **executor** runs a network of spiking populations on (real or emulated) hardware. It is any callable

    executor(net, w_in, w_rec, t_in, ch_in, key, sample_times=None) -> HardwareRun | {population: (times, index)}

- `net`: the static description (`nircomp.backends.event.Net`: `net.pops`, each with name, kind "LIF" or
  "CubaLIF", flat neuron range lo..hi, tau_syn, tau_mem, r, v_leak, v_th, v_reset, spike budget; `net.n`,
  `net.t_max`); `w_in` [n, m] and `w_rec` [n, n]: the jumps of the synaptic current (CubaLIF) or membrane
  (LIF) caused by a spike of input channel j / neuron k (already on the quantize-weights grid when that pass
  ran); `t_in` [L], `ch_in` [L]: input events sorted by time (+inf padded); `key`: uint32 [2] (the call's
  PRNG key, zeros when the call gave none); `sample_times` [S] or None.
- returns, per population name, the spike times (any length; +inf or NaN-free padding) and the neurons'
  indices *within the population*; as a `HardwareRun` it may also carry `membrane` ({population: [S, size]}
  membrane samples at `sample_times`). The model keeps each population's first `budget` spikes and sets
  its overflow flag when there were more.
- `traceable = True` (attribute) declares the executor pure JAX (called under jit/vmap/grad as it is, like
  the `Emulator`); otherwise it runs on the host with numpy arrays through `jax.pure_callback` (so jit and
  vmap still work: vmap calls it once per sample). The executor is a static part of the model, so it must
  be hashable (objects are, by identity, unless they define __eq__ without __hash__).

The backward pass never differentiates the executor: `replay` runs the software model (the nominal
parameters) through the returned event list, recording the state before each event as the analytical
solver's forward pass does (jaxsnn's `step_existing_events`), and the analytical solver's EventProp sweep
(`nircomp.kernels.event._simulate_bwd`) takes it from there. Where the executor deviates from the model
(quantisation, fixed-pattern noise, jitter), the gradient is the model's at the observed spike times.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from nircomp.errors import CompileError
from nircomp.kernels.event import _forward, _simulate_bwd, propagate


class Executor(Protocol):
    """Runs the network: (net, w_in, w_rec, t_in, ch_in, key, sample_times) -> HardwareRun or
    {population: (times, index)}. See the module docstring; `traceable` is optional (default False)."""

    def __call__(self, net: Any, w_in: Any, w_rec: Any, t_in: Any, ch_in: Any, key: Any,
                 sample_times: Any = None) -> HardwareRun | Mapping[str, tuple[Any, Any]]: ...


@dataclass
class HardwareRun:
    """What an executor returns: spikes {population: (times, index within the population)} and, when it was
    asked for samples, membrane {population: [S, size]}."""

    spikes: Mapping[str, tuple[Any, Any]]
    membrane: Mapping[str, Any] | None = None


def weight_levels(bits: int, duplication: int) -> int:
    """The largest integer weight a connection can take: (2^(bits-1) - 1) per synapse, times duplication."""
    return (2 ** (bits - 1) - 1) * duplication


def quantize(weight, scale, levels, xp=np):
    """`weight` on the grid `scale * k`, k an integer in [-levels, levels]; returns (quantised, n_clipped).

    xp: numpy or jax.numpy (the hardware model quantises trained weights at every run with the scale the
    quantize-weights pass fixed; weights that outgrow the range saturate, and the count says how many did)."""
    k = xp.round(weight / scale)
    clipped = xp.sum(xp.abs(k) > levels)
    return xp.clip(k, -levels, levels) * scale, clipped


# ---------------------------------------------------------------------------------------------- emulator
@dataclass(frozen=True)
class _Patterned:
    """A Net whose neurons carry the emulator's fixed pattern: v_th * th[n], both time constants * tau[n]
    (one factor per neuron keeps τm/τs and so each population's closed form for the spike times)."""

    base: Any
    th: tuple[float, ...]
    tau: tuple[float, ...]

    pops = property(lambda self: self.base.pops)
    n = property(lambda self: self.base.n)
    t_max = property(lambda self: self.base.t_max)

    def consts(self) -> dict[str, np.ndarray]:
        c = dict(self.base.consts())
        th, tau = np.asarray(self.th), np.asarray(self.tau)
        cuba = c["cuba"] > 0
        c["v_th"] = c["v_th"] * th
        c["tm"] = c["tm"] * tau
        c["ts"] = np.where(cuba, c["ts"] * tau, c["ts"])
        c["eq"] = c["eq"] / tau  # r/τm; coef = r τs/(τs - τm) does not change
        return c


@dataclass(frozen=True)
class Emulator:
    """The shipped executor: the exact event-driven model with a chip's imperfections, pure JAX.

    threshold_std, tau_std: relative std of a per-neuron fixed pattern, v_th·(1 + threshold_std·z) and
    (τs, τm)·(1 + tau_std·z') with z, z' ~ N(0, 1) per neuron drawn from numpy's default_rng(seed) (z for
    every neuron first, then z'), the same at every run; a spike's jump (w_in·W/τs) keeps its nominal size,
    as a synapse's charge does on a chip whose time constants deviate. jitter: std of Gaussian noise added to every
    returned spike time (timestamp noise: the network runs on the un-jittered times), drawn from the call's
    key, so a model with jitter > 0 needs `key=`. All zero: the analytical solver's spike times exactly.
    Membrane samples (`sample_times`) are exact between events; after an overflow (the event loop full),
    samples past its last event hold the state propagated from the one before it.
    Weight quantisation is the model's (the quantize-weights attrs), so it applies to any executor.
    """

    seed: int = 0
    threshold_std: float = 0.0
    tau_std: float = 0.0
    jitter: float = 0.0
    traceable: ClassVar[bool] = True

    def pattern(self, net) -> tuple[np.ndarray, np.ndarray]:
        """The per-neuron factors (threshold, time constants)."""
        rng = np.random.default_rng(self.seed)
        z_th, z_tau = rng.standard_normal(net.n), rng.standard_normal(net.n)
        return 1.0 + self.threshold_std * z_th, 1.0 + self.tau_std * z_tau

    def check(self, net) -> None:
        """Refuse a pattern that makes a time constant non-positive or a threshold not above its reset."""
        th, tau = self.pattern(net)
        for p in net.pops:
            s = slice(p.lo, p.hi)
            if np.any(tau[s] <= 0):
                raise CompileError(f"emulator-noise tau_std={self.tau_std:g} (seed {self.seed}) gives population "
                                   f"'{p.name}' a non-positive time constant", nodes=[p.name],
                                   hint="use a smaller tau_std")
            if np.any(p.v_th * th[s] <= p.v_reset):
                raise CompileError(f"emulator-noise threshold_std={self.threshold_std:g} (seed {self.seed}) puts a "
                                   f"threshold of '{p.name}' at or below its reset", nodes=[p.name],
                                   hint="use a smaller threshold_std")

    def __call__(self, net, w_in, w_rec, t_in, ch_in, key, sample_times=None) -> HardwareRun:
        th, tau = self.pattern(net)
        chip = _Patterned(net, tuple(th.tolist()), tuple(tau.tolist()))
        ev_t, ev_kind, ev_idx, st, st_t = _forward(chip, w_in, w_rec, t_in, ch_in)
        spikes = {}
        for k, p in enumerate(net.pops):
            t, i = first_spikes(p, ev_t, ev_kind, ev_idx, p.budget + 1)  # one more: the model sees overflow
            if self.jitter > 0:
                t = t + self.jitter * jax.random.normal(jax.random.fold_in(key, k), t.shape, t.dtype)
            spikes[p.name] = (t, i)
        membrane = None
        if sample_times is not None:
            c = {k: jnp.asarray(a, st.dtype) for k, a in chip.consts().items()}
            s = jnp.asarray(sample_times, st.dtype)
            k = jnp.minimum(jnp.searchsorted(ev_t, s, side="right"), ev_t.shape[0] - 1)
            v = jax.vmap(lambda kk, ss: propagate(c, st[kk, 0], st[kk, 1], ss - st_t[kk])[1])(k, s)
            membrane = {p.name: v[:, p.lo:p.hi] for p in net.pops}
        return HardwareRun(spikes, membrane)


def first_spikes(p, ev_t, ev_kind, ev_idx, count: int):
    """Population p's first `count` spikes in an event record: (times [count] +inf padded, local index)."""
    mine = (ev_kind >= 2) & (ev_idx >= p.lo) & (ev_idx < p.hi)
    pos = jnp.cumsum(mine) - 1
    slot = jnp.where(mine & (pos < count), pos, count)
    t = jnp.full(count, jnp.inf, ev_t.dtype).at[slot].set(ev_t, mode="drop")
    i = jnp.full(count, -1, jnp.int32).at[slot].set(ev_idx - p.lo, mode="drop")
    return t, i


# ---------------------------------------------------------------------------------------------- running
def _fit(p, times, index, xp):
    """A population's spikes as the model holds them: time order, the first `budget`, +inf/-1 padding, and
    the overflow flag (more real spikes than the budget)."""
    times = xp.asarray(times)
    real = xp.isfinite(times)
    order = xp.argsort(xp.where(real, times, np.inf), stable=True)
    t, i = times[order][:p.budget], xp.asarray(index)[order][:p.budget]
    pad = p.budget - t.shape[0]
    if pad > 0:
        t = xp.concatenate([t, xp.full(pad, xp.inf, t.dtype)])
        i = xp.concatenate([i, xp.full(pad, -1, i.dtype)])
    return t, xp.where(xp.isfinite(t), i, -1).astype(xp.int32), xp.sum(real) > p.budget


def execute(net, executor, w_in, w_rec, t_in, ch_in, key):
    """Run the executor (directly when traceable, else on the host through jax.pure_callback): per population
    (times [budget], local index [budget], overflow)."""
    if getattr(executor, "traceable", False):
        run = executor(net, w_in, w_rec, t_in, ch_in, key)
        spikes = run.spikes if isinstance(run, HardwareRun) else run
        return {p.name: _fit(p, *spikes[p.name], jnp) for p in net.pops}
    dtype = w_in.dtype

    def host(w_in, w_rec, t_in, ch_in, key):
        run = executor(net, np.asarray(w_in), np.asarray(w_rec), np.asarray(t_in), np.asarray(ch_in), np.asarray(key))
        spikes = run.spikes if isinstance(run, HardwareRun) else run
        out = []
        for p in net.pops:
            if p.name not in spikes:
                raise CompileError(f"the executor returned no spikes for population '{p.name}'")
            t, i = np.asarray(spikes[p.name][0], dtype), np.asarray(spikes[p.name][1])
            bad = (np.isfinite(t)) & ((i < 0) | (i >= p.hi - p.lo))
            if np.any(bad) or np.any(np.isnan(t)) or t.shape != i.shape:
                raise CompileError(f"the executor returned bad spikes for '{p.name}': times and index must have "
                                   f"one shape, no NaN, index in 0..{p.hi - p.lo - 1}")
            out.extend(_fit(p, t, i, np))
        return tuple(out)

    shapes = []
    for p in net.pops:
        shapes += [jax.ShapeDtypeStruct((p.budget,), dtype), jax.ShapeDtypeStruct((p.budget,), jnp.int32),
                   jax.ShapeDtypeStruct((), jnp.bool_)]
    flat = jax.pure_callback(host, tuple(shapes), w_in, w_rec, t_in, ch_in, key, vmap_method="sequential")
    return {p.name: tuple(flat[3 * k:3 * k + 3]) for k, p in enumerate(net.pops)}


def replay(net, w_in, w_rec, t_in, ch_in, sp_t, sp_i):
    """The software model driven through given events: inputs (t_in < t_max) and spikes (sp_t, flat index
    sp_i; +inf padding) merged in time order (inputs first at equal times, then populations in flat
    order, as causes precede their effects in a feed-forward net). Returns the analytical forward's record
    (ev_t, ev_kind, ev_idx, st, st_t); a spike is kind 3 (its time tied to the event before it) where the
    replayed membrane was already above threshold after that event, or is not rising at the spike time (no
    crossing of the model: a chip's deviation), else kind 2 (its time moves with the state, by v̇)."""
    dtype = w_rec.dtype
    c = {k: jnp.asarray(a, dtype) for k, a in net.consts().items()}
    n, n_in = net.n, t_in.shape[0]
    all_t = jnp.concatenate([jnp.where(t_in < net.t_max, t_in, jnp.inf), sp_t, jnp.full(1, jnp.inf, dtype)])
    kinds = jnp.concatenate([jnp.ones(n_in, jnp.int32), jnp.full(sp_t.shape, 2, jnp.int32), jnp.zeros(1, jnp.int32)])
    idx = jnp.concatenate([jnp.arange(n_in, dtype=jnp.int32), sp_i.astype(jnp.int32), jnp.zeros(1, jnp.int32)])
    order = jnp.argsort(all_t, stable=True)
    ev_t, kinds, idx = all_t[order], kinds[order], idx[order]
    kinds = jnp.where(jnp.isfinite(ev_t), kinds, 0)

    def step(carry, event):
        t, i, v = carry
        t_k, kind, raw = event
        valid, spike = kind > 0, kind >= 2
        who = jnp.where(spike, raw, 0)
        pos = jnp.where(kind == 1, raw, 0)
        t_ev = jnp.where(valid, t_k, t)
        i2, v2 = propagate(c, i, v, t_ev - t)
        rising = c["v_leak"][who] - v2[who] + c["r"][who] * i2[who] * c["cuba"][who] > 0
        immediate = spike & ((v[who] > c["v_th"][who]) | ~rising)
        v2 = jnp.where(spike & (jnp.arange(n) == who), c["v_reset"], v2)
        col = jnp.where(spike, w_rec[:, who], w_in[:, ch_in[pos]]) * valid
        i2, v2 = i2 + col * c["cuba"], v2 + col * (1 - c["cuba"])
        kind = jnp.where(spike, jnp.where(immediate, 3, 2), kind)
        return (t_ev, i2, v2), (kind, jnp.stack([i, v]), t)

    zeros = jnp.zeros(n, dtype)
    _, (kinds, st, st_t) = jax.lax.scan(step, (jnp.asarray(0.0, dtype), zeros, zeros), (ev_t, kinds, idx))
    return ev_t, kinds.astype(jnp.int32), idx, st, st_t


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def replayed(net, w_in, w_rec, t_in, ch_in, sp_t, sp_i):
    """`replay`'s event record (ev_t, ev_kind, ev_idx), differentiable by EventProp in w_in, w_rec, t_in (the
    given spike times carry no gradient of their own: theirs is the model's, through the replay)."""
    return replay(net, w_in, w_rec, t_in, ch_in, sp_t, sp_i)[:3]


def _replayed_fwd(net, w_in, w_rec, t_in, ch_in, sp_t, sp_i):
    ev_t, ev_kind, ev_idx, st, st_t = replay(net, w_in, w_rec, t_in, ch_in, sp_t, sp_i)
    return (ev_t, ev_kind, ev_idx), (w_in, w_rec, t_in, ch_in, ev_t, ev_kind, ev_idx, st, st_t)


def _replayed_bwd(net, res, cts):
    gw_in, gw_rec, gt_in, _ = _simulate_bwd(net, res, cts)
    return gw_in, gw_rec, gt_in, None, None, None


replayed.defvjp(_replayed_fwd, _replayed_bwd)


def run_hardware(net, executor, w_in, w_rec, t_in, ch_in, key):
    """Forward by the executor (no gradient through it), backward by EventProp on its events. Returns the
    record (ev_t, ev_kind, ev_idx) and {population: overflow}."""
    sg = jax.lax.stop_gradient
    got = execute(net, executor, sg(w_in), sg(w_rec), sg(t_in), ch_in, key)
    sp_t = jnp.concatenate([got[p.name][0].astype(w_in.dtype) for p in net.pops])
    sp_i = jnp.concatenate([jnp.where(got[p.name][1] >= 0, got[p.name][1] + p.lo, -1) for p in net.pops])
    record = replayed(net, w_in, w_rec, t_in, ch_in, sg(sp_t), sp_i)
    return record, {p.name: got[p.name][2] for p in net.pops}
