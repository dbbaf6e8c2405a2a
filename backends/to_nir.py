"""backend="nir": the graph after the pipeline, written back to a `.nir` file that `nir.read` reads.

Canonicalised graphs are already NIR (folded weights, Affine -> Linear, dead nodes gone); compiler kinds
are turned back into NIR primitives: fused Dense<neuron> nodes by the `unfuse` pass (`nir_primitives`),
and an Identity, which nir 1.0's reader does not know, as a Scale by one (exact: x * 1 == x). Dotted
names nest again as subgraphs. The file holds the graph only: dt and the step-solver convention are
compile options, not part of NIR, and must be given again when the file is compiled.

    prog = nircomp.compile("net.nir", backend="nir", out="net.opt.nir")   # prog.model == Path("net.opt.nir")
    graph = to_nir_graph(prog.ir)                                          # the same graph as nir objects
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nircomp.backends import Capabilities, Lowered, register_backend
from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.load import graph_to_dict, nir_primitives, save
from nircomp.ops import KINDS


def nir_readable(graph: Graph) -> Graph:
    """The graph in NIR 1.0 primitives that `nir.read` accepts: fused nodes unfused, Identity -> Scale(1)."""
    graph = nir_primitives(graph)
    identities = [(name, op) for name, op in graph.ops() if op.kind == "Identity"]
    if identities:
        graph = graph.copy()
    for name, op in identities:
        if op.output_shape is None:
            raise CompileError("an Identity of unknown shape cannot be written as NIR (nir.read knows no "
                               "Identity; it is written as a Scale by one)", nodes=[name])
        graph.set_op(name, op.replace(kind="Scale", params={"scale": np.ones(op.output_shape, np.float32)}))
    return graph


def to_nir_graph(graph: Graph) -> Any:
    """The graph as a `nir.NIRGraph` (dotted names nested as subgraphs), built by nir's own `dict2NIRNode`
    from the layout `save` writes; arrays are writable copies. Type checking is off, as in
    `nir.read(..., type_check=False)`."""
    import nir

    return nir.dict2NIRNode(_for_nir(graph_to_dict(nir_readable(graph))))


def _for_nir(node: Mapping[str, Any]) -> dict[str, Any]:
    """A graph_to_dict node as `dict2NIRNode` takes it: values as `nir.read` gives them (arrays copied, 0-d
    ones as numpy scalars: nir's Conv1d needs an integer input_shape), `type_check=False` on every graph."""
    out = {k: _for_nir(v) if isinstance(v, Mapping) and k != "metadata" else
           np.array(v)[()] if isinstance(v, np.ndarray) else v for k, v in node.items()}
    if out.get("type") == "NIRGraph":
        out["type_check"] = False
    return out


class NirBackend:
    """Writes the graph to `out` (a `.nir` path, or a directory that receives `<graph name>.nir`)."""

    name = "nir"
    capabilities = Capabilities(solvers=frozenset({"step", "analytical", "hardware"}), kinds=frozenset(KINDS))

    def lower(self, graph: Graph, options: Mapping[str, Any]) -> Lowered:
        out = options.get("out")
        if out is None:
            raise CompileError('backend "nir" writes a file: give out=PATH (a .nir file or a directory)')
        path = Path(out)
        if path.is_dir():
            path = path / f"{graph.name}.nir"
        save(nir_readable(graph), path)
        return Lowered(path, {"nir": path})


register_backend(NirBackend())
