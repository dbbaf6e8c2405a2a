"""Executes a step-solver Schedule with the kernels: the semantics the Equinox backend traces.

`run` walks the static schedule at trace time: a "seq" stage applies its kernel to the whole `[T, ...]`
sequence, a "scan" stage runs `lax.scan` over time for its entries, carrying neuron state and the
previous-step outputs of back-edge sources. `step` advances every entry by one step (online use).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nircomp.kernels import step as K
from nircomp.schedule import Entry, Schedule

_NEURONS = {"I": K.integrator_step, "IF": K.if_step, "LI": K.li_step, "LIF": K.lif_step,
            "CubaLI": K.cubali_step, "CubaLIF": K.cubalif_step}


def _p(params: Mapping[str, Any], e: Entry) -> dict[str, Any]:
    node = params.get(e.node, {})
    return {k: node[k] for k in e.params if k in node}


def apply_stateless(e: Entry, p: dict, x, sem, dt):
    """A stateless kernel on x with any leading axes."""
    k = e.kind
    if k in ("Affine", "Linear"):
        return K.dense(p, x)
    if k == "Scale":
        return K.scale(p, x)
    if k in ("Conv1d", "Conv2d"):
        return K.conv(p, x, e.opt("stride"), e.opt("padding"), e.opt("dilation"), e.opt("groups"))
    if k in ("SumPool2d", "AvgPool2d"):
        return K.pool(x, e.opt("kernel"), e.opt("stride"), e.opt("padding"), k == "AvgPool2d")
    if k == "Flatten":
        return K.flatten(x, e.in_shape, e.shape)
    if k == "Threshold":
        return K.threshold(p, x, sem, dt)
    if k in ("Identity", "Output"):
        return x
    raise NotImplementedError(f"no step kernel for {k}")


def init_entry(e: Entry, dtype):
    z = jnp.zeros(e.shape, dtype)
    if e.kind in ("I", "LI"):
        return z
    if e.kind in ("IF", "LIF"):
        return (z, z)
    if e.kind == "CubaLI":
        return (z, z)
    if e.kind == "CubaLIF":
        return (z, z, z)
    if e.kind == "Delay":
        return jnp.zeros((max(e.opt("steps")) + 1,) + e.shape, dtype)
    return None


def step_entry(e: Entry, p: dict, state, x, sem, dt):
    if e.kind == "Delay":
        return K.delay_step(jnp.asarray(e.opt("steps")).reshape(e.shape), state, x)
    if e.kind in _NEURONS:
        return _NEURONS[e.kind](p, state, x, sem, dt)
    return state, apply_stateless(e, p, x, sem, dt)


def _sum(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


def initial_state(schedule: Schedule, entries: tuple[str, ...], dtype) -> dict[str, Any]:
    """Zero state for the given entries: neuron/delay state, and last outputs of back-edge sources."""
    by = schedule._by_name
    back_sources = {src for n in entries for src, back in by[n].inputs if back}
    return {"state": {n: init_entry(by[n], dtype) for n in entries if by[n].stateful},
            "prev": {n: jnp.zeros(by[n].shape, dtype) for n in sorted(back_sources)}}


def _advance(schedule: Schedule, entries, params, carry, external, sem, dt):
    """One time step of `entries` (in order): returns the new carry and every entry's output."""
    by = schedule._by_name
    out: dict[str, Any] = {}
    state = dict(carry["state"])
    for n in entries:
        e = by[n]
        xs = [carry["prev"][src] if back else (out[src] if src in out else external[src]) for src, back in e.inputs]
        x = _sum(xs)
        if e.stateful:
            state[n], out[n] = step_entry(e, _p(params, e), state[n], x, sem, dt)
        else:
            out[n] = apply_stateless(e, _p(params, e), x, sem, dt)
    prev = {src: out[src] for src in carry["prev"]}
    return {"state": state, "prev": prev}, out


def run(schedule: Schedule, params, inputs: Mapping[str, Any], sem, dt, keep: frozenset[str] = frozenset()):
    """Simulate over the time axis of `inputs` (name -> [T, *shape]); returns entry name -> [T, ...]."""
    values: dict[str, Any] = dict(inputs)
    dtype = next(iter(inputs.values())).dtype
    for stage in schedule.stages:
        by = schedule._by_name
        if stage.kind == "seq":
            e = by[stage.entries[0]]
            values[e.name] = apply_stateless(e, _p(params, e), _sum(values[s] for s, _ in e.inputs), sem, dt)
            continue
        members = set(stage.entries)
        external = sorted({s for n in stage.entries for s, _ in by[n].inputs if s not in members})
        carry0 = initial_state(schedule, stage.entries, dtype)

        def body(carry, xs_t, stage=stage):
            carry, out = _advance(schedule, stage.entries, params, carry, xs_t, sem, dt)
            return carry, out

        _, ys = jax.lax.scan(body, carry0, {s: values[s] for s in external})
        values.update(ys)
    return values
