"""The event kernel of lower-connectivity against the dense product, by the busiest row's nonzero inputs.

    python benchmarks/event_kernel.py [--repeats 5] [--md FILE]

`x @ W.T` for x of [64, 500, n_in] random 0/1 spikes (the rows of the benchmark MLP: batch 64, T = 500) at
input rates 4-14 %, weights 512x512, 512x700 and 256x512; nircomp's event kernel with an unlimited budget
(so it always gathers) and the dense product, interleaved in one process, XLA pinned to one thread, median
process CPU time. The ratio event / dense by the busiest row's share of nonzeros is what the defaults of
`lower-connectivity` (event_budget, min_weights) are read from.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from common import machine, report

SHAPES = ((512, 512), (512, 700), (256, 512))
RATES = (0.04, 0.06, 0.08, 0.10, 0.12, 0.14)


def _cpu(fns, args, repeats):
    import jax

    fns = [jax.jit(f) for f in fns]
    for f in fns:
        jax.block_until_ready(f(*args))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.process_time()
            jax.block_until_ready(f(*args))
            times[i].append(time.process_time() - t0)
    return [sorted(t)[repeats // 2] for t in times]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--md", help="append the markdown table to this file")
    args = ap.parse_args()
    if "intra_op_parallelism_threads" not in os.environ.get("XLA_FLAGS", ""):  # XLA reads it at start-up
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    import jax.numpy as jnp
    import numpy as np

    from nircomp.kernels import connectivity as C
    from nircomp.kernels import step as K

    rng = np.random.default_rng(0)
    lines = [machine(), "", "| weights (out x in) | input rate | busiest row | busiest / n_in | event / dense | dense ms (CPU) |",
             "|---|---:|---:|---:|---:|---:|"]
    for n_out, n_in in SHAPES:
        w = jnp.asarray(rng.normal(size=(n_out, n_in)).astype(np.float32))
        for rate in RATES:
            x = jnp.asarray((rng.random((64, 500, n_in)) < rate).astype(np.float32))
            busiest = int(np.asarray(x).sum(-1).max())
            dense, event = _cpu([lambda w, x: K.dense({"weight": w}, x), lambda w, x: C._event(w, x, 10 ** 6)],
                                (w, x), args.repeats)
            lines.append(f"| {n_out}x{n_in} | {rate:.0%} | {busiest} | {busiest / n_in:.3f} | {event / dense:.2f} | "
                         f"{dense * 1e3:.0f} |")
    report("\n".join(lines), args.md)


if __name__ == "__main__":
    main()
