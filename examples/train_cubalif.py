"""Train a CubaLIF network compiled from a .nir file with optax, then write the trained graph to .nir.

    python examples/train_cubalif.py [--steps 150] [--out trained.nir]

Task (synthetic): 16 Poisson input channels in 4 groups of 4; one group fires at a high rate, the others
at a low rate; the class is the loud group. The network is examples/cubalif_chain.nir (16 -> 32 -> 4
CubaLIF); the prediction is the output neuron with the most spikes. Loss: cross-entropy on spike counts
with an activity penalty on silent outputs, gradients through the surrogate spike derivative (SuperSpike);
the loop is nircomp.train (optax Adam, a progress line on stderr).
"""

from __future__ import annotations

import argparse
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import nircomp
from nircomp.training import population_counts, rate_penalty

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
    """Cross-entropy on output spike counts, plus a small activity penalty on output neurons that fire on
    fewer than 2 % of the steps (as spyx.fn.silence_reg)."""
    z = jax.vmap(model)(x)  # [batch, T, 4] output spikes
    counts = population_counts(z, 4)  # one output neuron per class
    return optax.softmax_cross_entropy_with_integer_labels(counts, y).mean() + rate_penalty(z, lo=0.02)


def main(argv=None):
    """Train, report, write the trained graph; returns (test accuracy, trained model)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--out", default="trained_cubalif_chain.nir")
    args = ap.parse_args(argv)

    prog = nircomp.compile(HERE / "cubalif_chain.nir", dt=DT, solver="step", surrogate="superspike", slope=10.0)

    @eqx.filter_jit
    def accuracy(model, x, y):
        return (population_counts(jax.vmap(model)(x), 4).argmax(-1) == y).mean()

    x_test, y_test = make_batch(jax.random.PRNGKey(123), 256)
    print(f"accuracy before training: {float(accuracy(prog.model, x_test, y_test)):.3f}")
    batches = (make_batch(k, args.batch) for k in jax.random.split(jax.random.PRNGKey(0), args.steps))
    # train only the weights; neuron parameters stay as exported
    model, history = nircomp.train(prog, loss_fn, batches, optax.adam(args.lr),
                                   trainable=lambda node, name: name == "weight")
    acc = float(accuracy(model, x_test, y_test))
    print(f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}; accuracy after {args.steps} steps: "
          f"{acc:.3f} ({history['seconds']:.1f} s)")
    nircomp.save(prog.ir_with_params(model), args.out)
    print(f"wrote {args.out}")
    return acc, model


if __name__ == "__main__":
    main()
