"""backend="source": the step schedule rendered through jinja2 into a standalone, readable Python module.

`compile(..., backend="source", out=DIR)` writes DIR/model.py, which imports only jax, numpy and the
standard-library modules the kernels import, and DIR/weights.npz beside it; it then imports the module
and returns its `run` as the Program's model. `run(x, record=())` has the contract of StepModel.__call__
and gives bitwise the outputs of the Equinox backend (same schedule, parameters and kernels).
Backend options: out (a directory, or the path of the module file; default: a new temporary directory)
and module (the module's file name without .py, default "model").

Rules:
- Op semantics are written once: the module embeds the text of nircomp/kernels/step.py (and of
  nircomp/kernels/connectivity.py when lower-connectivity chose a kernel); the template
  templates/module.py.j2 is glue that calls the kernels exactly as nircomp/runner.py does.
- Text from the NIR file reaches the module only as `Namespace.identifier(name)` (an ASCII identifier
  that is no keyword, builtin or name the module uses otherwise, one per name) or as a repr() literal;
  nothing from the file is executed. The rendered text is parsed before it is written, and every name
  in it must be a generated identifier or one of the module's own names (`TEMPLATE_NAMES`, the names
  of the kernels' text, keywords and builtins).
- NODE_OF_LINE in the module maps each line that computes a node to the node's name; `run` adds a note
  naming it to an exception raised from such a line.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib.util
import inspect
import keyword
import re
import tempfile
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from nircomp.backends import Capabilities, Lowered, register_backend
from nircomp.backends.equinox import STEP_KINDS, EquinoxBackend, StepModel
from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.kernels import connectivity
from nircomp.kernels import step as kernels
from nircomp.runner import _NEURONS
from nircomp.schedule import Entry, Schedule

KERNEL_IMPORTS = frozenset({"jax", "numpy", "math", "functools"})  # top-level modules the kernels may import
GLUE_IMPORTS = ("import jax", "import jax.numpy as jnp", "import numpy as np")
# kinds the template renders (each stage entry's kind: fused kinds are split into dense + neuron entries)
RENDERED_KINDS = frozenset({"Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten",
                            "Threshold", "Identity", "Output", "Delay", *_NEURONS})
# every name the template itself binds or reads (a node's identifier never equals one of them)
TEMPLATE_NAMES = frozenset("""
    DT WEIGHTS_FILE Semantics SEM INPUTS OUTPUTS NAMES LOST NEEDED PARAMS NODE_OF_LINE run _run _inputs
    _entry_of _failing_node _load_weights _p params values dtype emit keep record x y n k f err tb node
    names missing data arr want got hint inputs name keys folder carry xs state prev out step ys z v0 i0 _
    __file__ __slots__
""".split())  # noqa: SIM905 (a list of names, not data)
_TAG = re.compile(r"\x00(\d+)\x00")


class Namespace:
    """Python identifiers for names from a NIR file (torch.fx's `_Namespace`, made ASCII).

    `identifier(name, prefix)` keeps the name's letters (accents dropped: ASCII only), digits and single
    underscores (for runs of other characters), prefixes a leading digit with `n`, avoids
    keywords, builtins, dunder names and the reserved names, and appends `_1`, `_2`, ... until it is
    unique; the same (name, prefix) always gets the same identifier.
    """

    def __init__(self, reserved: Iterable[str] = ()):
        self._taken = set(reserved)
        self._given: dict[tuple[str, str], str] = {}

    def identifier(self, name: str, prefix: str = "") -> str:
        key = (prefix, name)
        if key not in self._given:
            ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
            base = prefix + (re.sub(r"[^0-9A-Za-z]+", "_", ascii_name).strip("_") or "node")
            if base[0].isdigit():
                base = "n" + base
            ident, k = base, 0
            while ident in self._taken or not _free(ident):
                k += 1
                ident = f"{base}_{k}"
            self._taken.add(ident)
            self._given[key] = ident
        return self._given[key]

    @property
    def given(self) -> frozenset[str]:
        return frozenset(self._given.values())


def _free(ident: str) -> bool:
    return not (keyword.iskeyword(ident) or keyword.issoftkeyword(ident) or hasattr(builtins, ident)
                or ident.startswith("__"))


def literal(value: Any) -> str:
    """Python source for a plain value (None, bool, int, float, str, tuples/lists of them), via repr()."""
    if value is None or isinstance(value, (bool, str)):
        return repr(value)
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return repr(value) if np.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, (tuple, list)):
        items = [literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise CompileError(f"backend 'source' cannot write a {type(value).__name__} as a literal: {value!r}")


def split_kernels(module=kernels) -> tuple[list[str], str]:
    """(lines of the import block, body) of a kernel module's text: the body is everything after it.

    Imports of sibling kernel modules (`from nircomp.kernels.step import dense`) are left out of the block:
    the module embeds their text too. Raises CompileError when the module imports anything but
    KERNEL_IMPORTS and nircomp.kernels, or imports below its top.
    """
    text = inspect.getsource(module)
    tree = ast.parse(text)
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    head = []
    while body and isinstance(body[0], (ast.Import, ast.ImportFrom)):
        head.append(body.pop(0))
    lines = text.splitlines()
    sibling = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module.startswith("nircomp.kernels.") and node in head:
                sibling.append(node)
                continue
            bad = [m for m in mods if m.split(".")[0] not in KERNEL_IMPORTS]
            if bad or node not in head:
                raise CompileError(f"{module.__name__} line {node.lineno}: kernels may import only "
                                   f"{', '.join(sorted(KERNEL_IMPORTS))} and nircomp.kernels, at the top of "
                                   "the module")
    drop = {i for node in sibling for i in range(node.lineno - 1, node.end_lineno)}
    block = [lines[i] for i in range(head[0].lineno - 1, head[-1].end_lineno) if i not in drop] if head else []
    while block and not block[-1].strip():
        block.pop()
    start = head[-1].end_lineno if head else 0
    return block, "\n".join(lines[start:]).strip("\n")


def _kernel_text(schedule: Schedule) -> tuple[list[str], str, list[str]]:
    """(import lines, text, source files) of the kernels a module embeds: nircomp/kernels/step.py, and
    nircomp/kernels/connectivity.py after it when an entry runs a connectivity kernel."""
    sparse = any(dict(e.static).get("connectivity") for e in schedule.entries)
    modules = [kernels, connectivity] if sparse else [kernels]
    imports, bodies = [], []
    for module in modules:
        block, body = split_kernels(module)
        imports += [line for line in block if line not in imports or not line.strip()]
        bodies.append(body)
    return imports, "\n\n\n".join(bodies), [f"nircomp/kernels/{m.__name__.rsplit('.', 1)[1]}.py" for m in modules]


def _names_in(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.alias):
            found.add((node.asname or node.name).split(".")[0])
    return found


class SourceBackend:
    """Lowers a graph for the step solver to a generated module and its weights (see the module doc)."""

    name = "source"
    capabilities = Capabilities(solvers=frozenset({"step"}), kinds=STEP_KINDS)

    def lower(self, graph: Graph, options: Mapping[str, Any]) -> Lowered:
        model = EquinoxBackend().lower(graph, options)
        module_path = _module_path(options.get("out"), options.get("module", "model"))
        text, weights = render(model, graph.source)
        module_path.parent.mkdir(parents=True, exist_ok=True)
        weights_path = module_path.parent / "weights.npz"
        np.savez(weights_path, **weights)
        module_path.write_text(text, encoding="utf-8")
        module = load_module(module_path)
        return Lowered(module.run, {"module": module_path, "weights": weights_path})


def _module_path(out: Any, module: str) -> Path:
    if not (isinstance(module, str) and module.isidentifier() and _free(module)):
        raise CompileError(f"backend 'source': module={module!r} is not a usable module name")
    if out is None:
        out = tempfile.mkdtemp(prefix="nircomp-source-")
    out = Path(out)
    return out if out.suffix == ".py" else out / f"{module}.py"


def load_module(path: Path):
    """Import a generated module from its file (under a private name: nothing is added to sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"nircomp_generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(model: StepModel, source: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """The module text and its weights ({key in weights.npz: array}) for a StepModel."""
    schedule, sem = model.schedule, model.semantics
    imports, body, kernel_files = _kernel_text(schedule)
    fields = [f.name for f in dataclasses.fields(sem)]  # attributes of the module's Semantics class
    reserved = (TEMPLATE_NAMES | set(fields) | _names_in(ast.parse(body))
                | _names_in(ast.parse("\n".join(imports))))
    ns = Namespace(reserved)
    by = schedule._by_name
    stage_fns = [ns.identifier(f"stage_{i}") for i in range(1, len(schedule.stages) + 1)]
    tagged: list[str] = []  # entry of each line tag

    def mark(e) -> str:
        tagged.append(e["node_name"])
        return f"\x00{len(tagged) - 1}\x00"

    dense_of = {entry: name for name, entry in schedule.names if entry != by[entry].node}  # split Dense<neuron>
    views = {e.name: _view(e, ns, dense_of.get(e.name, e.node)) for e in schedule.entries}
    weights, weight_items = _weights(model.params, ns)
    stages = [_stage(i, fn, st, schedule, views, sem, ns)
              for i, (fn, st) in enumerate(zip(stage_fns, schedule.stages), start=1)]
    stage_of = {n: i for i, st in enumerate(schedule.stages) for n in st.entries}
    needed = set(schedule.outputs) | {src for e in schedule.entries for src, _ in e.inputs
                                      if stage_of.get(src) != stage_of.get(e.name)}
    missing = [line for line in GLUE_IMPORTS if line not in imports]
    if missing:  # the kernels import these themselves; should they stop, a group of their own
        imports = imports + [""] + missing
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    text = env.get_template("module.py.j2").render(
        imports=imports, kernels=body, kernel_files=", ".join(kernel_files), mark=mark,
        source_r=literal(Path(source).name if source else "a nir.NIRGraph"), dt_r=literal(model.dt),
        semantics=[(f, literal(getattr(sem, f))) for f in fields],
        inputs=[(literal(n), literal(by[n].shape)) for n in schedule.inputs], outputs_r=literal(schedule.outputs),
        names=[(literal(k), literal(v)) for k, v in schedule.names],
        lost=[(literal(k), literal(v)) for k, v in schedule.lost],
        needed_r="frozenset(" + literal(sorted(needed)) + ")" if needed else "frozenset()",
        weights=weight_items, stages=stages, node_of_line="\x00TABLE\x00")
    lines, node_of_line = [], {}
    for number, line in enumerate(text.split("\n"), start=1):
        tags = _TAG.findall(line)
        if tags:
            node_of_line[number] = tagged[int(tags[-1])]
            line = _TAG.sub("", line).rstrip()
        lines.append(line)
    table = "{\n" + "".join(f"    {k}: {literal(v)},\n" for k, v in node_of_line.items()) + "}"
    text = "\n".join(lines).replace("\x00TABLE\x00", table)
    _check(text, ns, reserved)
    return text, weights


def _view(e: Entry, ns: Namespace, nir_name: str) -> dict[str, Any]:
    """What the template needs of an entry: identifiers, literals and the kind; `nir_name` names it in
    NODE_OF_LINE (the IR node, or for the dense half of a fused node the NIR node it came from)."""
    if e.kind not in RENDERED_KINDS and e.kind != "Input":
        raise CompileError(f"backend 'source' has no template for op kind {e.kind}", nodes=[e.node])
    uses_p = e.kind not in ("Identity", "Output", "Input", "SumPool2d", "AvgPool2d", "Flatten", "Delay")
    view = {"name": literal(e.name), "node": literal(e.node), "node_name": nir_name, "kind": e.kind,
            "stateful": e.stateful, "var": ns.identifier(e.name), "params": literal(e.params),
            "p": ns.identifier(e.name, "p_") if uses_p else None, "shape": literal(e.shape),
            "in_shape": literal(e.in_shape), "static": {k: literal(v) for k, v in e.static},
            "kernel": _NEURONS[e.kind].__name__ if e.kind in _NEURONS else None}
    if e.stateful:
        view |= {"state_var": ns.identifier(e.name, "state_"), "init_var": ns.identifier(e.name, "init_")}
    view["kind_literal"] = repr(e.kind)
    view["depth"] = max(e.opt("steps")) + 1 if e.kind == "Delay" else 0
    return view


def _weights(params: Mapping[str, Mapping[str, Any]], ns: Namespace):
    """({npz key: array}, [(node literal, [(parameter literal, key literal, dtype literal)])]).

    Keys are `identifier.parameter`. A dtype .npy cannot hold (bfloat16) is stored as float32, which holds
    it exactly, with its name to cast back to; the dtype literal is None otherwise."""
    arrays, items = {}, []
    for node, ps in params.items():
        entries = []
        for param, value in ps.items():
            key = f"{ns.identifier(node)}.{re.sub(r'[^0-9A-Za-z_]', '_', param)}"
            while key in arrays:
                key += "_"
            arr = np.asarray(value)
            exotic = arr.dtype.kind == "V"  # ml_dtypes (bfloat16, float8_*): no .npy descr
            arrays[key] = arr.astype(np.float32) if exotic else arr
            entries.append((literal(param), literal(key), literal(arr.dtype.name) if exotic else None))
        items.append((literal(node), entries))
    return arrays, items


def _stage(index: int, fn: str, stage, schedule: Schedule, views, sem, ns: Namespace) -> dict[str, Any]:
    """A stage for the template; for a scan, its step's statements in runner._advance's order."""
    by = schedule._by_name
    entries = [views[n] for n in stage.entries]
    comment = "\n#   ".join(textwrap.wrap(", ".join(f"{v['name']} ({v['kind']})" for v in entries), 100,
                                          break_long_words=False, break_on_hyphens=False))
    if stage.kind == "seq":
        e = by[stage.entries[0]]
        x = " + ".join(f"values[{literal(s)}]" for s, _ in e.inputs)
        return {"kind": "seq", "index": index, "fn": fn, "comment": comment, "entries": entries, "x": x}
    members = set(stage.entries)
    external = sorted({s for n in stage.entries for s, _ in by[n].inputs if s not in members})
    back = sorted({s for n in stage.entries for s, b in by[n].inputs if b})
    if not set(back) <= members:
        raise CompileError(f"back edge from outside its scan: {', '.join(sorted(set(back) - members))}")
    for n in back:
        views[n]["prev_var"] = ns.identifier(n, "prev_")
    early = [n for n in stage.entries if sem.fire_timing == "before-update" and by[n].kind in kernels.SPIKING]
    done, stepped, read_early = set(early), set(), set()  # computed / stepped entries, emissions read
    statements = []
    for n in [n for n in stage.entries if n not in early] + early:
        terms = []
        for src, is_back in by[n].inputs:
            if is_back and src not in early and n not in early:
                terms.append(f"prev[{literal(src)}]")
            elif src in done:
                terms.append(views[src]["var"])
                if src in early and src not in stepped:
                    read_early.add(src)
            elif src in external:
                terms.append(f"xs[{literal(src)}]")
            else:
                raise CompileError(f"entry {n!r} reads {src!r} before it is computed in its scan")
        statements.append({"op": "entry", "e": views[n], "x": " + ".join(terms)})
        done.add(n)
        stepped.add(n)
    # emissions of early neurons first; one nothing reads before the neuron steps would be dead code
    statements = [{"op": "emission", "e": views[n]} for n in early if n in read_early] + statements
    stateful = [v for v in entries if v["stateful"]]
    prevs = [views[n] for n in back]
    return {"kind": "scan", "index": index, "fn": fn, "comment": comment, "entries": entries,
            "back_sources": prevs, "statements": statements,
            "out": [(v["name"], v["var"]) for v in entries],
            "new_state": [(v["name"], v["state_var"]) for v in stateful],
            "new_prev": [(v["name"], v["var"]) for v in prevs],
            "init_state": [(v["name"], v["init_var"]) for v in stateful],
            "init_prev": [(v["name"], v["prev_var"]) for v in prevs],
            "xs": [(literal(s), f"values[{literal(s)}]") for s in external]}


def _check(text: str, ns: Namespace, reserved: frozenset[str]) -> None:
    """The rendered module parses, and every name in it is generated or the module's own."""
    tree = ast.parse(text)
    stray = _names_in(tree) - ns.given - reserved - set(dir(builtins))
    if stray:
        raise AssertionError(f"template uses names not in TEMPLATE_NAMES: {', '.join(sorted(stray))}")


register_backend(SourceBackend())
