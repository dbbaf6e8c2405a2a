"""The checks a solver needs: they raise a CheckError naming node and fix, and never change the graph."""

from __future__ import annotations

import networkx as nx
import numpy as np

from nircomp.errors import CheckError
from nircomp.ir import Graph
from nircomp.ops import FUSED_KINDS, NEURON_KINDS
from nircomp.pipeline import PassContext, register_pass

STEP_HINT = "use solver='step', which runs every NIR graph"


@register_pass("check-homogeneous")
def check_homogeneous(graph: Graph, ctx: PassContext) -> Graph:
    """Require every neuron population to share one value per parameter (τ, threshold, ...).

    Event-driven solvers compute spike times in closed form per population, so a per-neuron τ breaks them.
    """
    for name, op in graph.ops():
        if op.kind not in NEURON_KINDS and op.kind not in FUSED_KINDS:
            continue
        for p in op.spec.elementwise:
            arr = np.asarray(op.params.get(p, 0.0))
            if arr.size > 1 and not np.all(arr == arr.reshape(-1)[0]):
                raise ctx.error(CheckError, f"{op.kind} parameter '{p}' is not homogeneous "
                                f"(min {arr.min()}, max {arr.max()}); the solver needs one value per population",
                                nodes=[name], hint=STEP_HINT)
    return graph


@register_pass("check-zero-bias")
def check_zero_bias(graph: Graph, ctx: PassContext) -> Graph:
    """Require every bias (Affine, Conv, fused Dense nodes) to be zero.

    A constant input current has no event to carry it, so event-driven solvers refuse it.
    """
    for name, op in graph.ops():
        bias = op.params.get("bias")
        if bias is not None and np.any(np.asarray(bias) != 0):
            raise ctx.error(CheckError, f"{op.kind} has bias != 0 (max |b| = {np.abs(bias).max():.3g}); "
                            "the solver needs zero bias", nodes=[name], hint=STEP_HINT)
    return graph


@register_pass("check-feedforward")
def check_feedforward(graph: Graph, ctx: PassContext) -> Graph:
    """Require the graph to have no cycle; on failure the message spells out the cycle's node path."""
    try:
        cycle = nx.find_cycle(graph.nx)
    except nx.NetworkXNoCycle:
        return graph
    path = [u for u, _ in cycle] + [cycle[0][0]]
    raise ctx.error(CheckError, f"the graph has a cycle: {' -> '.join(path)}; the solver needs a feed-forward graph",
                    nodes=path[:-1], hint=STEP_HINT)


@register_pass("check-ops")
def check_ops(graph: Graph, ctx: PassContext, *, allowed: tuple[str, ...] = ()) -> Graph:
    """Require every node to be of one of the `allowed` kinds (the kinds a solver or target implements)."""
    bad = [(name, op.kind) for name, op in graph.ops() if op.kind not in allowed]
    if bad:
        kinds = sorted({k for _, k in bad})
        raise ctx.error(CheckError, f"node kind(s) {', '.join(kinds)} not supported here "
                        f"(supported: {', '.join(allowed)})", nodes=[n for n, _ in bad], hint=STEP_HINT)
    return graph
