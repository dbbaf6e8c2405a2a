"""lower-connectivity: pick the step-solver kernel of every weight from its connectivity, and say why.

The choices (BrainPy's dnn.linear layers, as kernels of nircomp/kernels/connectivity.py):

| kernel | when | computes |
|---|---|---|
| `identity` | W is the identity | x |
| `one-to-one` | W is square and diagonal | x * diag(W) |
| `all-to-all` | every weight equal | w * sum(x), every output |
| `event` | the input is spikes (mostly zero) | the rows of W.T of each row's nonzero inputs, summed |
| `csr` | few nonzero weights per row | W's nonzeros only (compressed rows) |
| `dense` | otherwise, or a layer below `min_weights` | the matrix product |

The choice is recorded as the node attribute `connectivity` ({"kernel", "budget", "reason"}), shown by
`nircomp inspect`, read by the schedule and never written to NIR. It never changes results: each kernel
checks at run time what it relies on (W's structure, the number of nonzeros per row) and otherwise
computes the dense product; only the order of the sums differs (float rounding). The defaults of the
thresholds were measured on XLA:CPU, one thread (benchmarks/RESULTS.md, "Sparsity").
"""

from __future__ import annotations

import math

import numpy as np

from nircomp.errors import CompileError
from nircomp.ir import Graph
from nircomp.ops import DENSE_KINDS, FUSED_KINDS
from nircomp.pipeline import PassContext, register_pass

SPIKING_KINDS = frozenset({"IF", "LIF", "CubaLIF", "Threshold", "DenseLIF", "DenseCubaLIF"})
# ops that pass their input's zeros through unchanged: spikes stay spikes
TRANSPARENT_KINDS = frozenset({"Flatten", "Delay", "Identity"})


@register_pass("lower-connectivity")
def lower_connectivity(graph: Graph, ctx: PassContext, *, event_budget: float = 0.15, csr_density: float = 0.04,
                       spike_inputs: tuple[str, ...] = (), min_weights: int = 262144) -> Graph:
    """Choose each Linear/Affine (and fused dense) kernel from its connectivity; record the choice and why.

    Structure first (identity, one-to-one, all-to-all), then `event` when every input of the layer is
    spikes (a spiking neuron IF/LIF/CubaLIF/Threshold, through Flatten/Delay/Identity, or a graph Input
    named in `spike_inputs`): it handles up to `event_budget` * n_in nonzero inputs per row and runs the
    dense product for a call with a busier row (a call: the whole sequence of a layer the schedule applies
    to [T, ...] at once, one step in a scan). Then `csr` when no row of W has more than `csr_density` * n_in
    nonzero weights; else `dense`. Layers with fewer than `min_weights` weights stay dense. Measured on
    XLA:CPU (one thread, 32000 rows, benchmarks/RESULTS.md): for 512x512 and 512x700 weights the event
    kernel costs 0.49-0.64 of the dense product at 0.135-0.156 n_in nonzeros per row (0.70-0.78 at 0.2) and
    csr breaks even at ~0.07 n_in; 256-output layers gain less (0.92 at 0.156), hence min_weights.
    """
    inputs = set(graph.inputs())
    unknown = [n for n in spike_inputs if n not in inputs]
    if unknown:
        raise ctx.error(CompileError, f"spike_inputs names {', '.join(map(repr, unknown))}, which "
                        f"{'is not an Input' if len(unknown) == 1 else 'are not Inputs'} of the graph",
                        hint=f"the graph's inputs: {', '.join(sorted(inputs)) or 'none'}")
    sem = ctx.options.get("semantics")
    smooth = getattr(sem, "forward", None) == "smooth"
    chosen: dict[str, list[str]] = {}
    for name, op in list(graph.ops()):
        if op.kind not in DENSE_KINDS and op.kind not in FUSED_KINDS:
            continue
        kernel, budget, reason = _choose(graph, name, np.asarray(op.params["weight"]), set(spike_inputs), smooth,
                                         event_budget, csr_density, min_weights)
        graph.set_op(name, op.replace(attrs={**op.attrs, "connectivity": {"kernel": kernel, "budget": budget,
                                                                            "reason": reason}}))
        chosen.setdefault(kernel, []).append(name)
    if chosen:
        ctx.note("; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(chosen.items())))
    return graph


def _choose(graph: Graph, name: str, w: np.ndarray, declared: set[str], smooth: bool, event_budget: float,
            csr_density: float, min_weights: int) -> tuple[str, int, str]:
    """(kernel, budget, reason) for the weight `w` of node `name`."""
    if w.ndim != 2:
        return "dense", 0, f"weight of shape {list(w.shape)} is not a matrix"
    n_out, n_in = w.shape
    if w.size < min_weights:
        return "dense", 0, f"{w.size} weights < min_weights={min_weights}"
    if n_out == n_in and np.array_equal(w, np.eye(n_in, dtype=w.dtype)):
        return "identity", 0, "W is the identity"
    if n_out == n_in and not np.any(w[~np.eye(n_in, dtype=bool)]):
        return "one-to-one", 0, "W is diagonal"
    if np.all(w == w.flat[0]):
        return "all-to-all", 0, f"every weight is {w.flat[0]!r}"
    spikes, why = _spiking_input(graph, name, declared, smooth)
    if spikes:
        budget = max(1, math.ceil(event_budget * n_in))
        return "event", budget, (f"input {why}; up to {budget} of {n_in} nonzero inputs per row "
                                 f"(event_budget={event_budget}), dense beyond")
    row = int(np.max(np.count_nonzero(w, axis=1)))
    if row <= csr_density * n_in:
        return "csr", row, f"at most {row} of {n_in} weights per row nonzero ({row / n_in:.3g} <= csr_density={csr_density})"
    return "dense", 0, (f"at most {row} of {n_in} weights per row nonzero ({row / n_in:.3g} > csr_density="
                        f"{csr_density}) and the input is not spikes ({why})")


def _spiking_input(graph: Graph, name: str, declared: set[str], smooth: bool) -> tuple[bool, str]:
    """Whether every value reaching `name` is spikes, and a phrase saying which sources make it so (or not)."""
    if smooth:
        return False, "forward='smooth' makes neuron outputs dense"
    sources, seen, todo = [], {name}, list(graph.predecessors(name))
    while todo:
        src = todo.pop()
        if src in seen:
            continue
        seen.add(src)
        kind = graph.op(src).kind
        if kind in TRANSPARENT_KINDS:
            todo += graph.predecessors(src)
        elif kind in SPIKING_KINDS or (kind == "Input" and src in declared):
            sources.append(f"'{src}' ({kind})")
        else:
            hint = " not named in spike_inputs" if kind == "Input" else ", which does not spike"
            return False, f"'{src}' is {kind}{hint}"
    if not sources:
        return False, "no input"
    return True, " and ".join(sorted(sources)) + " spikes"
