"""Before/expected tests of the built-in passes (STYLE §8.8).

Each test builds a small graph from `nir` node classes, runs a one- or two-pass pipeline through
`nircomp.run_passes` and compares the printed IR with an expected text written from the pass's rule.
Parameters in the expected text follow the printer's rules: `v homog` for a homogeneous array, and for
a folded weight the printed form of the array the rule gives (`fmt(np.diag(s) @ W)`).
"""

from __future__ import annotations

import textwrap

import nir
import numpy as np
import pytest

import nircomp
from nircomp.errors import CheckError, VerifyError
from nircomp.load import graph_from_dict, nir_to_dict
from nircomp.printer import format_value as fmt

LIF = "tau=0.01 homog, r=1.0 homog, v_leak=0.0 homog, v_threshold=1.0 homog, v_reset=0.0 homog"
NEURONS = {  # kind -> (nir node of 2 neurons, its printed parameters)
    "LIF": (lambda: nir.LIF(np.full(2, 0.01), np.ones(2), np.zeros(2), np.ones(2)), LIF),
    "LI": (lambda: nir.LI(np.full(2, 0.01), np.ones(2), np.zeros(2)), "tau=0.01 homog, r=1.0 homog, v_leak=0.0 homog"),
    "CubaLI": (lambda: nir.CubaLI(np.full(2, 0.005), np.full(2, 0.01), np.ones(2), np.zeros(2)),
               "tau_syn=0.005 homog, tau_mem=0.01 homog, r=1.0 homog, v_leak=0.0 homog, w_in=1.0 homog"),
    "CubaLIF": (lambda: nir.CubaLIF(np.full(2, 0.005), np.full(2, 0.01), np.ones(2), np.zeros(2), np.ones(2)),
                ("tau_syn=0.005 homog, tau_mem=0.01 homog, r=1.0 homog, v_leak=0.0 homog, v_threshold=1.0 homog, "
                 "v_reset=0.0 homog, w_in=1.0 homog")),
}


def lif(n: int = 2, tau=0.01) -> nir.LIF:
    return nir.LIF(np.broadcast_to(np.asarray(tau, float), (n,)).copy(), np.ones(n), np.zeros(n), np.ones(n))


def inp(n: int):
    return {"type": "Input", "shape": np.array([n])}


def out(n: int):
    return {"type": "Output", "shape": np.array([n])}


def net(nodes: dict, edges: list) -> nircomp.Graph:
    """A Graph named `net` from nir nodes (or node dicts in the NIR file layout, e.g. an Identity)."""
    data = {k: v if isinstance(v, dict) else nir_to_dict(v) for k, v in nodes.items()}
    return graph_from_dict({"type": "NIRGraph", "nodes": data, "edges": edges}, name="net")


def run(graph: nircomp.Graph, pipeline: str) -> tuple[nircomp.Graph, str, tuple]:
    out_graph, log = nircomp.run_passes(graph, pipeline)
    return out_graph, nircomp.format_graph(out_graph), log


def ir(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# --------------------------------------------------------------------------- canonicalize
def test_canonicalize_drops_identity():
    """An Identity is removed and its input feeds its consumers directly; the log names the removal."""
    g = net({"input": inp(3), "id": {"type": "Identity"}, "fc": nir.Linear(np.ones((2, 3))), "lif": lif(),
             "output": out(2)}, [("input", "id"), ("id", "fc"), ("fc", "lif"), ("lif", "output")])
    _, text, log = run(g, "infer-shapes,canonicalize")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %fc = Linear(%input) : [3] -> [2] {{weight=1.0 homog}}
          %lif = LIF(%fc) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]""")
    rec = log[-1]
    assert rec.name == "canonicalize"
    assert (rec.added, rec.removed, rec.replaced) == ((), ("id",), ())
    assert rec.edges_added == (("input", "fc"),)
    assert set(rec.edges_removed) == {("input", "id"), ("id", "fc")}
    assert any("dropped Identity id" in n for n in rec.notes)


def test_canonicalize_keeps_identity_that_would_merge_summed_paths():
    """input feeds lif both directly and through id (lif sums 2x); dropping id would make that 1x, so it stays."""
    g = net({"input": inp(2), "id": {"type": "Identity"}, "lif": lif(), "output": out(2)},
            [("input", "id"), ("id", "lif"), ("input", "lif"), ("lif", "output")])
    _, text, log = run(g, "infer-shapes,canonicalize")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [2]
          %id = Identity(%input) : [2] -> [2]
          %lif = LIF(%id, %input) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]""")
    assert not log[-1].changed
    assert any("kept Identity id" in n for n in log[-1].notes)


@pytest.mark.parametrize("dense", ["Linear", "Affine"])
def test_canonicalize_folds_scale_after_dense(dense):
    """dense -> Scale(s) becomes one dense node with W' = diag(s) W and b' = s * b, origin [dense, scale]."""
    w, b, s = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([1.0, -2.0]), np.array([2.0, 0.5])
    fc = nir.Affine(w, b) if dense == "Affine" else nir.Linear(w)
    g = net({"input": inp(3), "fc": fc, "sc": nir.Scale(s), "lif": lif(), "output": out(2)},
            [("input", "fc"), ("fc", "sc"), ("sc", "lif"), ("lif", "output")])
    graph, text, log = run(g, "infer-shapes,canonicalize")
    params = f"weight={fmt(np.diag(s) @ w)}" + (f", bias={fmt(s * b)}" if dense == "Affine" else "")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %fc = {dense}(%input) : [3] -> [2] {{{params}, origin=[fc, sc]}}
          %lif = LIF(%fc) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]""")
    np.testing.assert_array_equal(graph.op("fc").params["weight"], np.diag(s) @ w)
    if dense == "Affine":
        np.testing.assert_array_equal(graph.op("fc").params["bias"], s * b)
    assert (log[-1].removed, log[-1].replaced) == (("sc",), ("fc",))
    assert "folded Scale sc into fc" in log[-1].notes


@pytest.mark.parametrize("dense", ["Linear", "Affine"])
def test_canonicalize_folds_scale_before_dense(dense):
    """Scale(s) -> dense becomes one dense node with W' = W diag(s), bias unchanged, origin [scale, dense]."""
    w, b, s = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([1.0, -2.0]), np.array([2.0, 0.5, -1.0])
    fc = nir.Affine(w, b) if dense == "Affine" else nir.Linear(w)
    g = net({"input": inp(3), "sc": nir.Scale(s), "fc": fc, "lif": lif(), "output": out(2)},
            [("input", "sc"), ("sc", "fc"), ("fc", "lif"), ("lif", "output")])
    graph, text, _ = run(g, "infer-shapes,canonicalize")
    params = f"weight={fmt(w @ np.diag(s))}" + (f", bias={fmt(b)}" if dense == "Affine" else "")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %fc = {dense}(%input) : [3] -> [2] {{{params}, origin=[sc, fc]}}
          %lif = LIF(%fc) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]""")
    np.testing.assert_array_equal(graph.op("fc").params["weight"], w @ np.diag(s))


def test_canonicalize_keeps_scale_when_another_node_sees_the_dense_output():
    """fc feeds both sc and `raw`: folding s into fc would change what `raw` sees, so nothing is folded."""
    g = net({"input": inp(2), "fc": nir.Linear(np.ones((2, 2))), "sc": nir.Scale(np.array([2.0, 3.0])),
             "output": out(2), "raw": out(2)},
            [("input", "fc"), ("fc", "sc"), ("sc", "output"), ("fc", "raw")])
    _, text, log = run(g, "infer-shapes,canonicalize")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output %raw
          %input = Input() : [2]
          %fc = Linear(%input) : [2] -> [2] {{weight=1.0 homog}}
          %raw = Output(%fc) : [2]
          %sc = Scale(%fc) : [2] -> [2] {{scale={fmt(np.array([2.0, 3.0]))}}}
          %output = Output(%sc) : [2]""")
    assert not log[-1].changed


def test_canonicalize_folds_scale_closing_a_two_node_cycle():
    """fc -> sc -> fc with sc also feeding the output: fc' = diag(s) W (x + fc'@prev) equals sc, so the
    loop closes on fc itself and fc feeds the output (regression: the Scale's other consumer was lost)."""
    w, s = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([2.0, 0.5])
    g = net({"input": inp(2), "fc": nir.Linear(w), "sc": nir.Scale(s), "output": out(2)},
            [("input", "fc"), ("fc", "sc"), ("sc", "fc"), ("sc", "output")])
    _, text, _ = run(g, "infer-shapes,canonicalize,mark-recurrence")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [2]
          %fc = Linear(%fc@prev, %input) : [2] -> [2] {{weight={fmt(np.diag(s) @ w)}, origin=[fc, sc]}}
          %output = Output(%fc) : [2]""")


def test_canonicalize_affine_with_zero_bias_becomes_linear():
    """An Affine whose bias is all zero is a Linear with the same weight; a non-zero bias stays an Affine."""
    g = net({"input": inp(3), "a": nir.Affine(np.ones((2, 3)), np.zeros(2)), "b": nir.Affine(np.ones((2, 2)),
             np.ones(2)), "output": out(2)}, [("input", "a"), ("a", "b"), ("b", "output")])
    _, text, log = run(g, "infer-shapes,canonicalize")
    assert text == ir("""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %a = Linear(%input) : [3] -> [2] {weight=1.0 homog}
          %b = Affine(%a) : [2] -> [2] {weight=1.0 homog, bias=1.0 homog}
          %output = Output(%b) : [2]""")
    assert log[-1].replaced == ("a",) and not log[-1].removed


def test_canonicalize_removes_dead_nodes_but_keeps_inputs():
    """dead1 -> dead2 reach no Output and go; the unconnected Input `spare` is interface and stays."""
    g = net({"input": inp(3), "spare": inp(2), "fc": nir.Linear(np.ones((2, 3))), "dead1": lif(),
             "dead2": nir.Linear(np.ones((2, 2))), "output": out(2)},
            [("input", "fc"), ("fc", "output"), ("fc", "dead1"), ("dead1", "dead2")])
    _, text, log = run(g, "infer-shapes,canonicalize")
    assert text == ir("""
        graph net  inputs: %input %spare  outputs: %output
          %input = Input() : [3]
          %fc = Linear(%input) : [3] -> [2] {weight=1.0 homog}
          %output = Output(%fc) : [2]
          %spare = Input() : [2]""")
    assert sorted(log[-1].removed) == ["dead1", "dead2"] and log[-1].added == ()
    assert any("removed dead node(s)" in n for n in log[-1].notes)


# --------------------------------------------------------------------------- fuse-affine-cubalif
@pytest.mark.parametrize("dense,neuron", [("Affine", "CubaLIF"), ("Linear", "LIF"), ("Linear", "LI"),
                                          ("Linear", "CubaLI")])
def test_fuse_dense_into_neuron(dense, neuron):
    """dense -> neuron (each the other's only link) becomes one Dense<neuron> node named after the neuron,
    with the dense's parameters then the neuron's, and both origins."""
    make, neuron_params = NEURONS[neuron]
    fc = nir.Affine(np.ones((2, 3)), np.full(2, 0.5)) if dense == "Affine" else nir.Linear(np.ones((2, 3)))
    g = net({"input": inp(3), "fc": fc, "n": make(), "output": out(2)}, [("input", "fc"), ("fc", "n"), ("n", "output")])
    _, text, log = run(g, "infer-shapes,fuse-affine-cubalif")
    bias = ", bias=0.5 homog" if dense == "Affine" else ""
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %n = Dense{neuron}(%input) : [3] -> [2] {{weight=1.0 homog{bias}, {neuron_params}, origin=[fc, n]}}
          %output = Output(%n) : [2]""")
    rec = log[-1]
    assert (rec.added, rec.removed, rec.replaced) == ((), ("fc",), ("n",))
    assert rec.notes == ("fused fc+n",)


def test_fuse_skips_dense_with_two_consumers():
    """fc feeds two neurons: fusing into one would hide fc's value from the other, so nothing is fused."""
    g = net({"input": inp(3), "fc": nir.Linear(np.ones((2, 3))), "n1": lif(), "n2": lif(), "o1": out(2), "o2": out(2)},
            [("input", "fc"), ("fc", "n1"), ("fc", "n2"), ("n1", "o1"), ("n2", "o2")])
    _, text, log = run(g, "infer-shapes,fuse-affine-cubalif")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %o1 %o2
          %input = Input() : [3]
          %fc = Linear(%input) : [3] -> [2] {{weight=1.0 homog}}
          %n1 = LIF(%fc) : [2] -> [2] {{{LIF}}}
          %n2 = LIF(%fc) : [2] -> [2] {{{LIF}}}
          %o1 = Output(%n1) : [2]
          %o2 = Output(%n2) : [2]""")
    assert not log[-1].changed and log[-1].notes == ()


def test_fuse_skips_neuron_with_two_inputs():
    """lif sums fc1 and fc2: a fused node has one weight, so neither dense is fused into it."""
    g = net({"input": inp(3), "fc1": nir.Linear(np.ones((2, 3))), "fc2": nir.Linear(np.ones((2, 3))), "lif": lif(),
             "output": out(2)}, [("input", "fc1"), ("input", "fc2"), ("fc1", "lif"), ("fc2", "lif"), ("lif", "output")])
    _, text, log = run(g, "infer-shapes,fuse-affine-cubalif")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %fc1 = Linear(%input) : [3] -> [2] {{weight=1.0 homog}}
          %fc2 = Linear(%input) : [3] -> [2] {{weight=1.0 homog}}
          %lif = LIF(%fc1, %fc2) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]""")
    assert not log[-1].changed


def test_fuse_across_subgraph_port_keeps_via():
    """fc -> [sub.input] -> sub.lif fuses into sub.lif; the new edge input -> sub.lif still passes sub.input."""
    sub = {"type": "NIRGraph", "nodes": {"input": inp(2), "lif": nir_to_dict(lif()), "output": out(2)},
           "edges": [("input", "lif"), ("lif", "output")]}
    g = net({"input": inp(3), "fc": nir.Linear(np.ones((2, 3))), "sub": sub, "output": out(2)},
            [("input", "fc"), ("fc", "sub.input"), ("sub.output", "output")])
    graph, text, _ = run(g, "infer-shapes,fuse-affine-cubalif")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [3]
          %sub.lif = DenseLIF(%input) : [3] -> [2] {{weight=1.0 homog, {LIF}, origin=[fc, sub.lif]}}
          %output = Output(%sub.lif) : [2]""")
    assert graph.nx.edges["input", "sub.lif"]["via"] == ("sub.input",)
    assert graph.nx.edges["sub.lif", "output"]["via"] == ("sub.output",)


# --------------------------------------------------------------------------- mark-recurrence
def test_mark_recurrence_marks_the_edge_closing_the_loop():
    """fc -> lif -> rec -> lif: the DFS from the Input reaches lif first, so rec -> lif is the back edge."""
    g = net({"input": inp(2), "fc": nir.Linear(np.ones((2, 2))), "lif": lif(), "rec": nir.Linear(np.ones((2, 2))),
             "output": out(2)}, [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    _, text, log = run(g, "infer-shapes,mark-recurrence")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [2]
          %fc = Linear(%input) : [2] -> [2] {{weight=1.0 homog}}
          %lif = LIF(%fc, %rec@prev) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]
          %rec = Linear(%lif) : [2] -> [2] {{weight=1.0 homog}}""")
    assert log[-1].edges_marked == (("rec", "lif"),)
    assert log[-1].notes == ("back edges: rec -> lif",)


@pytest.mark.parametrize("entry,other", [("a", "b"), ("b", "a")])
def test_mark_recurrence_back_edge_depends_on_entry_not_names(entry, other):
    """In the cycle a <-> b the back edge is the one returning to the node the Input enters, whatever the names."""
    g = net({"input": inp(2), "a": nir.Linear(np.ones((2, 2))), "b": nir.Linear(np.ones((2, 2))), "output": out(2)},
            [("input", entry), ("a", "b"), ("b", "a"), (other, "output")])
    _, text, log = run(g, "infer-shapes,mark-recurrence")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [2]
          %{entry} = Linear(%{other}@prev, %input) : [2] -> [2] {{weight=1.0 homog}}
          %{other} = Linear(%{entry}) : [2] -> [2] {{weight=1.0 homog}}
          %output = Output(%{other}) : [2]""")
    assert log[-1].edges_marked == ((other, entry),)


def test_mark_recurrence_is_deterministic_and_idempotent():
    """Loading the same graph twice gives the same back edges; running the pass again re-marks nothing."""
    nodes = {"input": inp(2), "x": lif(), "y": nir.Linear(np.ones((2, 2))), "z": nir.Linear(np.ones((2, 2))),
             "output": out(2)}
    edges = [("input", "x"), ("x", "y"), ("y", "z"), ("z", "x"), ("y", "x"), ("z", "output")]
    first, text1, _ = run(net(nodes, edges), "infer-shapes,mark-recurrence")
    _, text2, _ = run(net(nodes, edges), "infer-shapes,mark-recurrence")
    again, text3, log = run(first, "mark-recurrence")
    assert text1 == text2 == text3
    assert sorted(again.back_edges()) == [("y", "x"), ("z", "x")]
    assert log[-1].edges_marked == ()


def test_mark_recurrence_self_loop():
    """A node feeding itself reads its own previous output: the self edge is a back edge."""
    g = net({"input": inp(2), "lif": lif(), "output": out(2)}, [("input", "lif"), ("lif", "lif"), ("lif", "output")])
    _, text, _ = run(g, "infer-shapes,mark-recurrence")
    assert text == ir(f"""
        graph net  inputs: %input  outputs: %output
          %input = Input() : [2]
          %lif = LIF(%input, %lif@prev) : [2] -> [2] {{{LIF}}}
          %output = Output(%lif) : [2]""")


# --------------------------------------------------------------------------- checks
def chain(fc=None, neuron=None) -> nircomp.Graph:
    """input[3] -> fc -> lif -> output[2]."""
    return net({"input": inp(3), "fc": fc or nir.Linear(np.ones((2, 3))), "lif": neuron or lif(), "output": out(2)},
               [("input", "fc"), ("fc", "lif"), ("lif", "output")])


def cycle() -> nircomp.Graph:
    """input -> a <-> b -> output."""
    return net({"input": inp(2), "a": nir.Linear(np.ones((2, 2))), "b": nir.Linear(np.ones((2, 2))), "output": out(2)},
               [("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")])


FAILING_CHECKS = [  # (pipeline, graph, node, message)
    ("check-homogeneous", lambda: chain(neuron=lif(tau=[0.01, 0.02])), "lif", "LIF parameter 'tau' is not homogeneous"),
    ("check-zero-bias", lambda: chain(fc=nir.Affine(np.ones((2, 3)), np.array([0.0, 0.25]))), "fc",
     "max |b| = 0.25"),
    ("check-feedforward", cycle, "a", "the graph has a cycle: a -> b -> a"),
    ("check-ops{allowed=Input,Output,Linear}", chain, "lif", "node kind(s) LIF not supported"),
]


@pytest.mark.parametrize("check,make,node,message", FAILING_CHECKS, ids=[c[0].split("{")[0] for c in FAILING_CHECKS])
def test_check_fails_naming_node_pass_and_fix(check, make, node, message):
    """A failing check raises a CheckError naming the node, the pass and the fix (the step solver)."""
    with pytest.raises(CheckError) as info:
        nircomp.run_passes(make(), "infer-shapes," + check)
    err = info.value
    assert err.pass_name == check.split("{")[0] and node in err.nodes
    assert message in str(err) and f"'{node}'" in str(err) and "solver='step'" in str(err)
    assert err.previous_passes == ("infer-shapes",)


@pytest.mark.parametrize("check", ["check-homogeneous", "check-zero-bias", "check-feedforward",
                                   "check-ops{allowed=Input,Output,Affine,LIF}"])
def test_check_passes_and_leaves_graph_untouched(check):
    """On a graph meeting the requirement a check returns the graph unchanged."""
    g = chain(fc=nir.Affine(np.ones((2, 3)), np.zeros(2)))
    _, text, log = run(g, "infer-shapes," + check)
    assert not log[-1].changed
    assert text == run(g, "infer-shapes")[1]


# --------------------------------------------------------------------------- select-solver
def test_select_solver_auto_picks_analytical_when_eligible():
    """Linear + homogeneous LIF with no bias and no cycle meets every analytical check: auto -> analytical."""
    graph, text, log = run(chain(), "infer-shapes,select-solver{solver=auto}")
    assert graph.attrs["solver"] == "analytical"
    assert text.splitlines()[0] == ("graph net  inputs: %input  outputs: %output  {solver=analytical, "
                                    "solver_reason=the graph meets every check of the analytical solver}")
    assert log[-1].notes[0].startswith("solver=analytical")


@pytest.mark.parametrize("make,check,node", [
    (lambda: chain(fc=nir.Affine(np.ones((2, 3)), np.full(2, 0.5))), "check-zero-bias", "fc"),
    (lambda: chain(neuron=lif(tau=[0.01, 0.02])), "check-homogeneous", "lif"),
    (lambda: chain(neuron=nir.IF(np.ones(2), np.ones(2))), "check-ops", "lif"),
])
def test_select_solver_auto_falls_back_to_step_with_reason(make, check, node):
    """auto picks step when an analytical check fails, and the reason names that check and node."""
    graph, _, log = run(make(), "infer-shapes,select-solver")
    assert graph.attrs["solver"] == "step"
    reason = graph.attrs["solver_reason"]
    assert reason.startswith("analytical not possible") and check in reason and node in reason
    assert reason in log[-1].notes[0]


@pytest.mark.parametrize("solver,make,check,node", [
    ("analytical", lambda: chain(fc=nir.Affine(np.ones((2, 3)), np.full(2, 0.5))), "check-zero-bias", "fc"),
    ("hardware", cycle, "check-feedforward", "a"),
])
def test_select_solver_explicit_on_ineligible_graph_is_an_error(solver, make, check, node):
    """An explicit solver whose checks fail is a CompileError naming the node, the check and solver='step'."""
    with pytest.raises(nircomp.CompileError) as info:
        nircomp.run_passes(make(), f"infer-shapes,select-solver{{solver={solver}}}")
    text = str(info.value)
    assert f"'{node}'" in text and check in text and "solver='step'" in text and f"solver={solver!r}" in text


def test_select_solver_step_is_always_possible():
    """solver=step has no requirements: a cyclic graph with bias gets it, with reason `requested`."""
    graph, _, _ = run(cycle(), "infer-shapes,select-solver{solver=step}")
    assert (graph.attrs["solver"], graph.attrs["solver_reason"]) == ("step", "requested")


# --------------------------------------------------------------------------- verify
def _bad(kind: str) -> nircomp.Graph:
    fc, n = nir.Linear(np.ones((2, 2))), lif()
    return {
        "no-input": lambda: net({"fc": fc, "output": out(2)}, [("fc", "output")]),
        "no-output": lambda: net({"input": inp(2), "fc": fc}, [("input", "fc")]),
        "dangling": lambda: net({"input": inp(2), "lif": n, "output": out(2)}, [("lif", "output")]),
        "tau": lambda: net({"input": inp(2), "lif": lif(tau=[0.01, 0.0]), "output": out(2)},
                           [("input", "lif"), ("lif", "output")]),
        "nan": lambda: net({"input": inp(2), "fc": nir.Linear(np.array([[1.0, np.nan], [0.0, 1.0]])),
                            "output": out(2)}, [("input", "fc"), ("fc", "output")]),
        "into-input": lambda: net({"input": inp(2), "fc": fc, "output": out(2)},
                                  [("input", "fc"), ("fc", "input"), ("fc", "output")]),
        "from-output": lambda: net({"input": inp(2), "fc": fc, "output": out(2)},
                                   [("input", "fc"), ("fc", "output"), ("output", "fc")]),
    }[kind]()


@pytest.mark.parametrize("kind,node,message", [
    ("no-input", None, "the graph has no Input node"),
    ("no-output", None, "the graph has no Output node"),
    ("dangling", "lif", "LIF receives no input"),
    ("tau", "lif", "LIF time constant 'tau' must be > 0"),
    ("nan", "fc", "Linear parameter 'weight' contains NaN"),
    ("into-input", "input", "Input has incoming edges (from fc)"),
    ("from-output", "output", "Output has outgoing edges (to fc)"),
])
def test_verify_rejects_broken_ir(kind, node, message):
    """verify raises a VerifyError naming the broken invariant and the node."""
    with pytest.raises(VerifyError) as info:
        nircomp.run_passes(_bad(kind), "verify")
    assert info.value.pass_name == "verify" and message in info.value.message
    assert info.value.nodes == ((node,) if node else ())


def test_verify_rejects_shape_mismatch_on_edge():
    """An edge whose source's output shape differs from its target's input shape is invalid."""
    g = nircomp.Graph(name="net")
    g.add_op("input", nircomp.Op("Input", {"shape": [3]}, (3,), (3,)))
    g.add_op("fc", nircomp.Op("Linear", {"weight": np.ones((2, 2))}, (2,), (2,)))
    g.add_op("output", nircomp.Op("Output", {"shape": [2]}, (2,), (2,)))
    g.add_edge("input", "fc")
    g.add_edge("fc", "output")
    with pytest.raises(VerifyError, match=r"shape mismatch on edge input -> fc: \[3\] vs \[2\]") as info:
        nircomp.run_passes(g, "verify")
    assert info.value.nodes == ("input", "fc")
