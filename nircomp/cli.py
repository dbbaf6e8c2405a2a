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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nircomp", description="Compile NIR graphs to executable JAX.")
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
    return parser


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
    handler = {"inspect": cmd_inspect, "passes": cmd_passes}[args.command]
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
