"""solver="hardware" of the equinox backend: the analytical solver's model with the forward pass run by an
executor (nircomp.hardware; default: the Emulator configured by the graph's `emulator` attrs) and the
weights put on the quantize-weights grid at every run.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nircomp.backends.event import EventModel, lower_event
from nircomp.errors import CompileError, CompileWarning
from nircomp.hardware import Emulator, HardwareRun, first_spikes, quantize, run_hardware
from nircomp.ir import Graph


class HardwareModel(EventModel):
    """A compiled hardware-solver model; called as the analytical model: `model(ev)` -> Events (with
    .overflow), `model(ev, record=[...])` -> (out, {name: Events}), plus `key=` (a PRNG key: the executor's
    randomness, e.g. the emulator's jitter, which requires it).

    Weights: a node that went through quantize-weights runs on its grid, round(W/scale)*scale clipped to
    ±levels, at every call (trained weights stay on the grid the pass fixed); gradients pass straight
    through the rounding. A weight beyond the range saturates, and the call warns (CompileWarning, also
    under jit) how many did; `model.saturation()` counts them for the current weights.
    """

    executor: Any = eqx.field(static=True, default=None)
    grid: tuple[tuple[str, float, int], ...] = eqx.field(static=True, default=())  # (node, scale, levels)

    def __call__(self, ev, record: Sequence[str] | None = None, key=None):
        return self._respond(ev, record, self._key(key))

    def execute(self, ev, key=None, sample_times=None) -> HardwareRun | Mapping[str, Any]:
        """The executor's own answer for one sample, membrane samples at `sample_times` included (eager, no
        gradient; spikes as the executor returned them, before the budget is applied)."""
        t_in, ch_in = self._events_in(ev)
        order = jnp.argsort(t_in)
        args = (*self.matrices(t_in.dtype), t_in[order], ch_in[order], self._key(key), sample_times)
        if not getattr(self.executor, "traceable", False):
            args = tuple(None if a is None else np.asarray(a) for a in args)
        return self.executor(self.net, *args)

    def saturation(self) -> dict[str, int]:
        """Per quantised node: how many of its current weights lie beyond the grid's range (they saturate)."""
        return {node: int(quantize(np.asarray(self.params[node]["weight"], float), scale, levels)[1])
                for node, scale, levels in self.grid}

    def _key(self, key):
        if key is None:
            if getattr(self.executor, "jitter", 0) > 0:
                raise CompileError("the emulator has spike-time jitter, so the model needs a PRNG key: "
                                   "model(ev, key=k)", hint="e.g. key=jax.random.PRNGKey(0), a new one per run")
            return jnp.zeros(2, jnp.uint32)
        key = jnp.asarray(key)
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        return key.astype(jnp.uint32)

    @eqx.filter_jit
    def _simulate(self, t_in, ch_in, key):
        """Sort the inputs, run the executor and the replay, split the spikes by population."""
        order = jnp.argsort(t_in)
        t_in, ch_in = t_in[order], jnp.clip(ch_in[order], 0, max(self._n_channels() - 1, 0))
        w_in, w_rec = self.matrices(t_in.dtype)
        (ev_t, ev_kind, ev_idx), overflow = run_hardware(self.net, self.executor, w_in, w_rec, t_in, ch_in, key)
        return t_in, ch_in, {p.name: (*first_spikes(p, ev_t, ev_kind, ev_idx, p.budget), overflow[p.name])
                             for p in self.net.pops}

    def _weight(self, node: str, dtype) -> jax.Array:
        w = super()._weight(node, dtype)
        for name, scale, levels in self.grid:
            if name == node:
                q, clipped = quantize(w, scale, levels, jnp)
                jax.debug.callback(_warn_saturated, node, clipped, levels)
                return w + jax.lax.stop_gradient(q - w)
        return w


def _warn_saturated(node: str, clipped, levels: int) -> None:
    count = int(np.max(np.asarray(clipped)))
    if count:
        warnings.warn(f"hardware: {count} weight(s) of '{node}' lie beyond the {levels} levels of its grid and "
                      f"saturate", CompileWarning, stacklevel=2)


def lower_hardware(graph: Graph, options: Mapping[str, Any]) -> HardwareModel:
    """The HardwareModel of a graph that passed the hardware pipeline."""
    base = lower_event(graph, options)
    noise = dict(graph.attrs.get("emulator") or {})
    executor = options.get("executor")
    if executor is None:
        executor = Emulator(**noise)
        executor.check(base.net)
    elif any(noise.get(k, 0) for k in ("threshold_std", "tau_std", "jitter")):
        warnings.warn("the graph's emulator-noise attrs configure the default Emulator only; the executor given "
                      "to compile runs as it is", CompileWarning, stacklevel=3)
    if not callable(executor):
        raise CompileError(f"executor must be callable (nircomp.hardware.Executor), got {type(executor).__name__}")
    grid = tuple((name, float(q["scale"]), int(q["levels"])) for name, op in graph.ops()
                 if (q := op.attrs.get("quantized")) and name in base.params)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(EventModel)}
    return HardwareModel(**fields, executor=executor, grid=grid)
