"""Load and save: `.nir` files and `nir.NIRGraph` objects to and from the IR.

Both sources go through one path: a nested dict in the layout of NIR's HDF5 files
(``{"type": "NIRGraph", "nodes": {...}, "edges": [...]}``) becomes a flat `Graph`. Nested graphs are
flattened to dotted names; their Input/Output nodes become ports recorded on the edges that pass
through them (`via`), so `save` can nest the graph again. Reading is lenient where real exports need
it and says so: every repair is a `LoadWarning` naming the node; everything else is a `LoadError`
naming the file and node. No raw h5py or nir exception escapes.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nircomp.errors import CompileError, LoadError, LoadWarning
from nircomp.h5guard import damaged_global_heap
from nircomp.ir import Graph, Op
from nircomp.ops import KINDS, NIR_KINDS
from nircomp.pipeline import gc_paused
from nircomp.shapes import infer_shapes

PORT_KINDS = ("Input", "Output")


# --------------------------------------------------------------------------- public API
@gc_paused()
def load(source: Any, *, name: str | None = None) -> Graph:
    """A `.nir` file (str | Path) or a `nir.NIRGraph` as a flat IR Graph with shapes inferred."""
    is_path = isinstance(source, (str, os.PathLike))
    path = str(source) if is_path else "<NIRGraph>"
    try:
        if is_path:
            graph = graph_from_dict(read_hdf5(path), source=path, name=name or Path(path).stem)
        elif type(source).__name__ == "NIRGraph":
            graph = graph_from_dict(nir_to_dict(source), source=path, name=name or "graph")
        else:
            raise LoadError(f"cannot load a {type(source).__name__}: expected a path to a .nir file or a nir.NIRGraph")
        infer_shapes(graph, repair=True, pass_name="load")
    except CompileError as e:  # every load failure names the file and the [load] stage
        e.pass_name = e.pass_name or "load"
        e.source = e.source or (path if is_path else None)
        raise
    return graph


def save(graph: Graph, path: str | os.PathLike, *, nest: bool = True) -> None:
    """Write the graph as a NIR HDF5 file (readable by `nir.read`), nesting dotted subgraphs again.

    Compiler kinds (fused Dense<neuron> nodes) are split back into NIR primitives (`nir_primitives`).
    """
    write_hdf5(path, graph_to_dict(nir_primitives(graph), nest=nest))


def nir_primitives(graph: Graph) -> Graph:
    """The graph with its compiler kinds (fused Dense<neuron> nodes) split back into NIR primitives by the
    `unfuse` pass: a copy, or the graph itself when it holds none."""
    if all(op.spec.nir for _, op in graph.ops()):
        return graph
    from nircomp.pipeline import PassContext, get_pass

    return get_pass("unfuse").bind()(graph.copy(), PassContext(source=graph.source))


# --------------------------------------------------------------------------- HDF5
def read_hdf5(path: str) -> dict[str, Any]:
    """The `node` group of a NIR file as nested dicts; a LoadError for anything unreadable."""
    import h5py

    if not os.path.exists(path):
        raise LoadError("file not found", source=path)
    if os.path.isdir(path):
        raise LoadError("is a directory, not a .nir file", source=path)
    try:
        if not h5py.is_hdf5(path):
            raise LoadError("not an HDF5 file (a .nir file is HDF5)", source=path)
        data = Path(path).read_bytes()
        damaged = damaged_global_heap(data)
        if damaged is not None:  # libhdf5 would hang on it
            raise LoadError(f"corrupt HDF5 file: the string heap at byte {damaged} is damaged", source=path)
        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise LoadError("not a NIR file: no 'node' group at the top level", source=path)
            return _read_group(f["node"], "node", max_bytes=_MAX_INFLATE * len(data))
    except CompileError:
        raise
    except Exception as e:  # h5py raises OSError, KeyError, ValueError, RuntimeError... on corrupt files
        raise LoadError(f"corrupt or truncated HDF5 file ({_one_line(e)})", source=path) from None


_MAX_INFLATE = 1100  # deflate expands at most ~1032x: a dataset larger than this times the file is corrupt


def _read_group(group: Any, where: str, max_bytes: int) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    for key in group.keys():
        name = key.decode("utf8", "replace") if isinstance(key, bytes) else key  # h5py: bytes if not UTF-8
        try:
            item = group[key]
            if isinstance(item, h5py.Group):
                out[name] = _read_group(item, f"{where}/{name}", max_bytes)
            elif item.nbytes > max_bytes:
                raise LoadError(f"corrupt HDF5 file: '{where}/{name}' claims shape {list(item.shape)}, "
                                "more data than the file can hold")
            else:
                value = item[()]
                out[name] = value.decode("utf8") if isinstance(value, bytes) else value
        except CompileError:
            raise
        except Exception as e:
            raise LoadError(f"corrupt or truncated HDF5 file: cannot read '{where}/{name}' ({_one_line(e)})") from None
    return out


def write_hdf5(path: str | os.PathLike, node: Mapping[str, Any]) -> None:
    import h5py
    import nir

    def write(group: Any, d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                if k == "metadata" and not v:
                    continue
                write(group.create_group(str(k)), v)
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif k == "edges":
                group.create_dataset(k, data=np.array(v, dtype=h5py.string_dtype()).reshape(-1, 2))
            else:
                arr = np.asarray(v)
                group.create_dataset(k, data=arr, dtype=arr.dtype)

    try:
        with h5py.File(path, "w") as f:
            f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
            write(f.create_group("node"), node)
    except OSError as e:
        raise LoadError(f"cannot write ({_one_line(e)})", source=str(path)) from None


def _describe(value: Any) -> str:
    """A short one-line description of a file value: the text itself, or an array's dtype and shape."""
    if isinstance(value, str):
        return repr(value[:40])
    arr = np.asarray(value)
    return f"an array of {arr.dtype}, shape {list(arr.shape)}"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# --------------------------------------------------------------------------- nir objects
def nir_to_dict(node: Any) -> dict[str, Any]:
    """A `nir` node (graph or primitive) in the dict layout of a NIR file, without copying arrays."""
    kind = type(node).__name__
    if kind == "NIRGraph":
        return {"type": kind, "nodes": {k: nir_to_dict(n) for k, n in node.nodes.items()},
                "edges": [tuple(e) for e in node.edges], "metadata": dict(node.metadata or {})}
    d: dict[str, Any] = {"type": kind}
    for f in dataclasses.fields(node):
        if f.name in ("input_type", "output_type"):
            continue
        value = getattr(node, f.name)
        if value is not None:
            d[f.name] = value
    types = {"Input": ("input_type", "input", "shape"), "Output": ("output_type", "output", "shape"),
             "Flatten": ("input_type", "input", "input_type")}
    if kind in types or kind == "Identity":
        attr, key, target = types.get(kind, ("input_type", "input", "shape"))
        value = getattr(node, attr, None)
        if isinstance(value, Mapping):
            value = value.get(key)
        if value is not None:
            d[target] = np.asarray(value)
    return d


# --------------------------------------------------------------------------- dict -> Graph
@dataclasses.dataclass
class _Scope:
    prefix: str  # "" for the root, "sub." for a nested graph
    ports: dict[str, str]  # local name -> "Input" | "Output"
    children: dict[str, _Scope]


def graph_from_dict(data: Mapping[str, Any], *, source: str | None = None, name: str = "graph") -> Graph:
    """Build the flat IR from a NIR graph dict (the file layout)."""
    graph = Graph(name=name, source=source)
    kind = data.get("type")
    if not isinstance(kind, str) or kind != "NIRGraph":
        what = "has no 'type'" if kind is None else f"has 'type' {_describe(kind)}"
        raise LoadError(f"the top-level node {what}; a NIR file holds a 'NIRGraph' there", source=source)
    graph.metadata = _metadata(data)
    raw_edges: list[tuple[str, str, str]] = []  # flat src, flat dst, scope prefix (for messages)
    _add_scope(graph, data, "", raw_edges)
    if not graph.nx.number_of_nodes() and not graph.ports:
        raise LoadError("the graph is empty (no nodes)", source=source,
                        hint="export the network with at least an Input, one layer and an Output")
    _contract_ports(graph, raw_edges)
    return graph


def _metadata(d: Mapping[str, Any]) -> dict[str, Any]:
    meta = d.get("metadata")
    return dict(meta) if isinstance(meta, Mapping) else {}


def _add_scope(graph: Graph, data: Mapping[str, Any], prefix: str, raw_edges: list) -> _Scope:
    source = graph.source
    nodes = data.get("nodes")
    if not isinstance(nodes, Mapping):
        where = f"subgraph '{prefix[:-1]}'" if prefix else "graph"
        raise LoadError(f"{where} has no 'nodes' group", source=source)
    scope = _Scope(prefix, {}, {})
    for local, nd in nodes.items():
        flat = prefix + str(local)
        if not isinstance(nd, Mapping) or "type" not in nd:
            raise LoadError("node has no 'type' entry", source=source, nodes=[flat])
        kind = nd["type"]
        if not isinstance(kind, str):
            raise LoadError(f"the node's 'type' is {_describe(kind)}, expected the name of a node type",
                            source=source, nodes=[flat])
        if kind == "NIRGraph":
            graph.scopes[flat] = _metadata(nd)
            scope.children[str(local)] = _add_scope(graph, nd, flat + ".", raw_edges)
            continue
        op = _op_from_dict(nd, flat, source)
        if prefix and kind in PORT_KINDS:
            graph.ports[flat] = op
            scope.ports[str(local)] = kind
        else:
            if flat in graph.nx or flat in graph.ports:
                raise LoadError("two nodes flatten to this name", source=source, nodes=[flat],
                                hint="rename the node or the subgraph so dotted names are unique")
            graph.add_op(flat, op)
    edges = data.get("edges", [])
    try:
        pairs = [(_s(a), _s(b)) for a, b in np.asarray(edges, dtype=object).reshape(-1, 2)]
    except Exception:
        where = f"subgraph '{prefix[:-1]}'" if prefix else "graph"
        raise LoadError(f"{where}: 'edges' is not a list of (source, target) name pairs", source=source) from None
    seen = set()
    for a, b in pairs:
        if (a, b) in seen:
            raise LoadError(f"duplicate edge {a} -> {b}", source=source, nodes=[prefix + a, prefix + b],
                            hint="NIR sums several edges into a node, so a repeated edge is ambiguous")
        seen.add((a, b))
        raw_edges.append((_resolve(graph, scope, a, "source", (a, b)), _resolve(graph, scope, b, "target", (a, b)),
                          prefix))
    return scope


def _did_you_mean(name: str, known: Any) -> str:
    """` (did you mean 'X'?)` for the closest known name, compared case-insensitively; else ''."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _s(x: Any) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _op_from_dict(nd: Mapping[str, Any], flat: str, source: str | None) -> Op:
    kind = nd["type"]
    if kind not in NIR_KINDS:
        known = [*NIR_KINDS, "NIRGraph"]
        raise LoadError(f"unknown node type {kind!r}{_did_you_mean(kind, known)}", source=source, nodes=[flat],
                        hint=f"NIR 1.0 node types are: {', '.join(known)}")
    spec = KINDS[kind]
    params: dict[str, Any] = {}
    for p in spec.required:
        if p not in nd:
            raise LoadError(f"{kind} is missing required parameter '{p}'", source=source, nodes=[flat])
        params[p] = _param(nd[p], kind, p, flat, source)
    for p, default in spec.optional.items():
        if p in nd:
            params[p] = _param(nd[p], kind, p, flat, source)
        elif default is not None:
            params[p] = default(params)
    extra = sorted(set(nd) - set(spec.param_names) - {"type", "metadata"})
    if extra:
        warnings.warn(f"{source or 'graph'}: node '{flat}': ignoring unknown {kind} parameter(s) "
                      f"{', '.join(extra)}", LoadWarning, stacklevel=4)
    return Op(kind, params, origin=(flat,), metadata=_metadata(nd))


def _param(value: Any, kind: str, name: str, flat: str, source: str | None) -> Any:
    if isinstance(value, Mapping):
        raise LoadError(f"{kind} parameter '{name}' is a group, expected an array", source=source, nodes=[flat])
    if isinstance(value, (str, bytes)):
        if name == "padding":
            return _s(value)
        raise LoadError(f"{kind} parameter '{name}' is text ({_s(value)[:20]!r}), expected numbers",
                        source=source, nodes=[flat])
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise LoadError(f"{kind} parameter '{name}' has dtype {arr.dtype}, expected numbers",
                        source=source, nodes=[flat])
    return arr


def _resolve(graph: Graph, scope: _Scope, ref: str, role: str, edge: tuple[str, str]) -> str:
    """The flat name an edge endpoint in `scope` refers to (a node or a subgraph port)."""
    found = _lookup(graph, scope, ref, role)
    if found is not None:
        return found
    candidates = _stale_candidates(graph, scope, ref, role)
    where = f"subgraph '{scope.prefix[:-1]}'" if scope.prefix else "graph"
    if len(set(candidates.values())) == 1:
        suffix, fixed = next(iter(candidates.items()))
        warnings.warn(f"{graph.source or 'graph'}: {where}: edge {edge[0]} -> {edge[1]} names unknown node "
                      f"'{ref}'; repaired to '{suffix}'", LoadWarning, stacklevel=5)
        return fixed
    local = {n[len(scope.prefix):].split(".")[0] for n in [*graph.nx, *graph.ports] if n.startswith(scope.prefix)}
    hint = (f"it could be any of {', '.join(candidates)}" if candidates
            else "the edge names a node that does not exist" + _did_you_mean(ref, local))
    raise LoadError(f"{where}: edge {edge[0]} -> {edge[1]} refers to unknown node '{ref}'", source=graph.source,
                    nodes=[scope.prefix + ref], hint=hint)


def _lookup(graph: Graph, scope: _Scope, ref: str, role: str) -> str | None:
    flat = scope.prefix + ref
    if flat in graph.nx or (ref in scope.ports):
        return flat
    head, _, rest = ref.partition(".")
    if head in scope.children:
        child = scope.children[head]
        if not rest:  # the subgraph itself: its only Input (as a target) or Output (as a source)
            want = "Input" if role == "target" else "Output"
            ports = [p for p, k in child.ports.items() if k == want]
            if len(ports) != 1:
                raise LoadError(f"an edge connects to subgraph '{child.prefix[:-1]}', which has {len(ports)} "
                                f"{want} nodes", source=graph.source, nodes=[child.prefix[:-1]],
                                hint=f"name the {want} in the edge, e.g. '{head}.{ports[0] if ports else want.lower()}'")
            return child.prefix + ports[0]
        return _lookup(graph, child, rest, role)
    return None


def _stale_candidates(graph: Graph, scope: _Scope, ref: str, role: str) -> dict[str, str]:
    """What a stale edge name may mean: each dotted suffix of it (the name with an old prefix dropped:
    `rnn.lif` -> `lif`) that names a node, port or subgraph of this scope; suffix -> flat name."""
    parts = ref.split(".")
    suffixes = (".".join(parts[i:]) for i in range(1, len(parts)))
    return {s: flat for s in suffixes if (flat := _lookup(graph, scope, s, role)) is not None}


def _contract_ports(graph: Graph, raw_edges: list[tuple[str, str, str]]) -> None:
    """Replace paths through subgraph ports by direct edges that remember the ports (`via`)."""
    out: dict[str, list[str]] = {}
    for src, dst, _ in raw_edges:
        out.setdefault(src, []).append(dst)
    for src, dst, _ in raw_edges:
        if src in graph.ports:
            continue
        for target, via in _walk_ports(graph, dst, out, ()):
            if graph.nx.has_edge(src, target):
                raise LoadError(f"two paths connect {src} -> {target} (directly or through subgraph ports)",
                                source=graph.source, nodes=[src, target],
                                hint="NIR sums several edges into a node; merge the paths into one edge")
            graph.add_edge(src, target, **({"via": via} if via else {}))
    fed = {dst for _, dst, _ in raw_edges}
    for port, op in graph.ports.items():
        if (port in fed) == (port in out):
            continue
        lost = "the edges into it have no effect" if port in fed else "the nodes it feeds receive nothing"
        warnings.warn(f"{graph.source or 'graph'}: node '{port}': subgraph {op.kind} is connected on one side "
                      f"only; {lost}", LoadWarning, stacklevel=3)


def _walk_ports(graph: Graph, node: str, out: Mapping[str, list[str]], via: tuple[str, ...]):
    if node not in graph.ports:
        yield node, via
        return
    if node in via:
        return
    for nxt in out.get(node, ()):
        yield from _walk_ports(graph, nxt, out, via + (node,))


# --------------------------------------------------------------------------- Graph -> dict
def graph_to_dict(graph: Graph, *, nest: bool = True) -> dict[str, Any]:
    """The NIR file layout of a Graph; subgraphs nested again by their dotted prefixes."""
    scopes = sorted(graph.scopes, key=len) if nest else []
    crossing = [(u, v) for u, v, via in graph.nx.edges(data="via")
                if not via and _scope_of(u, scopes) != _scope_of(v, scopes)]
    if crossing:
        u, v = crossing[0]
        warnings.warn(f"edge {u} -> {v} crosses a subgraph boundary without a port; writing a flat graph",
                      LoadWarning, stacklevel=3)
        scopes = []
    tree: dict[str, dict[str, Any]] = {"": _empty(graph.metadata)}
    for s in scopes:
        tree[s] = _empty(graph.scopes[s])
        parent = _scope_of(s, scopes)
        tree[parent]["nodes"][_local(s, parent)] = tree[s]
    entries = list(graph.ops()) + (list(graph.ports.items()) if scopes else [])
    for name, op in entries:
        s = _scope_of(name, scopes)
        tree[s]["nodes"][_local(name, s)] = op_to_dict(op)
    for u, v, via in graph.nx.edges(data="via"):
        chain = [u, *(via or ())] if scopes else [u]
        chain.append(v)
        for a, b in zip(chain, chain[1:]):
            scope = _hop_scope(a, scopes, graph.ports)
            edge = (_endpoint(a, scope, scopes, graph.ports), _endpoint(b, scope, scopes, graph.ports))
            edges = tree[scope]["edges"]
            if edge not in edges:
                edges.append(edge)
    return tree[""]


def _empty(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "NIRGraph", "nodes": {}, "edges": [], "metadata": dict(metadata)}


def op_to_dict(op: Op) -> dict[str, Any]:
    d: dict[str, Any] = {"type": op.kind}
    d.update(op.params)
    if op.kind in ("Conv1d", "Conv2d") and "input_shape" not in d and op.input_shape is not None:
        # nir.read (1.0.8) cannot read a Conv without input_shape; fill it as nir's own type inference does
        spatial = op.input_shape[1:]
        d["input_shape"] = np.asarray(spatial[0] if op.kind == "Conv1d" else spatial)
    if op.metadata:
        d["metadata"] = dict(op.metadata)
    return d


def _scope_of(name: str, scopes: list[str]) -> str:
    best = ""
    for s in scopes:
        if name.startswith(s + ".") and len(s) > len(best):
            best = s
    return best


def _local(name: str, scope: str) -> str:
    return name[len(scope) + 1:] if scope else name


def _hop_scope(a: str, scopes: list[str], ports: Mapping[str, Op]) -> str:
    """The scope whose edge list holds a hop from `a`: a's own, except that leaving a subgraph through
    its Output port happens in the parent (so `sub.output -> sub.input`, a loop around `sub`, is the
    parent's edge `sub -> sub`, not an edge inside `sub`)."""
    scope = _scope_of(a, scopes)
    return _scope_of(scope, scopes) if a in ports and ports[a].kind == "Output" else scope


def _endpoint(name: str, scope: str, scopes: list[str], ports: Mapping[str, Op]) -> str:
    """The name by which scope `scope` refers to `name`: itself, the child subgraph containing it, or
    `child.port` when `name` is a port of a child that has several ports of its kind (NIR's short form,
    the subgraph's name alone, would be ambiguous there)."""
    inner = _scope_of(name, scopes)
    while inner and inner != scope and _scope_of(inner, scopes) != scope:
        inner = _scope_of(inner, scopes)
    if inner == scope:
        return _local(name, scope)
    if name in ports and _scope_of(name, scopes) == inner:
        kind = ports[name].kind
        if sum(op.kind == kind and _scope_of(p, scopes) == inner for p, op in ports.items()) > 1:
            return _local(name, scope)
    return _local(inner, scope)
