"""verify: the IR invariants every pass may rely on."""

from __future__ import annotations

import numpy as np

from nircomp.errors import VerifyError
from nircomp.ir import Graph
from nircomp.pipeline import PassContext, register_pass


@register_pass("verify")
def verify(graph: Graph, ctx: PassContext) -> Graph:
    """Check the IR: Input/Output present, no dangling edge, finite parameters, τ > 0, shapes agree on edges.

    Fails on the first violation with a VerifyError naming the node. Does not change the graph.
    """

    def fail(message: str, *nodes: str, hint: str | None = None) -> VerifyError:
        return ctx.error(VerifyError, message, nodes=nodes, hint=hint)  # type: ignore[return-value]

    g = graph.nx
    if not len(graph):
        raise fail("the graph is empty", hint="a NIR graph needs at least an Input and an Output")
    if not graph.inputs():
        raise fail("the graph has no Input node", hint="add a nir.Input feeding the first layer")
    if not graph.outputs():
        raise fail("the graph has no Output node", hint="add a nir.Output after the last layer")
    for name, op in graph.ops():
        preds = g.pred[name]
        if op.kind == "Input":
            if preds:
                raise fail(f"Input has incoming edges (from {', '.join(preds)})", name)
        elif not preds:
            raise fail(f"{op.kind} receives no input (dangling node)", name,
                       hint="connect it or remove it")
        if op.kind == "Output" and g.succ[name]:
            raise fail(f"Output has outgoing edges (to {', '.join(g.succ[name])})", name)
        _check_params(op, name, fail)
    for src, dst, data in g.edges(data=True):
        for port in data.get("via", ()):
            if port not in graph.ports:
                raise fail(f"edge {src} -> {dst} passes through unknown subgraph port '{port}'", src, dst)
        out_shape, in_shape = graph.op(src).output_shape, graph.op(dst).input_shape
        if out_shape is not None and in_shape is not None and tuple(out_shape) != tuple(in_shape):
            raise fail(f"shape mismatch on edge {src} -> {dst}: {list(out_shape)} vs {list(in_shape)}", src, dst)
    return graph


def _check_params(op, name: str, fail) -> None:
    spec = op.spec
    for p in spec.required:
        if p not in op.params:
            raise fail(f"{op.kind} is missing required parameter '{p}'", name)
    for p, value in op.params.items():
        if isinstance(value, str):
            continue
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = "NaN" if np.any(np.isnan(arr)) else "inf"
            raise fail(f"{op.kind} parameter '{p}' contains {bad}", name)
        if p in spec.time_params and np.any(arr <= 0):
            raise fail(f"{op.kind} time constant '{p}' must be > 0 (min {arr.min()})", name,
                       hint="time constants are in the unit of dt and must be positive")
        if p in spec.nonneg_params and np.any(arr < 0):
            raise fail(f"{op.kind} parameter '{p}' must be >= 0 (min {arr.min()})", name)
