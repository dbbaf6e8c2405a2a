"""An example nircomp plug-in: the pass `count-neurons`.

nircomp finds this module through the entry-point group `nircomp.passes` (pyproject.toml) and imports
it; the `@register_pass` decorator then adds the pass to the registry.
"""

from __future__ import annotations

import math

from nircomp import CompileError, Graph, PassContext, register_pass
from nircomp.ops import FUSED_KINDS, NEURON_KINDS


@register_pass("count-neurons")
def count_neurons(graph: Graph, ctx: PassContext, *, attr: str = "neurons") -> Graph:
    """Count the neurons of the graph into graph.attrs[attr] (run it after infer-shapes).

    A neuron node, fused or not, with output shape S holds prod(S) neurons.
    """
    total = 0
    for name, op in graph.ops():
        if op.kind in NEURON_KINDS or op.kind in FUSED_KINDS:
            if op.output_shape is None:
                raise ctx.error(CompileError, "shape unknown; run infer-shapes first", nodes=[name])
            total += math.prod(op.output_shape)
    graph.attrs[attr] = total
    ctx.note(f"{total} neurons")
    return graph
