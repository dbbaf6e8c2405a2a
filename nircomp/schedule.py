"""The static schedule of the step solver: which ops run on whole sequences, which in a scan.

Fused Dense<neuron> nodes are split back into a dense entry and a neuron entry, so a dense whose input
comes from outside its cycle is applied to the whole `[T, ...]` sequence at once (one large matmul
instead of T small ones). Entries are grouped by strongly connected component, in topological order:
a stateless entry outside every cycle is a "seq" stage; stateful entries and cycles are "scan" stages.
`mode="per-step"` puts everything in one scan: the plain schedule the others must reproduce. `mode="cpu"`
hoists only large dense layers, which measured fastest on XLA:CPU (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.ops import FUSED_KINDS, STRUCTURAL_PARAMS, conv_padding, per_dim

STATEFUL = frozenset({"I", "IF", "LI", "LIF", "CubaLI", "CubaLIF", "Delay"})
_DENSE_PARAMS = ("weight", "bias")


@dataclass(frozen=True)
class Entry:
    """One kernel call: `kind` (an IR kind, unfused), its inputs `(entry, back)`, the IR node whose params
    it reads (`node`, restricted to `params`), output shape and hashable static options."""

    name: str
    kind: str
    node: str
    params: tuple[str, ...]
    inputs: tuple[tuple[str, bool], ...]
    in_shape: tuple[int, ...]
    shape: tuple[int, ...]
    static: tuple[tuple[str, object], ...] = ()

    def opt(self, key: str):
        return dict(self.static)[key]

    @property
    def stateful(self) -> bool:
        return self.kind in STATEFUL


@dataclass(frozen=True)
class Stage:
    kind: str  # "seq" or "scan"
    entries: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    entries: tuple[Entry, ...]
    stages: tuple[Stage, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    names: tuple[tuple[str, str], ...]  # NIR name -> entry whose output it is
    lost: tuple[tuple[str, str], ...]  # NIR name -> why it cannot be recorded

    def entry(self, name: str) -> Entry:
        return self._by_name[name]

    @property
    def _by_name(self) -> dict[str, Entry]:
        return {e.name: e for e in self.entries}


def _connectivity(op) -> tuple[tuple[str, object], ...]:
    """The kernel `lower-connectivity` chose for a dense op, as static options (none: the `dense` kernel)."""
    choice = op.attrs.get("connectivity")
    if not choice or choice["kernel"] == "dense":
        return ()
    return (("connectivity", choice["kernel"]), ("budget", int(choice["budget"])))


def _static(op, dt: float, name: str) -> tuple[tuple[str, object], ...]:
    p = op.params
    if op.kind in ("Affine", "Linear"):
        return _connectivity(op)
    if op.kind in ("Conv1d", "Conv2d"):
        nd = 1 if op.kind == "Conv1d" else 2
        w = np.shape(p["weight"])
        dil = per_dim(p["dilation"], nd, "dilation")
        pads = conv_padding(p["padding"], nd, tuple(w[2:]), dil)
        return (("stride", per_dim(p["stride"], nd, "stride")), ("padding", tuple(pads)), ("dilation", dil),
                ("groups", int(np.asarray(p["groups"]))))
    if op.kind in ("SumPool2d", "AvgPool2d"):
        return tuple((key, per_dim(p[param], 2, param))
                     for key, param in (("kernel", "kernel_size"), ("stride", "stride"), ("padding", "padding")))
    if op.kind == "Delay":
        d = np.asarray(p["delay"], dtype=np.float64) / dt
        steps = np.round(d)
        bad = np.abs(d - steps) > 1e-6 * np.maximum(np.abs(d), 1.0)
        if np.any(bad):
            raise CompileError(f"Delay of {float(np.asarray(p['delay']).reshape(-1)[np.argmax(bad.reshape(-1))])} "
                               f"is not a multiple of dt={dt} (within 1e-6 relative); the step solver would have "
                               "to round it", nodes=[name], hint="choose dt dividing every delay")
        steps = np.broadcast_to(steps, op.output_shape or steps.shape)  # a scalar delay applies to every neuron
        return (("steps", tuple(int(s) for s in steps.reshape(-1))),)
    return ()


def _param_names(op, part: str) -> tuple[str, ...]:
    if part == "dense":
        return tuple(k for k in _DENSE_PARAMS if k in op.params)
    if part == "neuron":
        return tuple(k for k in op.params if k not in _DENSE_PARAMS)
    return tuple(k for k, v in op.params.items() if k not in STRUCTURAL_PARAMS and not isinstance(v, str))


def build_schedule(graph: Graph, dt: float, mode: str = "scc") -> Schedule:
    """The schedule of a graph that went through the step pipeline (shapes known, back edges marked)."""
    entries: dict[str, Entry] = {}
    names: dict[str, str] = {}
    lost: dict[str, str] = {}
    g = graph.nx
    for name in graph.order():
        op = graph.op(name)
        inputs = tuple(sorted((src, bool(back)) for src, back in
                              ((s, g.edges[s, name].get("back", False)) for s in g.pred[name])))
        if op.kind in FUSED_KINDS:
            neuron = FUSED_KINDS[op.kind]
            dname = f"{name}/dense"
            hidden = op.output_shape  # the neuron keeps the dense output's shape
            entries[dname] = Entry(dname, "Affine" if "bias" in op.params else "Linear", name,
                                   _param_names(op, "dense"), inputs, op.input_shape, tuple(hidden),
                                   _connectivity(op))
            entries[name] = Entry(name, neuron, name, _param_names(op, "neuron"), ((dname, False),),
                                  tuple(hidden), op.output_shape)
            if len(op.origin) >= 2:
                names[op.origin[-2]] = dname
        else:
            entries[name] = Entry(name, op.kind, name, _param_names(op, "all"), inputs, op.input_shape or (),
                                  op.output_shape or (), _static(op, dt, name))
        if op.origin:  # the origins say which NIR names the node answers to (not its own name: an Affine
            names[op.origin[-1]] = name  # `fc` that absorbed a Scale `s` outputs s's value, fc's is lost)
            for o in op.origin[: -2 if op.kind in FUSED_KINDS else -1]:
                others = ", ".join(f"'{x}'" for x in op.origin if x != o)
                lost[o] = f"canonicalize folded it with {others} into node '{name}'; its own output no longer exists"
        else:
            names.setdefault(name, name)
    for n in list(lost):
        if n in names:
            del lost[n]
    stages = _stages(entries, mode)
    return Schedule(tuple(entries.values()), stages, tuple(graph.inputs()), tuple(graph.outputs()),
                    tuple(sorted(names.items())), tuple(sorted(lost.items())))


MODES = ("cpu", "scc", "per-step")
# "cpu" hoists a dense layer outside cycles only when its weight has at least this many entries: measured
# on XLA:CPU (benchmarks/RESULTS.md), one [T*B, n] matmul beats T small ones inside the loop for a
# 700x512 layer, while for small layers (12x38) the extra scans cost more than they save, and
# convolutions (channels-last) are fastest inside the loop.
HOIST_MIN_WEIGHTS = 1 << 15


def _stages(entries: dict[str, Entry], mode: str) -> tuple[Stage, ...]:
    """Hoisted ("seq") stages and scans, in dependency order.

    An entry is hoisted when it is stateless, outside every cycle and chosen by the mode: "scc" hoists
    all such entries, "per-step" none, "cpu" the dense layers with at least HOIST_MIN_WEIGHTS weights. The other entries are packed into as few scans as dependencies allow: an entry
    joins scan k when everything it reads is computed in scan k or earlier, or by a hoisted entry that
    runs before scan k.
    """
    if mode not in MODES:
        raise ValueError(f"unknown schedule mode {mode!r}; expected one of {', '.join(MODES)}")
    order = [n for n in entries if entries[n].kind != "Input"]
    rank = {n: i for i, n in enumerate(order)}
    dg = nx.DiGraph()
    dg.add_nodes_from(order)
    dg.add_edges_from((src, n) for n in order for src, _ in entries[n].inputs if src in dg)
    cond = nx.condensation(dg)
    groups: dict[int, list[str]] = {}
    for n in order:
        groups.setdefault(cond.graph["mapping"][n], []).append(n)
    hoisted: set[str] = set()
    avail: dict[str, int] = {}  # hoisted entry -> number of scans that must run before it
    scan_of: dict[str, int] = {}  # scanned entry -> its scan (1-based)
    for c in nx.lexicographical_topological_sort(cond, key=lambda c: min(rank[n] for n in groups[c])):
        group = sorted(groups[c], key=rank.get)
        e = entries[group[0]]
        srcs = [s for n in group for s, _ in entries[n].inputs if s not in group]
        acyclic = len(group) == 1 and not any(s == e.name for s, _ in e.inputs)
        if acyclic and not e.stateful and _hoist(e, mode):
            hoisted.add(e.name)
            avail[e.name] = max([scan_of.get(s, avail.get(s, 0)) for s in srcs], default=0)
            continue
        k = max([1] + [scan_of[s] if s in scan_of else avail.get(s, 0) + 1 for s in srcs])
        for n in group:
            scan_of[n] = k
    stages = []
    for k in range(max(scan_of.values(), default=0) + 1):
        stages += [Stage("seq", (n,)) for n in order if n in hoisted and avail[n] == k]
        scan = tuple(n for n in order if scan_of.get(n) == k + 1)
        if scan:
            stages.append(Stage("scan", scan))
    return tuple(stages)


def _hoist(e: Entry, mode: str) -> bool:
    if mode == "cpu":
        return e.kind in ("Affine", "Linear") and math.prod(e.in_shape) * math.prod(e.shape) >= HOIST_MIN_WEIGHTS
    return mode == "scc"
