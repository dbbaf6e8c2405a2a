"""The hardware-mapping passes: quantize-weights, check-mapping, emulator-noise (hand-computed cases)."""

from __future__ import annotations

import nir
import numpy as np
import pytest
from graphs import chain, cubalif

import nircomp
from nircomp.errors import CheckError, CompileError
from nircomp.passes.hardware import quantize

PRE = "verify,infer-shapes,fuse-affine-cubalif"


def _net(weight):
    weight = np.asarray(weight, dtype=np.float32)
    n_out, n_in = weight.shape
    return chain([n_in], ("fc", nir.Linear(weight)), ("lif", cubalif([n_out])), out_shape=[n_out])


def test_quantize_weights_rounds_to_the_hand_computed_grid():
    """bits=3 gives levels +-3 and scale max|W|/3; round(W/scale)*scale, numpy's round half to even."""
    g, log = nircomp.run_passes(_net([[0.5, -1.0], [0.26, 0.0]]), f"{PRE},quantize-weights{{bits=3}}")
    op = g.op("lif")
    # W/scale = [1.5, -3, 0.78, 0] -> [2, -3, 1, 0]
    np.testing.assert_allclose(op.params["weight"], np.array([[2, -3], [1, 0]]) / 3, rtol=1e-6)
    q = op.attrs["quantized"]
    assert (q["bits"], q["levels"], q["duplication"]) == (3, 3, 1)
    assert q["scale"] == pytest.approx(1 / 3)
    assert q["max_error"] == pytest.approx(2 / 3 - 0.5, rel=1e-5)
    assert "quantised 1 weight(s) to 3-bit x1" in log[-1].summary()
    assert "quantized=" in nircomp.format_graph(g)


def test_duplication_multiplies_the_levels():
    """duplication=2 doubles the levels (6 for 3 bits): scale max|W|/6, so 0.26 -> 2/6 and 0.5 -> 3/6 exactly."""
    g, _ = nircomp.run_passes(_net([[0.5, -1.0], [0.26, 0.0]]), f"{PRE},quantize-weights{{bits=3 duplication=2}}")
    np.testing.assert_allclose(g.op("lif").params["weight"], np.array([[3, -6], [2, 0]]) / 6, rtol=1e-6)
    assert g.op("lif").attrs["quantized"]["levels"] == 6


def test_headroom_leaves_room_and_runtime_quantisation_counts_saturation():
    """With headroom 2 the largest weight maps to half the levels; weights grown past the range saturate,
    and quantize() says how many did."""
    g, _ = nircomp.run_passes(_net([[1.0, -0.5]]), f"{PRE},quantize-weights{{bits=6 headroom=2.0}}")
    q = g.op("lif").attrs["quantized"]
    assert q["scale"] == pytest.approx(2.0 / 31)
    grown = np.array([1.5, 2.5, -3.0])  # range is +-31 * 2/31 = +-2
    value, clipped = quantize(grown, q["scale"], q["levels"])
    assert clipped == 2
    np.testing.assert_allclose(value, [round(1.5 * 15.5) / 15.5, 2.0, -2.0])


def test_bad_quantize_options_are_refused():
    """bits < 2 is a located CompileError."""
    with pytest.raises(CompileError, match="bits >= 2"):
        nircomp.run_passes(_net([[1.0]]), f"{PRE},quantize-weights{{bits=1}}")


def test_check_mapping_refuses_a_fan_in_beyond_the_rows():
    """200 inputs x 2 rows per input = 400 rows > 256: refused, naming the node; 100 inputs fit."""
    big = np.ones((3, 200))
    with pytest.raises(CheckError, match="400 synapse rows") as e:
        nircomp.run_passes(_net(big), f"{PRE},check-mapping")
    assert tuple(e.value.nodes) == ("lif",)
    nircomp.run_passes(_net(np.ones((3, 100))), f"{PRE},check-mapping")


def test_check_mapping_counts_duplication_and_neurons():
    """Duplication 2 doubles the rows (100 inputs -> 400); 600 neurons exceed max_neurons=512."""
    with pytest.raises(CheckError, match="duplication 2"):
        nircomp.run_passes(_net(np.ones((3, 100))), f"{PRE},quantize-weights{{duplication=2}},check-mapping")
    with pytest.raises(CheckError, match="600 neurons"):
        nircomp.run_passes(_net(np.ones((600, 4))), f"{PRE},check-mapping")


def test_emulator_noise_is_recorded_and_validated():
    """The options land in the graph attrs, printed by inspect; a negative deviation is refused."""
    g, _ = nircomp.run_passes(_net([[1.0]]), f"{PRE},emulator-noise{{seed=3 threshold_std=0.05 jitter=1e-5}}")
    assert g.attrs["emulator"] == {"seed": 3, "threshold_std": 0.05, "tau_std": 0.0, "jitter": 1e-5}
    assert "emulator=" in nircomp.format_graph(g)
    with pytest.raises(CompileError, match="tau_std must be >= 0"):
        nircomp.run_passes(_net([[1.0]]), f"{PRE},emulator-noise{{tau_std=-0.1}}")
