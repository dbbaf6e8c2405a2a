"""Train a CubaLIF network compiled from a .nir file with optax, then write the trained graph to .nir.

    python examples/train_cubalif.py [--steps 150] [--out trained.nir]

Task (synthetic): 16 Poisson input channels in 4 groups of 4; one group fires at a high rate, the others
at a low rate; the class is the loud group. The network is examples/cubalif_chain.nir (16 -> 32 -> 4
CubaLIF); the prediction is the output neuron with the most spikes. Loss: cross-entropy on spike counts,
gradients through the surrogate spike derivative (SuperSpike).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import nircomp

HERE = pathlib.Path(__file__).parent
T, DT = 100, 1e-3


def make_batch(key, batch: int):
    """Poisson spikes [batch, T, 16] and labels [batch]: group `label` fires at 20 % per step, others at 2 %."""
    k1, k2 = jax.random.split(key)
    labels = jax.random.randint(k1, (batch,), 0, 4)
    rates = jnp.where(jnp.arange(16)[None, :] // 4 == labels[:, None], 0.2, 0.02)
    spikes = jax.random.uniform(k2, (batch, T, 16)) < rates[:, None, :]
    return spikes.astype(jnp.float32), labels


def loss_fn(model, x, y):
    counts = jax.vmap(model)(x).sum(axis=1)  # [batch, 4] output spike counts
    return optax.softmax_cross_entropy_with_integer_labels(counts, y).mean(), counts


def main(argv=None):
    """Train, report, write the trained graph; returns (test accuracy, trained model)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--out", default="trained_cubalif_chain.nir")
    args = ap.parse_args(argv)

    prog = nircomp.compile(HERE / "cubalif_chain.nir", dt=DT, solver="step", surrogate="superspike", slope=10.0)
    model = prog.model
    opt = optax.adam(args.lr)
    # train only the weights; neuron parameters stay as exported
    trainable = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "weight", model.params)
    filt = eqx.tree_at(lambda m: m.params, jax.tree_util.tree_map(lambda _: False, model), trainable)
    opt_state = opt.init(eqx.filter(model, filt))

    @eqx.filter_jit
    def train_step(model, opt_state, x, y):
        (loss, _), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, x, y)
        updates, opt_state = opt.update(eqx.filter(grads, filt), opt_state)
        return eqx.apply_updates(model, updates), opt_state, loss

    @eqx.filter_jit
    def accuracy(model, x, y):
        _, counts = loss_fn(model, x, y)
        return (counts.argmax(-1) == y).mean()

    key = jax.random.PRNGKey(0)
    x_test, y_test = make_batch(jax.random.PRNGKey(123), 256)
    print(f"accuracy before training: {float(accuracy(model, x_test, y_test)):.3f}")
    start = time.perf_counter()
    for step in range(args.steps):
        key, sub = jax.random.split(key)
        x, y = make_batch(sub, args.batch)
        model, opt_state, loss = train_step(model, opt_state, x, y)
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}")
    acc = float(accuracy(model, x_test, y_test))
    print(f"accuracy after {args.steps} steps: {acc:.3f}  ({time.perf_counter() - start:.1f} s)")
    nircomp.save(prog.ir_with_params(model), args.out)
    print(f"wrote {args.out}")
    return acc, model


if __name__ == "__main__":
    main()
