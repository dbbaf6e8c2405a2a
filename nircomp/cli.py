"""The `nircomp` command line: one clear line per error, a non-zero exit, tracebacks only with --debug."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from nircomp.errors import CompileError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show Python tracebacks on errors")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, e.g. `error: nircomp run: argument --dt: invalid float
    value: 'x' (see nircomp run --help)`; exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nircomp", description="Compile NIR graphs to executable JAX.")
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ins = sub.add_parser("inspect", help="load a .nir file, run a pass pipeline and print the IR",
                         description="Load FILE, run a pass pipeline on it and print the IR.")
    ins.add_argument("file", metavar="FILE", help="a .nir file")
    ins.add_argument("--pipeline", "-p", metavar="P",
                     help="pipeline string, e.g. 'verify,infer-shapes,canonicalize' (default: the solver's "
                          "named pipeline; 'none' runs no pass)")
    ins.add_argument("--solver", default="auto", metavar="S",
                     help="solver whose named pipeline runs when --pipeline is not given "
                          "(auto, step, analytical, hardware; default auto)")
    ins.add_argument("--print-after-all", action="store_true", help="print the IR after loading and after every pass")
    ins.add_argument("--print-after", action="append", default=[], metavar="NAME",
                     help="print the IR after the named pass (repeatable)")
    ins.add_argument("--format", choices=("text", "json", "dot"), default="text", help="IR format (default text)")
    ins.add_argument("--time-passes", action="store_true", help="print a table of per-pass wall times")
    ins.add_argument("--dump-dir", metavar="DIR", help="write the IR after each pass to DIR/NN_<pass>.txt")
    ins.add_argument("--no-verify-each", action="store_true", help="do not verify the IR between passes")
    _common(ins)

    ps = sub.add_parser("passes", help="list the registered passes (plug-ins included) and named pipelines",
                        description="List every registered pass with its options, and the named pipelines.")
    _common(ps)

    co = sub.add_parser("compile", help="compile a .nir file ahead of time (an AOT artifact, source, NIR)",
                        description="Compile FILE with a backend that writes files to OUT: --aot (a jax.export "
                                    "artifact of the step model, run with `nircomp run OUT`), --backend source "
                                    "(a standalone Python module) or --backend nir (the optimised graph as .nir).")
    co.add_argument("file", metavar="FILE", help="a .nir file")
    co.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory (or file, for nir)")
    co.add_argument("--backend", "-b", default="equinox", metavar="B",
                    help="backend name, options in the pipeline syntax, e.g. 'source{module=net}' (default "
                         "equinox, which needs --aot; `nircomp passes` lists the backends)")
    _compile_options(co)
    co.add_argument("--aot", action="store_true",
                    help="export the jitted step model with jax.export into OUT (model.jaxexport, params.npz, "
                         "meta.json)")
    co.add_argument("--input-shape", action="append", metavar="SHAPE",
                    help="with --aot: the input shape T,d1,... (T: a number of steps, or the letter T for any "
                         "length; the per-step shape is optional and must be the graph's); NAME=SHAPE per input "
                         "for several inputs (default: T, any length)")
    co.add_argument("--batch", metavar="B",
                    help="with --aot: a leading batch axis of this size, or the letter B for any size")
    co.add_argument("--record", action="extend", nargs="+", metavar="NODE",
                    help="with --aot: also return these nodes' values (`nircomp run OUT --record NODE`)")
    co.add_argument("--platforms", metavar="P",
                    help="with --aot: XLA platforms to export for, comma separated, e.g. cpu,cuda (default: "
                         "the current one)")
    co.add_argument("--precompile", action="store_true",
                    help="with --aot and fixed shapes: also store the XLA executable compiled for this machine "
                         "(used by `run` on the same jax version and hardware; no compilation at start-up)")
    _common(co)

    rn = sub.add_parser("run", help="run a .nir file or an AOT artifact on input data",
                        description="Run FILE_OR_OUT (a .nir file, compiled with the step solver, or an AOT "
                                    "artifact directory) on DATA and write the outputs.")
    rn.add_argument("target", metavar="FILE_OR_OUT", help="a .nir file or a directory from `compile --aot`")
    rn.add_argument("--input", "-i", required=True, metavar="DATA",
                    help="a .npy array, a .npz with one array per input name, or NIR data (HDF5; events are "
                         "binned on the dt grid); [T, *shape] or [N, T, *shape] for N samples")
    rn.add_argument("--dt", type=float, metavar="DT",
                    help="time step in seconds (.nir files; default 1e-4; an artifact has its own)")
    rn.add_argument("--convention", metavar="C", help="step-solver convention for .nir files (default nir)")
    _connectivity_option(rn)
    rn.add_argument("--record", action="extend", nargs="+", default=[], metavar="NODE",
                    help="also write these nodes' values (by NIR name)")
    rn.add_argument("-o", "--output", metavar="OUT",
                    help="result file: .npz (one array per node) or .nir (NIR data); default <DATA stem>.out.npz")
    rn.add_argument("--plot", metavar="PNG", help="draw spike rasters / traces of the results (needs matplotlib)")
    rn.add_argument("--chunk", type=int, default=32, metavar="N",
                    help="samples per call when DATA has a batch axis (default 32; a fixed-batch artifact uses "
                         "its own)")
    rn.add_argument("--progress", action="store_true", help="print a progress line even when stderr is no TTY")
    rn.add_argument("--devices", type=_devices, metavar="all|N",
                    help="split every chunk over N devices (or all) with jax.sharding, parameters replicated")
    _common(rn)
    return parser


def _devices(text: str) -> str | int:
    """--devices: "all" or a positive number."""
    if text == "all" or (text.isdigit() and int(text) > 0):
        return text if text == "all" else int(text)
    raise argparse.ArgumentTypeError(f"expected 'all' or a positive number, got {text!r}")


def _compile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", default="auto", metavar="S", help="solver (default auto)")
    p.add_argument("--dt", type=float, default=1e-4, metavar="DT", help="time step in seconds (default 1e-4)")
    p.add_argument("--pipeline", "-p", metavar="P", help="pipeline string (default: the solver's named pipeline)")
    p.add_argument("--convention", default="nir", metavar="C", help="step-solver convention (default nir)")
    p.add_argument("--schedule", choices=("auto", "cpu", "scc", "per-step"), default="auto",
                   help="step schedule (default auto: cpu on the CPU, scc on accelerators)")
    _connectivity_option(p)


def _connectivity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connectivity", action="store_true",
                   help="append the pass lower-connectivity: sparse/structured kernels per weight where they pay, "
                        "the same results (compile(connectivity=True))")


def cmd_inspect(args: argparse.Namespace) -> int:
    from nircomp.instruments import ChangeLog, DumpIR, PrintIR, Timing, VerifyEach
    from nircomp.load import load
    from nircomp.pipeline import PassContext, Pipeline, get_pass, resolve_pipeline, run_pipeline
    from nircomp.printer import format_graph, to_json

    pipeline = Pipeline() if args.pipeline == "none" else resolve_pipeline(args.pipeline, args.solver)
    for name in args.print_after:
        get_pass(name)  # an unknown name is an error, not a silent no-op
    graph = load(args.file)
    out = sys.stdout
    log, timing = ChangeLog(), Timing()
    instruments: list = [log, timing]
    if args.print_after_all or args.print_after:
        if args.print_after_all:
            out.write("// -----// IR after load //----- //\n" + format_graph(graph, args.format) + "\n")
        instruments.append(PrintIR(out, () if args.print_after_all else tuple(args.print_after), args.format, log))
    if args.dump_dir:
        instruments.append(DumpIR(args.dump_dir))
    if not args.no_verify_each:
        instruments.append(VerifyEach())
    ctx = PassContext(options={"solver": args.solver}, instruments=instruments, source=args.file)
    graph = run_pipeline(graph, pipeline, ctx)
    if not (args.print_after_all or args.print_after):
        if args.format == "json":
            out.write(json.dumps({"pipeline": str(pipeline), "graph": to_json(graph),
                                  "log": [r.as_dict() for r in log.records]}, indent=1) + "\n")
        elif args.format == "dot":
            out.write(format_graph(graph, "dot") + "\n")
        else:
            out.write(f"// pipeline: {pipeline}\n")
            for r in log.records:
                out.write(f"// {r.name}: {r.summary()}\n")
            out.write(format_graph(graph) + "\n")
    if args.time_passes:
        sys.stderr.write(timing.report() + "\n")
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from nircomp.pipeline import load_passes, named_pipelines

    passes = load_passes()
    width = max(len(n) for n in passes)
    print("passes:")
    for name in sorted(passes):
        info = passes[name]
        print(f"  {name:<{width}}  {info.summary}")
        for opt in info.options:
            print(f"  {'':<{width}}    option {opt.describe()}")
        if not info.fn.__module__.startswith("nircomp."):
            print(f"  {'':<{width}}    (plug-in: {info.origin})")
    print("named pipelines (nircomp/pipelines.toml):")
    for solver, table in named_pipelines().items():
        print(f"  {solver:<{width}}  {table['passes']}")
    from nircomp.backends import available_backends

    names = list(available_backends())
    print("backends:", ", ".join(names) if names else "(none registered)")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    import nircomp
    from nircomp.backends import parse_backend_spec

    name, _ = parse_backend_spec(args.backend)
    aot_only = {"--input-shape": args.input_shape, "--batch": args.batch, "--record": args.record,
                "--platforms": args.platforms, "--precompile": args.precompile}
    if args.aot and name != "equinox":
        raise CompileError(f"--aot exports the equinox backend's model; it does not combine with --backend {name}")
    if not args.aot:
        given = [flag for flag, value in aot_only.items() if value]
        if given:
            raise CompileError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --aot")
        if name == "equinox":
            raise CompileError("the equinox backend builds an in-memory model and writes no file",
                               hint="add --aot for an ahead-of-time artifact, or use --backend source or nir")
    common = {"dt": args.dt, "solver": args.solver, "pipeline": args.pipeline, "convention": args.convention,
              "schedule": args.schedule, "connectivity": args.connectivity}
    if args.aot:
        from nircomp.backends.aot import build

        if args.solver == "auto":  # an AOT artifact exports the step solver's model
            common["solver"] = "step"

        prog = nircomp.compile(args.file, backend="equinox", **common)
        written = build(prog.model, input_shape=args.input_shape, batch=args.batch, record=args.record or (),
                        platforms=tuple(p for p in (args.platforms or "").split(",") if p), out=args.output,
                        source=args.file, precompile=args.precompile).artifacts
    else:
        written = nircomp.compile(args.file, backend=args.backend, out=args.output, **common).artifacts
        if not written:
            raise CompileError(f"backend {name!r} wrote no file")
    for role, path in written.items():
        print(f"wrote {path} ({role})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from nircomp import runio

    target = Path(args.target)
    if not target.exists():
        raise CompileError(f"{target}: no such file or directory")
    if target.is_dir():
        from nircomp.backends.aot import load_artifact

        model = load_artifact(target)
        if args.dt is not None and not math.isclose(args.dt, model.dt, rel_tol=1e-9):
            raise CompileError(f"{target}: compiled for dt={model.dt:g}, not --dt {args.dt:g}",
                               hint="recompile with --dt, or drop it")
        if args.convention is not None or args.connectivity:
            flag = "--convention" if args.convention is not None else "--connectivity"
            raise CompileError(f"{target}: an artifact's {flag[2:]} is fixed when it is compiled; drop {flag}",
                               hint=f"compile with `nircomp compile --aot {flag} ...`" if flag == "--connectivity"
                               else None)
        unknown = [n for n in args.record if n not in model.recordable]
        if unknown:
            raise CompileError(f"{target}: cannot record {', '.join(map(repr, unknown))}; the artifact records "
                               + (f"only {', '.join(model.recordable)}" if model.recordable else "no node"),
                               hint="compile with --aot --record NODE")
        inputs, time = model.inputs, model.meta["time"]
    else:
        import nircomp

        model = nircomp.compile(target, dt=1e-4 if args.dt is None else args.dt, solver="step",
                                convention=args.convention or "nir", connectivity=args.connectivity).model
        for n in args.record:
            model._entry_of(n)  # an unknown or folded node is an error before any data is read
        inputs, time = {n: tuple(model.schedule.entry(n).shape) for n in model.schedule.inputs}, "T"
    if args.chunk < 1:
        raise CompileError(f"--chunk must be positive, got {args.chunk}")
    out = Path(args.output) if args.output else Path(Path(args.input).stem + ".out.npz")
    if out.suffix not in (".npz", ".nir"):
        raise CompileError(f"{out}: unsupported output format; use a .npz or .nir file name")
    if args.plot:
        runio.pyplot()  # a missing matplotlib is an error before the run, not after it
    data = runio.read_inputs(args.input, inputs, model.dt)
    n = runio.batch_of(data, inputs, time, where=args.input)
    fn, chunk, pad = runio.chunk_runner(model, args.record, batched=n is not None, chunk=args.chunk,
                                        devices=args.devices)
    progress = n is not None and (args.progress or sys.stderr.isatty())
    outputs, recorded = runio.run_chunks(fn, data if n is not None else {k: v[None] for k, v in data.items()},
                                         n or 1, chunk, pad, progress)
    results = {k: v if n is not None else v[0] for k, v in {**outputs, **recorded}.items()}
    runio.write_results(out, results, model.dt, batched=n is not None)
    print(f"wrote {out}: " + "; ".join(f"{k} {list(v.shape)}" for k, v in results.items()))
    if args.plot:
        runio.plot(args.plot, {k: v[0] if n is not None else v for k, v in results.items()}, model.dt)
        print(f"wrote {args.plot}")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"warning: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    handler = {"inspect": cmd_inspect, "passes": cmd_passes, "compile": cmd_compile, "run": cmd_run}[args.command]
    try:
        return handler(args)
    except CompileError as e:
        if debug:
            raise
        sys.stderr.write(f"error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in nircomp: still one line unless --debug
        if debug:
            raise
        sys.stderr.write(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)\n")
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
