"""Training utilities: readouts of spike trains and membranes, activity regularisers, an optax loop.

Arrays hold spikes of amplitude 1 (0/1 per step, the default `spike="unit"`) or membranes, time on one
axis: the readouts take `[..., T, N]` (time_axis=-2: the neuron axis last, one sample `[T, N]` or a
batch `[B, T, N]` from `jax.vmap(model)`); `rate_penalty` takes recorded nodes of any shape, `[B, T,
*shape]` (time_axis=1) or `[T, *shape]` (time_axis=0). All are plain differentiable JAX functions, so
gradients reach the model through the spike function's surrogate derivative.

    model, history = nircomp.train(prog, loss, batches, optax.adam(1e-2), epochs=3)

optax is needed only to build an optimizer (`optimizer=0.01` builds Adam); `pip install 'nircomp[train]'`.
jax is imported on first use (importing nircomp stays light).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nircomp.errors import CompileError
from nircomp.progress import ProgressLine


# ----------------------------------------------------------------------------- readouts
def population_counts(spikes, n_classes: int, *, time_axis: int = -2):
    """Spike counts per class of a population-coded output: neurons grouped per class in consecutive
    blocks of N / n_classes (neuron j votes for class j // (N / n_classes)), counts summed over time and
    over the block. spikes: [..., T, N] -> [..., n_classes]."""
    import jax.numpy as jnp

    counts = jnp.sum(spikes, axis=time_axis)
    n = counts.shape[-1]
    if time_axis % spikes.ndim == spikes.ndim - 1 or n % n_classes:
        raise CompileError(f"population_counts: {n} output neurons (axis -1 of {list(spikes.shape)}, after "
                           f"summing axis {time_axis}) cannot be split into {n_classes} equal groups",
                           hint="the neuron axis must be last and a multiple of n_classes")
    return counts.reshape(counts.shape[:-1] + (n_classes, n // n_classes)).sum(axis=-1)


def max_over_time(v, *, time_axis: int = -2):
    """The maximum of each membrane over time, [..., T, N] -> [..., N] (a readout of non-spiking LI
    outputs). Its gradient reaches only the step(s) where the maximum is attained (ties share it)."""
    import jax.numpy as jnp

    return jnp.max(v, axis=time_axis)


def first_spike_time(spikes, dt: float = 1.0, *, time_axis: int = -2):
    """Time of each neuron's first spike, [..., T, N] -> [..., N]: (k + 1) * dt for a first spike at the
    0-based step k (the end of that step), (T + 1) * dt for a neuron that never spikes.

    Computed as dt * (1 + sum_t prod_{s<=t} (1 - z_s)), exact in the forward pass for 0/1 spikes (a value
    above 1, several spikes in a step, counts as one and passes no gradient) and differentiable in z:
    d t_first / d z_s = -(k - s) * dt for a step s before the first spike k (a spike at s would come
    k - s steps earlier; k = T for a neuron that never spikes), -(k2 - k) * dt at s = k (k2: the next
    spike's step, or T), 0 after it, so the gradient reaches the model through the spike surrogate."""
    import jax.numpy as jnp

    z = jnp.moveaxis(spikes, time_axis, 0)
    z = jnp.where(z > 1.0, 1.0, z)
    silent = jnp.cumprod(1.0 - z, axis=0)  # 1 while no spike so far, at and before each step
    return dt * (1.0 + jnp.sum(silent, axis=0))


# ----------------------------------------------------------------------------- regularisers
def rate_penalty(spikes, lo: float = 0.0, hi: float = 1.0, *, per: str = "neuron", time_axis: int = 1):
    """Quadratic penalty on mean firing rates (spikes per step) outside [lo, hi]: the sum of
    relu(lo - r)^2 + relu(r - hi)^2 over the rates r.

    spikes: [B, T, *shape] (time_axis=1; [T, *shape] with time_axis=0), or a dict/list/tuple of such, e.g.
    the records of `jax.vmap(lambda x: model(x, record=["lif1"]))`: their penalties add. A neuron's rate is
    its spike count / T averaged over the axes before time_axis (the batch). per="neuron": one rate per
    neuron (lo penalises silent neurons, as spyx.fn.silence_reg); per="population": one rate per array,
    averaged over its neurons too (hi bounds a layer's mean activity, as spyx.fn.sparsity_reg, which
    penalises each sample's excess with a Huber loss instead)."""
    import jax
    import jax.numpy as jnp

    if per not in ("neuron", "population"):
        raise CompileError(f"rate_penalty: per={per!r} is not 'neuron' or 'population'")
    if not lo <= hi:
        raise CompileError(f"rate_penalty: lo={lo} > hi={hi}")

    def one(z):
        ax = time_axis % z.ndim
        r = jnp.mean(z, axis=tuple(range(ax + 1)))  # mean over batch and time = count / T averaged over batch
        if per == "population":
            r = jnp.mean(r)
        return jnp.sum(jax.nn.relu(lo - r) ** 2 + jax.nn.relu(r - hi) ** 2)

    leaves = list(spikes.values()) if isinstance(spikes, Mapping) else (
        list(spikes) if isinstance(spikes, (list, tuple)) else [spikes])
    return sum(one(jnp.asarray(z)) for z in leaves)


# ----------------------------------------------------------------------------- the training loop
def _optax():
    try:
        import optax
    except ImportError:
        raise ImportError("nircomp.train builds its optimizer with optax, which is not installed: "
                          "pip install 'nircomp[train]' (or pass an optax optimizer)") from None
    return optax


def _trainable(model, trainable):
    """The filter spec of the trained leaves: every float array, or a predicate over (node, parameter)."""
    import equinox as eqx
    import jax

    spec = jax.tree_util.tree_map(eqx.is_inexact_array, model)
    if trainable is None:
        return spec
    if not isinstance(getattr(model, "params", None), Mapping):
        raise CompileError("train: trainable= selects parameters of a StepModel (model.params[node][name]); "
                           f"this model is a {type(model).__name__}")
    chosen = {node: {k: bool(trainable(node, k)) and eqx.is_inexact_array(v) for k, v in ps.items()}
              for node, ps in model.params.items()}
    return eqx.tree_at(lambda m: m.params, spec, chosen)


def train(model: Any, loss: Callable[..., Any], data: Iterable | Callable[[int], Iterable], optimizer: Any,
          epochs: int = 1, *, trainable: Callable[[str, str], bool] | None = None, key: Any = None,
          progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Minimise `loss` over `data` with an optax optimizer; returns (trained model, history).

    model: a Program (its .model is trained) or an equinox Module such as a StepModel.
    loss: loss(model, *batch) -> scalar for a tuple batch, loss(model, batch) otherwise; with `key`, every
        step also passes key= a fresh subkey (a model compiled with noise= needs one).
    data: batches, iterated once per epoch: a list (or any re-iterable), a function epoch -> iterable
        (fresh batches each epoch), or for epochs=1 also a one-shot iterator or generator.
    optimizer: an optax GradientTransformation, or a float: Adam with that learning rate.
    trainable: None (every float array of the model) or a predicate (node, parameter name) -> bool over a
        StepModel's params, e.g. `lambda node, name: name == "weight"`; the others stay as they are.
    progress: a progress line on stderr (epoch, step, latest loss, seconds), closed with the mean loss at the
        end of each epoch.
    history: {"loss": [loss before each step's update], "epoch_loss": [mean per epoch], "seconds": float}.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from nircomp.program import Program

    model = model.model if isinstance(model, Program) else model
    if isinstance(optimizer, (int, float)):
        optimizer = _optax().adam(float(optimizer))
    if epochs > 1 and not callable(data) and iter(data) is data:
        raise CompileError(f"train: data is a one-shot iterator but epochs={epochs}",
                           hint="pass a list, or a function epoch -> iterable of batches")
    spec = _trainable(model, trainable)
    opt_state = optimizer.init(eqx.filter(model, spec))

    @eqx.filter_jit
    def update(model, opt_state, batch, k):
        params, static = eqx.partition(model, spec)

        def objective(p):
            m = eqx.combine(p, static)
            args = batch if isinstance(batch, tuple) else (batch,)
            return loss(m, *args) if k is None else loss(m, *args, key=k)

        value, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, value

    losses: list[Any] = []
    epoch_loss: list[float] = []
    bar = ProgressLine(progress)

    def line(epoch: int, step: int, loss: Callable[[], float], end: bool = False) -> Callable[[], str]:
        return lambda: (f"train: epoch {epoch}/{epochs}, step {step}, {'mean loss' if end else 'loss'} "
                        f"{loss():.4g}, {bar.elapsed:.1f} s")
    for epoch in range(1, epochs + 1):
        first = len(losses)
        for batch in (data(epoch - 1) if callable(data) else data):
            sub = None
            if key is not None:
                key, sub = jax.random.split(key)
            model, opt_state, value = update(model, opt_state, batch, sub)
            losses.append(value)
            bar.show(line(epoch, len(losses), lambda v=value: float(v)))
        if len(losses) == first:
            raise CompileError(f"train: epoch {epoch} had no batches", hint="data yielded nothing")
        epoch_loss.append(float(jnp.mean(jnp.stack(losses[first:]))))
        bar.show(line(epoch, len(losses), lambda: epoch_loss[-1], end=True), force=True)
        bar.close()
    history = {"loss": [float(v) for v in losses], "epoch_loss": epoch_loss, "seconds": bar.elapsed}
    return model, history
