"""EventProp gradients of the analytical solver (a jax.custom_vjp) against central finite differences of
the exact forward simulation, in float64, on small random feed-forward and recurrent networks."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from eventnets import random_inputs, random_net
from graphs import x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp.events import Events

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout
T_MAX = 0.02
EPS = 1e-7


def _loss_fn(coef_out, coef_hidden):
    """A loss on output and hidden spike times (weighted sums) plus the output spike count."""

    def loss(model, times, index):
        out, rec = model(Events(times, index), record=("lif0",))
        t_out, t_hid = out.times, rec["lif0"].times
        finite = jnp.isfinite(t_out)
        value = jnp.sum(jnp.where(finite, coef_out * t_out, 0.0)) + jnp.sum(
            jnp.where(jnp.isfinite(t_hid), coef_hidden * t_hid, 0.0))
        return value + 1e-3 * jnp.sum(finite), (jnp.sum(finite), jnp.sum(jnp.isfinite(t_hid)))

    return loss


@pytest.mark.parametrize(("recurrent", "last_lif"), [(False, False), (True, False), (False, True)],
                         ids=["feedforward", "recurrent", "cubalif-lif"])
def test_eventprop_matches_finite_differences(recurrent, last_lif):
    """d loss / d (every weight, every input time) by EventProp equals the central difference (step 1e-7)
    to 1e-4 relative; the perturbations change no spike count (checked), so the loss is smooth there. With
    a LIF output population (v_leak < θ) its spikes are jumps over θ at the time of the causing spike."""
    seed = 3 if recurrent else 4
    graph = random_net(seed, recurrent, last_lif=last_lif)
    budget = {"lif0": 40, "lif1": 40}
    model = nircomp.compile(graph, solver="analytical", t_max=T_MAX, n_spikes=budget).model
    times, index = random_inputs(seed)
    rng = np.random.default_rng(seed)
    loss = eqx.filter_jit(_loss_fn(jnp.asarray(rng.normal(size=40)), jnp.asarray(rng.normal(size=40))))
    g_model, g_times = eqx.filter_grad(lambda mt: loss(mt[0], mt[1], index)[0])((model, jnp.asarray(times)))
    _, counts = loss(model, jnp.asarray(times), index)
    assert int(counts[0]) > 3 and int(counts[1]) > 3

    def central(perturb):
        (lp, cp), (lm, cm) = perturb(EPS), perturb(-EPS)
        assert tuple(map(int, cp)) == tuple(map(int, counts)) == tuple(map(int, cm)), "a spike (dis)appeared"
        return float(lp - lm) / (2 * EPS)

    for node, params in model.params.items():
        w = np.asarray(params["weight"])
        fd = np.zeros_like(w)
        for ix in np.ndindex(w.shape):
            def perturb(e, node=node, ix=ix, w=w):
                new = eqx.tree_at(lambda m: m.params[node]["weight"], model,
                                  jnp.asarray(w).at[ix].add(e * max(1.0, abs(w[ix]))))
                return loss(new, jnp.asarray(times), index)
            fd[ix] = central(perturb) / max(1.0, abs(w[ix]))
        got = np.asarray(g_model.params[node]["weight"])
        np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max(), err_msg=node)
    fd_t = np.array([central(lambda e, k=k: loss(model, jnp.asarray(times).at[k].add(e), index))
                     for k in range(len(times))])
    np.testing.assert_allclose(np.asarray(g_times), fd_t, rtol=1e-4, atol=1e-4 * np.abs(fd_t).max())
