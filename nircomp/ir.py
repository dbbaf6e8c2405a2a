"""The IR: a `Graph` over a `networkx.DiGraph` whose nodes each hold one immutable `Op`.

`graph.nx.nodes[name]["op"]` is the node's `Op`; edges may carry `back=True` (the edge closes a cycle
and carries the previous step's value, set by `mark-recurrence`) and `via` (the ports of flattened
subgraphs the edge passed through, so `save` can nest the graph again). This module imports no pass
and no backend.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from nircomp.ops import KINDS, Shape


def freeze(value: Any) -> Any:
    """A read-only numpy array (or the string, for string-valued parameters such as padding)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and not value.flags.writeable and value.base is None:
        return value  # already frozen (read-only and owning its data): `op.replace` shares it
    arr = np.array(value)  # otherwise a copy: the IR owns its arrays
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Op:
    """One node of the IR. Immutable: passes build a new Op with `op.replace(...)`.

    kind: an op kind name from `nircomp.ops.KINDS` (NIR class name or compiler kind).
    params: parameter name -> read-only numpy array (or str for string options such as padding).
    input_shape / output_shape: without batch and time axes; None until shapes are inferred.
    origin: the NIR node name(s) this op came from (more than one after fusion).
    metadata: the NIR node's metadata dict, kept for round trips.
    attrs: compiler annotations (e.g. the solver chosen), printed by `inspect`.
    """

    kind: str
    params: Mapping[str, Any]
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    origin: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise KeyError(f"unknown op kind {self.kind!r}")
        object.__setattr__(self, "params", {k: freeze(v) for k, v in self.params.items()})

    @property
    def spec(self):
        return KINDS[self.kind]

    def replace(self, **changes: Any) -> Op:
        return dataclasses.replace(self, **changes)


@dataclass
class Graph:
    """A flattened NIR graph: `nx` holds the structure, each node's `op` attribute its Op.

    ports: the Input/Output nodes of flattened subgraphs, by dotted name (kept so `save` re-nests).
    scopes: subgraph prefix -> that subgraph's metadata.
    attrs: graph-level compiler annotations (e.g. the chosen solver and why); never written to NIR.
    """

    nx: nx.DiGraph = field(default_factory=nx.DiGraph)
    name: str = "graph"
    metadata: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, Op] = field(default_factory=dict)
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ nodes
    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def __iter__(self) -> Iterator[str]:
        return iter(self.nx.nodes)

    def op(self, name: str) -> Op:
        return self.nx.nodes[name]["op"]

    def ops(self) -> Iterator[tuple[str, Op]]:
        for name, data in self.nx.nodes(data=True):
            yield name, data["op"]

    def add_op(self, name: str, op: Op) -> None:
        if name in self.nx:
            raise ValueError(f"node {name!r} already exists")
        self.nx.add_node(name, op=op)

    def set_op(self, name: str, op: Op) -> None:
        self.nx.nodes[name]["op"] = op

    def remove(self, name: str) -> None:
        self.nx.remove_node(name)

    def add_edge(self, src: str, dst: str, **attrs: Any) -> None:
        self.nx.add_edge(src, dst, **attrs)

    def inputs(self) -> list[str]:
        return [n for n, op in self.ops() if op.kind == "Input"]

    def outputs(self) -> list[str]:
        return [n for n, op in self.ops() if op.kind == "Output"]

    def predecessors(self, name: str) -> list[str]:
        return list(self.nx.predecessors(name))

    def successors(self, name: str) -> list[str]:
        return list(self.nx.successors(name))

    def is_back_edge(self, src: str, dst: str) -> bool:
        return bool(self.nx.edges[src, dst].get("back", False))

    # ------------------------------------------------------------------ order
    def back_edges(self) -> list[tuple[str, str]]:
        """The edges that close a cycle: marked ones, or (before mark-recurrence) `find_back_edges`."""
        marked = [(u, v) for u, v, back in self.nx.edges(data="back") if back]
        return marked if marked else find_back_edges(self)

    def order(self) -> list[str]:
        """Topological order ignoring back edges, ties broken by name: the order of the text form."""
        back = set(self.back_edges())
        succ = self.nx.succ
        indegree = dict.fromkeys(succ, 0)
        for u, nbrs in succ.items():
            for v in nbrs:
                if (u, v) not in back:
                    indegree[v] += 1
        ready = [n for n, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        order = []
        while ready:  # Kahn's algorithm, smallest name first (as nx.lexicographical_topological_sort)
            node = heapq.heappop(ready)
            order.append(node)
            for child in succ[node]:
                if (node, child) not in back:
                    indegree[child] -= 1
                    if not indegree[child]:
                        heapq.heappush(ready, child)
        if len(order) != len(indegree):
            raise nx.NetworkXUnfeasible("Graph contains a cycle or graph changed during iteration")
        return order

    def copy(self) -> Graph:
        """A structural copy (Ops are immutable and shared)."""
        return Graph(self.nx.copy(), self.name, dict(self.metadata), dict(self.ports),
                     {k: dict(v) for k, v in self.scopes.items()}, self.source, dict(self.attrs))


def find_back_edges(graph: Graph) -> list[tuple[str, str]]:
    """Edges closing a cycle: the back edges of a depth-first search from the inputs in graph order,
    then from any node not reached, successors in insertion order. Deterministic for a given graph."""
    g = graph.nx
    if not any(True for _ in _cycle_candidates(g)):
        return []
    roots = [n for n in g if g.nodes[n]["op"].kind == "Input"] + list(g)
    state: dict[str, int] = {}  # 1 = on stack, 2 = done
    back: list[tuple[str, str]] = []
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(g.successors(root)))]
        while stack:
            node, it = stack[-1]
            for succ in it:
                s = state.get(succ)
                if s is None:
                    state[succ] = 1
                    stack.append((succ, iter(g.successors(succ))))
                    break
                if s == 1:
                    back.append((node, succ))
            else:
                state[node] = 2
                stack.pop()
    return back


def _cycle_candidates(g: nx.DiGraph) -> Iterable[Any]:
    """Non-trivial strongly connected components or self-loops (empty for a DAG)."""
    if any(True for _ in nx.selfloop_edges(g)):
        yield True
        return
    for comp in nx.strongly_connected_components(g):
        if len(comp) > 1:
            yield comp
            return
