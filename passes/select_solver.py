"""select-solver."""

from __future__ import annotations

from typing import Literal

from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.pipeline import PassContext, register_pass, solver_requirements


@register_pass("select-solver")
def select_solver(graph: Graph, ctx: PassContext, *,
                  solver: Literal["auto", "step", "analytical", "hardware"] = "auto") -> Graph:
    """Choose the solver and record why (graph attrs `solver`, `solver_reason`).

    `auto` picks `analytical` when every check it requires (pipelines.toml) passes, else `step`. An
    explicit solver whose checks fail is a CompileError naming the node and the check. When the context
    names the solvers it may pick (option `available_solvers`, with `analytical_excluded` saying why
    analytical is not among them), `auto` picks only among those.
    """
    available = ctx.options.get("available_solvers")
    if solver == "auto":
        failure = _first_failure("analytical", graph, ctx)
        if available is not None and "analytical" not in available:
            why = ctx.options.get("analytical_excluded") or "the backend does not implement the analytical solver"
            chosen, reason = "step", f"analytical not chosen: {why}"
        elif failure is None:
            chosen, reason = "analytical", "the graph meets every check of the analytical solver"
        else:
            nodes = ", ".join(failure.nodes[:3]) + (", ..." if len(failure.nodes) > 3 else "")
            chosen, reason = "step", f"analytical not possible: {failure.pass_name} on {nodes}: {failure.message}"
    else:
        failure = _first_failure(solver, graph, ctx)
        if failure is not None:
            failure.message = f"solver={solver!r}: {failure.message}"
            raise failure
        chosen, reason = solver, "requested"
    graph.attrs["solver"] = chosen
    graph.attrs["solver_reason"] = reason
    ctx.note(f"solver={chosen} ({reason})")
    return graph


def _first_failure(solver: str, graph: Graph, ctx: PassContext) -> CompileError | None:
    for check in solver_requirements(solver):
        try:
            check(graph, ctx)
        except CompileError as e:
            e.pass_name = f"select-solver: {check.name}"
            e.source = e.source or ctx.source
            return e
    return None
