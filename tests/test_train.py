"""nircomp.training: readouts and regularisers against hand calculations on crafted spike trains, gradients
through them against finite differences, and the optax loop on a tiny task."""

from __future__ import annotations

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from graphs import ALL_GRAPHS, DT, sample_input, x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp.errors import CompileError
from nircomp.training import first_spike_time, max_over_time, population_counts, rate_penalty

# [T=5, N=4]: neuron 0 fires at steps 2 and 4, neuron 1 never, neuron 2 at 0 and 3, neuron 3 at 1 (twice)
Z = np.array([[0, 0, 1, 0],
              [0, 0, 0, 2],
              [1, 0, 0, 0],
              [0, 0, 1, 0],
              [1, 0, 0, 0]], np.float32)


def test_population_counts_sum_each_class_block():
    """Neurons 0-1 vote for class 0 and 2-3 for class 1: counts (2 + 0, 2 + 2), per sample of a batch; a
    neuron count that is not a multiple of the classes is an error."""
    np.testing.assert_array_equal(population_counts(jnp.asarray(Z), 2), [2, 4])
    np.testing.assert_array_equal(population_counts(jnp.asarray(Z), 4), [2, 0, 2, 2])
    batch = jnp.stack([Z, 1 - np.minimum(Z, 1)])  # the second sample: the complement, counts 3, 5, 3, 4
    np.testing.assert_array_equal(population_counts(batch, 2), [[2, 4], [3 + 5, 3 + 4]])
    with pytest.raises(CompileError, match="cannot be split into 3 equal groups"):
        population_counts(jnp.asarray(Z), 3)


def test_max_over_time_and_its_gradient():
    """The maximum per neuron over time, with the gradient one at the step of the maximum only."""
    v = jnp.asarray([[0.1, -1.0], [0.7, -0.5], [0.3, -2.0]])
    np.testing.assert_allclose(max_over_time(v), [0.7, -0.5])
    g = jax.grad(lambda v: max_over_time(v).sum())(v)
    np.testing.assert_array_equal(g, [[0, 0], [1, 1], [0, 0]])


def test_first_spike_time_values_and_surrogate_gradient():
    """First spike at step k -> (k + 1) dt, never -> (T + 1) dt, a double spike counts once; the gradient
    is -(k - s) dt before the first spike, -(k2 - k) dt at it (k2 the next spike or T), 0 after it."""
    dt, T = 0.5, 5
    np.testing.assert_allclose(first_spike_time(jnp.asarray(Z), dt), [3 * dt, 6 * dt, 1 * dt, 2 * dt])
    g = np.asarray(jax.jit(jax.jacobian(lambda z: first_spike_time(z, dt)))(jnp.asarray(Z)))  # [N, T, N]
    expected = {0: [-2, -1, -(4 - 2), 0, 0],     # k = 2, next spike 4
                1: [-(T - s) for s in range(T)],  # never: k = T
                2: [-(3 - 0), 0, 0, 0, 0],        # k = 0, next spike 3
                3: [-1, 0, 0, 0, 0]}              # k = 1 with z = 2: counted once, no gradient there
    for n, row in expected.items():
        np.testing.assert_allclose(g[n, :, n], np.asarray(row) * dt, err_msg=f"neuron {n}")
        assert not np.any(np.delete(g[n], n, axis=1)), "a neuron's time depends only on its own spikes"
    batch = jnp.stack([Z, Z[::-1]])
    np.testing.assert_allclose(first_spike_time(batch, dt)[1], [1 * dt, 6 * dt, 2 * dt, 4 * dt])


def test_rate_penalty_by_hand():
    """Rates (spikes per step, averaged over the batch) outside [lo, hi] cost their squared distance:
    per neuron, per population, summed over a dict of nodes, and for one sample with time_axis=0."""
    z = jnp.asarray(np.minimum(Z, 1))  # rates per step: 0.4, 0, 0.4, 0.2
    lo, hi = 0.25, 0.3
    per_neuron = (0.4 - hi) ** 2 + (lo - 0) ** 2 + (0.4 - hi) ** 2 + (lo - 0.2) ** 2
    np.testing.assert_allclose(rate_penalty(z, lo, hi, time_axis=0), per_neuron, rtol=1e-6)
    np.testing.assert_allclose(rate_penalty(z[None], lo, hi), per_neuron, rtol=1e-6)
    # batch of the train and its complement: neuron rates (0.4 + 0.6)/2 = 0.5, (0 + 1)/2, 0.5, (0.2 + 0.8)/2
    batch = jnp.stack([z, 1 - z])
    np.testing.assert_allclose(rate_penalty(batch, lo, hi), 4 * (0.5 - hi) ** 2, rtol=1e-6)
    np.testing.assert_allclose(rate_penalty(z[None], lo, hi, per="population"), 0.0)  # mean 0.25 is inside
    np.testing.assert_allclose(rate_penalty(z[None], 0.0, 0.1, per="population"), (0.25 - 0.1) ** 2, rtol=1e-6)
    conv = jnp.zeros((2, 5, 2, 3, 3))  # a silent [2, 3, 3] node: 18 neurons at rate 0
    np.testing.assert_allclose(rate_penalty({"a": z[None], "b": conv}, lo, hi),
                               per_neuron + 18 * lo**2, rtol=1e-6)
    with pytest.raises(CompileError, match="per="):
        rate_penalty(z, per="layer")


@pytest.mark.usefixtures("x64")
def test_gradients_through_readouts_match_finite_differences():
    """With smooth spikes (forward="smooth": exact derivatives) the gradient of population counts, first
    spike times, max membrane and a rate penalty, each, with respect to weights equals central
    differences."""
    g = ALL_GRAPHS["cubalif_chain"]()
    model = nircomp.compile(g, dt=DT, solver="step", forward="smooth", slope=5.0, dtype=jnp.float64).model
    x = jnp.asarray(sample_input(g, 20), jnp.float64)

    @jax.jit
    def readouts(w):
        m = eqx.tree_at(lambda m: m.params["lif1"]["weight"], model, w)
        y, rec = m(x, record=["lif1"])  # y: the CubaLI membranes, rec: the CubaLIF's (smooth) spikes
        z = rec["lif1"]
        return jnp.stack([population_counts(z, 3).sum(), first_spike_time(z, DT).sum(), max_over_time(y).sum(),
                          rate_penalty(z, 0.3, 0.4, time_axis=0)])

    w = model.params["lif1"]["weight"]
    jac = jax.jit(jax.jacobian(readouts))(w)  # [4, *w.shape]
    eps = 1e-6
    for idx in [(2, 3), (5, 4), (1, 0)]:
        e = jnp.zeros_like(w).at[idx].set(eps)
        fd = (readouts(w + e) - readouts(w - e)) / (2 * eps)
        np.testing.assert_allclose(jac[(slice(None), *idx)], fd, rtol=1e-5, atol=1e-9)
        assert np.all(np.abs(fd) > 1e-7), "every readout depends on the weight"


def _task():
    """Two classes of 8 steps of 3 inputs: class c drives input c (constant 1) and the model must put more
    output spikes on neuron block c (affine_lif: 3 -> 4 LIF, two neurons per class)."""
    x = np.zeros((2, 8, 3), np.float32)
    x[0, :, 0] = x[1, :, 1] = 1.0
    return jnp.asarray(x), jnp.asarray([0, 1])


def _loss(model, x, y):
    counts = population_counts(jax.vmap(model)(x), 2)
    return jnp.mean((counts - 8.0 * jax.nn.one_hot(y, 2)) ** 2)


def test_train_reduces_the_loss_and_trains_only_what_it_is_told(capsys):
    """train() lowers the loss on a tiny task (last epoch's mean < a tenth of the first's), changes only
    the parameters `trainable` selects, returns a StepModel and a per-step history, and shows progress."""
    prog = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", slope=2.0)
    batches = [_task()] * 5
    model, history = nircomp.train(prog, _loss, batches, 0.05, epochs=8,
                                   trainable=lambda node, name: name in ("weight", "bias"))
    assert len(history["loss"]) == 40 and len(history["epoch_loss"]) == 8
    assert history["epoch_loss"][-1] < 0.1 * history["epoch_loss"][0]
    np.testing.assert_allclose(history["epoch_loss"][0], np.mean(history["loss"][:5]), rtol=1e-6)
    before, after = prog.model.params["lif"], model.params["lif"]
    assert not np.allclose(before["weight"], after["weight"])
    for name in ("tau", "v_threshold", "r"):
        np.testing.assert_array_equal(before[name], after[name])
    assert "train: epoch 8/8, step 40, mean loss" in capsys.readouterr().err


def test_train_passes_keys_to_a_noisy_model_and_checks_its_data():
    """With key= every step gets a fresh subkey (a noisy model runs, and the same batch gives different
    losses); a one-shot iterator for several epochs, an empty epoch and a missing optax are clear errors."""
    prog = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", noise={"membrane": 5.0})

    def noisy_loss(model, x, y, key):
        counts = population_counts(jax.vmap(lambda xi, k: model(xi, key=k))(x, jax.random.split(key, 2)), 2)
        return jnp.mean((counts - 8.0 * jax.nn.one_hot(y, 2)) ** 2)

    import optax

    _, history = nircomp.train(prog, noisy_loss, [_task()] * 3, optax.sgd(0.0), key=jax.random.PRNGKey(0),
                               progress=False)
    assert len(set(history["loss"])) > 1
    with pytest.raises(CompileError, match="one-shot iterator"):
        nircomp.train(prog, noisy_loss, iter([_task()]), optax.sgd(0.0), epochs=2)
    with pytest.raises(CompileError, match="epoch 1 had no batches"):
        nircomp.train(prog, _loss, [], optax.sgd(0.0))


def test_missing_optax_is_a_clear_error(monkeypatch):
    """A learning rate needs optax to build Adam; without optax the error says how to install it."""
    monkeypatch.setitem(sys.modules, "optax", None)
    prog = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step")
    with pytest.raises(ImportError, match=r"pip install 'nircomp\[train\]'"):
        nircomp.train(prog, _loss, [_task()], 0.01)
