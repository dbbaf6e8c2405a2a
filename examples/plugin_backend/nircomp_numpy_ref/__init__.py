"""An example nircomp backend plug-in: `numpy-ref`, a NumPy reference interpreter of the step schedule.

nircomp finds this module through the entry-point group `nircomp.backends` (pyproject.toml) and imports
it; the `register_backend` call at the bottom adds the backend to the registry. The backend reuses
nircomp's step schedule (fused nodes split again, back edges marked) and runs it one time step after
another with the NumPy kernels of `kernels.py`, for the default "nir" convention only: `lower` refuses
any other step-solver option with a CompileError, before anything runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from nircomp.backends import Capabilities, register_backend
from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.ops import KINDS
from nircomp.schedule import Entry, Schedule, build_schedule
from nircomp.semantics import resolve_semantics
from nircomp_numpy_ref import kernels as K

GRADIENT_ONLY = ("surrogate", "slope")  # change only gradients, which an interpreter does not compute


def _stateless(e: Entry, p: dict, x):
    k = e.kind
    if k in ("Affine", "Linear"):
        return K.dense(p, x)
    if k == "Scale":
        return x * p["scale"]
    if k in ("Conv1d", "Conv2d"):
        return K.conv(p, x, e.opt("stride"), e.opt("padding"), e.opt("dilation"), e.opt("groups"))
    if k in ("SumPool2d", "AvgPool2d"):
        return K.pool(x, e.opt("kernel"), e.opt("stride"), e.opt("padding"), k == "AvgPool2d")
    if k == "Flatten":
        return x.reshape(e.shape)
    if k == "Threshold":
        return K.threshold(p, x)
    return x  # Identity, Output


class NumpyModel:
    """`model(x)`: x [T, *input_shape] (or {input name: array}) -> y [T, *output_shape] (a dict for several
    Outputs), as NumPy arrays of `dtype`."""

    def __init__(self, schedule: Schedule, params: dict[str, dict[str, np.ndarray]], dt: float, dtype):
        self.schedule, self.params, self.dt, self.dtype = schedule, params, dt, dtype
        self.entries = [schedule.entry(n) for stage in schedule.stages for n in stage.entries]

    def _p(self, e: Entry) -> dict[str, np.ndarray]:
        node = self.params[e.node]
        return {k: node[k] for k in e.params}

    def _before_start(self, e: Entry) -> np.ndarray:
        """What a back-edge source outputs before the first step: zero from a neuron, Delay or Threshold
        (no spike yet), a stateless op applied to zero otherwise (the bias of an Affine)."""
        zeros = np.zeros(e.shape, self.dtype)
        if e.stateful or e.kind == "Threshold":
            return zeros
        return np.broadcast_to(_stateless(e, self._p(e), np.zeros(e.in_shape, self.dtype)), e.shape).astype(self.dtype)

    def __call__(self, x):
        names = self.schedule.inputs
        xs = dict(x) if isinstance(x, Mapping) else {names[0]: x} if len(names) == 1 else None
        if xs is None or set(xs) != set(names):
            raise CompileError(f"pass the inputs {', '.join(names)} (a dict when there are several)")
        xs = {n: np.asarray(xs[n], self.dtype) for n in names}
        T = next(iter(xs.values())).shape[0]
        state = {e.name: K.init_state(e.kind, e.shape, self.dtype, max(e.opt("steps")) if e.kind == "Delay" else 0)
                 for e in self.entries if e.stateful}
        prev = {s: self._before_start(self.schedule.entry(s)) for e in self.entries for s, back in e.inputs if back}
        ys = {n: np.zeros((T, *self.schedule.entry(n).shape), self.dtype) for n in self.schedule.outputs}
        for t in range(T):
            values = {n: a[t] for n, a in xs.items()}
            for e in self.entries:
                terms = [prev[s] if back else values[s] for s, back in e.inputs]
                u = terms[0]
                for term in terms[1:]:  # summed in the schedule's input order
                    u = u + term
                if e.kind == "Delay":
                    state[e.name], values[e.name] = K.delay(np.reshape(e.opt("steps"), e.shape), state[e.name], u)
                elif e.kind in K.NEURONS:
                    state[e.name], values[e.name] = K.NEURONS[e.kind](self._p(e), state[e.name], u, self.dt)
                else:
                    values[e.name] = _stateless(e, self._p(e), u)
            prev = {s: values[s] for s in prev}
            for n, y in ys.items():
                y[t] = values[n]
        return next(iter(ys.values())) if len(ys) == 1 else ys


class NumpyRefBackend:
    """Lowers a step-solver graph to a NumpyModel (float32 unless compile's dtype says otherwise). The
    `schedule` option is ignored: the interpreter advances every entry one step at a time ("per-step")."""

    name = "numpy-ref"
    capabilities = Capabilities(solvers=frozenset({"step"}), kinds=frozenset(KINDS))

    def lower(self, graph: Graph, options: Mapping[str, Any]) -> NumpyModel:
        sem, reference = options["semantics"], resolve_semantics("nir")
        unsupported = [f"{f.name}={getattr(sem, f.name)!r}" for f in dataclasses.fields(sem)
                       if f.name not in GRADIENT_ONLY and getattr(sem, f.name) != getattr(reference, f.name)]
        if unsupported:
            raise CompileError(f'backend "numpy-ref" implements only the default "nir" convention (forward '
                               f"Euler); unsupported step-solver option(s): {', '.join(unsupported)}",
                               hint='use backend="equinox" for other conventions and options')
        dtype = np.dtype(options.get("dtype") or np.float32)
        if dtype.kind != "f":
            raise CompileError(f'backend "numpy-ref" computes in a float dtype, not {dtype}')
        dt = float(options["dt"])
        schedule = build_schedule(graph, dt, "per-step")
        params: dict[str, dict[str, np.ndarray]] = {}
        for e in schedule.entries:  # the value parameters each kernel reads (a fused node feeds two entries)
            values = graph.op(e.node).params
            params.setdefault(e.node, {}).update({k: np.asarray(values[k], dtype) for k in e.params})
        return NumpyModel(schedule, params, dt, dtype)


register_backend(NumpyRefBackend())
