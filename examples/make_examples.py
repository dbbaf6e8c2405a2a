"""Writes the example graphs of examples/ with NIR's own classes (seeded, so the files are reproducible).

    python examples/make_examples.py

- cubalif_chain.nir: Input 16 -> Affine -> CubaLIF 32 -> Affine -> CubaLIF 4 -> Output (zero biases).
- recurrent_subgraph.nir: Input 12 -> Linear -> subgraph `lif1` {Input -> CubaLIF <-> Linear (recurrent)
  -> Output} -> Linear -> CubaLI 7 -> Output; the shape of the braille network of the NIR paper.
- conv_net.nir: Input 2x34x34 -> Conv2d(16, 5x5, s2, p1) -> IF -> SumPool2d 2 -> Conv2d(8, 3x3, p1) -> IF
  -> SumPool2d 2 -> Flatten -> Affine -> Scale -> IF -> Affine 10 -> LI -> Output.
"""

from __future__ import annotations

import pathlib

import nir
import numpy as np

HERE = pathlib.Path(__file__).parent


def _full(n, value):
    return np.full(n, value, dtype=np.float32)


def cubalif(n, tau_syn=2e-3, tau_mem=1e-2, thr=1.0):
    return nir.CubaLIF(tau_syn=_full(n, tau_syn), tau_mem=_full(n, tau_mem), r=_full(n, 1.0),
                       v_leak=_full(n, 0.0), v_threshold=_full(n, thr), v_reset=_full(n, 0.0), w_in=_full(n, 1.0))


def cubalif_chain(rng):
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([16])),
               "fc1": nir.Affine(rng.normal(0, 0.5, (32, 16)).astype(np.float32), np.zeros(32, np.float32)),
               "lif1": cubalif(32),
               "fc2": nir.Affine(rng.normal(0, 0.5, (4, 32)).astype(np.float32), np.zeros(4, np.float32)),
               "lif2": cubalif(4),
               "output": nir.Output(np.array([4]))},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")])


def recurrent_subgraph(rng):
    lif1 = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([38])), "lif": cubalif(38),
               "w_rec": nir.Linear(rng.normal(0, 0.2, (38, 38)).astype(np.float32)),
               "output": nir.Output(np.array([38]))},
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")], type_check=False)
    n = 7
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([12])),
               "fc1": nir.Linear(rng.normal(0, 0.5, (38, 12)).astype(np.float32)),
               "lif1": lif1,
               "fc2": nir.Linear(rng.normal(0, 0.5, (n, 38)).astype(np.float32)),
               "li2": nir.CubaLI(tau_syn=_full(n, 2e-3), tau_mem=_full(n, 1e-2), r=_full(n, 1.0),
                                 v_leak=_full(n, 0.0)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li2"), ("li2", "output")],
        type_check=False)


def conv_net(rng):
    def if_(shape):
        return nir.IF(r=np.ones(shape, np.float32), v_threshold=np.ones(shape, np.float32),
                      v_reset=np.zeros(shape, np.float32))

    pool = dict(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2, 34, 34])),
               "conv1": nir.Conv2d(input_shape=(34, 34), weight=rng.normal(0, 0.3, (16, 2, 5, 5)).astype(np.float32),
                                   stride=2, padding=1, dilation=1, groups=1, bias=np.zeros(16, np.float32)),
               "if1": if_((16, 16, 16)),
               "pool1": nir.SumPool2d(**pool),
               "conv2": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0, 0.3, (8, 16, 3, 3)).astype(np.float32),
                                   stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(8, np.float32)),
               "if2": if_((8, 8, 8)),
               "pool2": nir.SumPool2d(**pool),
               "flat": nir.Flatten(input_type={"input": np.array([8, 4, 4])}, start_dim=0, end_dim=-1),
               "fc1": nir.Affine(rng.normal(0, 0.1, (64, 128)).astype(np.float32),
                                 rng.normal(0, 0.1, 64).astype(np.float32)),
               "scale": nir.Scale(_full(64, 0.5)),
               "if3": if_((64,)),
               "fc2": nir.Affine(rng.normal(0, 0.1, (10, 64)).astype(np.float32), np.zeros(10, np.float32)),
               "li": nir.LI(tau=_full(10, 1e-2), r=_full(10, 1.0), v_leak=_full(10, 0.0)),
               "output": nir.Output(np.array([10]))},
        edges=[("input", "conv1"), ("conv1", "if1"), ("if1", "pool1"), ("pool1", "conv2"), ("conv2", "if2"),
               ("if2", "pool2"), ("pool2", "flat"), ("flat", "fc1"), ("fc1", "scale"), ("scale", "if3"),
               ("if3", "fc2"), ("fc2", "li"), ("li", "output")],
        type_check=False)


EXAMPLES = {"cubalif_chain": cubalif_chain, "recurrent_subgraph": recurrent_subgraph, "conv_net": conv_net}

if __name__ == "__main__":
    for name, build in EXAMPLES.items():
        path = HERE / f"{name}.nir"
        nir.write(path, build(np.random.default_rng(0)))
        print("wrote", path)
