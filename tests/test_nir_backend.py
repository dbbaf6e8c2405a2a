"""backend="nir": the graph after the pipeline written back to a `.nir` file that nir's own reader reads.

The rule: writing the optimised graph loses nothing the step solver computes with, so the file, read
back by `nir.read` and compiled again, gives bit for bit the outputs of compiling the original. Fused
Dense<neuron> nodes are NIR primitives again in the file (an Affine/Linear feeding the neuron), and an
Identity, which nir 1.0.8 cannot read, is written as a Scale by one (x * 1 == x exactly). `nir.read` is
called with type_check=False: its type check may never return on a cyclic graph (a nir bug).
"""

from __future__ import annotations

import nir
import numpy as np
import pytest
from conftest import EXAMPLES
from graphs import ALL_GRAPHS, DT, chain, lif, sample_input
from nir.ir.graph import Identity

import nircomp
from nircomp.backends import available_backends, parse_backend_spec
from nircomp.backends.to_nir import to_nir_graph
from nircomp.errors import CompileError

NIR_CLASSES = {"Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "Flatten", "SumPool2d",
               "AvgPool2d", "Delay", "Threshold", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF", "NIRGraph"}
NO_CANONICALIZE = "verify,infer-shapes,mark-recurrence,select-solver{solver=step}"
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.nir"))


def _source(case: str):
    return EXAMPLES / case if case.endswith(".nir") else ALL_GRAPHS[case]()


def _input(source, T=25):
    """A random spike input for a graph or a file (the file's Input shapes from nircomp's own load)."""
    if isinstance(source, nir.NIRGraph):
        return sample_input(source, T)
    graph = nircomp.load(source)
    rng = np.random.default_rng(0)
    xs = {n: (rng.random((T, *graph.op(n).output_shape)) < 0.4).astype(np.float32) for n in graph.inputs()}
    return next(iter(xs.values())) if len(xs) == 1 else xs


def _outputs(model, x) -> dict:
    y = model(x)
    return {k: np.asarray(v) for k, v in (y.items() if isinstance(y, dict) else [("y", y)])}


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, u in a.items():
        assert u.dtype == b[k].dtype and u.shape == b[k].shape, k
        assert u.tobytes() == b[k].tobytes(), f"output {k} differs"


def _types(node) -> set[str]:
    """Every node class in a nir graph, nested graphs included."""
    out = {type(node).__name__}
    for child in getattr(node, "nodes", {}).values():
        out |= _types(child)
    return out


@pytest.mark.parametrize("case", [*ALL_GRAPHS, *EXAMPLE_FILES])
def test_written_file_reads_with_nir_and_compiles_to_the_same_outputs(case, tmp_path):
    """After the step pipeline (canonicalize and fuse included) the written file holds only NIR 1.0 node
    classes, `nir.read` reads it, and compiling what it read gives the original's outputs bit for bit."""
    source = _source(case)
    x = _input(source)
    reference = nircomp.compile(source, dt=DT, solver="step")
    path = tmp_path / "out.nir"
    prog = nircomp.compile(source, dt=DT, solver="step", backend="nir", out=path)
    assert prog.model == path and dict(prog.artifacts) == {"nir": path} and path.is_file()
    back = nir.read(path, type_check=False)
    assert isinstance(back, nir.NIRGraph) and _types(back) <= NIR_CLASSES
    again = nircomp.compile(back, dt=DT, solver="step")
    _assert_bitwise(_outputs(reference.model, x), _outputs(again.model, x))


@pytest.mark.parametrize("case", ["nested", "conv1d_net", "cubalif_chain", "recurrent_subgraph.nir"])
def test_to_nir_graph_equals_what_nir_reads_from_the_file(case, tmp_path):
    """`to_nir_graph(prog.ir)` builds the graph nir.read builds from the written file: the same nested
    structure, node classes, edges and parameter values; it compiles to the original's outputs."""
    source = _source(case)
    prog = nircomp.compile(source, dt=DT, solver="step", backend="nir", out=tmp_path / "g.nir")
    built, read = to_nir_graph(prog.ir), nir.read(prog.model, type_check=False)

    def same(a, b, where):
        assert type(a) is type(b), where
        if isinstance(a, nir.NIRGraph):
            assert a.nodes.keys() == b.nodes.keys() and sorted(a.edges) == sorted(b.edges), where
            for k in a.nodes:
                same(a.nodes[k], b.nodes[k], f"{where}.{k}")
            return
        for field, va in vars(a).items():
            if field not in ("metadata", "input_type", "output_type"):
                assert np.array_equal(np.asarray(va), np.asarray(getattr(b, field))), f"{where}.{field}"

    same(built, read, "graph")
    x = _input(source)
    _assert_bitwise(_outputs(nircomp.compile(source, dt=DT, solver="step").model, x),
                    _outputs(nircomp.compile(built, dt=DT, solver="step").model, x))


def test_fused_nodes_are_written_as_the_original_primitives(tmp_path):
    """cubalif_chain compiles to two fused nodes; canonicalize changes nothing else there (the Affine has a
    non-zero bias), so the file has exactly the original nodes, edges and weights again."""
    original = ALL_GRAPHS["cubalif_chain"]()
    prog = nircomp.compile(original, dt=DT, solver="step", backend="nir", out=tmp_path / "c.nir")
    assert sorted(op.kind for _, op in prog.ir.ops() if op.kind.startswith("Dense")) == ["DenseCubaLI",
                                                                                          "DenseCubaLIF"]
    back = nir.read(prog.model, type_check=False)
    assert {k: type(v) for k, v in back.nodes.items()} == {k: type(v) for k, v in original.nodes.items()}
    assert sorted(back.edges) == sorted(original.edges)
    np.testing.assert_array_equal(back.nodes["fc1"].weight, original.nodes["fc1"].weight)
    np.testing.assert_array_equal(back.nodes["fc1"].bias, original.nodes["fc1"].bias)
    np.testing.assert_array_equal(back.nodes["lif1"].w_in, original.nodes["lif1"].w_in)


def test_canonicalized_graph_is_written_folded(tmp_path):
    """Input -> Linear W -> Scale s -> LIF, with an Identity before the Linear and a dead LIF branch:
    the file holds Linear(s[:, None] * W) -> LIF, no Scale, no Identity, no dead node."""
    rng = np.random.default_rng(3)
    w, s = rng.normal(0, 1, (3, 2)).astype(np.float32), np.array([0.5, 2.0, -1.0], np.float32)
    graph = chain(2, ("id", Identity(np.array([2]))), ("fc", nir.Linear(w)), ("s", nir.Scale(s)),
                  ("lif", lif(3)), out_shape=3, edges=[("lif", "dead")])
    graph.nodes["dead"] = lif(3)
    prog = nircomp.compile(graph, dt=DT, solver="step", backend="nir", out=tmp_path / "f.nir")
    back = nir.read(prog.model, type_check=False)
    (dense_name,) = [k for k, v in back.nodes.items() if isinstance(v, nir.Linear)]
    assert dense_name in ("fc", "s")  # the folded node answers to both names
    assert {k: type(v) for k, v in back.nodes.items()} == {"in": nir.Input, dense_name: nir.Linear,
                                                            "lif": nir.LIF, "out": nir.Output}
    np.testing.assert_array_equal(back.nodes[dense_name].weight, s[:, None] * w)
    assert sorted(back.edges) == sorted([("in", dense_name), (dense_name, "lif"), ("lif", "out")])
    x = sample_input(graph, 30)
    _assert_bitwise(_outputs(nircomp.compile(graph, dt=DT, solver="step").model, x),
                    _outputs(nircomp.compile(back, dt=DT, solver="step").model, x))


def test_kept_identity_is_written_as_scale_by_one(tmp_path):
    """Without canonicalize, branch_merge keeps its Identity `id`; the file has a Scale of ones there
    (shape [3]) and gives the same outputs bit for bit under the same pipeline."""
    source = ALL_GRAPHS["branch_merge"]()
    prog = nircomp.compile(source, dt=DT, solver="step", pipeline=NO_CANONICALIZE, backend="nir", out=tmp_path)
    assert prog.model == tmp_path / "graph.nir"  # a directory receives <graph name>.nir
    back = nir.read(prog.model, type_check=False)
    assert isinstance(back.nodes["id"], nir.Scale)
    np.testing.assert_array_equal(back.nodes["id"].scale, np.ones(3))
    x = sample_input(source, 30)
    _assert_bitwise(_outputs(nircomp.compile(source, dt=DT, solver="step", pipeline=NO_CANONICALIZE).model, x),
                    _outputs(nircomp.compile(back, dt=DT, solver="step", pipeline=NO_CANONICALIZE).model, x))


def test_backend_spec_options_and_registration(tmp_path):
    """"nir" is a registered backend; `out` may be given in the backend spec; without it, one CompileError."""
    assert "nir" in available_backends()
    assert parse_backend_spec("nir{out=a.nir}") == ("nir", {"out": "a.nir"})
    assert parse_backend_spec(" equinox ") == ("equinox", {})
    path = tmp_path / "spec.nir"
    prog = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend=f"nir{{out={path}}}")
    assert prog.model == path and path.is_file()
    with pytest.raises(CompileError, match=r"backend \"nir\" writes a file: give out=PATH"):
        nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend="nir")
    with pytest.raises(CompileError, match="not of the form key=value"):
        nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend="nir{out}")

