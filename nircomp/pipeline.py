"""Passes, pipelines and the pass manager.

A pass is a function ``(graph, ctx, *, option=default, ...) -> Graph`` registered with
`@register_pass("name")`; its keyword-only parameters are its typed options and the first line of its
docstring its summary. A pipeline is a string in the MLIR/xDSL form
``verify,infer-shapes,select-solver{solver=auto}`` (comma between passes, space between options, comma
inside a list value); `Pipeline.parse` gives its list of `BoundPass` and `str()` gives the string back.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import inspect
import time
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol

from nircomp.errors import CompileError, PipelineError
from nircomp.ir import Graph


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class OptionInfo:
    """One typed pass option, read from a keyword-only parameter of the pass function."""

    name: str
    type: Any
    default: Any

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else None

    def parse(self, text: str, pass_name: str) -> Any:
        try:
            return _parse_value(self.type, text)
        except ValueError as e:
            raise PipelineError(f"option {self.name}={text!r}: {e}", pass_name=pass_name) from None

    def format(self, value: Any) -> str:
        if isinstance(value, tuple):
            return ",".join(self.format(v) for v in value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def describe(self) -> str:
        kind = "|".join(map(str, self.choices)) if self.choices else getattr(self.type, "__name__", str(self.type))
        return f"{self.name}={self.format(self.default)} ({kind})"


def _parse_value(t: Any, text: str) -> Any:
    """`text` as a value of type `t`: bool, int, float, str, Literal[...], tuple[X, ...] or X | None ('none')."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Literal:
        by_text = {str(c): c for c in args}
        if text not in by_text:
            raise ValueError(f"expected one of {', '.join(by_text)}")
        return by_text[text]
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        if text.lower() == "none":
            return None
        rest = [a for a in args if a is not type(None)]
        return _parse_value(rest[0] if len(rest) == 1 else str, text)
    if origin is tuple:
        return tuple(_scalar((args or (str,))[0], v) for v in text.split(",") if v)
    return _scalar(t, text)


def _scalar(t: Any, text: str) -> Any:
    if t is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if t in (int, float):
        try:
            return t(text)
        except ValueError:
            raise ValueError(f"expected {t.__name__}") from None
    return text


# --------------------------------------------------------------------------- registry
PassFn = Callable[..., Graph]


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its name, function, one-line summary and typed options."""

    name: str
    fn: PassFn
    options: tuple[OptionInfo, ...]

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n", 1)[0]

    @property
    def origin(self) -> str:
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def bind(self, **options: Any) -> BoundPass:
        known = {o.name for o in self.options}
        for k in options:
            if k not in known:
                raise PipelineError(f"unknown option {k!r}" + _did_you_mean(k, known)
                                    + (f"; options: {', '.join(sorted(known))}" if known else "; it takes no options"),
                                    pass_name=self.name)
        return BoundPass(self, tuple(sorted(options.items())))


@dataclass(frozen=True)
class BoundPass:
    """A pass with option values: the element of a pipeline. `str()` is its pipeline-string form."""

    info: PassInfo
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.info.name

    def __str__(self) -> str:
        if not self.options:
            return self.name
        by_name = {o.name: o for o in self.info.options}
        return self.name + "{" + " ".join(f"{k}={by_name[k].format(v)}" for k, v in self.options) + "}"

    def __call__(self, graph: Graph, ctx: PassContext) -> Graph:
        return self.info.fn(graph, ctx, **dict(self.options))


PASSES: dict[str, PassInfo] = {}


def register_pass(name: str) -> Callable[[PassFn], PassFn]:
    """Register a pass under `name`; a second registration of the same name is an error."""

    def deco(fn: PassFn) -> PassFn:
        hints = typing.get_type_hints(fn, include_extras=False)
        opts = tuple(OptionInfo(p.name, hints.get(p.name, str), p.default)
                     for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY)
        info = PassInfo(name, fn, opts)
        if name in PASSES and PASSES[name].origin != info.origin:
            raise CompileError(f"pass {name!r} registered twice: {PASSES[name].origin} and {info.origin}")
        PASSES[name] = info
        return fn

    return deco


def get_pass(name: str) -> PassInfo:
    load_passes()
    try:
        return PASSES[name]
    except KeyError:
        raise PipelineError(f"unknown pass {name!r}" + _did_you_mean(name, PASSES)
                            + "; `nircomp passes` lists them") from None


def load_passes() -> dict[str, PassInfo]:
    """The registry with the built-in passes and every plug-in of the `nircomp.passes` entry-point group."""
    import nircomp.passes  # noqa: F401  (registers the built-ins)
    from nircomp.plugins import load_plugins

    load_plugins("nircomp.passes")
    return PASSES


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- pipelines
class Pipeline(tuple):
    """A parsed pipeline: a tuple of BoundPass whose `str()` is the canonical pipeline string."""

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        """The pipeline of a string; "" is the empty pipeline, an empty entry ("a,,b") is an error."""
        text = text.strip()
        if not text:
            return cls()
        parts = _split_top(text)
        if any(not part.strip() for part in parts):
            raise PipelineError(f"empty pass name in pipeline {text!r} (a stray comma?)")
        return cls(_parse_one(part) for part in parts)

    def __str__(self) -> str:
        return ",".join(str(p) for p in self)

    def __add__(self, other: Iterable[BoundPass]) -> Pipeline:
        return Pipeline(tuple(self) + tuple(other))


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unbalanced '}}' in pipeline {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise PipelineError(f"unbalanced '{{' in pipeline {text!r}")
    parts.append("".join(cur))
    return parts


def _parse_one(text: str) -> BoundPass:
    text = text.strip()
    name, brace, rest = text.partition("{")
    name = name.strip()
    info = get_pass(name)
    options: dict[str, Any] = {}
    if brace:
        if not rest.endswith("}"):
            raise PipelineError(f"expected '}}' at the end of {text!r}", pass_name=name)
        by_name = {o.name: o for o in info.options}
        for item in rest[:-1].split():
            key, eq, value = item.partition("=")
            if not eq:
                raise PipelineError(f"option {item!r} is not of the form key=value", pass_name=name)
            if key not in by_name:
                info.bind(**{key: None})  # raises the unknown-option error with candidates
            options[key] = by_name[key].parse(value, name)
    return info.bind(**options)


@functools.cache
def _pipelines_toml() -> str:
    return resources.files("nircomp").joinpath("pipelines.toml").read_text()


def named_pipelines() -> dict[str, dict[str, Any]]:
    """The named pipelines of `nircomp/pipelines.toml` (one table per solver); the file is read once."""
    return tomllib.loads(_pipelines_toml())


def resolve_pipeline(pipeline: str | Sequence[BoundPass] | None, solver: str = "auto") -> Pipeline:
    """A Pipeline from a string, a list of BoundPass, or None (the solver's named pipeline)."""
    if pipeline is None:
        table = named_pipelines()
        if solver not in table:
            raise PipelineError(f"no named pipeline for solver {solver!r}" + _did_you_mean(solver, table)
                                + f"; known: {', '.join(table)}")
        pipeline = table[solver]["passes"]
    if isinstance(pipeline, str):
        return Pipeline.parse(pipeline)
    return Pipeline(pipeline)


def solver_requirements(solver: str) -> Pipeline:
    """The check passes a solver needs, as declared in pipelines.toml."""
    table = named_pipelines().get(solver, {})
    return Pipeline.parse(",".join(table.get("requires", [])))


# --------------------------------------------------------------------------- context and manager
class Instrument(Protocol):
    def before_pass(self, p: BoundPass, graph: Graph, ctx: PassContext) -> None: ...

    def after_pass(self, p: BoundPass, graph: Graph, ctx: PassContext, seconds: float) -> None: ...


@dataclass
class PassContext:
    """What a pass may read (options, source file) and the instruments watching the run.

    Passes explain what they did with `ctx.note(...)`; the ChangeLog instrument files the notes
    under the pass in the log.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    instruments: Sequence[Instrument] = ()
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def error(self, cls: type[CompileError], message: str, *, nodes: Sequence[str] = (),
              hint: str | None = None) -> CompileError:
        """A located error of the running pass (the pass manager fills in the pass name)."""
        return cls(message, nodes=nodes, hint=hint, source=self.source)


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector during a compile step (a context manager and decorator).

    On a large graph, loading and the passes create tens of thousands of objects that live to the end of
    the step; the full collections they trigger each walk the whole heap, so with the collector on,
    compile time grows faster than the graph (a 30 000-node graph: four full collections, a quarter of
    the pipeline's time; benchmarks/RESULTS.md). Reference counting still frees acyclic garbage at once;
    cycles wait for the first collection after the step. The previous state is restored on exit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@gc_paused()
def run_pipeline(graph: Graph, pipeline: Pipeline, ctx: PassContext) -> Graph:
    """Run each pass in order under the context's instruments; every failure becomes a CompileError
    naming the pass and the passes before it."""
    if ctx.source is None:
        ctx.source = graph.source
    for p in pipeline:
        for inst in ctx.instruments:
            inst.before_pass(p, graph, ctx)
        ctx.notes = []
        start = time.perf_counter()
        try:
            graph = p(graph, ctx)
        except CompileError as e:
            e.pass_name = e.pass_name or str(p.name)
            e.source = e.source or ctx.source
            e.previous_passes = e.previous_passes or tuple(ctx.history)
            raise
        except Exception as e:
            raise CompileError(f"internal error: {type(e).__name__}: {e}", pass_name=p.name, source=ctx.source,
                               previous_passes=ctx.history,
                               hint="please report this with the file; --debug shows the traceback") from e
        seconds = time.perf_counter() - start
        for inst in ctx.instruments:
            inst.after_pass(p, graph, ctx, seconds)
        ctx.history.append(str(p))
    return graph
