"""Ahead-of-time artifacts: the jitted step model serialised with `jax.export`, run without the NIR file.

An artifact is a directory:
- `model.jaxexport`: the serialised `jax.export.Exported` of `f(params, inputs) -> (outputs, recorded)`,
  each a dict by NIR name, lowered for given input shapes: the time axis is symbolic ("T", any length)
  or fixed, with an optional leading batch axis (fixed size, or symbolic "B");
- `params.npz`: the parameters, arguments of the exported function (not constants folded into it, so
  the artifact computes exactly what the jitted Equinox module computes, bit for bit);
- `meta.json`: input/output/recorded names and shapes, dt, time and batch handling, platforms;
- optionally (`precompile`, fixed shapes only) `compiled.bin`: the XLA executable compiled for this
  machine, with its key in meta.json (jax/jaxlib version, platform, device, CPU); loaded instead of
  compiling when the key matches, else ignored (the portable export is always there).

`load_artifact(dir)` returns an `AotModel` (a callable like `StepModel`) without importing the
compiler's runner or kernels: nothing is traced again. The backend "aot" (`nircomp.compile(...,
backend="aot{input_shape=T,3 batch=8 record=lif1}", out=DIR)`) compiles, exports and loads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nircomp.backends import Capabilities, Lowered, inputs_by_name, register_backend
from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.ops import KINDS

FORMAT = "nircomp-aot"
VERSION = 1
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
FILES = {"exported": "model.jaxexport", "params": "params.npz", "meta": "meta.json"}
COMPILED = "compiled.bin"


# ----------------------------------------------------------------------------- shapes
def _dim(text: str, symbol: str, what: str, anything: str = "any length") -> int | str:
    text = text.strip()
    if text == symbol:
        return symbol
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CompileError(f"{what} {text!r} is " + (f"neither a positive integer nor {symbol!r} ({anything})"
                                                     if symbol else "not a positive integer"))
    return value


def parse_input_shapes(spec: str | Sequence[str] | None, inputs: Mapping[str, tuple[int, ...]]
                       ) -> int | str:
    """The time axis that `--input-shape` specs give for a graph with `inputs` (name -> per-step shape).

    A spec is `T,d1,...` (first the time axis: a positive integer or "T" for any length, then optionally
    the per-step shape, which must be the graph's), prefixed with `NAME=` for a graph with several Inputs
    (several specs, or one string with specs separated by ';'). All Inputs share one time axis.
    """
    if spec is None or spec == "" or spec == ():
        return "T"
    items = [s for s in (spec.split(";") if isinstance(spec, str) else spec) if s.strip()]
    times: dict[str, int | str] = {}
    for item in items:
        name, eq, dims = item.rpartition("=")
        name = name.strip()
        if not eq:
            if len(inputs) != 1:
                raise CompileError(f"the graph has {len(inputs)} inputs ({', '.join(inputs)}); give each input "
                                   f"shape as NAME=T,... (got {item!r})")
            name = next(iter(inputs))
        if name not in inputs:
            raise CompileError(f"--input-shape names unknown input {name!r}; the graph's inputs are "
                               f"{', '.join(inputs)}")
        parts = dims.split(",")
        times[name] = _dim(parts[0], "T", f"input shape {dims!r}: time axis")
        rest = [_dim(p, "", f"input shape {dims!r}: dimension") for p in parts[1:] if p.strip()]
        if rest and tuple(rest) != tuple(inputs[name]):
            raise CompileError(f"input shape {dims!r} for input {name!r} does not match the graph: expected "
                               f"T,{','.join(map(str, inputs[name]))} (time axis first)")
    if len(set(times.values())) > 1:
        raise CompileError(f"all inputs share one time axis; --input-shape gives {times}")
    return next(iter(times.values()), "T")


# ----------------------------------------------------------------------------- export
def export_model(model: Any, *, time: int | str = "T", batch: int | str | None = None,
                 record: Sequence[str] = (), platforms: Sequence[str] | None = None) -> tuple[bytes, dict, dict]:
    """Serialise a StepModel: returns (exported bytes, params {key: array}, meta).

    time: the time axis, an int or "T" (symbolic); batch: None (one sample per call), an int, or "B"
    (symbolic batch); record: NIR node names whose values the artifact also returns; platforms: the
    XLA platforms to lower for (default: the current one, e.g. ("cpu", "cuda") for both).
    """
    import jax
    import jax.numpy as jnp
    from jax import export

    unknown = [p for p in platforms or () if p not in PLATFORMS]
    if unknown:
        raise CompileError(f"unknown platform(s) {', '.join(unknown)}; jax.export lowers for {', '.join(PLATFORMS)}")
    entries = [model._entry_of(n) for n in record]  # unknown names raise CompileError here
    leaves, treedef = jax.tree_util.tree_flatten(model.params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(model.params)[0]]
    sched = model.schedule

    def f(params, xs):
        m = type(model)(jax.tree_util.tree_unflatten(treedef, params), sched, model.semantics, model.dt)
        y, rec = m(xs, record=list(record))
        return (y if isinstance(y, dict) else {sched.outputs[0]: y}), rec

    symbols = dict(zip(("B", "T"), export.symbolic_shape("B, T"), strict=True))
    lead = (() if batch is None else (symbols["B"] if batch == "B" else int(batch),)) + (
        symbols["T"] if time == "T" else int(time),)
    dtype = jnp.result_type(float)
    spec = {n: jax.ShapeDtypeStruct(lead + tuple(sched.entry(n).shape), dtype) for n in sched.inputs}
    fn = f if batch is None else jax.vmap(f, in_axes=(None, 0))
    try:
        exp = export.export(jax.jit(fn), platforms=platforms)(
            [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves], spec)
    except ValueError as e:  # e.g. an op without a lowering on one of the platforms
        raise CompileError(f"jax.export failed: {e}") from None
    shapes = {e.name: list(e.shape) for e in sched.entries}
    meta = {"format": FORMAT, "version": VERSION, "dt": model.dt, "time": time,
            "batch": batch, "dtype": str(np.dtype(dtype)), "platforms": list(exp.platforms),
            "inputs": {n: shapes[n] for n in sched.inputs}, "outputs": {n: shapes[n] for n in sched.outputs},
            "record": {n: shapes[e] for n, e in zip(record, entries, strict=True)},
            "params": paths, "semantics": model.semantics.describe(), "jax": jax.__version__}
    params = {f"p{i}": np.asarray(x) for i, x in enumerate(leaves)}
    return bytes(exp.serialize()), params, meta


def write_artifact(out: str | os.PathLike, blob: bytes, params: Mapping[str, np.ndarray], meta: dict
                   ) -> dict[str, Path]:
    """Write the three files of an artifact into directory `out` (created); returns them by role."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompileError(f"{out}: exists and is not a directory; an AOT artifact is a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = {role: out / name for role, name in FILES.items()}
    paths["exported"].write_bytes(blob)
    np.savez(paths["params"], **params)
    paths["meta"].write_text(json.dumps(meta, indent=1) + "\n")
    return paths


# ----------------------------------------------------------------------------- load and run
class AotModel:
    """A deserialised artifact: `model(x)` -> y, `model(x, record=[...])` -> (y, {name: array}), as
    StepModel; x is `[T, *shape]` (with a leading batch axis when exported with one) or {input: array}.
    Only nodes recorded at export time can be recorded."""

    def __init__(self, exported: Any, params: list[np.ndarray], meta: dict):
        import jax

        self.exported, self.params, self.meta = exported, params, meta
        self.dt: float = meta["dt"]
        self.inputs: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in meta["inputs"].items()}
        self.outputs: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in meta["outputs"].items()}
        self.recordable: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in meta["record"].items()}
        self._call = jax.jit(exported.call)
        self._exe: Any = None  # a loaded XLA executable for the artifact's fixed shapes, if any

    @property
    def batch(self) -> int | str | None:
        return self.meta["batch"]

    def lead(self) -> str:
        """The leading axes an input must have, as text: "[T, " / "[8, 100, " ..."""
        dims = ([] if self.batch is None else [str(self.batch)]) + [str(self.meta["time"])]
        return "[" + ", ".join(dims) + ", "

    def __call__(self, x, record: Sequence[str] | None = None):
        xs = self._inputs(x)
        unknown = [n for n in record or () if n not in self.recordable]
        if unknown:
            known = ", ".join(self.recordable) or "none"
            raise CompileError(f"cannot record {', '.join(map(repr, unknown))}: the artifact records only the "
                               f"nodes named at compile time ({known})", hint="compile with --record NODE")
        y, rec = (self._exe or self._call)(self.params, xs)
        y = next(iter(y.values())) if len(y) == 1 else y
        return y if record is None else (y, {n: rec[n] for n in record})

    @property
    def precompiled(self) -> bool:
        """Whether calls run a stored XLA executable (no compilation at all)."""
        return self._exe is not None

    def _tree(self):
        import jax

        lead = [d for d in (self.batch, self.meta["time"]) if d is not None]
        xs = {n: np.zeros(tuple(lead) + shape, self.meta["dtype"]) for n, shape in self.inputs.items()}
        return xs, jax.tree.structure(((self.params, xs), {})), jax.tree.structure(
            ({o: 0 for o in self.outputs}, {r: 0 for r in self.recordable}))

    def compile_here(self) -> bytes:
        """Compile for the artifact's fixed shapes on this machine; use it, and return it serialised."""
        from jax.experimental import serialize_executable

        if isinstance(self.meta["time"], str) or isinstance(self.batch, str):
            raise CompileError("precompiling needs fixed shapes: a number of steps (--input-shape N,...) and no "
                               "batch or a fixed --batch N")
        xs, _, _ = self._tree()
        self._exe = self._call.lower(self.params, xs).compile()
        blob, _, _ = serialize_executable.serialize(self._exe)
        return blob

    def load_compiled(self, blob: bytes) -> None:
        from jax.experimental import serialize_executable

        _, in_tree, out_tree = self._tree()
        self._exe = serialize_executable.deserialize_and_load(blob, in_tree, out_tree)

    def _inputs(self, x) -> dict[str, np.ndarray]:
        data = inputs_by_name(x, list(self.inputs), "artifact")
        n_lead = 1 + (self.batch is not None)
        fixed = [d for d in (self.batch, self.meta["time"]) if d is not None]
        out = {}
        for n, arr in data.items():
            arr = np.asarray(arr, dtype=self.meta["dtype"])
            want = self.inputs[n]
            lead = arr.shape[:n_lead]
            ok = arr.ndim == n_lead + len(want) and arr.shape[n_lead:] == want and all(
                isinstance(w, str) or w == g for w, g in zip(fixed, lead, strict=True))
            if not ok:
                raise CompileError(f"input '{n}' has shape {list(arr.shape)}, expected {self.lead()}"
                                   f"{', '.join(map(str, want))}]")
            out[n] = arr
        return out


def load_artifact(path: str | os.PathLike) -> AotModel:
    """Load an artifact directory written by `write_artifact` (or `nircomp compile --aot`)."""
    from jax import export

    path = Path(path)
    paths = {role: path / name for role, name in FILES.items()}
    if not paths["meta"].is_file():
        raise CompileError(f"{path}: not an AOT artifact (no {FILES['meta']})",
                           hint="write one with `nircomp compile FILE -o DIR --aot`")
    try:
        meta = json.loads(paths["meta"].read_text())
    except ValueError as e:
        raise CompileError(f"{paths['meta']}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CompileError(f"{paths['meta']}: not a {FORMAT} v{VERSION} artifact "
                           f"(format={meta.get('format')!r}, version={meta.get('version')!r})")
    for role in ("exported", "params"):
        if not paths[role].is_file():
            raise CompileError(f"{path}: incomplete AOT artifact, {FILES[role]} is missing")
    import jax

    if jax.default_backend() not in meta["platforms"]:
        raise CompileError(f"{path}: compiled for {', '.join(meta['platforms'])}, but JAX runs on "
                           f"{jax.default_backend()} here", hint="compile with --platforms naming both")
    try:
        exported = export.deserialize(bytearray(paths["exported"].read_bytes()))
    except Exception as e:  # noqa: BLE001  (a corrupt file, or one from an incompatible jax)
        raise CompileError(f"{paths['exported']}: cannot deserialise ({type(e).__name__}: {e}); written with "
                           f"jax {meta.get('jax')}, this is jax {jax.__version__}") from None
    with np.load(paths["params"]) as z:
        params = [z[f"p{i}"] for i in range(len(meta["params"]))]
    model = AotModel(exported, params, meta)
    if meta.get("compiled") and (path / COMPILED).is_file() and meta["compiled"] == host_key():
        try:
            model.load_compiled((path / COMPILED).read_bytes())
        except Exception:  # noqa: BLE001  (stale or foreign: the portable export still runs)
            model._exe = None
    return model


def host_key() -> dict[str, str]:
    """What a stored XLA executable depends on: jax/jaxlib versions, platform, device and CPU features."""
    import hashlib
    import platform

    import jax
    import jaxlib

    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "platform": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "machine": platform.machine(),
            "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:16]}


# ----------------------------------------------------------------------------- the "aot" backend
def build(model: Any, *, input_shape: str | Sequence[str] | None = None, batch: int | str | None = None,
          record: Sequence[str] = (), platforms: Sequence[str] | None = None,
          out: str | os.PathLike | None = None, source: str | None = None, precompile: bool = False) -> Lowered:
    """Export a StepModel (see `parse_input_shapes` and `export_model` for the options), write the artifact
    to `out` if given, and load it back: the AotModel and the written files. precompile: also compile it
    for this machine and store the executable (fixed shapes only; see the module doc)."""
    from jax import export

    inputs = {n: tuple(model.schedule.entry(n).shape) for n in model.schedule.inputs}
    time = parse_input_shapes(input_shape, inputs)
    if batch is not None:
        batch = _dim(str(batch), "B", "batch", "any size")
    blob, params, meta = export_model(model, time=time, batch=batch, record=record, platforms=platforms or None)
    meta["source"] = source
    loaded = AotModel(export.deserialize(bytearray(blob)), list(params.values()), meta)
    compiled = loaded.compile_here() if precompile else None
    if compiled is not None:
        meta["compiled"] = host_key()
    artifacts = write_artifact(out, blob, params, meta) if out is not None else {}
    if compiled is not None and out is not None:
        artifacts["compiled"] = Path(out) / COMPILED
        artifacts["compiled"].write_bytes(compiled)
    return Lowered(loaded, artifacts)


def _opt(options: Mapping[str, Any], key: str) -> Any:
    value = options.get(key)
    return None if isinstance(value, str) and value.lower() in ("", "none") else value


def _split(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(v for v in value.split(",") if v) if isinstance(value, str) else tuple(value)


class AotBackend:
    """Lowers for the step solver, exports with `jax.export` and loads the artifact back.

    Options (spec text or Python values): input_shape ("T,3", "100", "xa=T,3;xb=T,2"; default: any
    length), batch (an int, "B" for any, or none), record (node names, comma separated), platforms
    ("cpu,cuda"; default: the current one), precompile (true: store this machine's XLA executable; fixed
    shapes only), out (a directory to write the artifact to).
    """

    name = "aot"
    capabilities = Capabilities(solvers=frozenset({"step"}), kinds=frozenset(KINDS))

    def lower(self, graph: Graph, options: Mapping[str, Any]) -> Lowered:
        from nircomp.backends.equinox import EquinoxBackend

        known = {"dt", "solver", "semantics", "dtype", "schedule", "input_shape", "batch", "record", "platforms",
                 "precompile", "out"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CompileError(f"unknown aot backend option(s) {', '.join(unknown)}; options: input_shape, batch, "
                               "record, platforms, precompile, out")
        model = EquinoxBackend().lower(graph, options)
        return build(model, input_shape=_opt(options, "input_shape"), batch=_opt(options, "batch"),
                     record=_split(_opt(options, "record")), platforms=_split(_opt(options, "platforms")),
                     out=_opt(options, "out"), source=str(graph.source) if graph.source else None,
                     precompile=str(_opt(options, "precompile") or False).lower() in ("true", "1", "yes"))


register_backend(AotBackend())
