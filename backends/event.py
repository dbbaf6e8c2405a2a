"""The analytical solver of the equinox backend: a graph of CubaLIF/LIF populations as an EventModel.

`lower_event(graph, options)` reads the graph after the analytical pipeline (homogeneous populations,
zero bias, only Input/Output/Linear/Affine/LIF/CubaLIF and their fused Dense forms) into the static
`nircomp.kernels.event.Net` and the weight paths between populations; the model's leaves are the
weights (keyed by node, as the step model's), so `jax.grad` and `Program.ir_with_params` work alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from nircomp.backends import inputs_by_name
from nircomp.errors import CompileError
from nircomp.events import Events
from nircomp.ir import Graph
from nircomp.kernels.event import simulate


@dataclass(frozen=True)
class Pop:
    """One homogeneous population: neurons lo..hi-1 of the flat vector; `budget` spikes at most."""

    name: str
    kind: str  # "LIF" or "CubaLIF"
    lo: int
    hi: int
    tau_syn: float
    tau_mem: float
    r: float
    v_leak: float
    v_th: float
    v_reset: float
    budget: int

    @property
    def method(self) -> str:
        """How its spike times are found: "lif" and "quadratic" (τm = 2τs) in closed form, "equal" (τm = τs)
        and "general" by bracketed Newton."""
        if self.kind == "LIF":
            return "lif"
        if math.isclose(self.tau_mem, 2 * self.tau_syn, rel_tol=1e-12):
            return "quadratic"
        if math.isclose(self.tau_mem, self.tau_syn, rel_tol=1e-12):
            return "equal"
        return "general"


@dataclass(frozen=True)
class Net:
    """The static structure: populations (in flat order), the number of neurons and the window [0, t_max)."""

    pops: tuple[Pop, ...]
    n: int
    t_max: float

    def consts(self) -> dict[str, np.ndarray]:
        """Per-neuron constants of the closed-form propagation."""
        out = {k: np.zeros(self.n) for k in ("ts", "tm", "r", "v_leak", "v_th", "v_reset", "cuba", "coef", "eq")}
        for p in self.pops:
            s = slice(p.lo, p.hi)
            cuba = p.kind == "CubaLIF"
            out["ts"][s], out["tm"][s], out["r"][s] = (p.tau_syn if cuba else 1.0), p.tau_mem, p.r
            out["v_leak"][s], out["v_th"][s], out["v_reset"][s], out["cuba"][s] = p.v_leak, p.v_th, p.v_reset, cuba
            if cuba and p.method == "equal":
                out["eq"][s] = p.r / p.tau_mem
            elif cuba:
                out["coef"][s] = p.r * p.tau_syn / (p.tau_syn - p.tau_mem)
        return out


SPIKING = {"LIF": "LIF", "CubaLIF": "CubaLIF", "DenseLIF": "LIF", "DenseCubaLIF": "CubaLIF"}
WEIGHTED = ("Linear", "Affine", "DenseLIF", "DenseCubaLIF")
HINT = "use solver='step', which runs every NIR graph"


class EventModel(eqx.Module):
    """A compiled analytical-solver model: events in, events out.

    `model(ev)`: ev is an `Events` (times [N], +inf padded, in the unit of the time constants; index [N],
    the flat neuron index of the Input) or {input name: Events}; returns the Output's Events (a dict for
    several Outputs), each of capacity `n_spikes` of the population feeding it, padded with +inf / -1.
    `model(ev, record=["lif1"])` -> (out, {name: Events}). Batch with `jax.vmap`.

    Overflow: every returned Events carries `overflow` = {population: bool}. A population that would fire
    more than its budget `n_spikes` before t_max sets its flag; its Events then hold its first `n_spikes`
    spikes, and the spikes of every population it feeds (directly or not) may be incomplete. Nothing is
    dropped without its flag set. Input events at t >= t_max are ignored (the window is [0, t_max)).
    """

    params: dict[str, dict[str, jax.Array]]
    net: Net = eqx.field(static=True)
    inputs: tuple[tuple[str, int, int], ...] = eqx.field(static=True)  # (name, first channel, size)
    links: tuple[tuple[str, str, tuple[str, ...]], ...] = eqx.field(static=True)  # (pop, source, weight path)
    outputs: tuple[tuple[str, str], ...] = eqx.field(static=True)  # (output, source)
    names: tuple[tuple[str, str], ...] = eqx.field(static=True)  # recordable name -> population or input
    scale: tuple[float, ...] = eqx.field(static=True)  # per neuron: the jump of a unit-weight spike
    transpose: bool = eqx.field(static=True, default=False)  # convention="jaxsnn": weights read as [pre, post]

    def __call__(self, ev, record: Sequence[str] | None = None):
        return self._respond(ev, record)

    def _respond(self, ev, record, *run_args):
        """The call's body; `run_args` go to `_simulate` (the hardware model's key)."""
        t_in, ch_in = self._events_in(ev)
        t_in, ch_in, spikes = self._simulate(t_in, ch_in, *run_args)
        overflow = {name: flag for name, (_, _, flag) in spikes.items()}
        per_input = {name: (t_in, ch_in, first, size) for name, first, size in self.inputs}

        def events(source: str) -> Events:
            if source in spikes:
                t, i, _ = spikes[source]
                return Events(t, i, overflow)
            t, c, first, size = per_input[source]
            mine = (c >= first) & (c < first + size) & (t < self.net.t_max)
            return Events(jnp.where(mine, t, jnp.inf), jnp.where(mine, c - first, -1), overflow)

        outs = {name: events(src) for name, src in self.outputs}
        y = next(iter(outs.values())) if len(outs) == 1 else outs
        if record is None:
            return y
        names = dict(self.names)
        unknown = [n for n in record if n not in names]
        if unknown:
            raise CompileError(f"cannot record {', '.join(map(repr, unknown))}: the analytical solver records "
                               f"spiking populations and inputs ({', '.join(sorted(names))})")
        return y, {n: events(names[n]) for n in record}

    def _events_in(self, ev) -> tuple[jax.Array, jax.Array]:
        """The input events as one list (times, flat channels), checked where the values are known."""
        data = inputs_by_name(ev, [n for n, _, _ in self.inputs])
        times, chans = [], []
        for name, first, size in self.inputs:
            e = data[name]
            if not isinstance(e, Events):
                raise CompileError(f"input '{name}' must be nircomp.Events for the analytical solver, got "
                                   f"{type(e).__name__}", hint="convert with Events.from_grid or Events.from_nir")
            if jnp.ndim(e.times) != 1 or jnp.shape(e.index) != jnp.shape(e.times):
                raise CompileError(f"input '{name}': times and index must both be [N], got "
                                   f"{list(jnp.shape(e.times))} and {list(jnp.shape(e.index))}",
                                   hint="batch with jax.vmap")
            _check_values(name, e, size)
            times.append(jnp.asarray(e.times))
            chans.append(jnp.asarray(e.index, jnp.int32) + first)
        dtype = jnp.result_type(float)
        t_in = jnp.concatenate(times).astype(dtype) if times else jnp.zeros(0, dtype)
        ch_in = jnp.concatenate(chans) if chans else jnp.zeros(0, jnp.int32)
        if t_in.shape[0] == 0:  # no input events: one padding event keeps the shapes non-empty
            t_in, ch_in = jnp.full(1, jnp.inf, dtype), jnp.zeros(1, jnp.int32)
        return t_in, ch_in

    @eqx.filter_jit
    def _simulate(self, t_in, ch_in):
        """Sort the inputs, run the event loop, split its spikes by population (jit: one trace per shape)."""
        order = jnp.argsort(t_in)
        t_in, ch_in = t_in[order], jnp.clip(ch_in[order], 0, max(self._n_channels() - 1, 0))
        w_in, w_rec = self.matrices(t_in.dtype)
        ev_t, ev_kind, ev_idx = simulate(self.net, w_in, w_rec, t_in, ch_in)
        return t_in, ch_in, {p.name: self._population(p, ev_t, ev_kind, ev_idx) for p in self.net.pops}

    def matrices(self, dtype) -> tuple[jax.Array, jax.Array]:
        """The jump matrices (W_in [n, m], W_rec [n, n]) from the weight leaves."""
        pops = {p.name: p for p in self.net.pops}
        chans = {name: (first, size) for name, first, size in self.inputs}
        w_in = jnp.zeros((self.net.n, self._n_channels()), dtype)
        w_rec = jnp.zeros((self.net.n, self.net.n), dtype)
        for pop, source, path in self.links:
            mat = None
            for node in path:
                w = self._weight(node, dtype)
                w = w.T if self.transpose else w
                mat = w if mat is None else w @ mat
            dst = pops[pop]
            lo, size = chans[source] if source in chans else (pops[source].lo, pops[source].hi - pops[source].lo)
            mat = jnp.eye(size, dtype=dtype) if mat is None else mat
            if source in chans:
                w_in = w_in.at[dst.lo:dst.hi, lo:lo + size].add(mat)
            else:
                w_rec = w_rec.at[dst.lo:dst.hi, lo:lo + size].add(mat)
        scale = jnp.asarray(self.scale, dtype)[:, None]
        return w_in * scale, w_rec * scale

    def _weight(self, node: str, dtype) -> jax.Array:
        """The weight of a node as the run uses it (the hardware model quantises it here)."""
        return jnp.asarray(self.params[node]["weight"], dtype)

    def _n_channels(self) -> int:
        return sum(size for _, _, size in self.inputs)

    @staticmethod
    def _population(p: Pop, ev_t, ev_kind, ev_idx):
        mine = (ev_kind >= 2) & (ev_idx >= p.lo) & (ev_idx < p.hi)
        pos = jnp.cumsum(mine) - 1
        slot = jnp.where(mine & (pos < p.budget), pos, p.budget)
        t = jnp.full(p.budget, jnp.inf, ev_t.dtype).at[slot].set(ev_t, mode="drop")
        i = jnp.full(p.budget, -1, jnp.int32).at[slot].set(ev_idx - p.lo, mode="drop")
        return t, i, jnp.sum(mine) > p.budget


def _check_values(name: str, ev: Events, size: int) -> None:
    """An input index outside the Input, or a time < 0 or NaN, is an error when the values are known (under
    jit/vmap they are not: the docstring's contract applies)."""
    if not isinstance(ev.index, jax.core.Tracer):
        arr = np.asarray(ev.index)
        real = np.isfinite(np.asarray(ev.times)) if not isinstance(ev.times, jax.core.Tracer) else True
        bad = arr[((arr < 0) | (arr >= size)) & real]
        if bad.size:
            raise CompileError(f"input '{name}' has event index {int(bad[0])} outside 0..{size - 1}")
    if not isinstance(ev.times, jax.core.Tracer):
        t = np.asarray(ev.times)
        if np.any(np.isnan(t)) or np.any(t < 0):
            raise CompileError(f"input '{name}' has event times that are negative or NaN; times are >= 0, "
                               f"+inf for padding")


def _scalar(op, key: str, default: float | None = None) -> float:
    value = op.params.get(key)
    if value is None:
        return float(default)
    return float(np.asarray(value).reshape(-1)[0])


def lower_event(graph: Graph, options: Mapping[str, Any]) -> EventModel:
    """The EventModel of a graph that passed the analytical pipeline."""
    t_max = float(options["t_max"])
    budgets = dict(options.get("n_spikes") or {})
    convention = options.get("convention", "nir")
    if convention == "jaxsnn":
        _check_jaxsnn(graph)
    spiking = [n for n in graph.order() if graph.op(n).kind in SPIKING]
    aliases = {alias: n for n in spiking for alias in (n, *graph.op(n).origin[-1:])}
    budget_of = {}
    for key, value in budgets.items():
        if key not in aliases:
            raise CompileError(f"n_spikes names {key!r}, which is not a spiking population "
                               f"(populations: {', '.join(spiking) or 'none'})")
        if int(value) < 1 or int(value) != value:
            raise CompileError(f"n_spikes[{key!r}] must be a positive integer, got {value!r}")
        budget_of[aliases[key]] = int(value)
    pops, scale, lo = [], [], 0
    for name in spiking:
        op = graph.op(name)
        kind = SPIKING[op.kind]
        size = int(np.prod(op.output_shape))
        unit = 1e-3 if convention == "jaxsnn" else 1.0  # jaxsnn reads NIR's τ in ms, times in s
        tau_mem = _scalar(op, "tau" if kind == "LIF" else "tau_mem") * unit
        tau_syn = _scalar(op, "tau_syn", 1.0) * unit if kind == "CubaLIF" else 1.0
        v_th, v_reset = _scalar(op, "v_threshold"), _scalar(op, "v_reset", 0.0)
        if not v_reset < v_th:
            raise CompileError(f"{op.kind} has v_reset={v_reset:g} >= v_threshold={v_th:g}: it would fire without "
                               f"end at one instant", nodes=[name], hint=HINT)
        default = size * max(1, math.ceil(2 * t_max / tau_mem))
        r, v_leak = (1.0, 0.0) if convention == "jaxsnn" else (_scalar(op, "r"), _scalar(op, "v_leak"))
        pop = Pop(name, kind, lo, lo + size, tau_syn, tau_mem, r, v_leak, v_th, v_reset, budget_of.get(name, default))
        if convention == "jaxsnn":
            jump = 1.0
        else:
            jump = _scalar(op, "w_in", 1.0) / tau_syn if kind == "CubaLIF" else pop.r / tau_mem
        pops.append(pop)
        scale += [jump] * size
        lo += size
    inputs, first = [], 0
    for name in graph.inputs():
        size = int(np.prod(graph.op(name).output_shape))
        inputs.append((name, first, size))
        first += size
    sources = {*spiking, *graph.inputs()}
    links = tuple((p.name, src, path) for p in pops for src, path in _incoming(graph, p.name, sources))
    outputs = []
    for name in graph.outputs():
        terms = [t for pred in graph.predecessors(name) for t in _terms(graph, pred, sources, ())]
        if len(terms) != 1 or terms[0][1]:
            raise CompileError("an Output of the analytical solver must be fed by one spiking population (or "
                               "Input) directly, not through a weight or a sum", nodes=[name], hint=HINT)
        outputs.append((name, terms[0][0]))
    names = {**aliases, **{n: n for n in graph.inputs()}}
    params = {n: {"weight": jnp.asarray(np.asarray(graph.op(n).params["weight"]),
                                        dtype=options.get("dtype") or jnp.result_type(float))}
              for n, op in graph.ops() if op.kind in WEIGHTED}
    return EventModel(params, Net(tuple(pops), lo, t_max), tuple(inputs), links, tuple(outputs),
                      tuple(sorted(names.items())), tuple(scale), convention == "jaxsnn")


def _check_jaxsnn(graph: Graph) -> None:
    """What jaxsnn's from_nir imports (docs/peers/jaxsnn.md): CubaLIF populations and square weights (it indexes
    NIR's [post, pre] weight as [pre, post]); τm/τs other than 1 or 2 runs there with a wrong formula."""
    import warnings

    from nircomp.errors import CompileWarning

    for name, op in graph.ops():
        if SPIKING.get(op.kind) == "LIF":
            raise CompileError("convention='jaxsnn': jaxsnn's from_nir imports CubaLIF only, not LIF", nodes=[name],
                               hint="use convention='nir'")
        w = op.params.get("weight")
        if w is not None and np.ndim(w) == 2 and np.shape(w)[0] != np.shape(w)[1]:
            raise CompileError(f"convention='jaxsnn': jaxsnn's from_nir reads a weight as [pre, post] and cannot run "
                               f"this {list(np.shape(w))} one (only square weights run there, transposed)",
                               nodes=[name], hint="use convention='nir'")
        if SPIKING.get(op.kind) == "CubaLIF":
            ratio = _scalar(op, "tau_mem") / _scalar(op, "tau_syn")
            if not (math.isclose(ratio, 1.0, rel_tol=1e-9) or math.isclose(ratio, 2.0, rel_tol=1e-9)):
                warnings.warn(f"node '{name}': tau_mem/tau_syn = {ratio:g}; jaxsnn's solver handles only 1 and 2 "
                              f"(it rounds the ratio), so its spike times differ from these exact ones",
                              CompileWarning, stacklevel=3)


def _incoming(graph: Graph, pop: str, sources: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(source, weight path) pairs whose sum is the population's input; a fused node's weight applies last."""
    own = (pop,) if graph.op(pop).kind in WEIGHTED else ()
    return [(src, path + own) for pred in graph.predecessors(pop) for src, path in _terms(graph, pred, sources, ())]


def _terms(graph: Graph, node: str, sources: set[str], seen: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """The node's value as a sum of (source, weight path) terms, through stateless Linear/Affine nodes."""
    if node in sources:
        return [(node, ())]
    op = graph.op(node)
    if op.kind not in ("Linear", "Affine") or node in seen:
        raise CompileError(f"the analytical solver cannot route events through {op.kind} '{node}'", nodes=[node],
                           hint=HINT)
    return [(src, path + (node,)) for pred in graph.predecessors(node)
            for src, path in _terms(graph, pred, sources, seen + (node,))]
