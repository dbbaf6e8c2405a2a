"""Sharding checks that need several devices: run by tests/test_sharding.py in a fresh process.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharding_check.py

(XLA reads the flag when jax starts, and the pytest process has already started jax with one CPU
device.) Prints one JSON object, the facts test_sharding.py asserts on:
- "equal": per graph of tests/graphs.py ALL_GRAPHS and device count n in 2, 8 (1, 2, 4, 8 for the graphs in
  FULL), whether the sharded model's outputs and recorded values (every recordable node) equal, bit for
  bit, the one-device vmapped model run on each device's part of the batch (3 samples per device; at n=8
  the batch is 23 samples, padded with one zero sample); "plain" (FULL graphs): the same without
  record=, at n=8;
- "batch_axis1": a [T, B, ...] batch (batch_axis=1) gives the transposed results of batch_axis=0;
- "noise": a noisy model (noise=, called with key=) on 5 samples over 8 devices equals the model on each
  sample alone with its key of jax.random.split(key, 5), and another key changes the result;
- "memory": per n, the compiled executable's per-device argument/output/temp bytes (memory_analysis)
  and the bytes that arithmetic predicts for the arguments and outputs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from graphs import ALL_GRAPHS, DT, sample_input

import nircomp

COUNTS = (1, 2, 4, 8)
T = 16
CHUNK = 3  # samples per device (the one-device reference compiles once, for this batch)
FULL = ("two_io", "conv1d_net", "recurrent")  # every n and a call without record=; the others: n = 2, 8 (to
# keep the compile time of the whole test file under a minute on 2 cores)


def batch(graph, size: int):
    xs = [sample_input(graph, T=T, seed=s) for s in range(size)]
    return jax.tree.map(lambda *a: np.stack(a), *xs)


def rows(tree, lo: int, hi: int):
    """Samples lo..hi-1 of every array in `tree`."""
    return jax.tree.map(lambda a: a[lo:hi], tree)


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(la, lb))


def check_graph(name: str) -> dict:
    """Per device count n: sharded == the one-device vmapped model on each device's CHUNK samples."""
    graph = ALL_GRAPHS[name]()
    model = nircomp.compile(graph, dt=DT, solver="step").model
    record = [n for n, _ in model.schedule.names]
    one = eqx.filter_jit(jax.vmap(lambda x: model(x, record=record)))  # one device: jax.devices()[0]
    x = batch(graph, CHUNK * COUNTS[-1])
    out = {}
    for n in COUNTS if name in FULL else (2, 8):
        size = CHUNK * n - (n == COUNTS[-1])  # the last: one sample short, padded with a zero sample
        xn = rows(x, 0, size)
        padded = jax.tree.map(lambda a, pad=-size % n: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]), xn)
        parts = [one(rows(padded, i * CHUNK, (i + 1) * CHUNK)) for i in range(n)]
        expected = rows(jax.tree.map(lambda *a: np.concatenate(a), *parts), 0, size)
        sharded = nircomp.compile(graph, dt=DT, solver="step", devices=n).model
        out[n] = same(sharded(xn, record=record), expected)
        if name in FULL and n == COUNTS[-1]:
            out["plain"] = same(sharded(xn), expected[0])  # no record=: the outputs alone
    return out


def check_batch_axis() -> bool:
    graph = ALL_GRAPHS["two_io"]()
    x = batch(graph, 12)
    a = nircomp.compile(graph, dt=DT, solver="step", devices=8).model(x, record=["lif"])
    b = nircomp.compile(graph, dt=DT, solver="step", devices=8, batch_axis=1).model(
        jax.tree.map(lambda v: np.swapaxes(v, 0, 1), x), record=["lif"])
    return same(a, jax.tree.map(lambda v: np.swapaxes(v, 0, 1), b))


def check_noise(name: str = "affine_lif", size: int = 5) -> dict:
    """A noisy model: sharded(x, key=k) == the model on sample b alone with key split(k, size)[b]."""
    graph = ALL_GRAPHS[name]()
    x = batch(graph, size)
    keys = jax.random.split(jax.random.PRNGKey(4), size)
    model = nircomp.compile(graph, dt=DT, solver="step", noise={"membrane": 2.0}).model
    one = eqx.filter_jit(lambda x, k: model(x, record=["lif"], key=k))
    expected = jax.tree.map(lambda *a: np.stack(a), *[one(x[b], keys[b]) for b in range(size)])
    sharded = nircomp.compile(graph, dt=DT, solver="step", noise={"membrane": 2.0}, devices=COUNTS[-1]).model
    got = sharded(x, record=["lif"], key=jax.random.PRNGKey(4))
    other = sharded(x, record=["lif"], key=jax.random.PRNGKey(5))
    return {"equal": same(got, expected), "key_matters": not same(got, other)}


def check_memory(name: str = "conv1d_net", size: int = 64, steps: int = 50) -> dict:
    graph = ALL_GRAPHS[name]()
    x = np.zeros((size, steps, 2, 10), np.float32)
    out = {}
    for n in COUNTS:
        model = nircomp.compile(graph, dt=DT, solver="step", devices=n).model
        stats = model.lower(x).compile().memory_analysis()
        params = sum(a.nbytes for a in jax.tree.leaves(model.params))
        out[n] = {"argument": stats.argument_size_in_bytes, "output": stats.output_size_in_bytes,
                  "temp": stats.temp_size_in_bytes,
                  "argument_expected": params + 4 * size // n * steps * math.prod(x.shape[2:]),
                  "output_expected": 4 * size // n * steps * 2}
    return out


def main() -> None:
    report = {"devices": jax.device_count(),
              "equal": {name: check_graph(name) for name in ALL_GRAPHS},
              "batch_axis1": check_batch_axis(),
              "noise": check_noise(),
              "memory": check_memory()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
