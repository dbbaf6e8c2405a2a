"""infer-shapes."""

from __future__ import annotations

from nircomp.ir import Graph
from nircomp.pipeline import PassContext, register_pass
from nircomp.shapes import infer_shapes as _infer


@register_pass("infer-shapes")
def infer_shapes(graph: Graph, ctx: PassContext) -> Graph:
    """Infer every node's input and output shape (conv/pool windows, flatten dims) and check every edge.

    Shapes flow from the Inputs in topological order; a node fed only by a back edge gets its shape on
    a second sweep. Several edges into one node must carry the same shape (they are summed).
    """
    changed = _infer(graph)
    if changed:
        ctx.note(f"shapes set on {len(changed)} node(s)")
    return graph
