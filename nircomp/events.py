"""Spike events: the data type of the event-driven (analytical) solver, and its converters.

`Events(times, index)` holds N events of one population: `times` [N] (float, padded with +inf; in the
unit of the time constants) and `index` [N] (int, the neuron's flat index; -1 for padding). Events
returned by a model also carry `overflow`: {population: bool}, True where that population fired more
spikes than its budget (`n_spikes`) allows. Events is a pytree (an equinox.Module): batch with a
leading axis and `jax.vmap`.

Converters (host side, numpy):
- `from_nir` / `to_nir`: `nir.EventData` (idx -1 / time inf for padding, a leading sample axis).
- `from_grid` / `to_grid`: time-gridded spikes [T, n] (counts per step). Rounding rule (NIR's own, as
  `nir.EventData.to_time_gridded`): step k holds the events with k*dt <= t < (k+1)*dt, i.e.
  k = floor(t/dt) with times within 1e-9 steps below a boundary counted in the next step (so k*dt maps to
  step k despite rounding); a spike at step k becomes an event at time k*dt (one event per count).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nircomp.errors import CompileError

_EPS_STEPS = 1e-9


@jax.tree_util.register_pytree_node_class
class Events:
    """Spike events: `times` [N] (+inf = no event), `index` [N] (neuron index, -1 for padding) and
    `overflow` ({population: bool array}; empty for input events). Events are in time order when a model
    returns them; inputs may come in any order. Host data (numpy, lists) is kept as numpy, so float64 times
    stay float64 until a model computes with them. A pytree (leaves: times, index, the overflow flags), so
    jax.vmap/jit/grad see through it; plain jax, no equinox, so running an AOT artifact imports no equinox."""

    def __init__(self, times, index, overflow=None):
        self.times = times if isinstance(times, jax.Array) else np.asarray(times)
        self.index = index if isinstance(index, jax.Array) else np.asarray(index)
        self.overflow = dict(overflow or {})

    def tree_flatten(self):
        keys = tuple(sorted(self.overflow))
        return (self.times, self.index, tuple(self.overflow[k] for k in keys)), keys

    @classmethod
    def tree_unflatten(cls, keys, leaves):
        new = object.__new__(cls)  # leaves may be tracers or placeholders: no conversion
        new.times, new.index, new.overflow = leaves[0], leaves[1], dict(zip(keys, leaves[2]))
        return new

    def __repr__(self) -> str:
        def shape(x):
            return f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}"
        flags = ", ".join(f"{k}: {shape(v)}" for k, v in self.overflow.items())
        return f"Events(times={shape(self.times)}, index={shape(self.index)}, overflow={{{flags}}})"

    @property
    def any_overflow(self):
        """True when any population overflowed its spike budget in the run that produced these events."""
        flags = [jnp.asarray(v) for v in self.overflow.values()]
        return jnp.any(jnp.stack(flags), axis=0) if flags else jnp.asarray(False)

    def count(self):
        """Number of real (finite-time) events, per sample."""
        return jnp.sum(jnp.isfinite(self.times), axis=-1)

    # ------------------------------------------------------------------ NIR EventData
    @classmethod
    def from_nir(cls, data) -> Events:
        """Events from a `nir.EventData` ([n_samples, n_events] idx/time): a batch of `n_samples`."""
        idx, time = np.asarray(data.idx), np.asarray(data.time, dtype=float)
        time = np.where(idx < 0, np.inf, time)
        return cls(time, np.where(np.isfinite(time), idx, -1))

    def to_nir(self, n_neurons: int, t_max: float):
        """A `nir.EventData` (a sample axis is added to unbatched events)."""
        import nir

        t, i = np.asarray(self.times, dtype=float), np.asarray(self.index)
        if t.ndim == 1:
            t, i = t[None], i[None]
        i = np.where(np.isfinite(t), i, -1).astype(int)
        return nir.EventData(i, t, int(n_neurons), float(t_max))

    # ------------------------------------------------------------------ time grid
    @classmethod
    def from_grid(cls, spikes, dt: float) -> Events:
        """Events from gridded spikes [T, n] (or [B, T, n]; entries are counts): step k -> time k*dt."""
        arr = np.asarray(spikes)
        if arr.ndim == 3:
            per = [cls.from_grid(a, dt) for a in arr]
            width = max(len(e.times) for e in per)
            pad = [(np.pad(np.asarray(e.times), (0, width - len(e.times)), constant_values=np.inf),
                    np.pad(np.asarray(e.index), (0, width - len(e.index)), constant_values=-1)) for e in per]
            return cls(np.stack([p[0] for p in pad]), np.stack([p[1] for p in pad]))
        if arr.ndim != 2:
            raise CompileError(f"gridded spikes must be [T, n] or [B, T, n], got shape {list(arr.shape)}")
        counts = np.rint(arr).astype(int)
        if np.any(counts < 0) or not np.allclose(arr, counts):
            raise CompileError("gridded spikes must hold non-negative integer counts per step")
        step, neuron = np.nonzero(counts)
        reps = counts[step, neuron]
        return cls(np.repeat(step * float(dt), reps), np.repeat(neuron, reps))

    def to_grid(self, n_neurons: int, steps: int, dt: float) -> np.ndarray:
        """Spike counts [steps, n] (or [B, steps, n]); an event at or beyond steps*dt is an error."""
        t, i = np.asarray(self.times, dtype=float), np.asarray(self.index)
        if t.ndim == 2:
            return np.stack([Events(a, b).to_grid(n_neurons, steps, dt) for a, b in zip(t, i)])
        real = np.isfinite(t)
        k = np.floor(t[real] / dt + _EPS_STEPS).astype(int)
        if np.any(k >= steps) or np.any(k < 0):
            raise CompileError(f"an event at t={t[real][(k >= steps) | (k < 0)][0]:g} lies outside the grid "
                               f"[0, {steps}*{dt:g})", hint="pass more steps")
        if np.any((i[real] < 0) | (i[real] >= n_neurons)):
            raise CompileError(f"an event index lies outside 0..{n_neurons - 1}")
        grid = np.zeros((steps, n_neurons))
        np.add.at(grid, (k, i[real]), 1)
        return grid



EVENT_OPTIONS = ("t_max", "n_spikes", "executor")  # executor: solver="hardware" only
EVENT_CONVENTIONS = ("nir", "jaxsnn")


def analytical_options(chosen: str, asked: str, convention: str, sem_options: dict, event_options: dict,
                       noise: Any = None) -> dict[str, Any]:
    """The event-driven solvers' resolved options (t_max, n_spikes, convention, and the hardware solver's
    executor; no step-solver semantics), or a CompileError when an option is given to the wrong solver or
    t_max is missing. `asked` is the solver the user asked for."""
    if chosen == "analytical" and "executor" in event_options:
        raise CompileError("executor= applies to solver='hardware', but the solver is 'analytical'",
                           hint="pass solver='hardware' (or drop the option)")
    if chosen not in ("analytical", "hardware"):
        wrong = [k for k in event_options] + (["convention='jaxsnn'"] if convention == "jaxsnn" else [])
        if wrong:
            raise CompileError(f"{', '.join(wrong)} appl{'y' if len(wrong) > 1 else 'ies'} to solver='analytical', "
                               f"but the solver is {chosen!r}", hint="pass solver='analytical' (or drop the option)")
        return {}
    how = "solver='auto' chose the analytical solver" if asked == "auto" else f"solver={chosen!r}"
    if convention not in EVENT_CONVENTIONS:
        raise CompileError(f"{how}, which takes convention 'nir' or 'jaxsnn', not {convention!r}",
                           hint="pass solver='step' for the step-solver conventions")
    if sem_options or noise is not None:
        given = [*sem_options, *(["noise"] if noise is not None else [])]
        raise CompileError(f"{how}; option(s) {', '.join(given)} belong to the step solver",
                           hint="pass solver='step' to use them")
    if event_options.get("t_max") is None:
        raise CompileError(f"{how}, which needs t_max= (the end of the simulated window, in the unit of the "
                           f"time constants)", hint="pass t_max=..., or solver='step' for the step solver")
    t_max = float(event_options["t_max"])
    if not t_max > 0 or not np.isfinite(t_max):
        raise CompileError(f"t_max must be positive and finite, got {event_options['t_max']!r}")
    n_spikes = event_options.get("n_spikes") or {}
    if not isinstance(n_spikes, dict):
        raise CompileError(f"n_spikes must be a dict {{population: budget}}, got {type(n_spikes).__name__}")
    extra = {"executor": event_options.get("executor")} if chosen == "hardware" else {}
    return {"t_max": t_max, "n_spikes": dict(n_spikes), "convention": convention, "semantics": None, **extra}
