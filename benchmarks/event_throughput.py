"""Analytical (event-driven) solver throughput: nircomp vs jaxsnn on the same NIR graph, in one run.

    python benchmarks/event_throughput.py [--n 16] [--batch 64] [--inputs 32] [--repeats 5]

Workload (issue: event-driven solver): Input(n) -> Linear -> CubaLIF(n) -> Linear -> CubaLIF(n) -> Output,
τs = 5, τm = 10 (jaxsnn reads NIR's τ in ms: 5 ms, 10 ms; nircomp under convention="jaxsnn" likewise), square
weights (the only ones jaxsnn's from_nir runs), t_max = 30 ms, `--inputs` random input spikes per sample,
a batch of `--batch` samples. jaxsnn runs `jaxsnn.event.utils.from_nir` (its apply vmaps over the batch),
nircomp `compile(..., solver="analytical", convention="jaxsnn")` under jax.vmap; both jitted, float32. Their
output spike times and weight gradients are checked equal first (same work), then: forward time per batch,
and forward + gradient of a loss on the output spike times w.r.t. the weights (nircomp: EventProp; jaxsnn:
its default backprop_method="analytical", autodiff through its closed-form spike times). Budgets: jaxsnn's n_steps
counts input events and spikes together, so it gets inputs + spikes; nircomp's n_spikes the spikes only.
Needs jaxsnn (`pip install jaxsnn==0.3.0`, part of the `test` extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--inputs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import nir
    import numpy as np
    from jaxsnn.event.types import Spike
    from jaxsnn.event.utils.from_nir import ConversionConfig, from_nir

    import nircomp

    n, batch, t_max, budget = args.n, args.batch, 0.03, 8 * args.n
    rng = np.random.default_rng(0)
    f = lambda v: np.full(n, v, dtype=np.float32)
    cuba = lambda: nir.CubaLIF(tau_syn=f(5.0), tau_mem=f(10.0), r=f(1.0), v_leak=f(0.0),
                               v_threshold=f(1.0), v_reset=f(0.0), w_in=f(1.0))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([n])),
                                "fc1": nir.Linear(rng.uniform(0.0, 2.0 / np.sqrt(n), (n, n)).astype(np.float32)),
                                "lif1": cuba(),
                                "fc2": nir.Linear(rng.uniform(0.0, 2.0 / np.sqrt(n), (n, n)).astype(np.float32)),
                                "lif2": cuba(), "output": nir.Output(np.array([n]))},
                         edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
                                ("lif2", "output")])
    times = np.sort(rng.uniform(0, 0.5 * t_max, (batch, args.inputs)), axis=1).astype(np.float32)
    index = rng.integers(0, n, (batch, args.inputs)).astype(np.int32)

    # ---- jaxsnn
    init, apply = from_nir(graph, ConversionConfig(t_max=t_max, n_steps={"lif1": args.inputs + budget,
                                                                         "lif2": 2 * budget})).done()
    params = init(jax.random.PRNGKey(0))
    spikes = Spike(time=jnp.asarray(times), idx=jnp.asarray(index), current=jnp.zeros_like(times),
                   layer_idx=jnp.zeros_like(index), internal=jnp.ones_like(index, dtype=bool))

    def peer_times(p):
        rec = apply({"input": spikes}, p)["lif2"]
        return jnp.where(rec.internal & (rec.time < t_max), rec.time, 0.0)

    peer_fwd = jax.jit(peer_times)
    peer_grad = jax.jit(jax.grad(lambda p: jnp.sum(peer_times(p))))

    # ---- nircomp
    model = nircomp.compile(graph, solver="analytical", convention="jaxsnn", t_max=t_max,
                            n_spikes={"lif1": budget, "lif2": budget}).model
    ev = nircomp.Events(jnp.asarray(times), jnp.asarray(index))

    def ours_times(m):
        out = jax.vmap(m)(ev)
        return jnp.where(jnp.isfinite(out.times), out.times, 0.0), out.any_overflow

    ours_fwd = eqx.filter_jit(ours_times)
    ours_grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(ours_times(m)[0])))

    # ---- same work
    t0 = time.perf_counter()
    a, overflow = jax.block_until_ready(ours_fwd(model))
    ours_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = jax.block_until_ready(peer_fwd(params))
    peer_first = time.perf_counter() - t0
    assert not bool(jnp.any(overflow)), "raise the budget"
    a_sorted, b_sorted = np.sort(np.asarray(a), axis=1), np.sort(np.asarray(b), axis=1)
    width = min(a_sorted.shape[1], b_sorted.shape[1])
    np.testing.assert_allclose(a_sorted[:, -width:], b_sorted[:, -width:], atol=1e-5 * t_max)
    n_spikes = int((np.asarray(a) > 0).sum())
    t0 = time.perf_counter()
    g_ours = jax.block_until_ready(ours_grad(model))
    ours_grad_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    g_peer = jax.block_until_ready(peer_grad(params))
    peer_grad_first = time.perf_counter() - t0
    for ours_node, peer_node in (("lif1", "fc1"), ("lif2", "fc2")):  # the same gradient, exact in both
        np.testing.assert_allclose(np.asarray(g_ours.params[ours_node]["weight"]), np.asarray(g_peer[peer_node]),
                                   rtol=1e-2, atol=1e-3 * float(np.abs(g_peer[peer_node]).max()))

    def timed(fn, arg, first=None):
        if first is None:  # the first call: trace + XLA compile + one run
            t0 = time.perf_counter()
            jax.block_until_ready(fn(arg))
            first = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(arg))
            runs.append(time.perf_counter() - t0)
        return first, float(np.median(runs))

    rows = [("forward", timed(ours_fwd, model, ours_first), timed(peer_fwd, params, peer_first)),
            ("forward + grad", timed(ours_grad, model, ours_grad_first), timed(peer_grad, params, peer_grad_first))]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"jax {jax.__version__} ({jax.default_backend()}); load average {os.getloadavg()[0]:.1f}")
    print(f"network {n}-{n}-{n}, batch {batch}, {args.inputs} input spikes/sample, {n_spikes} output spikes "
          f"in the batch (equal in both), median of {args.repeats}")
    print("| pass | nircomp ms | jaxsnn ms | jaxsnn / nircomp | nircomp first call s | jaxsnn first call s |")
    print("|---|---|---|---|---|---|")
    for name, (o_first, o_med), (p_first, p_med) in rows:
        print(f"| {name} | {o_med * 1e3:.1f} | {p_med * 1e3:.1f} | {p_med / o_med:.2f} | {o_first:.1f} | "
              f"{p_first:.1f} |")


if __name__ == "__main__":
    main()
