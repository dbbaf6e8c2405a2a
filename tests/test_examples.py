"""The shipped example scripts run and do what they say."""

from __future__ import annotations

import importlib.util

import equinox as eqx
import jax
import numpy as np
import pytest
from conftest import EXAMPLES

import nircomp

pytest.importorskip("optax")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_cubalif_learns_and_writes_nir(tmp_path):
    """Training lifts test accuracy far above chance (0.25) on the 4-class task, and the written .nir file
    compiles to a model with exactly the trained weights (same outputs on the same input)."""
    train = _load("train_cubalif")
    out = tmp_path / "trained.nir"
    acc, model = train.main(["--steps", "80", "--out", str(out)])
    assert acc > 0.8
    trained = nircomp.compile(out, dt=train.DT, solver="step")
    original = nircomp.compile(EXAMPLES / "cubalif_chain.nir", dt=train.DT, solver="step")
    w_new = np.asarray(trained.model.params["lif1"]["weight"])
    assert not np.allclose(w_new, np.asarray(original.model.params["lif1"]["weight"]))
    x, _ = train.make_batch(jax.random.PRNGKey(5), 4)
    y = eqx.filter_jit(jax.vmap(trained.model))(x)
    assert y.shape == (4, train.T, 4)
    np.testing.assert_array_equal(y, eqx.filter_jit(jax.vmap(model))(x))
