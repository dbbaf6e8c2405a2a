"""The top-level entry points that combine load and the pass manager."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from nircomp.errors import CompileError, CompileWarning
from nircomp.instruments import ChangeLog, PassRecord, VerifyEach
from nircomp.ir import Graph
from nircomp.load import load
from nircomp.program import Program
from nircomp.pipeline import BoundPass, Instrument, PassContext, resolve_pipeline, run_pipeline


def compile(source: Any, dt: float = 1e-4, solver: str = "auto", backend: str = "equinox",
            pipeline: str | Sequence[BoundPass] | None = None, *, convention: str = "nir", dtype: Any = None,
            schedule: str = "auto", out: str | os.PathLike | None = None, **options: Any) -> Program:
    """Compile a `.nir` file, a nir.NIRGraph or a Graph into a runnable Program.

    convention: "nir" (default) or a peer preset; any Semantics field (method, reset, threshold, spike,
    surrogate, slope, ...) given as a keyword overrides it. dtype: parameter dtype (default: JAX's float).
    schedule: "scc" (every stateless op outside cycles on whole sequences), "per-step" (everything in
    one scan), "cpu" (only dense layers of >= 32768 weights on whole sequences, measured fastest on
    XLA:CPU) or "auto": "cpu" on the CPU, "scc" on accelerators. All give the same results.
    backend: a registered name, with options in the pipeline option syntax ("nir{out=net.nir}"); they
    reach the backend's `lower` with the resolved options. out: where an output-writing backend writes
    (the same as the backend option out=); Program.artifacts lists what it wrote.
    """
    import dataclasses

    from nircomp.backends import BACKENDS, Lowered, available_backends, parse_backend_spec
    from nircomp.semantics import CONVENTION_DT, Semantics, resolve_semantics

    sem_fields = {f.name for f in dataclasses.fields(Semantics)}
    unknown = [k for k in options if k not in sem_fields]
    if unknown:
        raise CompileError(f"unknown compile option(s) {', '.join(unknown)}; step-solver options: "
                           f"{', '.join(sorted(sem_fields))}")
    semantics = resolve_semantics(convention, **options)
    fixed_dt = CONVENTION_DT.get(convention)
    if fixed_dt is not None and abs(dt - fixed_dt) > 1e-9 * fixed_dt:
        import warnings

        warnings.warn(f"convention={convention!r} reproduces {convention}'s NIR import, which always uses "
                      f"dt={fixed_dt:g}; with dt={dt:g} the results differ from {convention}'s", CompileWarning,
                      stacklevel=2)
    names = list(available_backends())
    backend, backend_options = parse_backend_spec(backend)
    if backend not in BACKENDS:
        raise CompileError(f"unknown backend {backend!r}; registered: {', '.join(names) or 'none'}")
    target = BACKENDS[backend]
    graph, log = run_passes(source, pipeline, solver=solver, dt=dt,
                            available_solvers=tuple(sorted(target.capabilities.solvers)))
    chosen = graph.attrs.get("solver", solver)
    if chosen not in target.capabilities.solvers:
        raise CompileError(f"backend {backend!r} does not implement solver {chosen!r} "
                           f"(it implements {', '.join(sorted(target.capabilities.solvers))})",
                           source=graph.source)
    bad = target.capabilities.unsupported(graph)
    if bad:
        raise CompileError(f"backend {backend!r} cannot lower node kind(s) {', '.join(sorted({k for _, k in bad}))}",
                           nodes=[n for n, _ in bad], source=graph.source)
    from nircomp.schedule import MODES

    if schedule not in ("auto", *MODES):
        raise CompileError(f"unknown schedule {schedule!r}; expected one of auto, {', '.join(MODES)}")
    if schedule == "auto":
        import jax

        schedule = "cpu" if jax.default_backend() == "cpu" else "scc"
    resolved = {"dt": dt, "solver": chosen, "semantics": semantics, "dtype": dtype, "schedule": schedule}
    clash = sorted(set(backend_options) & set(resolved))
    if clash:
        raise CompileError(f"backend option(s) {', '.join(clash)} must be given to compile itself, not in the "
                           f"backend spec")
    resolved.update(backend_options)
    if out is not None:
        resolved["out"] = out
    try:
        model = target.lower(graph, resolved)
    except CompileError as e:
        e.source = e.source or graph.source
        e.pass_name = e.pass_name or f"lower:{backend}"
        raise
    if isinstance(model, Lowered):
        return Program(model.model, graph, log, resolved, dict(model.artifacts))
    return Program(model, graph, log, resolved)


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
