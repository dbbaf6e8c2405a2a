"""mark-recurrence."""

from __future__ import annotations

from nircomp.ir import Graph, find_back_edges
from nircomp.pipeline import PassContext, register_pass


@register_pass("mark-recurrence")
def mark_recurrence(graph: Graph, ctx: PassContext) -> Graph:
    """Mark the edges that close a cycle (`back=True`): they carry the source's previous-step output.

    The back edges are those of a depth-first search from the Inputs in graph order, so the choice is
    deterministic; `inspect` shows them as `%src@prev`.
    """
    g = graph.nx
    for _, _, data in g.edges(data=True):
        data.pop("back", None)
    back = find_back_edges(graph)
    for u, v in back:
        g.edges[u, v]["back"] = True
    if back:
        ctx.note("back edges: " + ", ".join(f"{u} -> {v}" for u, v in back))
    return graph
