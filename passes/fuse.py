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


@register_pass("unfuse")
def unfuse(graph: Graph, ctx: PassContext) -> Graph:
    """Split every fused Dense<neuron> node back into its Affine/Linear and its neuron (NIR primitives).

    The dense part takes back its original name (the origin before the neuron's) when it is free, and
    the edges into the fused node; the neuron keeps the node's name and its outgoing edges.
    """
    split = []
    for name, op in list(graph.ops()):
        if op.kind not in FUSED_KINDS:
            continue
        dense_name = op.origin[-2] if len(op.origin) >= 2 and op.origin[-2] not in graph else f"{name}_dense"
        dense_params = {k: op.params[k] for k in ("weight", "bias") if k in op.params}
        dense = op.replace(kind="Affine" if "bias" in dense_params else "Linear", params=dense_params,
                           output_shape=op.output_shape, origin=op.origin[:-1] or (dense_name,), metadata={})
        neuron = op.replace(kind=FUSED_KINDS[op.kind],
                            params={k: v for k, v in op.params.items() if k not in dense_params},
                            input_shape=op.output_shape, origin=op.origin[-1:])
        incoming = [(p, dict(graph.nx.edges[p, name])) for p in graph.nx.pred[name]]
        graph.add_op(dense_name, dense)
        for p, attrs in incoming:
            graph.nx.remove_edge(p, name)
            graph.add_edge(p, dense_name, **attrs)
        graph.add_edge(dense_name, name)
        graph.set_op(name, neuron)
        split.append(f"{name} -> {dense_name}+{name}")
    if split:
        ctx.note(f"unfused {', '.join(split)}")
    return graph
