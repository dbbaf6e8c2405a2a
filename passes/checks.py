"""The checks a solver needs: they raise a CheckError naming node and fix, and never change the graph."""

from __future__ import annotations

import networkx as nx
import numpy as np

from nircomp.errors import CheckError
from nircomp.ir import Graph
from nircomp.ops import FUSED_KINDS, NEURON_KINDS
from nircomp.pipeline import PassContext, register_pass

STEP_HINT = "use solver='step', which runs every NIR graph"


def _solver(ctx: PassContext) -> str:
    """Who needs the check, for messages: the solver the run asked for, when it is an event-driven one."""
    solver = ctx.options.get("solver")
    return f"the {solver} solver" if solver in ("analytical", "hardware") else "an event-driven solver"


@register_pass("check-homogeneous")
def check_homogeneous(graph: Graph, ctx: PassContext) -> Graph:
    """Require every neuron population to share one value per parameter (τ, threshold, ...).

    Event-driven solvers compute spike times in closed form per population, so a per-neuron τ breaks them.
    """
    populations = [(name, op) for name, op in graph.ops() if op.kind in NEURON_KINDS or op.kind in FUSED_KINDS]
    arrays = (np.asarray(op.params.get(p, 0.0)) for _, op in populations for p in op.spec.elementwise)
    if _all_single_valued([a for a in arrays if a.size > 1]):
        return graph
    for name, op in populations:  # some parameter is not homogeneous: find the first, in graph order
        for p in op.spec.elementwise:
            arr = np.asarray(op.params.get(p, 0.0))
            if arr.size > 1 and not np.all(arr == arr.reshape(-1)[0]):
                raise ctx.error(CheckError, f"{op.kind} parameter '{p}' is not homogeneous (min {arr.min():.4g}, "
                                f"max {arr.max():.4g}); {_solver(ctx)} needs one value per population",
                                nodes=[name], hint=STEP_HINT)
    return graph


def _all_single_valued(arrays: list[np.ndarray]) -> bool:
    """Whether each array holds one value throughout: one comparison per dtype instead of one per array."""
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for arr in arrays:
        by_dtype.setdefault(arr.dtype, []).append(arr.reshape(-1))
    for group in by_dtype.values():
        flat = np.concatenate(group)
        sizes = np.array([a.size for a in group])
        firsts = flat[np.cumsum(sizes) - sizes]
        if not np.all(flat == np.repeat(firsts, sizes)):
            return False
    return True


@register_pass("check-zero-bias")
def check_zero_bias(graph: Graph, ctx: PassContext) -> Graph:
    """Require every bias (Affine, Conv, fused Dense nodes) to be zero.

    A constant input current has no event to carry it, so event-driven solvers refuse it.
    """
    for name, op in graph.ops():
        bias = op.params.get("bias")
        if bias is not None and np.any(np.asarray(bias) != 0):
            raise ctx.error(CheckError, f"{op.kind} has bias != 0 (max |b| = {np.abs(bias).max():.3g}); "
                            f"{_solver(ctx)} needs zero bias", nodes=[name], hint=STEP_HINT)
    return graph


@register_pass("check-feedforward")
def check_feedforward(graph: Graph, ctx: PassContext) -> Graph:
    """Require the graph to have no cycle; on failure the message spells out the cycle's node path."""
    try:
        cycle = nx.find_cycle(graph.nx)
    except nx.NetworkXNoCycle:
        return graph
    path = [u for u, _ in cycle] + [cycle[0][0]]
    raise ctx.error(CheckError, f"the graph has a cycle: {' -> '.join(path)}; "
                    f"{_solver(ctx)} needs a feed-forward graph",
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
