"""Additive Wiener noise on neuron state for the step solver: an explicit, seeded compile option.

`compile(..., noise={"membrane": 0.05, "current": 0.02, "nodes": {"lif1": {"membrane": 0.1}}})` adds, at
every step, after the step's leak and input and before the threshold test,

    v += sigma_v * sqrt(dt) * xi_v          (every neuron kind: I, IF, LI, LIF, CubaLI, CubaLIF)
    I += sigma_i * sqrt(dt) * xi_i          (the synaptic current of CubaLI / CubaLIF)

with xi ~ N(0, 1) independent per neuron, per step and per node (Euler-Maruyama for
`dv = f dt + sigma dW`, as Rockpool's `noise_std`: the standard deviation after one time unit). sigma is
in state units per sqrt(time unit of dt); dt is the node's step (the compile dt, or its own under
layer_dt="tau/(1+r)"). The increment is the same under method="exact" (the noise is not integrated
exactly: an LI's stationary variance is sigma^2 dt / (1 - exp(-2 dt/tau)) there, sigma^2 dt / (1 - (1 -
dt/tau)^2) under Euler; both tend to sigma^2 tau / 2). A current increment reaches the membrane from
the next step on, as an input would.

Randomness comes only from the `key` the model is called with: `model(x, key=k)` uses the step keys
`jax.random.split(k, T)`; step t draws one standard-normal vector from its key for all noisy states (in
graph order, see `draw`), so the noise does not depend on the schedule, and `model.step(state, x_t,
key=k_t)` with `k_t = split(k, T)[t]` reproduces `model(x, key=k)`. Which part of the vector a node gets
depends on which nodes are noisy: the key fixes the noise of a given compiled model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nircomp.errors import CompileError
from nircomp.ops import NEURON_KINDS

CURRENT_KINDS = frozenset({"CubaLI", "CubaLIF"})
_STATES = ("membrane", "current")


@dataclass(frozen=True)
class Noise:
    """Resolved noise: (schedule entry, its shape, sigma of the membrane, sigma of the synaptic current) per
    noisy neuron entry, in schedule order (hashable: static structure of the compiled model). No entries:
    noise switched on with every sigma zero (a key is still required; the outputs are those without noise)."""

    entries: tuple[tuple[str, tuple[int, ...], float, float], ...]

    def of(self, entry: str) -> tuple[float, float] | None:
        for name, _, sigma_v, sigma_i in self.entries:
            if name == entry:
                return sigma_v, sigma_i
        return None

    def describe(self) -> str:
        return ", ".join(f"{n}: membrane={sv:g} current={si:g}" for n, _, sv, si in self.entries) or "all sigma 0"


def _sigma(value: Any, where: str) -> float:
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise CompileError(f"noise {where}={value!r} is not a number", hint="give sigma as a float >= 0") from None
    if not math.isfinite(sigma) or sigma < 0:
        raise CompileError(f"noise {where}={value!r} must be finite and >= 0")
    return sigma


def _levels(spec: Mapping[str, Any], where: str) -> dict[str, float]:
    unknown = sorted(set(spec) - set(_STATES))
    if unknown:
        raise CompileError(f"unknown key(s) {', '.join(map(repr, unknown))} in noise {where}; expected "
                           f"'membrane' and/or 'current'")
    return {k: _sigma(v, f"{where}{k}" if where else k) for k, v in spec.items()}


def resolve_noise(spec: Mapping[str, Any], schedule) -> Noise:
    """The Noise of a `noise=` compile option for a step schedule; see the module doc for the form.

    Global "membrane"/"current" apply to every neuron node (the current to CubaLI/CubaLIF); a node named
    in "nodes" (by its NIR name, as record= takes it) overrides them for that node."""
    if not isinstance(spec, Mapping):
        raise CompileError(f"noise={spec!r} must be a dict such as {{'membrane': 0.1}}")
    nodes = spec.get("nodes", {})
    if not isinstance(nodes, Mapping):
        raise CompileError(f"noise['nodes'] must map NIR node names to {{'membrane': s, 'current': s}}, got {nodes!r}")
    glob = _levels({k: v for k, v in spec.items() if k != "nodes"}, "")
    by, names = schedule._by_name, dict(schedule.names)
    neurons = [e for e in schedule.entries if e.kind in NEURON_KINDS]
    if not neurons:
        raise CompileError("noise= was given but the graph has no neuron node (I, IF, LI, LIF, CubaLI, CubaLIF)")
    if glob.get("current") and not any(e.kind in CURRENT_KINDS for e in neurons):
        raise CompileError("noise current= was given but the graph has no CubaLI/CubaLIF node (the only kinds "
                           "with a synaptic current)", hint="use 'membrane'")
    levels = {e.name: {"membrane": glob.get("membrane", 0.0),
                       "current": glob.get("current", 0.0) if e.kind in CURRENT_KINDS else 0.0} for e in neurons}
    for node, own in nodes.items():
        if not isinstance(own, Mapping):
            raise CompileError(f"noise['nodes'][{node!r}] must be a dict such as {{'membrane': 0.1}}", nodes=[node])
        entry = names.get(node)
        if entry not in levels:
            known = ", ".join(sorted(n for n, e in names.items() if e in levels))
            what = "not a neuron node" if entry is not None else "unknown"
            raise CompileError(f"noise for node '{node}': {what}; neuron nodes: {known}", nodes=[node])
        own = _levels(own, f"['nodes'][{node!r}]")
        if own.get("current") and by[entry].kind not in CURRENT_KINDS:
            raise CompileError(f"noise current= for node '{node}' of kind {by[entry].kind}, which has no synaptic "
                               f"current", nodes=[node], hint="use 'membrane'")
        levels[entry].update(own)
    return Noise(tuple((n, tuple(by[n].shape), lv["membrane"], lv["current"]) for n, lv in levels.items()
                       if lv["membrane"] or lv["current"]))


def draw(noise: Noise, key_t, dtype) -> dict[str, dict[str, Any]]:
    """One step's standard-normal draws {entry: {"v": xi_v, "i": xi_i}} for the nonzero sigmas: one vector
    `jax.random.normal(key_t, (total,))` cut into the states in `noise.entries` order (one PRNG call per
    step keeps compile time low; the runner vmaps it over the step keys)."""
    import jax

    pieces = [(name, state, shape) for name, shape, sigma_v, sigma_i in noise.entries
              for state, sigma in (("v", sigma_v), ("i", sigma_i)) if sigma]
    flat = jax.random.normal(key_t, (sum(math.prod(shape) for _, _, shape in pieces),), dtype)
    out: dict[str, dict[str, Any]] = {}
    start = 0
    for name, state, shape in pieces:
        size = math.prod(shape)
        out.setdefault(name, {})[state] = flat[start:start + size].reshape(shape)
        start += size
    return out


def increments(noise: Noise | None, draws, entry: str) -> dict[str, tuple[float, Any]] | None:
    """What a neuron kernel takes as `noise` for one entry and step: {"v": (sigma_v, xi_v), "i": (sigma_i,
    xi_i)} from this step's `draws`, or None where the entry has no noise."""
    if noise is None or entry not in draws:
        return None
    sigma_v, sigma_i = noise.of(entry)
    return {s: (sigma, draws[entry][s]) for s, sigma in (("v", sigma_v), ("i", sigma_i)) if sigma}
