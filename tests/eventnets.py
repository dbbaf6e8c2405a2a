"""Small NIR graphs for the analytical (event-driven) solver: Linear + homogeneous CubaLIF/LIF populations,
feed-forward and recurrent, with weights scaled so that a few input spikes make a neuron fire.

Jumps follow NIR (DESIGN §5): an input spike through weight W raises the synaptic current by w_in W/τs,
so the peak membrane response is ~ W τm/τs scaled; weights are drawn around `gain * τs` for that reason.
"""

from __future__ import annotations

import nir
import numpy as np


def cuba(n, tau_syn=5e-3, tau_mem=1e-2, thr=1.0, r=1.0, v_leak=0.0, v_reset=0.0, w_in=1.0):
    full = lambda v: np.full(n, v, dtype=np.float64)
    return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(r), v_leak=full(v_leak),
                       v_threshold=full(thr), v_reset=full(v_reset), w_in=full(w_in))


def lif(n, tau=1e-2, thr=1.0, r=1.0, v_leak=0.0, v_reset=0.0):
    full = lambda v: np.full(n, v, dtype=np.float64)
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(v_leak), v_threshold=full(thr), v_reset=full(v_reset))


def single(neuron, n_in=1, weight=None) -> nir.NIRGraph:
    """Input -> Linear -> one population -> Output."""
    n = neuron.v_threshold.shape[0]
    w = np.ones((n, n_in)) if weight is None else np.asarray(weight, dtype=np.float64)
    return nir.NIRGraph.from_list(nir.Input(np.array([n_in])), nir.Linear(w), neuron, nir.Output(np.array([n])))


def random_net(seed: int, recurrent: bool, n_in=3, sizes=(4, 3), gain=1.0, taus=((4e-3, 1e-2), (1e-2, 1e-2)),
               last_lif=False):
    """Input -> fc0 -> lif0 -> fc1 -> lif1 -> Output; `recurrent` adds lif1 -> rec -> lif0 (a loop back)
    and lif0 -> self -> lif0 (a self-loop). Population k has (tau_syn, tau_mem) = taus[k]; with `last_lif`
    the last population is a LIF (τ = its tau_mem, input jumps of r W/τ straight into v)."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(np.array([n_in])), "output": nir.Output(np.array([sizes[-1]]))}
    edges, prev, prev_n = [], "input", n_in
    for k, n in enumerate(sizes):
        ts, tm = taus[k % len(taus)]
        nodes[f"fc{k}"] = nir.Linear(rng.uniform(0.2, 1.2, (n, prev_n)) * gain * ts * 2.0)
        last = k == len(sizes) - 1
        nodes[f"lif{k}"] = lif(n, tau=tm, v_leak=0.5) if last and last_lif else cuba(n, tau_syn=ts, tau_mem=tm)
        edges += [(prev, f"fc{k}"), (f"fc{k}", f"lif{k}")]
        prev, prev_n = f"lif{k}", n
    edges.append((prev, "output"))
    if recurrent:
        ts0 = taus[0][0]
        nodes["rec"] = nir.Linear(rng.uniform(-0.5, 0.5, (sizes[0], sizes[-1])) * ts0 * 2.0)
        nodes["self"] = nir.Linear(rng.uniform(-0.5, 0.2, (sizes[0], sizes[0])) * ts0 * 2.0)
        edges += [(prev, "rec"), ("rec", "lif0"), ("lif0", "self"), ("self", "lif0")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def random_inputs(seed: int, n_in=3, count=8, t_max=0.02):
    """`count` input spikes at random times in [0, 0.6 t_max) on random channels."""
    rng = np.random.default_rng(seed + 1000)
    return np.sort(rng.uniform(0, 0.6 * t_max, count)), rng.integers(0, n_in, count)
