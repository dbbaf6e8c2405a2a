"""The top-level entry points that combine load and the pass manager."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nircomp.instruments import ChangeLog, PassRecord, VerifyEach
from nircomp.ir import Graph
from nircomp.load import load
from nircomp.pipeline import BoundPass, Instrument, PassContext, resolve_pipeline, run_pipeline


def run_passes(graph: Any, pipeline: str | Sequence[BoundPass] | None = None, *, solver: str = "auto",
               dt: float = 1e-4, verify_each: bool = True, instruments: Sequence[Instrument] = (),
               **options: Any) -> tuple[Graph, tuple[PassRecord, ...]]:
    """Run a pipeline on a Graph (or anything `load` takes) without lowering it.

    pipeline: a pipeline string, a list of BoundPass, or None for the solver's named pipeline.
    Returns the transformed graph (the input Graph is not modified) and one PassRecord per pass.
    """
    graph = graph.copy() if isinstance(graph, Graph) else load(graph)
    log = ChangeLog()
    ctx = PassContext(options={"dt": dt, "solver": solver, **options},
                      instruments=(log, *instruments, *((VerifyEach(),) if verify_each else ())),
                      source=graph.source)
    graph = run_pipeline(graph, resolve_pipeline(pipeline, solver), ctx)
    return graph, tuple(log.records)
