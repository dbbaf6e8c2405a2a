"""The top-level entry points that combine load and the pass manager."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from nircomp.errors import CompileError, CompileWarning
from nircomp.instruments import ChangeLog, PassRecord, VerifyEach
from nircomp.ir import Graph
from nircomp.load import load
from nircomp.pipeline import BoundPass, Instrument, PassContext, resolve_pipeline, run_pipeline
from nircomp.program import Program


def compile(source: Any, dt: float = 1e-4, solver: str = "auto", backend: str = "equinox",
            pipeline: str | Sequence[BoundPass] | None = None, *, convention: str = "nir", dtype: Any = None,
            schedule: str = "auto", out: str | os.PathLike | None = None, devices: Any = None,
            batch_axis: int = 0, noise: Any = None, connectivity: Any = False, **options: Any) -> Program:
    """Compile a `.nir` file, a nir.NIRGraph or a Graph into a runnable Program.

    convention: "nir" (default) or a peer preset; any Semantics field (method, reset, threshold, spike,
    surrogate, slope, ...) given as a keyword overrides it. dtype: parameter dtype (default: JAX's float).
    schedule: "scc" (every stateless op outside cycles on whole sequences), "per-step" (everything in
    one scan), "cpu" (only dense layers of >= 32768 weights on whole sequences, measured fastest on
    XLA:CPU) or "auto": "cpu" on the CPU, "scc" on accelerators. All give the same results.
    backend: a registered name, with options in the pipeline option syntax ("nir{out=net.nir}"); they
    reach the backend's `lower` with the resolved options. out: where an output-writing backend writes
    (the same as the backend option out=); Program.artifacts lists what it wrote.
    devices: None (default: prog.model runs one sample, as always), "all", a number n (the first n of
    jax.devices()) or a list of jax devices: prog.model is then a `nircomp.sharding.ShardedModel` that
    takes a batch (on axis `batch_axis`: 0 for [B, T, ...], 1 for [T, B, ...]) split over a 1-D device
    mesh with the parameters replicated (jax.jit with shardings), padding B up to a multiple of the
    device count and slicing the padding off; its results equal bit for bit the unsharded model run on
    each device's part of the batch (README: "Scaling out").
    noise: additive Wiener noise on neuron state, e.g. {"membrane": 0.1, "current": 0.05, "nodes": {"lif1":
    {"membrane": 0.2}}} (sigma per sqrt(time unit); see nircomp.noise); the model then takes `key=`.
    None (default): no noise, no key, the model exactly as without the option.
    connectivity: True, or a dict of its options ({"spike_inputs": ["input"], "event_budget": 0.15, ...}),
    appends the pass `lower-connectivity` to the pipeline: sparse/structured kernels per weight, with the
    same results (sums reordered). False (default): every weight runs the dense product.
    t_max, n_spikes: options of solver="analytical" (event-driven; see nircomp.backends.event.EventModel):
    the window [0, t_max) and the spike budget per population ({name: int}); convention "nir" or "jaxsnn".
    solver="hardware" takes the same options and `executor=` (nircomp.hardware.Executor; default: the
    Emulator configured by the emulator-noise pass; see nircomp.backends.hardware.HardwareModel).
    solver="auto" picks analytical for a graph that meets its checks when t_max is given and no step-only
    option (a Semantics field, noise, connectivity, devices, a step convention) is; else step (the reason
    is recorded in prog.ir.attrs["solver_reason"]).
    """
    import dataclasses

    from nircomp.backends import BACKENDS, Lowered, available_backends, parse_backend_spec
    from nircomp.events import EVENT_CONVENTIONS, EVENT_OPTIONS, analytical_options
    from nircomp.semantics import CONVENTION_DT, Semantics, resolve_semantics

    event_options = {k: options.pop(k) for k in EVENT_OPTIONS if k in options}
    sem_fields = {f.name for f in dataclasses.fields(Semantics)}
    unknown = [k for k in options if k not in sem_fields]
    if unknown:
        raise CompileError(f"unknown compile option(s) {', '.join(unknown)}; step-solver options: "
                           f"{', '.join(sorted(sem_fields))}")
    semantics = None if convention == "jaxsnn" else resolve_semantics(convention, **options)
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
    solvers = set(target.capabilities.solvers)
    excluded = None  # why solver="auto" must not pick the analytical solver
    if options or noise is not None or connectivity is not False or devices is not None:
        excluded = "step-solver options were given"
    elif convention not in EVENT_CONVENTIONS:
        excluded = f"convention {convention!r} is a step-solver convention"
    elif event_options.get("t_max") is None:
        excluded = "no t_max= was given (the analytical solver's window)"
    if solver == "auto" and excluded:
        solvers.discard("analytical")
    if connectivity is not False:
        pipeline = _with_connectivity(pipeline, solver, connectivity)
    graph, log = run_passes(source, pipeline, solver=solver, dt=dt, available_solvers=tuple(sorted(solvers)),
                            semantics=semantics, analytical_excluded=excluded)
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
    resolved = {"dt": dt, "solver": chosen, "semantics": semantics, "dtype": dtype, "schedule": schedule,
                **analytical_options(chosen, solver, convention, options, event_options, noise)}
    if noise is not None:
        if chosen != "step":
            raise CompileError(f"noise= is an option of the step solver, and the graph was compiled for solver "
                               f"{chosen!r}", source=graph.source, hint="compile with solver='step'")
        if not getattr(target.capabilities, "noise", False):
            raise CompileError(f"backend {backend!r} does not support noise=", source=graph.source,
                               hint="use backend='equinox', whose model takes key=")
        resolved["noise"] = noise
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
    artifacts = dict(model.artifacts) if isinstance(model, Lowered) else {}
    model = model.model if isinstance(model, Lowered) else model
    if devices is not None or batch_axis != 0:
        from nircomp.sharding import shard

        model = shard(model, devices, batch_axis)
    return Program(model, graph, log, resolved, artifacts)


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


def _with_connectivity(pipeline: Any, solver: str, connectivity: Any):
    """The pipeline with `lower-connectivity` appended (options: a dict, or True for the defaults)."""
    from nircomp.pipeline import get_pass

    if connectivity is True:
        connectivity = {}
    if not isinstance(connectivity, dict):
        raise CompileError(f"connectivity={connectivity!r}: expected True, False or a dict of lower-connectivity "
                           "options", hint="e.g. connectivity={'spike_inputs': ['input']}")
    options = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in connectivity.items()}
    return resolve_pipeline(pipeline, solver) + [get_pass("lower-connectivity").bind(**options)]
