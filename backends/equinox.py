"""backend="equinox": the step schedule as an `equinox.Module` (jit/vmap/grad just work).

Weights and neuron parameters (every float parameter) are the module's array leaves, keyed by IR node
and parameter name; the schedule, semantics and dt are static. The module runs one sample
`x: [T, *input_shape]`; batch with `jax.vmap`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nircomp.backends import Capabilities, inputs_by_name, register_backend
from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.noise import Noise, draw, resolve_noise
from nircomp.ops import KINDS, STRUCTURAL_PARAMS
from nircomp.runner import _advance, initial_state, run
from nircomp.schedule import Schedule, build_schedule
from nircomp.semantics import Semantics


class StepModel(eqx.Module):
    """A compiled step-solver model. Call with `x` ([T, *shape], or {input name: array}).

    `model(x)` -> y ([T, *shape], or a dict for several Outputs);
    `model(x, record=["lif1"])` -> (y, {name: [T, *shape]}) for any node by its NIR name;
    `model.init_state()` / `model.step(state, x_t)` advance one step at a time (online use).
    Compiled with `noise=` (nircomp.noise), every call takes a PRNG `key=`: `model(x, key=k)` steps with
    the keys `jax.random.split(k, T)`, `model.step(state, x_t, key=k_t)` with `k_t`.
    """

    params: dict[str, dict[str, jax.Array]]
    schedule: Schedule = eqx.field(static=True)
    semantics: Semantics = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    noise: Noise | None = eqx.field(static=True, default=None)

    # ------------------------------------------------------------------ whole sequences
    def __call__(self, x, record: Sequence[str] | None = None, key=None):
        inputs = self._inputs(x, time_axis=True)
        keep = frozenset(self._entry_of(name) for name in record or ())
        keys = None
        if self._check_key(key):
            keys = jax.random.split(key, next(iter(inputs.values())).shape[0])
        values = run(self.schedule, self.params, inputs, self.semantics, self.dt, keep, self.noise, keys)
        y = self._outputs(values)
        if record is None:
            return y
        return y, {name: values[self._entry_of(name)] for name in record}

    # ------------------------------------------------------------------ one step at a time
    def init_state(self, dtype=None) -> dict[str, Any]:
        entries = self._step_entries()
        return initial_state(self.schedule, entries, dtype or jnp.result_type(float), self.params, self.semantics)

    def step(self, state: Mapping[str, Any], x_t, key=None):
        """Advance every node by one step: (state, x_t [*shape] or dict) -> (state, y_t)."""
        inputs = self._inputs(x_t, time_axis=False)
        draws = None
        if self._check_key(key):
            dtype = jnp.result_type(*jax.tree_util.tree_leaves(state["state"]))
            draws = draw(self.noise, key, dtype)
        state, out = _advance(self.schedule, self._step_entries(), self.params, state, inputs, self.semantics,
                              self.dt, self.noise, draws)
        return state, self._outputs({**inputs, **out})

    # ------------------------------------------------------------------ helpers
    def _check_key(self, key) -> bool:
        """Whether this call draws noise: a key is required with noise, and refused without."""
        if self.noise is None and key is not None:
            raise CompileError("key= was given, but the model was compiled without noise",
                               hint="compile with noise={'membrane': sigma} for a noisy model")
        if self.noise is not None and key is None:
            raise CompileError("the model was compiled with noise, so it needs a PRNG key: model(x, key=k)",
                               hint="e.g. key=jax.random.PRNGKey(0); batch with jax.vmap over "
                                    "jax.random.split(k, B)")
        return key is not None

    def _step_entries(self) -> tuple[str, ...]:
        return tuple(n for stage in self.schedule.stages for n in stage.entries)

    def _inputs(self, x, time_axis: bool) -> dict[str, jax.Array]:
        data = {n: jnp.asarray(v) for n, v in inputs_by_name(x, self.schedule.inputs).items()}
        for n, arr in data.items():
            want = self.schedule.entry(n).shape
            got = tuple(arr.shape[1:] if time_axis else arr.shape)
            if got != tuple(want):
                lead = "[T, " if time_axis else "["
                raise CompileError(f"input '{n}' has shape {list(arr.shape)}, expected {lead}"
                                   f"{', '.join(map(str, want))}]" + (" (batch with jax.vmap)" if time_axis and
                                                                        got[1:] == tuple(want) else ""))
            if not jnp.issubdtype(arr.dtype, jnp.floating):
                data[n] = arr.astype(jnp.result_type(float))
        return data

    def _outputs(self, values):
        outs = {n: values[n] for n in self.schedule.outputs}
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def _entry_of(self, name: str) -> str:
        names = dict(self.schedule.names)
        if name in names:
            return names[name]
        lost = dict(self.schedule.lost)
        if name in lost:
            raise CompileError(f"cannot record node '{name}': {lost[name]}",
                               hint="compile with a pipeline without canonicalize to record it")
        raise CompileError(f"cannot record unknown node '{name}'; known: {', '.join(sorted(names))}")


STEP_KINDS = frozenset(k for k in KINDS)


class EquinoxBackend:
    """Lowers a graph for the step solver to a StepModel."""

    name = "equinox"
    capabilities = Capabilities(solvers=frozenset({"step", "analytical", "hardware"}), kinds=STEP_KINDS, noise=True)

    def lower(self, graph: Graph, options: Mapping[str, Any]) -> StepModel:
        if options["solver"] == "analytical":  # event-driven: nircomp.backends.event
            from nircomp.backends.event import lower_event

            return lower_event(graph, options)
        if options["solver"] == "hardware":  # executor forward, EventProp backward: nircomp.backends.hardware
            from nircomp.backends.hardware import lower_hardware

            return lower_hardware(graph, options)
        dt = float(options["dt"])
        schedule = build_schedule(graph, dt, options.get("schedule", "scc"))
        dtype = options.get("dtype") or jnp.result_type(float)
        params = {}
        for name, op in graph.ops():
            floats = {k: jnp.asarray(np.asarray(v), dtype=dtype) for k, v in op.params.items()
                      if k not in STRUCTURAL_PARAMS and not isinstance(v, str)}
            if floats:
                params[name] = floats
        noise = options.get("noise")
        return StepModel(params, schedule, options["semantics"], dt,
                         None if noise is None else resolve_noise(noise, schedule))


register_backend(EquinoxBackend())
