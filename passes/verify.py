"""verify: the IR invariants every pass may rely on."""

from __future__ import annotations

import weakref

import numpy as np

from nircomp.errors import VerifyError
from nircomp.ir import Graph
from nircomp.pipeline import PassContext, register_pass

# Ops whose parameters passed the checks. Ops are immutable, so the verify run after every pass only
# checks the Ops that pass created.
_PARAMS_OK: weakref.WeakSet = weakref.WeakSet()


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
    ops = dict(graph.ops())
    unchecked = {name: op for name, op in ops.items() if op not in _PARAMS_OK}
    if _check_all_params(list(unchecked.values())):
        unchecked = {}
    pred, succ = g.pred, g.succ
    for name, op in ops.items():
        preds = pred[name]
        if op.kind == "Input":
            if preds:
                raise fail(f"Input has incoming edges (from {', '.join(preds)})", name)
        elif not preds:
            raise fail(f"{op.kind} receives no input (dangling node)", name,
                       hint="connect it or remove it")
        if op.kind == "Output" and succ[name]:
            raise fail(f"Output has outgoing edges (to {', '.join(succ[name])})", name)
        if name in unchecked:
            _check_params(op, name, fail)
    for src, dst, data in g.edges(data=True):
        for port in data.get("via", ()):
            if port not in graph.ports:
                raise fail(f"edge {src} -> {dst} passes through unknown subgraph port '{port}'", src, dst)
        out_shape, in_shape = ops[src].output_shape, ops[dst].input_shape
        if (out_shape != in_shape and out_shape is not None and in_shape is not None
                and tuple(out_shape) != tuple(in_shape)):
            raise fail(f"shape mismatch on edge {src} -> {dst}: {list(out_shape)} vs {list(in_shape)}", src, dst)
    return graph


def _check_all_params(ops: list) -> bool:
    """Check the parameters of all `ops` at once (a few numpy calls instead of several per node) and
    mark them checked. On any doubt nothing is marked and the answer is False: `_check_params` then
    finds and names the node."""
    finite, positive, nonneg = [], [], []
    for op in ops:
        spec, params = op.spec, op.params
        if any(p not in params for p in spec.required):
            return False
        for p, value in params.items():
            if isinstance(value, str):
                continue
            arr = np.asarray(value).reshape(-1)
            if arr.dtype.kind == "f":
                finite.append(arr)
            elif arr.dtype.kind not in "biu":
                return False
            if p in spec.time_params:
                positive.append(arr)
            if p in spec.nonneg_params:
                nonneg.append(arr)
    if finite and not np.isfinite(np.concatenate(finite)).all():
        return False
    if positive and (np.concatenate(positive) <= 0).any():
        return False
    if nonneg and (np.concatenate(nonneg) < 0).any():
        return False
    _PARAMS_OK.update(ops)
    return True


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
            raise fail(f"{op.kind} time constant '{p}' must be > 0 (min {arr.min():.4g})", name,
                       hint="time constants are in the unit of dt and must be positive")
        if p in spec.nonneg_params and np.any(arr < 0):
            raise fail(f"{op.kind} parameter '{p}' must be >= 0 (min {arr.min():.4g})", name)
