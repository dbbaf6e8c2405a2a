"""Data-parallel training of a compiled NIR graph over a device mesh, with optax and jax.sharding.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/train_data_parallel.py [--devices all]

The task and network of train_cubalif.py: examples/cubalif_chain.nir (16 -> 32 -> 4 CubaLIF) learns which
of 4 groups of Poisson inputs fires loudest; loss: cross-entropy on output spike counts (plus a penalty
on silent outputs). The batch is split over a 1-D mesh (`nircomp.sharding`), the
weights and the optimiser state are replicated, and the whole training step (forward, loss, gradient,
adam update) is one `jax.jit` with `in_shardings`/`out_shardings`: XLA's SPMD partitioner runs each
device's part of the batch and inserts the all-reduce that averages the gradients. No collective is
written by hand. On the CPU, XLA_FLAGS makes virtual devices (set it before jax starts); across hosts,
call `jax.distributed.initialize` first (examples/multihost.py) and pass --devices all.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import nircomp
from nircomp.sharding import batch_sharding, make_mesh, replicated

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from train_cubalif import DT, make_batch  # the same task and data


def loss_fn(model, x, y):
    """(loss, output spike counts [batch, 4]): cross-entropy on the counts, plus a quadratic penalty on
    neurons (hidden and output) firing on fewer than 2 % of the steps (a silent layer passes no gradient)."""
    z, rec = jax.vmap(lambda x: model(x, record=["lif1"]))(x)
    silent = sum(jnp.sum(jax.nn.relu(0.02 - s.mean(axis=(0, 1))) ** 2) for s in (z, rec["lif1"]))
    counts = z.sum(axis=1)
    return optax.softmax_cross_entropy_with_integer_labels(counts, y).mean() + silent, counts


def main(argv=None) -> dict:
    """Train; returns the figures it prints (losses, accuracies, gradient check against one device)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="all", help="'all' or a number of devices (default all)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32, help="global batch, split over the devices")
    ap.add_argument("--lr", type=float, default=5e-2)
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args(argv)

    model = nircomp.compile(HERE / "cubalif_chain.nir", dt=DT, solver="step", surrogate="superspike",
                            slope=10.0).model
    mesh = make_mesh(args.devices if args.devices == "all" else int(args.devices))
    rep, data = replicated(mesh), batch_sharding(mesh)
    # train the weights; neuron parameters (and the schedule: static) stay as exported
    is_weight = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "weight", model.params)
    filt = eqx.tree_at(lambda m: m.params, jax.tree_util.tree_map(lambda _: False, model), is_weight)
    weights, frozen = eqx.partition(model, filt)
    opt = optax.adam(args.lr)

    def loss(weights, frozen, x, y):
        return loss_fn(eqx.combine(weights, frozen), x, y)[0]

    def train_step(weights, opt_state, frozen, x, y):
        value, grads = jax.value_and_grad(loss)(weights, frozen, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(weights, updates), opt_state, value

    step = jax.jit(train_step, in_shardings=(rep, rep, rep, data, data), out_shardings=(rep, rep, rep),
                   donate_argnums=(0, 1))
    grad_sharded = jax.jit(jax.grad(loss), in_shardings=(rep, rep, data, data), out_shardings=rep)

    @eqx.filter_jit
    def accuracy(weights, frozen, x, y):
        _, counts = loss_fn(eqx.combine(weights, frozen), x, y)
        return (counts.argmax(-1) == y).mean()

    # the averaged gradient of the sharded jit against one device's gradient of the whole batch
    x0, y0 = make_batch(jax.random.PRNGKey(7), args.batch)
    g_mesh = grad_sharded(weights, frozen, x0, y0)
    g_one = jax.jit(jax.grad(loss))(weights, frozen, x0, y0)
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(g_one))
    grad_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(g_mesh), jax.tree.leaves(g_one),
                                                                   strict=True)) / scale

    x_test, y_test = make_batch(jax.random.PRNGKey(123), 256)
    acc_before = float(accuracy(weights, frozen, x_test, y_test))
    weights, frozen = jax.device_put(weights, rep), jax.device_put(frozen, rep)
    opt_state = jax.device_put(opt.init(weights), rep)
    key, losses, start = jax.random.PRNGKey(0), [], time.perf_counter()
    for i in range(args.steps):
        key, sub = jax.random.split(key)
        x, y = make_batch(sub, args.batch)
        weights, opt_state, value = step(weights, opt_state, frozen, x, y)
        losses.append(float(value))
        if not args.json and (i % 20 == 0 or i == args.steps - 1):
            print(f"step {i:4d}  loss {losses[-1]:.4f}")
    result = {"devices": mesh.size, "batch": args.batch, "steps": args.steps, "grad_rel_diff": grad_diff,
              "grad_abs_max": scale, "loss_first": losses[0], "loss_last": float(np.mean(losses[-5:])),
              "acc_before": acc_before, "acc_after": float(accuracy(weights, frozen, x_test, y_test)),
              "weights_replicated": all(w.sharding.is_fully_replicated for w in jax.tree.leaves(weights)),
              "seconds": time.perf_counter() - start}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{mesh.size} device(s); gradient vs one device: max relative difference {grad_diff:.1e}; accuracy "
              f"{result['acc_before']:.3f} -> {result['acc_after']:.3f} in {args.steps} steps "
              f"({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
