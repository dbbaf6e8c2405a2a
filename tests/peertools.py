"""Shared helpers of the interop tests that compare nircomp under a peer's preset with the peer."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np

import nircomp


def run_with_states(graph, x: np.ndarray, *, dt: float, convention: str, **options):
    """nircomp's model of `graph` on x [B, T, ...] (vmapped over the batch): (spikes [B, T, ...], node -> its
    neuron state after every step [B, T, ...], from `model.step`)."""
    model = nircomp.compile(copy.deepcopy(graph), dt=dt, solver="step", convention=convention, **options).model

    def run(xs):
        def body(s, x_t):
            s, _ = model.step(s, x_t)
            return s, s["state"]
        return model(xs), jax.lax.scan(body, model.init_state(), xs)[1]

    y, states = jax.jit(jax.vmap(run))(jnp.asarray(x))
    names = dict(model.schedule.names)
    return np.asarray(y), {node: states[entry] for node, entry in names.items() if entry in states}


def assert_spikes(ours, peer):
    """At most 0.1 % of the spike counts differ, and the input made the network spike without saturating."""
    assert ours.shape == peer.shape
    flips = np.mean(ours != peer)
    assert flips <= 1e-3, f"{flips:.2%} of the spike counts differ"
    assert 0.02 < np.mean(peer > 0) < 0.9, "the test input should make the network spike, not saturate it"


def assert_trace(ours, peer):
    """Membrane/current traces agree within 1e-5 relative."""
    ours, peer = np.asarray(ours), np.asarray(peer)
    np.testing.assert_allclose(ours, peer, rtol=1e-5, atol=1e-5 * np.abs(peer).max())
