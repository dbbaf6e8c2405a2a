"""Train a 5 -> 120 -> 3 CubaLIF network on the Yin-Yang dataset with exact spike times and EventProp.

    python examples/yinyang/train.py [--solver analytical|hardware] [--epochs 150] [--quick] [--out trained.nir]

The network is the NIR graph examples/yinyang/yinyang.nir (written by `make_graph`, weights initialised as
jaxsnn's example: normal(3.0, 1.6) into the hidden layer, normal(0.5, 0.8) into the output), in seconds:
τs = 5 ms, τm = 10 ms, v_th = 1, v_reset = -1000 (each neuron fires at most once, so a spike budget of one
per neuron cannot overflow) and w_in = τs (an input spike through weight W makes the current jump by W,
as in jaxsnn). A sample is five input spikes (data.encode: x, y, 1 - x, 1 - y at value · t_late, a bias
spike at 0); the prediction is the output neuron that fires first. Loss (`--loss mse`, the default):
jaxsnn's squared error of the output first-spike times to target times (0.9 τs for the label neuron, 1.1 τs
for the others), with jaxsnn's optimizer: gradients scaled by 1/τs and clipped per element to 0.01, then Adam
with lr 5e-3 decaying × 0.99 per epoch. `--loss ce`: cross-entropy of softmax(-t / (ξ τs)) over the
first-spike times (Göltz et al. 2021) plus α (e^{t_label / (β τs)} - 1) pulling the label neuron's spike
early, Adam with global-norm clipping (faster at first, but long runs collapse). Both add weight bumping of
silent neurons; gradients by EventProp (the solver's custom VJP). A plain optax loop prints the test
accuracy and the overflow count after each epoch. `--solver hardware` trains through the hardware solver's
emulator (6-bit weights, fixed-pattern noise, jitter: HARDWARE) with the same model call. The trained graph
is written back to .nir. Results: examples/yinyang/README.md.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import nir
import numpy as np
import optax

import nircomp

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from data import encode, yinyang

TAU_SYN, TAU_MEM = 5e-3, 1e-2
T_LATE, T_MAX = 2 * TAU_SYN, 4 * TAU_SYN
HIDDEN, N_IN, N_OUT = 120, 5, 3
BUDGET = {"lif1": HIDDEN, "lif2": N_OUT}  # one spike per neuron (v_reset = -1000)


def make_graph(seed: int = 0, hidden: int = HIDDEN) -> nir.NIRGraph:
    """Input(5) -> fc1 -> lif1 (CubaLIF, hidden) -> fc2 -> lif2 (CubaLIF, 3) -> Output; jaxsnn's init."""
    rng = np.random.default_rng(seed)

    def cuba(n):
        full = lambda v: np.full(n, v, dtype=np.float64)
        return nir.CubaLIF(tau_syn=full(TAU_SYN), tau_mem=full(TAU_MEM), r=full(1.0), v_leak=full(0.0),
                           v_threshold=full(1.0), v_reset=full(-1000.0), w_in=full(TAU_SYN))

    nodes = {"input": nir.Input(np.array([N_IN])),
             "fc1": nir.Linear(rng.normal(3.0, 1.6, (hidden, N_IN))), "lif1": cuba(hidden),
             "fc2": nir.Linear(rng.normal(0.5, 0.8, (N_OUT, hidden))), "lif2": cuba(N_OUT),
             "output": nir.Output(np.array([N_OUT]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def dataset(n: int, seed: int):
    """Input spike times [n, 5] (float32) and labels [n]."""
    points, labels = yinyang(n, seed)
    times, _ = encode(points, T_LATE, bias_time=0.0)
    return jnp.asarray(times, jnp.float32), jnp.asarray(labels)


def first_spikes(model, times, key=None, hidden=False):
    """Output first-spike times [B, 3] (+inf: silent) and the overflow flag of any population [B]; with
    `hidden`, also the hidden neurons' spike flags [B, 120]."""
    index = jnp.arange(N_IN)

    def one(t, k):
        ev = nircomp.Events(t, index)
        out, rec = model(ev, record=["lif1"]) if k is None else model(ev, record=["lif1"], key=k)
        first = jnp.min(jnp.where(out.index[None, :] == jnp.arange(N_OUT)[:, None], out.times[None, :], jnp.inf),
                        axis=1)
        fired = jnp.any(rec["lif1"].index[None, :] == jnp.arange(HIDDEN)[:, None], axis=1)
        return (first, out.any_overflow, fired) if hidden else (first, out.any_overflow)

    if key is None:
        return jax.vmap(lambda t: one(t, None))(times)
    return jax.vmap(one)(times, jax.random.split(key, times.shape[0]))


def _push(model, t, fired):
    """Weight bumping (zero in value, its gradient the push): the input weights of each output neuron by
    the fraction of samples on which it is silent, those of each hidden neuron silent on the whole batch."""
    silent_out = jax.lax.stop_gradient(jnp.mean(~jnp.isfinite(t), axis=0))  # [3]
    silent_hid = jax.lax.stop_gradient(~jnp.any(fired, axis=0)).astype(t.dtype)  # [120]
    w1, w2 = model.params["lif1"]["weight"], model.params["lif2"]["weight"]
    push = jnp.sum(silent_out @ w2) + jnp.sum(silent_hid @ w1)
    return push - jax.lax.stop_gradient(push)


def loss_fn(model, times, labels, key=None, xi=0.2, alpha=3e-3, beta=2.0, bump=1e-2, aux=False):
    """Cross-entropy of softmax(-t / (ξ τs)) (silent outputs count as t_max) + α (exp(t_label/(β τs)) - 1),
    plus weight bumping (Göltz et al. 2021): a silent neuron has no EventProp gradient, so the input weights
    of an output neuron get a push of `bump` times the fraction of samples on which it is silent, and those of
    a hidden neuron silent on the whole batch one of `bump` (a term linear in the weights, zero in value).
    With `aux`: (loss, number of samples whose spike budget overflowed)."""
    t, overflow, fired = first_spikes(model, times, key, hidden=True)
    t_c = jnp.minimum(t, T_MAX) / TAU_SYN
    ce = optax.softmax_cross_entropy_with_integer_labels(-t_c / xi, labels)
    t_label = jnp.take_along_axis(t_c, labels[:, None], axis=1)[:, 0]
    loss = jnp.mean(ce + alpha * (jnp.exp(t_label / beta) - 1.0)) - bump * _push(model, t, fired)
    return (loss, jnp.sum(overflow)) if aux else loss


def evaluate(model, times, labels, key=None, chunk=1024):
    """(accuracy, number of samples with an overflowed spike budget); prediction = the earliest output."""
    run = eqx.filter_jit(first_spikes)
    correct, overflow = 0, 0
    for s in range(0, len(labels), chunk):
        k = None if key is None else jax.random.fold_in(key, s)
        t, ovf = run(model, times[s:s + chunk], k)
        correct += int(jnp.sum((jnp.argmin(t, axis=1) == labels[s:s + chunk]) & jnp.isfinite(jnp.min(t, axis=1))))
        overflow += int(jnp.sum(ovf))
    return correct / len(labels), overflow


def mse_loss_fn(model, times, labels, key=None, bump=1e-2, aux=False, correct=0.9, wrong=1.1):
    """jaxsnn's Yin-Yang loss: squared error of the output first-spike times (clipped at 2 τm, so a silent
    output counts as t_max) to target times, `correct` τs for the label neuron and `wrong` τs for the others,
    in units of τm, summed over outputs; plus the weight bumping of loss_fn."""
    t, overflow, fired = first_spikes(model, times, key, hidden=True)
    target = jnp.where(jax.nn.one_hot(labels, N_OUT) > 0, correct * TAU_SYN, wrong * TAU_SYN)
    err = jnp.sum(jnp.square((jnp.minimum(t, 2 * TAU_MEM) - target) / TAU_MEM), axis=1)
    loss = jnp.mean(err) - bump * _push(model, t, fired)
    return (loss, jnp.sum(overflow)) if aux else loss


LOSSES = {"ce": loss_fn, "mse": mse_loss_fn}


def _update(optimizer, model, opt_state, x, y, key, bump, loss="ce"):
    """One optax step on a batch (EventProp gradients of the loss w.r.t. the weights); also returns the loss
    and the number of the batch's samples that overflowed a spike budget."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    objective = lambda p: LOSSES[loss](eqx.combine(p, static), x, y, key, bump=bump, aux=True)
    (value, overflow), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, value, overflow


# the hardware solver's named pipeline with room for training to grow the weights (headroom, default 2: the
# 6-bit grid spans twice the initial largest weight) and an imperfect emulated chip: 5 % fixed-pattern spread of
# thresholds and time constants, 0.05 ms (1 % of τs) spike-time jitter
HARDWARE = ("verify,infer-shapes,canonicalize,check-ops{allowed=Input,Output,Linear,Affine,LIF,CubaLIF},"
            "check-zero-bias,check-homogeneous,check-feedforward,mark-recurrence,fuse-affine-cubalif,"
            "quantize-weights{bits=6 duplication=1 headroom=%g},check-mapping{max_rows=256 rows_per_input=2 "
            "max_neurons=512},emulator-noise{seed=0 threshold_std=0.05 tau_std=0.05 jitter=5e-5},"
            "select-solver{solver=hardware}")


def deployed(model):
    """The model with the weights it runs: for the hardware solver each quantised node's weight on its 6-bit
    grid (saved so, the file holds the chip's weights; the float weights training keeps are not written)."""
    from nircomp.hardware import quantize

    grid = {node: (scale, levels) for node, scale, levels in getattr(model, "grid", ())}
    params = {node: {k: (quantize(v, *grid[node], jnp)[0] if k == "weight" and node in grid else v)
                     for k, v in ps.items()} for node, ps in model.params.items()}
    return eqx.tree_at(lambda m: m.params, model, params)


def compile_graph(source, solver: str, headroom: float = 2.0):
    """The event-driven model of the graph: the analytical solver, or the hardware solver's emulator
    (6-bit weights, fixed-pattern noise and jitter: HARDWARE)."""
    pipeline = HARDWARE % headroom if solver == "hardware" else None
    return nircomp.compile(source, solver=solver, t_max=T_MAX, n_spikes=BUDGET, pipeline=pipeline)


def main(argv=None):
    """Train, report test accuracy and overflow, write the trained graph; returns (test accuracy, history)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solver", choices=("analytical", "hardware"), default="analytical")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="a few seconds: 512 training samples, 3 epochs")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default 5e-3 (--quick: 3e-2)")
    ap.add_argument("--lr-decay", type=float, default=None, help="learning-rate factor per epoch (default 0.99 "
                    "with --loss mse, 0.97 with ce)")
    ap.add_argument("--bump", type=float, default=1e-2, help="weight bumping of silent neurons (see loss_fn)")
    ap.add_argument("--loss", choices=("ce", "mse"), default=None, help="mse (default; --quick: ce): jaxsnn's "
                    "squared error to target times with jaxsnn's optimizer (gradients scaled by 1/τs and clipped "
                    "per element to 0.01; mse_loss_fn); ce: softmax cross-entropy of the first-spike times "
                    "(loss_fn), faster at first, unstable over long runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--headroom", type=float, default=2.0, help="hardware: the 6-bit grid spans headroom x the "
                    "largest initial weight")
    ap.add_argument("--graph", default=str(HERE / "yinyang.nir"), help="the initial graph (written if missing)")
    ap.add_argument("--out", default="yinyang_trained.nir")
    args = ap.parse_args(argv)
    n_train, n_test, epochs = (512, 512, 3) if args.quick else (4992, 2944, args.epochs)
    lr = args.lr if args.lr is not None else (3e-2 if args.quick else 5e-3)
    args.loss = args.loss or ("ce" if args.quick else "mse")
    args.lr_decay = args.lr_decay if args.lr_decay is not None else (0.99 if args.loss == "mse" else 0.97)

    graph_path = pathlib.Path(args.graph)
    if not graph_path.exists():
        nir.write(graph_path, make_graph(args.seed))
    prog = compile_graph(graph_path, args.solver, args.headroom)
    x_train, y_train = dataset(n_train, args.seed + 1)
    x_test, y_test = dataset(n_test, args.seed + 2)
    n_batches = n_train // args.batch
    key = jax.random.PRNGKey(args.seed) if args.solver == "hardware" else None

    def batches(epoch):
        perm = np.random.default_rng(args.seed * 1000 + epoch).permutation(n_train)
        return [(x_train[p], y_train[p]) for p in perm[: n_batches * args.batch].reshape(n_batches, args.batch)]

    schedule = optax.exponential_decay(lr, n_batches, args.lr_decay)
    clip = ((optax.scale(1.0 / TAU_SYN), optax.clip(0.01)) if args.loss == "mse"
            else (optax.clip_by_global_norm(10.0),))
    optimizer = optax.chain(*clip, optax.adam(schedule))
    acc0, _ = evaluate(prog.model, x_test, y_test, key)
    print(f"solver={args.solver}: {n_train} train / {n_test} test samples, {epochs} epochs; "
          f"test accuracy before training {acc0:.3f}", flush=True)
    model, opt_state = prog.model, optimizer.init(eqx.filter(prog.model, eqx.is_inexact_array))
    update = eqx.filter_jit(_update)
    history = {"loss": [], "test_accuracy": []}
    start = time.perf_counter()
    for epoch in range(epochs):
        losses, train_overflow = [], []
        for b, (x, y) in enumerate(batches(epoch)):
            k = None if key is None else jax.random.fold_in(key, epoch * n_batches + b)
            model, opt_state, value, ovf = update(optimizer, model, opt_state, x, y, k, args.bump, args.loss)
            losses.append(value)
            train_overflow.append(ovf)
        history["loss"].append(float(jnp.mean(jnp.stack(losses))))
        history["train_overflow"] = history.get("train_overflow", 0) + int(jnp.sum(jnp.stack(train_overflow)))
        acc, ovf = evaluate(model, x_test, y_test, key)
        history["test_accuracy"].append(acc)
        print(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f}, test accuracy {acc:.4f}, "
              f"overflow {ovf} test / {history['train_overflow']} training samples so far, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        if (epoch + 1) % 10 == 0:  # a checkpoint of the trained graph
            nircomp.save(prog.ir_with_params(deployed(model)), args.out)
    history["seconds"] = time.perf_counter() - start
    acc, ovf = evaluate(model, x_test, y_test, key)
    history.update(model=model, overflow=ovf)
    train_acc, _ = evaluate(model, x_train, y_train, key)
    print(f"final: test accuracy {acc:.4f} (best {max(history['test_accuracy']):.4f}), train accuracy "
          f"{train_acc:.4f}, samples with overflow {ovf}, {history['seconds']:.0f} s")
    nircomp.save(prog.ir_with_params(deployed(model)), args.out)
    reloaded, _ = evaluate(compile_graph(args.out, args.solver, 1.0).model, x_test, y_test, key)
    print(f"wrote {args.out} (test accuracy of the file compiled again: {reloaded:.4f})")
    return acc, history  # history: loss, test_accuracy per epoch, seconds, model, overflow (test), train_overflow


if __name__ == "__main__":
    main()
