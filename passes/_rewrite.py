"""Edge rewiring shared by the rewriting passes: remove a node while keeping what flows through it.

An edge's `via` (subgraph ports it passes) and `back` (closes a cycle) survive every rewrite: a path
a -> x -> b that becomes a -> b keeps the ports of both edges in order and is a back edge if either was.
"""

from __future__ import annotations

from nircomp.ir import Graph, Op


def _joined(graph: Graph, first: tuple[str, str], second: tuple[str, str]) -> dict:
    a, b = graph.nx.edges[first], graph.nx.edges[second]
    attrs = {}
    via = tuple(a.get("via", ())) + tuple(b.get("via", ()))
    if via:
        attrs["via"] = via
    if a.get("back") or b.get("back"):
        attrs["back"] = True
    return attrs


def can_bypass(graph: Graph, name: str) -> bool:
    """Removing `name` and joining its inputs to its outputs would not merge two summed paths."""
    g = graph.nx
    return not any(g.has_edge(p, s) or p == name or s == name for p in g.pred[name] for s in g.succ[name])


def bypass(graph: Graph, name: str) -> None:
    """Remove `name`, connecting each of its inputs to each of its outputs (check `can_bypass` first)."""
    g = graph.nx
    new = [(p, s, _joined(graph, (p, name), (name, s))) for p in g.pred[name] for s in g.succ[name]]
    graph.remove(name)
    for p, s, attrs in new:
        graph.add_edge(p, s, **attrs)


def absorb(graph: Graph, keep: str, drop: str, op: Op) -> None:
    """Merge `drop`, the sole neighbour on one side of `keep`, into `keep`, which becomes `op`.

    `drop` must be either keep's only predecessor (all of drop's inputs then feed `keep`) or keep's only
    successor (`keep` then feeds all of drop's outputs). The side is told by drop's outputs, not by the
    edge drop -> keep, which a two-node cycle also has when `drop` is the successor.
    """
    g = graph.nx
    if set(g.succ[drop]) == {keep}:
        new = [(p, keep, _joined(graph, (p, drop), (drop, keep))) for p in g.pred[drop]]
    else:
        new = [(keep, s, _joined(graph, (keep, drop), (drop, s))) for s in g.succ[drop]]
    graph.remove(drop)
    for u, v, attrs in new:
        graph.add_edge(u, v, **attrs)
    graph.set_op(keep, op)


def sole_link(graph: Graph, src: str, dst: str) -> bool:
    """`src -> dst` is the only edge out of `src` and the only edge into `dst`, and not a back edge."""
    g = graph.nx
    return (len(g.succ[src]) == 1 and len(g.pred[dst]) == 1 and g.has_edge(src, dst)
            and src != dst and not g.edges[src, dst].get("back"))
