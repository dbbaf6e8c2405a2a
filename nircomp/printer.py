"""The text, JSON and dot forms of a Graph: one walk, three renderings.

Text form, one line per node in topological order (back edges ignored, ties by name)::

    graph braille  inputs: %input  outputs: %output
      %fc1 = Linear(%input) : [12] -> [38] {weight=f32[38,12]#9c2e}
      %lif1 = CubaLIF(%fc1, %rec@prev) : [38] -> [38] {tau_syn=0.002 homog, ...}

Arrays print as ``dtype[shape]#hash`` (so a golden file catches a weight change without dumping it),
homogeneous arrays as ``value homog``, small integer arrays as lists, scalars by numpy's shortest repr.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from nircomp.ir import Graph, Op

_DTYPE = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16", "int32": "i32",
          "int64": "i64", "uint8": "u8", "bool": "bool"}


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    arr = np.asarray(value)
    if arr.ndim == 0:
        return str(arr[()])
    if arr.dtype.kind in "iub" and arr.size <= 4:
        return "[" + ", ".join(str(v) for v in arr.reshape(-1).tolist()) + "]"
    if arr.size > 1 and np.all(arr == arr.reshape(-1)[0]):
        return f"{str(arr.reshape(-1)[0])} homog"
    if arr.size == 1:
        return f"[{str(arr.reshape(-1)[0])}]"
    digest = hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=2).hexdigest()
    dtype = _DTYPE.get(arr.dtype.name, arr.dtype.name)
    return f"{dtype}[{','.join(map(str, arr.shape))}]#{digest}"


def _shape(shape) -> str:
    return "?" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def _operands(graph: Graph, name: str) -> list[tuple[str, bool]]:
    g = graph.nx
    return sorted(((p, bool(g.edges[p, name].get("back"))) for p in g.predecessors(name)))


def format_node(graph: Graph, name: str, op: Op | None = None) -> str:
    """One node as ``%name = Kind(%a, %b@prev) : [in] -> [out] {params}``."""
    op = op or graph.op(name)
    args = ", ".join(f"%{p}" + ("@prev" if back else "") for p, back in _operands(graph, name))
    if op.kind in ("Input", "Output"):
        types = _shape(op.output_shape if op.output_shape is not None else
                       tuple(np.reshape(op.params["shape"], -1).tolist()))
        params = {}
    else:
        types = f"{_shape(op.input_shape)} -> {_shape(op.output_shape)}"
        params = {k: format_value(v) for k, v in op.params.items()}
    extra = []
    if op.origin and tuple(op.origin) != (name,):
        extra.append(f"origin=[{', '.join(op.origin)}]")
    extra += [f"{k}={v}" for k, v in sorted(op.attrs.items())]
    inner = ", ".join([f"{k}={v}" for k, v in params.items()] + extra)
    return f"%{name} = {op.kind}({args}) : {types}" + (f" {{{inner}}}" if inner else "")


def format_text(graph: Graph) -> str:
    header = f"graph {graph.name}  inputs: {' '.join('%' + n for n in graph.inputs())}" \
             f"  outputs: {' '.join('%' + n for n in graph.outputs())}"
    if graph.attrs:
        header += "  {" + ", ".join(f"{k}={v}" for k, v in sorted(graph.attrs.items())) + "}"
    return "\n".join([header] + ["  " + format_node(graph, n) for n in graph.order()])


def to_json(graph: Graph) -> dict[str, Any]:
    nodes = []
    for name in graph.order():
        op = graph.op(name)
        nodes.append({
            "name": name, "kind": op.kind,
            "inputs": [{"name": p, "back": back} for p, back in _operands(graph, name)],
            "input_shape": None if op.input_shape is None else list(op.input_shape),
            "output_shape": None if op.output_shape is None else list(op.output_shape),
            "params": {k: format_value(v) for k, v in op.params.items()},
            "origin": list(op.origin), "attrs": {k: _jsonable(v) for k, v in op.attrs.items()},
        })
    return {"name": graph.name, "inputs": graph.inputs(), "outputs": graph.outputs(),
            "attrs": {k: _jsonable(v) for k, v in graph.attrs.items()}, "nodes": nodes}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def format_dot(graph: Graph) -> str:
    lines = [f'digraph "{_esc(graph.name)}" {{', "  node [shape=box, fontname=monospace];"]
    for name in graph.order():
        op = graph.op(name)
        label = f"{name}\\n{op.kind} {_shape(op.input_shape)} -> {_shape(op.output_shape)}"
        shape = ', shape=ellipse' if op.kind in ("Input", "Output") else ""
        lines.append(f'  "{_esc(name)}" [label="{_esc(label, keep_newline=True)}"{shape}];')
    for u, v, back in graph.nx.edges(data="back"):
        style = ' [style=dashed, label="@prev"]' if back else ""
        lines.append(f'  "{_esc(u)}" -> "{_esc(v)}"{style};')
    lines.append("}")
    return "\n".join(lines)


def _esc(s: str, keep_newline: bool = False) -> str:
    s = s.replace("\\n", "\0") if keep_newline else s
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    return s.replace("\0", "\\n")


def format_graph(graph: Graph, fmt: str = "text") -> str:
    if fmt == "text":
        return format_text(graph)
    if fmt == "json":
        return json.dumps(to_json(graph), indent=1)
    if fmt == "dot":
        return format_dot(graph)
    raise ValueError(f"unknown format {fmt!r}; expected text, json or dot")
