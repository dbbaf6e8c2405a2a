"""canonicalize: the rewrites that leave the computation unchanged and the graph smaller."""

from __future__ import annotations

import numpy as np

from nircomp.ir import Graph
from nircomp.ops import DENSE_KINDS
from nircomp.passes._rewrite import absorb, bypass, can_bypass, sole_link
from nircomp.pipeline import PassContext, register_pass


@register_pass("canonicalize")
def canonicalize(graph: Graph, ctx: PassContext) -> Graph:
    """Drop Identity, fold Scale into a neighbouring Affine/Linear, Affine with zero bias -> Linear, remove dead nodes.

    Folding needs the Scale and the Affine/Linear to be each other's only link (no other node sees the
    value between them); the folded node keeps both origins. Dead nodes are those from which no Output
    is reachable (Inputs are kept: they are the graph's interface).
    """
    _drop_identities(graph, ctx)
    _fold_scales(graph, ctx)
    _affine_to_linear(graph, ctx)
    _remove_dead(graph, ctx)
    return graph


def _drop_identities(graph: Graph, ctx: PassContext) -> None:
    dropped = []
    for name, op in list(graph.ops()):
        if op.kind == "Identity" and can_bypass(graph, name):
            bypass(graph, name)
            dropped.append(name)
        elif op.kind == "Identity":
            ctx.note(f"kept Identity {name}: dropping it would merge two summed paths")
    if dropped:
        ctx.note(f"dropped Identity {', '.join(dropped)}")


def _fold_scales(graph: Graph, ctx: PassContext) -> None:
    for name, op in list(graph.ops()):
        if op.kind != "Scale" or name not in graph:
            continue
        s = np.asarray(op.params["scale"])
        if s.ndim != 1:
            continue
        preds, succs = list(graph.nx.pred[name]), list(graph.nx.succ[name])
        if len(preds) == 1 and graph.op(preds[0]).kind in DENSE_KINDS and sole_link(graph, preds[0], name):
            dense = graph.op(preds[0])
            w = np.asarray(dense.params["weight"])
            if w.ndim != 2:
                continue
            params = {"weight": (s[:, None] * w).astype(w.dtype)}
            if "bias" in dense.params:
                b = np.asarray(dense.params["bias"])
                params["bias"] = (s * b).astype(b.dtype)
            new = dense.replace(params=params, output_shape=op.output_shape, origin=dense.origin + op.origin)
            absorb(graph, preds[0], name, new)
            ctx.note(f"folded Scale {name} into {preds[0]}")
        elif len(succs) == 1 and graph.op(succs[0]).kind in DENSE_KINDS and sole_link(graph, name, succs[0]):
            dense = graph.op(succs[0])
            w = np.asarray(dense.params["weight"])
            if w.ndim != 2:
                continue
            params = dict(dense.params, weight=(w * s[None, :]).astype(w.dtype))
            new = dense.replace(params=params, input_shape=op.input_shape, origin=op.origin + dense.origin)
            absorb(graph, succs[0], name, new)
            ctx.note(f"folded Scale {name} into {succs[0]}")


def _affine_to_linear(graph: Graph, ctx: PassContext) -> None:
    done = []
    for name, op in list(graph.ops()):
        if op.kind == "Affine" and not np.asarray(op.params["bias"]).any():
            graph.set_op(name, op.replace(kind="Linear", params={"weight": op.params["weight"]}))
            done.append(name)
    if done:
        ctx.note(f"Affine with zero bias -> Linear: {', '.join(done)}")


def _remove_dead(graph: Graph, ctx: PassContext) -> None:
    g = graph.nx
    live = set(graph.outputs())
    stack = list(live)
    while stack:
        for p in g.pred[stack.pop()]:
            if p not in live:
                live.add(p)
                stack.append(p)
    dead = [n for n, op in graph.ops() if n not in live and op.kind != "Input"]
    for n in dead:
        graph.remove(n)
    if dead:
        ctx.note(f"removed dead node(s) {', '.join(dead)}")
