"""Small NIR test graphs covering every primitive and topology the step solver supports.

`ALL_GRAPHS` maps a name to a builder returning a fresh `nir.NIRGraph` (seeded, so deterministic).
Time constants and delays are in seconds and meant for `dt = DT`. Together the graphs cover: chains,
branching and merging (summed inputs), cycles (through a neuron, through stateless ops only, through a
Delay, a self-loop), nested subgraphs, two Inputs and two Outputs, Conv1d/Conv2d (stride, padding incl.
'same', dilation, groups, bias) with SumPool2d/AvgPool2d/Flatten, Delay, Threshold, Scale, Identity, I,
IF, LI, LIF, CubaLI, CubaLIF, and heterogeneous per-neuron parameters.

`sample_input(graph, T)` draws an input for a graph: random spikes (0/1) times a random gain per Input.
`x64` is a fixture that enables float64 in JAX for one test (import it into the test module).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import nir
import numpy as np
import pytest
from nir.ir.graph import Identity

DT = 1e-3


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _full(shape, value) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _w(rng, n_out, n_in, std=0.8):
    return _f(rng.normal(0, std, (n_out, n_in)))


def lif(shape, tau=5e-3, thr=1.0, r=1.0, v_leak=0.0, v_reset=0.0):
    return nir.LIF(tau=_full(shape, tau), r=_full(shape, r), v_leak=_full(shape, v_leak),
                   v_threshold=_full(shape, thr), v_reset=_full(shape, v_reset))


def cubalif(shape, tau_syn=2e-3, tau_mem=5e-3, thr=1.0, w_in=1.0):
    return nir.CubaLIF(tau_syn=_full(shape, tau_syn), tau_mem=_full(shape, tau_mem), r=_full(shape, 1.0),
                       v_leak=_full(shape, 0.0), v_threshold=_full(shape, thr), v_reset=_full(shape, 0.0),
                       w_in=_full(shape, w_in))


def li(shape, tau=4e-3, r=1.0):
    return nir.LI(tau=_full(shape, tau), r=_full(shape, r), v_leak=_full(shape, 0.0))


def cubali(shape, tau_syn=2e-3, tau_mem=6e-3):
    return nir.CubaLI(tau_syn=_full(shape, tau_syn), tau_mem=_full(shape, tau_mem), r=_full(shape, 1.0),
                      v_leak=_full(shape, 0.0), w_in=_full(shape, 1.0))


def if_(shape, thr=1.0):
    return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, thr), v_reset=_full(shape, 0.0))


def io(n):
    shape = np.array(n if isinstance(n, (tuple, list)) else [n])
    return nir.Input(shape), nir.Output(shape)


def _graph(nodes, edges) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


# ----------------------------------------------------------------------------- the graphs
def affine_lif() -> nir.NIRGraph:
    """Input 3 -> Affine -> LIF 4 -> Output: the smallest fused chain."""
    rng = _rng(1)
    return _graph({"in": io(3)[0], "fc": nir.Affine(_w(rng, 4, 3, 1.5), _f(rng.normal(0, 0.3, 4))), "lif": lif(4),
                   "out": nir.Output(np.array([4]))}, [("in", "fc"), ("fc", "lif"), ("lif", "out")])


def cubalif_chain() -> nir.NIRGraph:
    """Input 5 -> Affine -> CubaLIF 6 -> Linear -> CubaLI 3 -> Output."""
    rng = _rng(2)
    return _graph({"in": io(5)[0], "fc1": nir.Affine(_w(rng, 6, 5, 3.0), _f(rng.normal(0, 0.5, 6))),
                   "lif1": cubalif(6, thr=0.5), "fc2": nir.Linear(_w(rng, 3, 6)), "li2": cubali(3),
                   "out": io(3)[1]},
                  [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li2"), ("li2", "out")])


def branch_merge() -> nir.NIRGraph:
    """Input fans out to two Linears summed into one LIF (through an Identity); LIF and a skip path are
    summed again into an LI."""
    rng = _rng(3)
    return _graph({"in": io(4)[0], "a": nir.Linear(_w(rng, 3, 4, 1.5)), "b": nir.Linear(_w(rng, 3, 4, 1.5)),
                   "id": Identity(np.array([3])), "lif": lif(3), "fc": nir.Linear(_w(rng, 2, 3)),
                   "skip": nir.Linear(_w(rng, 2, 4, 0.3)), "li": li(2), "out": io(2)[1]},
                  [("in", "a"), ("in", "b"), ("a", "id"), ("b", "lif"), ("id", "lif"), ("lif", "fc"),
                   ("fc", "li"), ("in", "skip"), ("skip", "li"), ("li", "out")])


def recurrent() -> nir.NIRGraph:
    """Input 4 -> Linear -> CubaLIF 5 <-> Linear (recurrent) ; CubaLIF -> Linear -> LI 2 -> Output."""
    rng = _rng(4)
    return _graph({"in": io(4)[0], "fc_in": nir.Linear(_w(rng, 5, 4, 3.0)), "lif": cubalif(5, thr=0.3),
                   "w_rec": nir.Linear(_w(rng, 5, 5, 1.0)), "fc_out": nir.Linear(_w(rng, 2, 5)),
                   "li": li(2), "out": io(2)[1]},
                  [("in", "fc_in"), ("fc_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
                   ("lif", "fc_out"), ("fc_out", "li"), ("li", "out")])


def nested() -> nir.NIRGraph:
    """A recurrent LIF inside a nested NIRGraph `sub` (flattened to `sub.lif`), between two Linears."""
    rng = _rng(5)
    inner = _graph({"input": io(4)[0], "lif": lif(4, thr=0.4), "w_rec": nir.Linear(_w(rng, 4, 4, 0.5)),
                    "output": io(4)[1]},
                   [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    return _graph({"in": io(3)[0], "fc1": nir.Linear(_w(rng, 4, 3, 2.0)), "sub": inner,
                   "fc2": nir.Linear(_w(rng, 2, 4)), "li": cubali(2), "out": io(2)[1]},
                  [("in", "fc1"), ("fc1", "sub"), ("sub", "fc2"), ("fc2", "li"), ("li", "out")])


def two_io() -> nir.NIRGraph:
    """Inputs `xa` (3) and `xb` (2); both drive one LIF (summed) -> Output `ya`; `xb` -> LI -> `yb`."""
    rng = _rng(6)
    return _graph({"xa": io(3)[0], "xb": io(2)[0], "fa": nir.Affine(_w(rng, 2, 3, 1.5), _full(2, 0.1)),
                   "fb": nir.Linear(_w(rng, 2, 2, 1.5)), "lif": lif(2, thr=0.5), "li": li(2, r=2.0),
                   "ya": io(2)[1], "yb": io(2)[1]},
                  [("xa", "fa"), ("xb", "fb"), ("fa", "lif"), ("fb", "lif"), ("lif", "ya"), ("xb", "li"),
                   ("li", "yb")])


def conv2d_net() -> nir.NIRGraph:
    """Input 2x8x8 -> Conv2d(4, 3x3, 'same', bias) -> IF -> SumPool2d 2 -> Conv2d(4, 3x3, groups 2,
    stride 2, padding 1) -> LIF -> AvgPool2d(2, stride 1, padding 1) -> Flatten -> Affine -> LI -> Output."""
    rng = _rng(7)
    return _graph({"in": io((2, 8, 8))[0],
                   "conv1": nir.Conv2d(None, _f(rng.normal(0, 0.6, (4, 2, 3, 3))), 1, "same", 1, 1,
                                       _f(rng.normal(0, 0.2, 4))),
                   "if1": if_((4, 8, 8), thr=0.8),
                   "pool1": nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])),
                   "conv2": nir.Conv2d(None, _f(rng.normal(0, 0.8, (4, 2, 3, 3))), 2, 1, 1, 2, _full(4, 0.1)),
                   "lif2": lif((4, 2, 2), thr=0.3),
                   "pool2": nir.AvgPool2d(np.array([2, 2]), np.array([1, 1]), np.array([1, 1])),
                   "flat": nir.Flatten({"input": np.array([4, 3, 3])}, 0, -1),
                   "fc": nir.Affine(_w(rng, 3, 36), _full(3, 0.05)), "li": li(3), "out": io(3)[1]},
                  [("in", "conv1"), ("conv1", "if1"), ("if1", "pool1"), ("pool1", "conv2"), ("conv2", "lif2"),
                   ("lif2", "pool2"), ("pool2", "flat"), ("flat", "fc"), ("fc", "li"), ("li", "out")])


def conv1d_net() -> nir.NIRGraph:
    """Input 2x10 -> Conv1d(3, k3, stride 2, dilation 2, bias) -> IF -> Flatten -> Linear -> CubaLI."""
    rng = _rng(8)
    return _graph({"in": io((2, 10))[0],
                   "conv": nir.Conv1d(None, _f(rng.normal(0, 0.8, (3, 2, 3))), 2, 1, 2, 1, _full(3, 0.2)),
                   "if1": if_((3, 4), thr=0.6), "flat": nir.Flatten({"input": np.array([3, 4])}, 0, 1),
                   "fc": nir.Linear(_w(rng, 2, 12)), "li": cubali(2), "out": io(2)[1]},
                  [("in", "conv"), ("conv", "if1"), ("if1", "flat"), ("flat", "fc"), ("fc", "li"), ("li", "out")])


def delay_loop() -> nir.NIRGraph:
    """Heterogeneous Delays on the input path and inside a cycle LIF -> Delay -> Linear -> LIF."""
    rng = _rng(9)
    return _graph({"in": io(3)[0], "d_in": nir.Delay(_f([0.0, 2 * DT, 3 * DT])),
                   "fc": nir.Linear(_w(rng, 3, 3, 2.0)), "lif": lif(3, thr=0.5),
                   "d_rec": nir.Delay(_f([DT, 2 * DT, 4 * DT])), "w_rec": nir.Linear(_w(rng, 3, 3, 0.7)),
                   "li": li(3), "out": io(3)[1]},
                  [("in", "d_in"), ("d_in", "fc"), ("fc", "lif"), ("lif", "d_rec"), ("d_rec", "w_rec"),
                   ("w_rec", "lif"), ("lif", "li"), ("li", "out")])


def threshold_scale() -> nir.NIRGraph:
    """Input 4 -> Scale -> Threshold -> I (integrator) -> Output, per-element scales and thresholds."""
    return _graph({"in": io(4)[0], "scale": nir.Scale(_f([0.5, 1.0, 2.0, -1.0])),
                   "thr": nir.Threshold(_f([0.2, 0.5, 1.0, -0.3])), "int": nir.I(_f([1.0, 0.5, 2.0, 1.0])),
                   "out": io(4)[1]},
                  [("in", "scale"), ("scale", "thr"), ("thr", "int"), ("int", "out")])


def stateless_cycle() -> nir.NIRGraph:
    """A cycle of stateless ops only: Linear a -> Threshold -> Scale -> back into a (summed with input)."""
    rng = _rng(10)
    return _graph({"in": io(3)[0], "a": nir.Linear(_w(rng, 3, 3, 1.0)), "thr": nir.Threshold(_full(3, 0.2)),
                   "fb": nir.Scale(_f([0.5, -0.7, 1.2])), "if1": if_(3, thr=1.5), "out": io(3)[1]},
                  [("in", "a"), ("a", "thr"), ("thr", "fb"), ("fb", "a"), ("thr", "if1"), ("if1", "out")])


def self_loop() -> nir.NIRGraph:
    """An LI whose output feeds itself (a self-loop), after an IF."""
    return _graph({"in": io(2)[0], "if1": if_(2, thr=0.5), "li": li(2, tau=3e-3), "out": io(2)[1]},
                  [("in", "if1"), ("if1", "li"), ("li", "li"), ("li", "out")])


def neurons() -> nir.NIRGraph:
    """Every neuron kind in one chain: I -> IF -> LI -> Linear -> CubaLI, and IF -> LIF -> Output 2."""
    rng = _rng(11)
    return _graph({"in": io(3)[0], "int": nir.I(_full(3, 0.5)), "if1": if_(3, thr=0.7), "li": li(3),
                   "fc": nir.Linear(_w(rng, 3, 3)), "cli": cubali(3), "lif": lif(3, thr=0.4),
                   "out1": io(3)[1], "out2": io(3)[1]},
                  [("in", "int"), ("int", "if1"), ("if1", "li"), ("li", "fc"), ("fc", "cli"), ("cli", "out1"),
                   ("if1", "lif"), ("lif", "out2")])


def heterogeneous() -> nir.NIRGraph:
    """Per-neuron parameters that all differ: LIF (tau, r, v_leak, thr, v_reset), CubaLIF (+ w_in)."""
    rng = _rng(12)
    n = 5

    def u(lo, hi):
        return _f(rng.uniform(lo, hi, n))

    l1 = nir.LIF(tau=u(2e-3, 2e-2), r=u(0.5, 2.0), v_leak=u(-0.1, 0.3), v_threshold=u(0.3, 1.0),
                 v_reset=u(-0.2, 0.1))
    l2 = nir.CubaLIF(tau_syn=u(1e-3, 5e-3), tau_mem=u(3e-3, 2e-2), r=u(0.5, 2.0), v_leak=u(-0.1, 0.2),
                     v_threshold=u(0.2, 0.8), v_reset=u(-0.1, 0.1), w_in=u(0.5, 3.0))
    return _graph({"in": io(n)[0], "fc1": nir.Linear(_w(rng, n, n, 2.0)), "lif1": l1,
                   "fc2": nir.Affine(_w(rng, n, n, 1.0), u(0.0, 0.5)), "lif2": l2, "out": io(n)[1]},
                  [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "out")])


ALL_GRAPHS: dict[str, Callable[[], nir.NIRGraph]] = {
    f.__name__: f for f in (affine_lif, cubalif_chain, branch_merge, recurrent, nested, two_io, conv2d_net,
                            conv1d_net, delay_loop, threshold_scale, stateless_cycle, self_loop, neurons,
                            heterogeneous)
}


# ----------------------------------------------------------------------------- inputs
def input_shapes(graph: nir.NIRGraph) -> dict[str, tuple[int, ...]]:
    """Top-level Input name -> shape, in the graph's node order."""
    return {name: tuple(int(s) for s in np.asarray(node.input_type["input"]).reshape(-1))
            for name, node in graph.nodes.items() if isinstance(node, nir.Input)}


def sample_input(graph: nir.NIRGraph, T: int = 40, seed: int = 0, p: float = 0.4):
    """Random spikes scaled by a random gain per element: an array for one Input, a dict for several."""
    rng = _rng(seed)
    xs = {name: (rng.random((T, *shape)) < p) * rng.uniform(0.5, 2.0, shape)
          for name, shape in input_shapes(graph).items()}
    xs = {k: v.astype(np.float32) for k, v in xs.items()}
    return next(iter(xs.values())) if len(xs) == 1 else xs


def chain(in_shape, *nodes: tuple[str, nir.NIRNode], out_shape=None, edges=()) -> nir.NIRGraph:
    """Input `in` -> the named nodes in order -> Output `out` (plus any extra `edges`, e.g. a back edge)."""
    names = ["in"] + [n for n, _ in nodes] + ["out"]
    return _graph({"in": io(in_shape)[0], **dict(nodes), "out": io(out_shape or in_shape)[1]},
                  list(itertools.pairwise(names)) + list(edges))


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
