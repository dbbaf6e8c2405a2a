"""Passes that map a graph onto a neuromorphic target: quantize-weights, check-mapping, emulator-noise.

They model a BrainScaleS-2-like analog chip: signed `bits`-bit synapse weights, a logical connection
realised by `duplication` physical synapses (so `duplication` times the levels), a limited number of
synapse rows per neuron (fan-in), and per-neuron fixed-pattern deviations of thresholds and time
constants. Every effect is an IR attribute shown by `inspect`, and each pass can be left out.
"""

from __future__ import annotations

import numpy as np

from nircomp.errors import CheckError, CompileError
from nircomp.hardware import quantize, weight_levels
from nircomp.ir import Graph
from nircomp.ops import DENSE_KINDS, FUSED_KINDS, NEURON_KINDS
from nircomp.pipeline import PassContext, register_pass

_WEIGHTED = frozenset(DENSE_KINDS) | frozenset(FUSED_KINDS)


@register_pass("quantize-weights")
def quantize_weights(graph: Graph, ctx: PassContext, *, bits: int = 6, duplication: int = 1,
                     headroom: float = 1.0) -> Graph:
    """Quantise every dense weight to signed `bits`-bit levels (times `duplication` synapses per connection).

    One scale per layer: scale = headroom * max|W| / levels, levels = (2^(bits-1) - 1) * duplication, so
    no weight is clipped here (headroom > 1 leaves room for training to grow the weights). The weight
    becomes round(W / scale) * scale; the node's attrs record bits, duplication, scale and the largest
    rounding error.
    """
    if bits < 2 or duplication < 1 or headroom < 1.0:
        raise ctx.error(CompileError, f"quantize-weights needs bits >= 2, duplication >= 1 and headroom >= 1 "
                        f"(got bits={bits}, duplication={duplication}, headroom={headroom})")
    levels = weight_levels(bits, duplication)
    done = []
    for name, op in list(graph.ops()):
        if op.kind not in _WEIGHTED:
            continue
        w = np.asarray(op.params["weight"])
        peak = float(np.max(np.abs(w))) if w.size else 0.0
        scale = headroom * peak / levels if peak > 0 else 1.0
        q, _ = quantize(w.astype(np.float64), scale, levels)
        error = float(np.max(np.abs(q - w))) if w.size else 0.0
        attrs = {**op.attrs, "quantized": {"bits": bits, "duplication": duplication, "scale": scale,
                                           "levels": levels, "max_error": error}}
        graph.set_op(name, op.replace(params={**op.params, "weight": q.astype(w.dtype)}, attrs=attrs))
        done.append(f"{name} (scale {scale:.4g}, max error {error:.3g})")
    ctx.note(f"quantised {len(done)} weight(s) to {bits}-bit x{duplication}: " + ", ".join(done) if done else
             "no dense weight to quantise")
    return graph


@register_pass("check-mapping")
def check_mapping(graph: Graph, ctx: PassContext, *, max_rows: int = 256, rows_per_input: int = 2,
                  max_neurons: int = 512) -> Graph:
    """Refuse graphs the target cannot hold: too many synapse rows per neuron, or too many neurons.

    A neuron's fan-in of n inputs uses n * rows_per_input * duplication synapse rows (signed weights take
    an excitatory and an inhibitory row each by default) of at most `max_rows`; all neuron populations
    together hold at most `max_neurons` neurons. Never changes the graph.
    """
    total = 0
    for name, op in graph.ops():
        if op.kind not in NEURON_KINDS and op.kind not in FUSED_KINDS:
            continue
        total += int(np.prod(op.output_shape or ()))
        dense = [op] if op.kind in FUSED_KINDS else [graph.op(p) for p in graph.nx.pred[name]
                                                      if graph.op(p).kind in DENSE_KINDS]
        fan_in = sum(int(np.prod(d.input_shape or ())) for d in dense)
        dup = max([d.attrs.get("quantized", {}).get("duplication", 1) for d in dense], default=1)
        rows = fan_in * rows_per_input * dup
        if rows > max_rows:
            raise ctx.error(CheckError, f"fan-in of {fan_in} input(s) needs {rows} synapse rows "
                            f"({rows_per_input} per input x duplication {dup}); the target has {max_rows}",
                            nodes=[name], hint="reduce the fan-in or the duplication, or use solver='analytical'")
    if total > max_neurons:
        raise ctx.error(CheckError, f"the graph has {total} neurons; the target holds {max_neurons}",
                        hint="use a smaller network, or solver='analytical'")
    ctx.note(f"fits: {total} of {max_neurons} neurons")
    return graph


@register_pass("emulator-noise")
def emulator_noise(graph: Graph, ctx: PassContext, *, seed: int = 0, threshold_std: float = 0.0,
                   tau_std: float = 0.0, jitter: float = 0.0) -> Graph:
    """Record the hardware emulator's imperfections in the graph attrs (all 0: an ideal chip).

    threshold_std, tau_std: relative standard deviation of the seeded per-neuron fixed pattern of
    thresholds and time constants (the same chip, the same pattern, at every run); jitter: standard
    deviation of the spike-time noise, in the unit of the time constants, drawn anew at every run.
    """
    for key, value in (("threshold_std", threshold_std), ("tau_std", tau_std), ("jitter", jitter)):
        if value < 0:
            raise ctx.error(CompileError, f"emulator-noise option {key} must be >= 0 (got {value})")
    graph.attrs["emulator"] = {"seed": seed, "threshold_std": threshold_std, "tau_std": tau_std, "jitter": jitter}
    ctx.note(f"emulator noise: seed {seed}, threshold {threshold_std:g}, tau {tau_std:g}, jitter {jitter:g}")
    return graph
