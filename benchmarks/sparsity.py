"""Spike sparsity and sparse weights: nircomp with `lower-connectivity` vs nircomp dense vs Spyx.

    env -u PYTHONPATH /tmp/peers/bin/python -P benchmarks/sparsity.py [--repeats 5] [--quick] [--md FILE]

Workload (issue: connectivity-aware lowering): the CubaLIF MLP 700-512-512-20 of step_throughput.py,
batch 64, T = 500, input spikes at rates 1 %, 5 %, 20 % (Bernoulli per input and step), hidden weights
(fc2, fc3) at density 100 % and 10 % (a random 10 % kept, scaled by 10 so the mean drive is unchanged).
Three implementations of the same NIR graph, timed interleaved in one process with XLA pinned to one
thread (a fresh subprocess, since XLA reads its flags at start-up):
- "dense": `nircomp.compile(graph, solver="step")`, every weight a dense product;
- "pass": the same with `connectivity={"spike_inputs": ["input"]}` (the pass `lower-connectivity`, its
  defaults; the graph's Input declared as spikes);
- "spyx": Spyx's own NIR import (`spyx.nir`), as in step_throughput.py.
Reported: median wall time of `--repeats` runs after a compile call, the ratios, the kernel each layer got,
whether each event layer gathered or fell back to the dense product at this rate (its busiest row of
nonzero inputs against its budget), and the agreement of "pass" with "dense" (max |difference| of the
output spikes: the sums are reordered, so a membrane at threshold may round the other way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RATES = (0.01, 0.05, 0.20)
DENSITIES = (1.0, 0.1)
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def build(density: float):
    """The MLP of step_throughput.py (workload a) with fc2 and fc3 thinned to `density`."""
    import numpy as np

    sys.path.insert(0, HERE)
    from step_throughput import build_graph

    graph = build_graph("a")
    rng = np.random.default_rng(7)
    for name in ("fc2", "fc3"):
        w = graph.nodes[name].weight
        graph.nodes[name].weight = (w * (rng.random(w.shape) < density) / density).astype(np.float32)
    return graph


def _race(fns: dict, x, repeats: int) -> dict:
    """{name: (compile s, median wall s, median CPU s, median minor page faults)}: each function once per
    round, rounds interleaved. CPU time (process time, all threads) is what other processes on a busy
    machine do not inflate; page faults count the fresh memory a call touches."""
    import resource

    import jax

    first, wall, cpu, faults = {}, {k: [] for k in fns}, {k: [] for k in fns}, {k: [] for k in fns}
    for name, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(x))
        first[name] = time.perf_counter() - t0
    for _ in range(repeats):
        for name, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            jax.block_until_ready(f(x))
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {k: (first[k], *(sorted(v[k])[repeats // 2] for v in (wall, cpu, faults))) for k in fns}


def worker(repeats: int, quick: bool) -> dict:
    import equinox as eqx
    import jax
    import numpy as np

    import nircomp

    sys.path.insert(0, HERE)
    from step_throughput import spyx_model

    batch, T, dt = 64, 50 if quick else 500, 1e-3
    rows = []
    for density in DENSITIES:
        graph = build(density)
        dense = nircomp.compile(graph, dt=dt, solver="step")
        lowered = nircomp.compile(graph, dt=dt, solver="step", connectivity={"spike_inputs": ["input"]})
        choice = {op.origin[0]: op.attrs["connectivity"] for _, op in lowered.ir.ops() if "connectivity" in op.attrs}
        fns = {"dense": eqx.filter_jit(jax.vmap(dense.model)), "pass": eqx.filter_jit(jax.vmap(lowered.model))}
        record = jax.jit(jax.vmap(lambda x, model=dense.model: model(x, record=["lif1"])[1]["lif1"]))
        for rate in RATES:
            x = jax.device_put((np.random.default_rng(1).random((batch, T, 700)) < rate).astype(np.float32))
            spyx, why = spyx_model("a", graph, dt, x)
            impls = {**fns, **({"spyx": spyx} if spyx is not None else {})}
            times = _race(impls, x, repeats)
            busiest = {"fc1": int(np.max(np.count_nonzero(np.asarray(x), axis=-1))),
                       "fc2": int(np.max(np.asarray(record(x)).sum(-1)))}
            paths = {n: ("gather" if busiest[n] <= c["budget"] else "dense fallback") + f" ({busiest[n]}/{c['budget']})"
                     for n, c in choice.items() if c["kernel"] == "event" and n in busiest}
            diff = float(np.max(np.abs(np.asarray(fns["pass"](x)) - np.asarray(fns["dense"](x)))))
            rows.append({"density": density, "rate": rate, "times": times, "spyx": why or "ok", "paths": paths,
                         "kernels": {n: c["kernel"] for n, c in choice.items()}, "diff": diff})
    return {"batch": batch, "T": T, "rows": rows}


def table(res: dict) -> str:
    lines = [(f"batch {res['batch']}, T = {res['T']}, one XLA thread; median wall time (s), and speed-ups = other "
              "time / pass time (> 1: the pass is faster), from wall and from CPU time"), "",
             ("| hidden density | input rate | dense s | pass s | spyx s | pass vs spyx | pass vs dense | dense vs spyx "
              "| same, CPU time | page faults per call, thousands (dense, pass, spyx) | kernels (fc1, fc2, fc3) "
              "| event paths (busiest row / budget) | max \\|pass - dense\\| |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|"]
    for r in res["rows"]:
        t = {k: v[1] for k, v in r["times"].items()}
        c = {k: v[2] for k, v in r["times"].items()}
        kernels = ", ".join(r["kernels"][n] for n in ("fc1", "fc2", "fc3"))
        paths = "; ".join(f"{n}: {p}" for n, p in r["paths"].items())
        cols = [f"{r['density']:.0%}", f"{r['rate']:.0%}", f"{t['dense']:.3f}", f"{t['pass']:.3f}"]
        if "spyx" in t:
            cpu = ", ".join(f"{a:.2f}x" for a in (c["spyx"] / c["pass"], c["dense"] / c["pass"], c["spyx"] / c["dense"]))
            cols += [f"{t['spyx']:.3f}", f"{t['spyx'] / t['pass']:.2f}x", f"{t['dense'] / t['pass']:.2f}x",
                     f"{t['spyx'] / t['dense']:.2f}x", cpu]
        else:
            cols += ["–", "–", f"{t['dense'] / t['pass']:.2f}x", "–", f"{c['dense'] / c['pass']:.2f}x (vs dense)"]
        pf = ", ".join(f"{r['times'][k][3] / 1000:.0f}" for k in ("dense", "pass", "spyx") if k in r["times"])
        lines.append("| " + " | ".join(cols + [pf, kernels, paths, f"{r['diff']:g}"]) + " |")
    compiles = {k: max(r["times"][k][0] for r in res["rows"] if k in r["times"]) for k in ("dense", "pass", "spyx")
                if any(k in r["times"] for r in res["rows"])}
    lines.append("\nfirst call (compile + run), worst over rows: "
                 + ", ".join(f"{k} {v:.2f} s" for k, v in compiles.items()))
    bad = {r["spyx"] for r in res["rows"] if r["spyx"] != "ok"}
    if bad:
        lines.append(f"spyx: {'; '.join(sorted(bad))}")
    return "\n".join(lines)


def main():
    sys.path.insert(0, HERE)  # the worker runs with -P: this folder is not on sys.path by itself
    from common import add_malloc_option, machine, malloc_env, malloc_modes, report, worker_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="T = 50, for a smoke run")
    add_malloc_option(ap)
    ap.add_argument("--md", help="append the markdown table to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.repeats, args.quick)))
        return
    out = [machine()]
    for mode in malloc_modes(args.malloc):
        cmd = [sys.executable, "-P", os.path.abspath(__file__), "--worker", "--repeats", str(args.repeats)]
        res = worker_result(cmd + (["--quick"] if args.quick else []), dict(malloc_env(mode), XLA_FLAGS=ONE_THREAD))
        out.append(f"malloc {mode}: " + table(res))
    report("\n\n".join(out), args.md)

if __name__ == "__main__":
    main()
