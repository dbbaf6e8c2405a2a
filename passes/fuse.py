"""fuse-affine-cubalif."""

from __future__ import annotations

from nircomp.ir import Graph
from nircomp.ops import DENSE_KINDS, FUSED_KINDS
from nircomp.passes._rewrite import absorb, sole_link
from nircomp.pipeline import PassContext, register_pass

_NEURON_TO_FUSED = {neuron: fused for fused, neuron in FUSED_KINDS.items()}


@register_pass("fuse-affine-cubalif")
def fuse_affine_cubalif(graph: Graph, ctx: PassContext) -> Graph:
    """Fuse an Affine/Linear whose only consumer is a CubaLIF (or LIF, CubaLI, LI) into one Dense<neuron> node.

    The neuron must take no other input (its inputs are summed, the fused node has one weight). The
    fused node keeps the neuron's name and both origins, so `record=` still answers to either name.
    """
    fused = []
    for name, op in list(graph.ops()):
        if op.kind not in _NEURON_TO_FUSED:
            continue
        preds = list(graph.nx.pred[name])
        if len(preds) != 1 or graph.op(preds[0]).kind not in DENSE_KINDS or not sole_link(graph, preds[0], name):
            continue
        dense = graph.op(preds[0])
        params = {"weight": dense.params["weight"], **({"bias": dense.params["bias"]} if "bias" in dense.params
                                                       else {}), **op.params}
        new = op.replace(kind=_NEURON_TO_FUSED[op.kind], params=params, input_shape=dense.input_shape,
                         origin=dense.origin + op.origin)
        absorb(graph, name, preds[0], new)
        fused.append(f"{preds[0]}+{name}")
    if fused:
        ctx.note(f"fused {', '.join(fused)}")
    return graph
