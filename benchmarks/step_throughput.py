"""Step-solver throughput: nircomp vs Spyx (same NIR graph via spyx.nir.from_nir) vs hand-written JAX.

    python benchmarks/step_throughput.py [--threads 1|default|both] [--repeats 5] [--quick] [--md FILE]

Workloads (issue: step solver):
  (a) CubaLIF MLP 700-512-512-20, batch 64, T=500
  (b) conv net 2x34x34 -> conv16 5x5 s2 p1 -> IF -> conv16 3x3 p1 -> IF -> sumpool2 -> conv8 3x3 p1 -> IF
      -> sumpool2 -> flatten -> 128 -> 256 -> IF -> 10 -> IF, batch 32, T=300
  (c) recurrent CubaLIF 12 -> 38 (recurrent) -> 7, batch 256, T=256
Reported: samples*steps/s, compile time (first call), achieved GFLOP/s of the synaptic ops next to this
machine's large-matmul GFLOP/s measured in the same process, and the ratios. The hand-written JAX is
what a careful JAX user writes: stateless layers on the whole [T, B, ...] sequence, lax.scan only over
neuron state; its outputs are checked equal to nircomp's so both compute the same thing. Spyx runs the
same NIR graph through its own importer (its own discretisation, same work). Each thread setting runs
in a fresh subprocess because XLA reads its flags at start-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import add_malloc_option, machine, malloc_env, malloc_modes, report, worker_result

WORKLOADS = {
    "a": dict(desc="CubaLIF MLP 700-512-512-20", batch=64, T=500),
    "b": dict(desc="IF conv net 2x34x34 (3 conv, 2 sumpool, 128-256-10)", batch=32, T=300),
    "c": dict(desc="recurrent CubaLIF 12-38(rec)-7", batch=256, T=256),
}
THREAD_FLAGS = {"1": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", "default": ""}


# ----------------------------------------------------------------------------- graphs
def build_graph(which: str):
    import nir
    import numpy as np

    rng = np.random.default_rng(0)
    f32 = np.float32

    def cuba(n):
        return nir.CubaLIF(tau_syn=np.full(n, 5e-3, f32), tau_mem=np.full(n, 1e-2, f32), r=np.ones(n, f32),
                           v_leak=np.zeros(n, f32), v_threshold=np.ones(n, f32), v_reset=np.zeros(n, f32),
                           w_in=np.ones(n, f32))

    def if_(shape):
        return nir.IF(r=np.ones(shape, f32), v_threshold=np.ones(shape, f32), v_reset=np.zeros(shape, f32))

    def w(o, i, gain):
        return (rng.normal(gain / i, gain / np.sqrt(i), (o, i))).astype(f32)  # positive mean: active layers

    if which == "a":
        nodes = {"input": nir.Input(np.array([700])), "fc1": nir.Linear(w(512, 700, 20.0)), "lif1": cuba(512),
                 "fc2": nir.Linear(w(512, 512, 20.0)), "lif2": cuba(512), "fc3": nir.Linear(w(20, 512, 20.0)),
                 "lif3": cuba(20), "output": nir.Output(np.array([20]))}
        edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "fc3"),
                 ("fc3", "lif3"), ("lif3", "output")]
    elif which == "b":
        def conv(o, i, k, s, p, hw):
            return nir.Conv2d(input_shape=hw, weight=rng.normal(0, 1.0 / np.sqrt(i * k * k), (o, i, k, k)).astype(f32),
                              stride=s, padding=p, dilation=1, groups=1, bias=np.zeros(o, f32))
        pool = dict(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
        nodes = {"input": nir.Input(np.array([2, 34, 34])), "conv1": conv(16, 2, 5, 2, 1, (34, 34)),
                 "if1": if_((16, 16, 16)), "conv2": conv(16, 16, 3, 1, 1, (16, 16)), "if2": if_((16, 16, 16)),
                 "pool1": nir.SumPool2d(**pool), "conv3": conv(8, 16, 3, 1, 1, (8, 8)), "if3": if_((8, 8, 8)),
                 "pool2": nir.SumPool2d(**pool),
                 "flat": nir.Flatten(input_type={"input": np.array([8, 4, 4])}, start_dim=0, end_dim=-1),
                 "fc1": nir.Affine(w(256, 128, 2.0), np.zeros(256, f32)), "if4": if_((256,)),
                 "fc2": nir.Affine(w(10, 256, 2.0), np.zeros(10, f32)), "if5": if_((10,)),
                 "output": nir.Output(np.array([10]))}
        order = ["input", "conv1", "if1", "conv2", "if2", "pool1", "conv3", "if3", "pool2", "flat", "fc1", "if4",
                 "fc2", "if5", "output"]
        edges = list(zip(order, order[1:]))
    else:
        nodes = {"input": nir.Input(np.array([12])), "fc1": nir.Linear(w(38, 12, 20.0)), "lif1": cuba(38),
                 "w_rec": nir.Linear(w(38, 38, 2.0)), "fc2": nir.Linear(w(7, 38, 20.0)), "lif2": cuba(7),
                 "output": nir.Output(np.array([7]))}
        edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "w_rec"), ("w_rec", "lif1"), ("lif1", "fc2"),
                 ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def synaptic_flops(which: str) -> float:
    """Multiply-adds x 2 of the weight ops per sample and step (neuron updates not counted)."""
    if which == "a":
        return 2.0 * (700 * 512 + 512 * 512 + 512 * 20)
    if which == "b":
        return 2.0 * (16 * 16 * 16 * 2 * 25 + 16 * 16 * 16 * 16 * 9 + 8 * 8 * 8 * 16 * 9 + 128 * 256 + 256 * 10)
    return 2.0 * (12 * 38 + 38 * 38 + 38 * 7)


# ----------------------------------------------------------------------------- hand-written JAX
def hand_model(which: str, graph, dt: float):
    """The same network written by hand: weight ops on [T, B, ...], scan over neuron state only."""
    import jax
    import jax.numpy as jnp

    n = graph.nodes

    def cuba(h, node):  # h [T, B, N] -> spikes [T, B, N]  ("nir" semantics: current first, reset to 0)
        a_s, a_m = dt / node.tau_syn, dt / node.tau_mem

        def body(c, h_t):
            i, v = c
            i = i + a_s * (-i + h_t)
            v = v + a_m * (-v + i)
            z = (v > 1.0).astype(h_t.dtype)
            return (i, v * (1.0 - z)), z

        z0 = jnp.zeros(h.shape[1:], h.dtype)
        return jax.lax.scan(body, (z0, z0), h)[1]

    def if_(h):
        def body(v, h_t):
            v = v + h_t
            z = (v > 1.0).astype(h_t.dtype)
            return v * (1.0 - z), z

        return jax.lax.scan(body, jnp.zeros(h.shape[1:], h.dtype), h)[1]

    def dense(x, node):
        y = x @ jnp.asarray(node.weight).T
        return y + jnp.asarray(node.bias) if isinstance(node.bias if hasattr(node, "bias") else None,
                                                       type(node.weight)) else y

    def conv(x, node):  # x [T, B, C, H, W]
        T, B = x.shape[:2]
        pad = [(int(p), int(p)) for p in node.padding]
        y = jax.lax.conv_general_dilated(x.reshape((T * B,) + x.shape[2:]), jnp.asarray(node.weight),
                                         tuple(int(s) for s in node.stride), pad)
        return y.reshape((T, B) + y.shape[1:])

    def pool(x):
        return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, 1, 2, 2), (1, 1, 1, 2, 2), "VALID")

    if which == "a":
        def f(x):  # x [B, T, 700]
            x = jnp.swapaxes(x, 0, 1)
            s = cuba(dense(x, n["fc1"]), n["lif1"])
            s = cuba(dense(s, n["fc2"]), n["lif2"])
            return jnp.swapaxes(cuba(dense(s, n["fc3"]), n["lif3"]), 0, 1)
    elif which == "b":
        def f(x):
            x = jnp.swapaxes(x, 0, 1)
            s = if_(conv(x, n["conv1"]))
            s = pool(if_(conv(s, n["conv2"])))
            s = pool(if_(conv(s, n["conv3"])))
            s = s.reshape(s.shape[:2] + (-1,))
            s = if_(dense(s, n["fc1"]))
            return jnp.swapaxes(if_(dense(s, n["fc2"])), 0, 1)
    else:
        w_in, w_rec, w_out = (jnp.asarray(n[k].weight) for k in ("fc1", "w_rec", "fc2"))
        a_s, a_m = dt / n["lif1"].tau_syn, dt / n["lif1"].tau_mem

        def f(x):
            x = jnp.swapaxes(x, 0, 1)
            h = x @ w_in.T

            def body(c, h_t):
                i, v, z = c
                i = i + a_s * (-i + h_t + z @ w_rec.T)
                v = v + a_m * (-v + i)
                z = (v > 1.0).astype(h_t.dtype)
                return (i, v * (1.0 - z), z), z

            z0 = jnp.zeros(h.shape[1:], h.dtype)
            s = jax.lax.scan(body, (z0, z0, z0), h)[1]
            return jnp.swapaxes(cuba(s @ w_out.T, n["lif2"]), 0, 1)
    return f


# ----------------------------------------------------------------------------- spyx
def spyx_model(which: str, graph, dt: float, x):
    """Spyx's own NIR import of the same graph, jitted; None (with the reason) if Spyx cannot import it."""
    try:
        import jax
        import jax.numpy as jnp
        from flax import nnx
        from spyx.nir import _build_model
        from spyx.nn import run
    except ImportError as e:
        return None, f"spyx not installed ({e})"
    import copy

    try:
        model = _build_model(copy.deepcopy(graph), dt, nnx.Rngs(0))
    except Exception as e:  # noqa: BLE001 - report why the peer could not take the graph
        return None, f"spyx.nir import failed: {type(e).__name__}: {e}"
    gdef, state = nnx.split(model)

    @jax.jit
    def f(state, x):
        m = nnx.merge(gdef, state)
        xt = jnp.swapaxes(x, 0, 1)  # time-major
        if xt.ndim == 5:  # spyx runs channels-last
            xt = jnp.moveaxis(xt, 2, -1)
        return run(m, xt)[0]

    return (lambda x: f(state, x)), ""


# ----------------------------------------------------------------------------- timing
def _time(fn, x, repeats):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(x))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    times.sort()
    return compile_s, times[len(times) // 2]


def matmul_gflops():
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best / 1e9


def worker(which_list, repeats, quick):
    import equinox as eqx
    import jax
    import numpy as np

    import nircomp

    dt = 1e-3
    results = {"matmul_gflops": matmul_gflops(), "rows": []}
    for which in which_list:
        spec = dict(WORKLOADS[which])
        if quick:
            spec["T"] = max(10, spec["T"] // 10)
        graph = build_graph(which)
        in_shape = {"a": (700,), "b": (2, 34, 34), "c": (12,)}[which]
        rng = np.random.default_rng(1)
        x = (rng.random((spec["batch"], spec["T"], *in_shape)) < 0.05).astype(np.float32)
        x = jax.device_put(x)
        t0 = time.perf_counter()
        prog = nircomp.compile(graph, dt=dt, solver="step")
        build_s = time.perf_counter() - t0
        ours = eqx.filter_jit(jax.vmap(prog.model))
        hand = jax.jit(hand_model(which, graph, dt))
        y_ours, y_hand = ours(x), hand(x)
        same = bool(np.array_equal(np.asarray(y_ours), np.asarray(y_hand)))
        scc = eqx.filter_jit(jax.vmap(nircomp.compile(graph, dt=dt, solver="step", schedule="scc").model))
        same = same and bool(np.array_equal(np.asarray(scc(x)), np.asarray(y_hand)))
        rows = {"nircomp": _time(ours, x, repeats), "nircomp schedule=scc": _time(scc, x, repeats),
                "hand JAX": _time(hand, x, repeats)}
        spyx_fn, why = spyx_model(which, graph, dt, x)
        if spyx_fn is not None:
            rows["spyx"] = _time(spyx_fn, x, repeats)
        work = spec["batch"] * spec["T"]
        for name, (compile_s, run_s) in rows.items():
            results["rows"].append(dict(workload=which, impl=name, compile_s=compile_s, run_s=run_s,
                                        steps_per_s=work / run_s, gflops=work * synaptic_flops(which) / run_s / 1e9,
                                        build_s=build_s if name == "nircomp" else None))
        results.setdefault("notes", {})[which] = {"outputs_equal_hand": same, "spikes": float(np.asarray(y_ours).sum()),
                                                  "spyx": why or "ok"}
    return results


def table(res, threads):
    peak = res["matmul_gflops"]
    lines = [f"threads={threads}; large-matmul peak {peak:.1f} GFLOP/s", "",
             "| workload | impl | samples·steps/s | compile s | GFLOP/s | % of matmul peak | nircomp speed-up |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by = {}
    for r in res["rows"]:
        by.setdefault(r["workload"], {})[r["impl"]] = r
    for w, impls in by.items():
        ours = impls["nircomp"]["run_s"]
        for name, r in impls.items():
            speed = "" if name == "nircomp" else f"{r['run_s'] / ours:.2f}x"  # >1: nircomp faster
            lines.append(f"| ({w}) {WORKLOADS[w]['desc']} | {name} | {r['steps_per_s']:,.0f} | {r['compile_s']:.2f} "
                         f"| {r['gflops']:.2f} | {100 * r['gflops'] / peak:.0f} % | {speed} |")
    for w, note in res.get("notes", {}).items():
        lines.append(f"\n({w}): nircomp (both schedules) equals hand-written JAX bit for bit: {note['outputs_equal_hand']}; "
                     f"output spikes {note['spikes']:.0f}; spyx: {note['spyx']}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", choices=["1", "default", "both"], default="both")
    ap.add_argument("--workloads", default="abc")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="T/10, for a smoke run")
    add_malloc_option(ap)
    ap.add_argument("--md", help="append the markdown tables to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(list(args.workloads), args.repeats, args.quick)))
        return
    out = [machine(load=False)]
    for mode in malloc_modes(args.malloc):
        for threads in (["1", "default"] if args.threads == "both" else [args.threads]):
            cmd = [sys.executable, __file__, "--worker", "--workloads", args.workloads, "--repeats", str(args.repeats)]
            res = worker_result(cmd + (["--quick"] if args.quick else []),
                                dict(malloc_env(mode), XLA_FLAGS=THREAD_FLAGS[threads]))
            out.append(f"malloc {mode}, " + table(res, threads))
    report("\n\n".join(out), args.md)

if __name__ == "__main__":
    main()
