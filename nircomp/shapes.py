"""Shape inference over a Graph, driven by the shape rules of the op-kind registry."""

from __future__ import annotations

import warnings

import numpy as np

from nircomp.errors import LoadWarning, VerifyError
from nircomp.ir import Graph
from nircomp.ops import Shape, ShapeError, as_shape


def _squeeze(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


def singleton_repairable(declared: Shape, actual: Shape) -> bool:
    """True when the two shapes differ only by axes of size 1 (e.g. [1, 1, 1] vs [1])."""
    return tuple(declared) != tuple(actual) and _squeeze(declared) == _squeeze(actual)


def infer_shapes(graph: Graph, *, repair: bool = False, pass_name: str = "infer-shapes") -> list[str]:
    """Set every op's input and output shape from its parameters and its inputs; check every edge.

    With `repair`, an Output (or subgraph port) that declares a shape differing from what it receives
    only by singleton axes is rewritten to the received shape, with a `LoadWarning`.
    Returns the names of nodes whose shapes changed.
    """
    changed: dict[str, None] = {}  # insertion-ordered set

    def fail(message: str, *nodes: str, hint: str | None = None) -> VerifyError:
        return VerifyError(message, pass_name=pass_name, nodes=nodes, hint=hint, source=graph.source)

    order = graph.order()
    g = graph.nx
    pos = {name: i for i, name in enumerate(order)}
    # A second sweep resolves nodes fed by a back edge; without one, every node already read final shapes.
    sweeps = 2 if any(pos[u] >= pos[v] for u, v in g.edges) else 1
    ops = dict(graph.ops())  # name -> Op, kept in step with graph.set_op below
    for _ in range(sweeps):
        for name in order:
            op = ops[name]
            incoming: list[tuple[str, Shape]] = [
                (pred, ops[pred].output_shape) for pred in g.pred[name] if ops[pred].output_shape is not None]
            in_shape = incoming[0][1] if incoming else None
            if len(incoming) > 1 and len({s for _, s in incoming}) > 1:
                detail = ", ".join(f"{p} {list(s)}" for p, s in incoming)
                raise fail(f"inputs of different shapes are summed here: {detail}", name)
            if op.kind == "Output" and in_shape is not None and repair:
                declared = _declared(op, name, fail)
                if singleton_repairable(declared, in_shape):
                    warnings.warn(
                        f"{graph.source or 'graph'}: node '{name}': Output declares shape {list(declared)} "
                        f"but receives {list(in_shape)}; repaired to {list(in_shape)}", LoadWarning, stacklevel=3)
                    op = op.replace(params={**op.params, "shape": np.asarray(in_shape, dtype=np.asarray(
                        op.params["shape"]).dtype)})
                    graph.set_op(name, op)
                    ops[name] = op
            try:
                new_in, new_out = op.spec.shape(op.params, in_shape)
            except ShapeError as e:
                src = f" (from {incoming[0][0]})" if incoming else ""
                raise fail(f"{op.kind}: {e}{src}", name) from None
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                raise fail(f"{op.kind}: malformed parameters ({type(e).__name__}: {e})", name) from None
            if (new_in, new_out) != (op.input_shape, op.output_shape):
                ops[name] = op.replace(input_shape=new_in, output_shape=new_out)
                graph.set_op(name, ops[name])
                changed[name] = None

    for name in order:
        op = graph.op(name)
        if op.output_shape is None or op.input_shape is None:
            raise fail(f"cannot infer the shape of this {op.kind}: no input with a known shape reaches it", name,
                       hint="declare the shape on the graph's Input" if graph.inputs()
                       else "the graph has no Input node: add a nir.Input feeding the first layer")
    for src, dst, via in g.edges(data="via"):
        _check_ports(graph, src, dst, via or (), repair, fail)
    return list(changed)


def _declared(op, name: str, fail) -> Shape:
    """The `shape` parameter of an Input/Output as a shape; a located error when it is not one."""
    try:
        return as_shape(op.params["shape"])
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise fail(f"{op.kind}: malformed 'shape' parameter ({type(e).__name__}: {e})", name) from None


def _check_ports(graph: Graph, src: str, dst: str, via, repair: bool, fail) -> None:
    shape = graph.op(src).output_shape
    for port in via:
        op = graph.ports[port]
        declared = _declared(op, port, fail)
        if declared == shape:
            continue
        if repair and singleton_repairable(declared, shape):
            warnings.warn(f"{graph.source or 'graph'}: node '{port}': {op.kind} declares shape {list(declared)} "
                          f"but carries {list(shape)}; repaired to {list(shape)}", LoadWarning, stacklevel=4)
            graph.ports[port] = op.replace(params={**op.params, "shape": np.asarray(shape)},
                                           input_shape=shape, output_shape=shape)
            continue
        raise fail(f"subgraph port {op.kind} '{port}' declares shape {list(declared)} but the edge "
                   f"{src} -> {dst} carries {list(shape)}", port, src)
