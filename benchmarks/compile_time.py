"""Compile time of the nircomp core: `load` and the default pipeline on generated graphs of growing size.

    /tmp/venv/bin/python benchmarks/compile_time.py [--sizes 10,100,1000,10000] [--repeats 5] [--out FILE]

Two graph shapes, built with NIR's own classes (8 neurons per population, so the cost is the compiler's,
not numpy's):
- chain: Input -> (Affine -> CubaLIF) x k -> Output, every block fusable.
- mixed: blocks that branch into two LIF paths and merge again, a recurrent Linear on every third
  block, every fourth block followed by a nested NIRGraph, a Scale (folded by canonicalize) merging the paths.

For each graph the script times, as the median of `--repeats` runs: `nircomp.load(nir_graph)` and
`nircomp.run_passes(graph)` through the named pipeline `auto` with `verify_each` on (the default) and
off, and `graph.nx.copy()` as a reference. "growth" is the time ratio to the previous size divided by the
node ratio: 1.0 is linear.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import networkx
import nir
import numpy as np

import nircomp

N = 8  # neurons per population


def _full(value: float) -> np.ndarray:
    return np.full(N, value, dtype=np.float32)


def _weight(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 0.5, (N, N)).astype(np.float32)


def _cubalif() -> nir.CubaLIF:
    return nir.CubaLIF(tau_syn=_full(2e-3), tau_mem=_full(1e-2), r=_full(1.0), v_leak=_full(0.0),
                       v_threshold=_full(1.0), v_reset=_full(0.0), w_in=_full(1.0))


def _lif() -> nir.LIF:
    return nir.LIF(tau=_full(1e-2), r=_full(1.0), v_leak=_full(0.0), v_threshold=_full(1.0), v_reset=_full(0.0))


def chain_graph(size: int, rng: np.random.Generator) -> nir.NIRGraph:
    """Input, Output and (size - 2) // 2 Affine -> CubaLIF blocks."""
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array([N]))}
    edges, prev = [], "input"
    for i in range(max(1, (size - 2) // 2)):
        nodes[f"fc{i}"] = nir.Affine(_weight(rng), np.zeros(N, np.float32))
        nodes[f"lif{i}"] = _cubalif()
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(np.array([N]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _mixed_block(i: int, rng: np.random.Generator) -> tuple[dict, list, str, str]:
    """One block of the mixed graph: its nodes, edges, entry and exit node names."""
    p = f"b{i}_"
    nodes = {p + "fc": nir.Affine(_weight(rng), np.zeros(N, np.float32)), p + "cuba": _cubalif(),
             p + "left": nir.Linear(_weight(rng)), p + "lif_l": _lif(),
             p + "right": nir.Linear(_weight(rng)), p + "lif_r": _lif(),
             p + "scale": nir.Scale(_full(0.5))}
    edges = [(p + "fc", p + "cuba"), (p + "cuba", p + "left"), (p + "left", p + "lif_l"),
             (p + "cuba", p + "right"), (p + "right", p + "lif_r"),
             (p + "lif_l", p + "scale"), (p + "lif_r", p + "scale")]
    if i % 3 == 0:  # recurrent loop around the CubaLIF
        nodes[p + "rec"] = nir.Linear(_weight(rng))
        edges += [(p + "cuba", p + "rec"), (p + "rec", p + "cuba")]
    if i % 4 == 0:  # nested subgraph with its own Input/Output ports
        inner = nir.NIRGraph(nodes={"input": nir.Input(np.array([N])), "fc": nir.Linear(_weight(rng)),
                                    "lif": _lif(), "output": nir.Output(np.array([N]))},
                             edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)
        nodes[p + "sub"] = inner
        edges.append((p + "scale", p + "sub"))
        return nodes, edges, p + "fc", p + "sub"
    return nodes, edges, p + "fc", p + "scale"


def mixed_graph(size: int, rng: np.random.Generator) -> nir.NIRGraph:
    """Mixed blocks until the graph has about `size` leaf nodes (subgraph ports count)."""
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array([N]))}
    edges, prev, i, count = [], "input", 0, 2  # count: leaf nodes so far, the Output included
    while count < size:
        block, block_edges, entry, exit_ = _mixed_block(i, rng)
        nodes.update(block)
        edges += [(prev, entry), *block_edges]
        prev, i, count = exit_, i + 1, count + count_nodes(block)
    nodes["output"] = nir.Output(np.array([N]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def count_nodes(nodes: dict) -> int:
    """Leaf nodes of a NIR graph, nested graphs included."""
    return sum(count_nodes(n.nodes) if isinstance(n, nir.NIRGraph) else 1 for n in nodes.values())


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `fn`; garbage of earlier runs is collected before each run."""
    wall, cpu = [], []
    for _ in range(repeats):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def measure(shape: str, size: int, repeats: int) -> dict:
    make = {"chain": chain_graph, "mixed": mixed_graph}[shape]
    nir_graph = make(size, np.random.default_rng(size))
    graph = nircomp.load(nir_graph)
    ir, _ = nircomp.run_passes(graph)  # pipeline None, solver "auto": the named pipeline `auto`
    row = {"shape": shape, "nodes": count_nodes(nir_graph.nodes), "ir_in": len(graph), "ir_out": len(ir),
           "solver": ir.attrs["solver"]}
    row["load"], _ = median_seconds(lambda: nircomp.load(nir_graph), repeats)
    row["passes"], row["passes_cpu"] = median_seconds(lambda: nircomp.run_passes(graph), repeats)
    row["no_verify"], _ = median_seconds(lambda: nircomp.run_passes(graph, verify_each=False), repeats)
    _, row["copy_cpu"] = median_seconds(graph.nx.copy, repeats)  # reference: plain networkx work on this graph
    return row


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores; {platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"nir {nir.version}, networkx {networkx.__version__}, numpy {np.__version__}, "
            f"nircomp {nircomp.__version__}")


def table(rows: list[dict]) -> str:
    head = ("| graph | NIR nodes | IR nodes (loaded → final) | solver | load ms | passes ms | passes ms, no verify_each "
            "| passes CPU ms | passes µs/node | growth | CPU growth | networkx copy CPU growth |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    prev: dict[str, dict] = {}
    for r in rows:
        p = prev.get(r["shape"])
        growth = cpu_growth = copy_growth = "–"
        if p:
            growth = f"{(r['passes'] / p['passes']) / (r['nodes'] / p['nodes']):.2f}"
            cpu_growth = f"{(r['passes_cpu'] / p['passes_cpu']) / (r['nodes'] / p['nodes']):.2f}"
            copy_growth = f"{(r['copy_cpu'] / p['copy_cpu']) / (r['ir_in'] / p['ir_in']):.2f}"
        lines.append(f"| {r['shape']} | {r['nodes']} | {r['ir_in']} → {r['ir_out']} | {r['solver']} "
                     f"| {r['load'] * 1e3:.1f} | {r['passes'] * 1e3:.1f} | {r['no_verify'] * 1e3:.1f} "
                     f"| {r['passes_cpu'] * 1e3:.1f} | {r['passes'] / r['nodes'] * 1e6:.0f} | {growth} "
                     f"| {cpu_growth} | {copy_growth} |")
        prev[r["shape"]] = r
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,10000", help="comma-separated node counts")
    ap.add_argument("--repeats", type=int, default=5, help="runs per measurement (the median is reported)")
    ap.add_argument("--shapes", default="chain,mixed", help="graph shapes: chain, mixed")
    ap.add_argument("--out", help="append the markdown report to this file")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = [measure(shape, size, args.repeats) for shape in args.shapes.split(",") for size in sizes]
    command = " ".join(["python benchmarks/compile_time.py", *(sys.argv[1:] if argv is None else argv)])
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    legend = (f"Median of {args.repeats} runs, wall clock unless marked CPU (process time, which other processes "
              "on the machine do not inflate). passes = `nircomp.run_passes(graph)`: the named pipeline `auto`, "
              "with `verify` after every pass (the default). growth = (passes time ratio to the previous size) / "
              "(node ratio): 1.00 is linear. networkx copy CPU growth: the same ratio for `graph.nx.copy()`, "
              "plain networkx work on the same graph, as a reference for what the memory hierarchy does to "
              "Python code at that size.")
    report = "\n\n".join([f"Machine: {machine()}; load average {load_avg:.1f} at the end of the run.",
                           f"Command: `{command}`", legend, table(rows)]) + "\n"
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
