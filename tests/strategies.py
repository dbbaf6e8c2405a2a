"""Random valid NIR graphs for property tests, built with `nir`'s own classes, and the reference
flattening (an independent oracle) that the loaded IR is checked against.

`nir_graphs()` draws a `Case`: the `nir.NIRGraph` and, for every flat node, the output shape the
generator computed itself (PyTorch's window formula for convolutions and pools, products for Flatten).
Graphs are chains and DAGs of 1-d layers with branches and merges of matching size, optional recurrent
edges (self-loops included), an optional second Input, an optional Conv1d/Conv2d(+pool)+Flatten stem,
and subgraphs nested up to two levels. Every parameter array draws its own dtype (float32/float64) and,
unless drawn homogeneous, distinct values per element, sometimes with -0.0, inf, nan and subnormals
sprinkled in (the round trip must be bit-exact, not merely close).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import nir
import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from nir.ir.graph import Identity

DTYPES = (np.float32, np.float64)
LAYER_KINDS = ("Affine", "Linear", "Scale", "Delay", "Threshold", "Identity",
               "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
SUBGRAPH_DEPTH = 2


@dataclasses.dataclass
class Case:
    graph: nir.NIRGraph
    shapes: dict[str, tuple[int, ...]]  # flat node name -> output shape (subgraph ports excluded)
    has_identity: bool  # nir 1.0.8 can neither write nor read Identity


def window_out(n: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """PyTorch's output length of a convolution or pooling window (pad on each side)."""
    return (n + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


class _Builder:
    """Draws one graph; records each flat node's output shape as it goes."""

    def __init__(self, draw: Any):
        self.draw = draw
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.has_identity = False

    # ------------------------------------------------------------------ parameters
    def array(self, shape: tuple[int, ...], role: str = "any") -> np.ndarray:
        """A parameter array of a drawn dtype; `role` keeps time constants positive, delays whole."""
        dtype = np.dtype(self.draw(st.sampled_from(DTYPES)))
        homog = self.draw(st.booleans())
        if role == "tau":  # time constants: positive
            values = self.rng.uniform(1e-4, 1e-1, shape)
        elif role == "delay":  # delays: non-negative whole steps
            values = self.rng.integers(0, 4, shape).astype(float)
        else:
            values = self.rng.normal(0.0, 1.0, shape)
            if values.size and self.draw(st.booleans()):  # special values must survive bit for bit
                specials = [-0.0, np.inf, -np.inf, np.nan, float(np.finfo(dtype).smallest_subnormal)]
                flat = values.reshape(-1)
                flat[self.rng.integers(0, flat.size)] = specials[self.draw(st.integers(0, len(specials) - 1))]
        if homog and values.size:
            values = np.full(shape, values.reshape(-1)[0])
        return values.astype(dtype)

    def maybe(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """An optional parameter: absent (nir fills its default) or an array."""
        return self.array(shape) if self.draw(st.booleans()) else None

    def layer(self, kind: str, n: int) -> tuple[Any, int]:
        """A 1-d layer fed with size n: (the nir node, its output size)."""
        a, s = self.array, (n,)
        if kind in ("Affine", "Linear"):
            m = self.draw(st.integers(1, 4))
            w = a((m, n))
            return (nir.Affine(w, a((m,))) if kind == "Affine" else nir.Linear(w)), m
        if kind == "Identity":
            self.has_identity = True
            return Identity(input_type={"input": np.array([n])}), n
        nodes = {
            "Scale": lambda: nir.Scale(a(s)),
            "Delay": lambda: nir.Delay(a(s, "delay")),
            "Threshold": lambda: nir.Threshold(a(s)),
            "I": lambda: nir.I(r=a(s)),
            "IF": lambda: nir.IF(r=a(s), v_threshold=a(s), v_reset=self.maybe(s)),
            "LI": lambda: nir.LI(tau=a(s, "tau"), r=a(s), v_leak=a(s)),
            "LIF": lambda: nir.LIF(tau=a(s, "tau"), r=a(s), v_leak=a(s), v_threshold=a(s), v_reset=self.maybe(s)),
            "CubaLI": lambda: nir.CubaLI(tau_syn=a(s, "tau"), tau_mem=a(s, "tau"), r=a(s), v_leak=a(s),
                                         **_given(w_in=self.maybe(s))),
            "CubaLIF": lambda: nir.CubaLIF(tau_syn=a(s, "tau"), tau_mem=a(s, "tau"), r=a(s), v_leak=a(s),
                                           v_threshold=a(s), v_reset=self.maybe(s), **_given(w_in=self.maybe(s))),
        }
        node = nodes[kind]()
        if self.draw(st.booleans()):
            node.metadata = {"label": f"a {kind}", "gain": 0.5}
        return node, n

    # ------------------------------------------------------------------ structure
    def stem(self) -> tuple[dict[str, Any], list[tuple[str, str]], int]:
        """Input (C, L) or (C, H, W) -> Conv1d/Conv2d -> [pool] -> Flatten: nodes, edges, flat size."""
        draw, ndim = self.draw, self.draw(st.sampled_from((1, 2)))
        groups = draw(st.integers(1, 2))
        c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
        spatial = tuple(draw(st.integers(5, 7)) for _ in range(ndim))
        kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
        padding = draw(st.sampled_from(("same", "valid", "int", "tuple")))
        stride = (1,) * ndim if padding == "same" else tuple(draw(st.integers(1, 2)) for _ in range(ndim))
        pads = {"same": None, "valid": (0,) * ndim, "int": (draw(st.integers(0, 1)),) * ndim,
                "tuple": tuple(draw(st.integers(0, 1)) for _ in range(ndim))}[padding]
        out = spatial if pads is None else tuple(
            window_out(n, k, s, p, d) for n, k, s, p, d in zip(spatial, kernel, stride, pads, dilation))

        def form(values: tuple[int, ...]) -> Any:  # NIR accepts an int where all dimensions agree
            return values[0] if ndim == 1 or (len(set(values)) == 1 and draw(st.booleans())) else values

        pad_arg = padding if pads is None else (pads[0] if padding == "int" else form(pads))
        conv_cls = nir.Conv1d if ndim == 1 else nir.Conv2d
        declared_in = spatial[0] if ndim == 1 else spatial  # nir wants an int for Conv1d, a tuple for Conv2d
        conv = conv_cls(input_shape=(declared_in if draw(st.booleans()) else None),
                        weight=self.array((c_out, c_in // groups, *kernel)), stride=form(stride), padding=pad_arg,
                        dilation=form(dilation), groups=groups, bias=self.array((c_out,)))
        nodes = {"input": nir.Input(np.array([c_in, *spatial])), "conv": conv}
        edges, last, shape = [("input", "conv")], "conv", (c_out, *out)
        self.shapes.update(input=(c_in, *spatial), conv=shape)
        if ndim == 2 and draw(st.booleans()):
            k = tuple(draw(st.integers(1, min(2, n))) for n in out)
            st_ = tuple(draw(st.integers(1, 2)) for _ in out)
            p = tuple(draw(st.integers(0, kk // 2)) for kk in k)
            cls = draw(st.sampled_from((nir.SumPool2d, nir.AvgPool2d)))
            nodes["pool"] = cls(kernel_size=np.array(k), stride=np.array(st_), padding=np.array(p))
            shape = (c_out, *(window_out(n, kk, ss, pp) for n, kk, ss, pp in zip(out, k, st_, p)))
            edges.append(("conv", "pool"))
            last = "pool"
            self.shapes["pool"] = shape
        size = int(np.prod(shape))
        declared = {"input": np.array(shape)} if draw(st.booleans()) else None
        end_dim = draw(st.sampled_from((-1, len(shape) - 1)))  # two spellings of "the last axis"
        nodes["flat"] = nir.Flatten(input_type=declared, start_dim=0, end_dim=end_dim)
        edges.append((last, "flat"))
        self.shapes["flat"] = (size,)
        return nodes, edges, size

    def scope(self, prefix: str, n_in: int, depth: int) -> tuple[nir.NIRGraph, int]:
        """A graph (top level when prefix is ''): its nodes fed from Input(s), and its output size."""
        draw, top = self.draw, not prefix
        if top and draw(st.booleans()):
            nodes, edges, flat = self.stem()
            size = {"flat": flat}
        else:
            nodes, edges, size = {"input": nir.Input(np.array([n_in]))}, [], {"input": n_in}
            if top:
                self.shapes["input"] = (n_in,)
        if top and draw(st.booleans()):
            n2 = draw(st.integers(1, 4))
            nodes["input2"], size["input2"] = nir.Input(np.array([n2])), n2
            self.shapes["input2"] = (n2,)
        in_size: dict[str, int] = {}
        body: list[str] = []
        kinds = LAYER_KINDS + ("NIRGraph",) * (3 if depth < SUBGRAPH_DEPTH else 0)  # nesting often
        for i in range(draw(st.integers(1, 4))):
            name, pred = f"n{i}", draw(st.sampled_from(sorted(size)))
            kind = draw(st.sampled_from(kinds))
            if kind == "NIRGraph":
                nodes[name], out = self.scope(f"{prefix}{name}.", size[pred], depth + 1)
            else:
                nodes[name], out = self.layer(kind, size[pred])
                self.shapes[prefix + name] = (out,)
            edges.append((pred, name))
            merge = [n for n in sorted(size) if n != pred and size[n] == size[pred]]
            if merge and draw(st.booleans()):  # a second edge into the node: summed, so same size
                edges.append((draw(st.sampled_from(merge)), name))
            in_size[name], size[name] = size[pred], out
            body.append(name)
        sinks = [n for n in ["flat"] * ("flat" in size) + body if all(a != n for a, _ in edges)]
        if draw(st.booleans()):  # a recurrent edge (a self-loop when u == v)
            u = draw(st.sampled_from(body))
            back = [v for v in body if in_size[v] == size[u] and (u, v) not in edges]
            if back:
                edges.append((u, draw(st.sampled_from(back))))
        if top:
            for s in sinks:
                nodes[f"out_{s}"] = nir.Output(np.array([size[s]]))
                edges.append((s, f"out_{s}"))
                self.shapes[f"out_{s}"] = (size[s],)
            return nir.NIRGraph(nodes, edges, type_check=False), 0
        final = sinks[-1]
        for s in sinks[:-1]:  # one Output: other sinks reach it directly or through a projection
            src = s
            if size[s] != size[final]:
                src = f"proj_{s}"
                nodes[src] = nir.Linear(self.array((size[final], size[s])))
                edges.append((s, src))
                self.shapes[prefix + src] = (size[final],)
            edges.append((src, "output"))
        nodes["output"] = nir.Output(np.array([size[final]]))
        edges.append((final, "output"))
        return nir.NIRGraph(nodes, edges, type_check=False), size[final]


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


@st.composite
def nir_graphs(draw: Any) -> Case:
    """A random valid NIR graph (see the module docstring) with the shapes it must load with."""
    builder = _Builder(draw)
    graph, _ = builder.scope("", draw(st.integers(1, 4)), 0)
    edges = flatten_reference(graph)[2]
    # Two paths between the same two nodes (e.g. a self-loop inside a subgraph and one around it) are
    # two summed terms on one flat edge, which the IR cannot hold: nircomp rejects them (tested in
    # test_load.py), so they are not valid input here.
    assume(len({(a, b) for a, b, _ in edges}) == len(edges))
    return Case(graph, builder.shapes, builder.has_identity)


# --------------------------------------------------------------------------- the oracle
def flatten_reference(graph: nir.NIRGraph) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str, tuple]]]:
    """NIR's nesting rule, written out plainly: (flat nodes, subgraph ports, flat edges (src, dst, via)).

    A node `lif` of subgraph `sub` is `sub.lif`; an edge naming a subgraph as a whole means its only Input
    (as target) or Output (as source); `sub.port` names a port explicitly. A path through ports becomes
    one edge from the first real node to the next, remembering the ports it passed (`via`).
    """
    nodes: dict[str, Any] = {}
    ports: dict[str, Any] = {}
    raw: list[tuple[str, str]] = []

    def resolve(g: nir.NIRGraph, prefix: str, ref: str, port_type: type) -> str:
        node = g.nodes.get(ref)
        if isinstance(node, nir.NIRGraph):
            [port] = [k for k, n in node.nodes.items() if isinstance(n, port_type)]
            return f"{prefix}{ref}.{port}"
        return prefix + ref

    def walk(g: nir.NIRGraph, prefix: str) -> None:
        for name, node in g.nodes.items():
            if isinstance(node, nir.NIRGraph):
                walk(node, f"{prefix}{name}.")
            elif prefix and isinstance(node, (nir.Input, nir.Output)):
                ports[prefix + name] = node
            else:
                nodes[prefix + name] = node
        raw.extend((resolve(g, prefix, a, nir.Output), resolve(g, prefix, b, nir.Input)) for a, b in g.edges)

    walk(graph, "")
    out = defaultdict(list)
    for a, b in raw:
        out[a].append(b)
    edges: list[tuple[str, str, tuple]] = []

    def follow(src: str, node: str, via: tuple) -> None:
        if node not in ports:
            edges.append((src, node, via))
            return
        for nxt in out[node]:
            follow(src, nxt, via + (node,))

    for a, b in raw:
        if a not in ports:
            follow(a, b, ())
    return nodes, ports, edges


def nir_params(node: Any) -> dict[str, Any]:
    """A nir primitive's parameters under the names a NIR file uses (absent optional ones left out)."""
    kind = type(node).__name__
    if kind in ("Input", "Identity"):
        return {"shape": node.input_type["input"]}
    if kind == "Output":
        return {"shape": node.output_type["output"]}
    params = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)
              if f.name not in ("input_type", "output_type", "metadata")}
    if kind == "Flatten":
        params["input_type"] = node.input_type["input"]
    return {k: v for k, v in params.items() if v is not None}
