"""The pass manager: pipeline strings, the pass registry, typed options, instruments and error wrapping."""

from __future__ import annotations

import io
import re
from typing import Literal

import nir
import numpy as np
import pytest

import nircomp
from nircomp import pipeline as pm
from nircomp.errors import CompileError, PipelineError
from nircomp.instruments import DumpIR, PrintIR, Timing
from nircomp.pipeline import Pipeline, get_pass, load_passes, named_pipelines, register_pass, resolve_pipeline


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the pass registry: passes registered in a test do not leak into others."""
    monkeypatch.setattr(pm, "PASSES", dict(load_passes()))
    return pm.PASSES


def small() -> nir.NIRGraph:
    """input[3] -> fc (Linear) -> lif (LIF) -> output[2]."""
    n = 2
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "fc": nir.Linear(np.ones((n, 3))),
                               "lif": nir.LIF(np.full(n, 0.01), np.ones(n), np.zeros(n), np.ones(n)),
                               "output": nir.Output(np.array([n]))},
                        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


# --------------------------------------------------------------------------- pipeline strings
CANONICAL = [
    "verify",
    "verify,infer-shapes,canonicalize,mark-recurrence,fuse-affine-cubalif",
    "select-solver{solver=analytical}",
    "check-ops{allowed=Input,Output,Linear}",
    "infer-shapes,check-ops{allowed=LIF},select-solver{solver=step}",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_pipeline_string_round_trips(text):
    """A canonical pipeline string prints back unchanged after parsing."""
    assert str(Pipeline.parse(text)) == text


def test_pipeline_parse_gives_bound_passes_with_typed_values():
    """`a,b{k=v1,v2}`: comma between passes, comma inside a list value; values get the option's type."""
    p = Pipeline.parse("verify,check-ops{allowed=Input,Output,LIF},select-solver{solver=step}")
    assert [bp.name for bp in p] == ["verify", "check-ops", "select-solver"]
    assert p[1].options == (("allowed", ("Input", "Output", "LIF")),)
    assert p[2].options == (("solver", "step"),)


def test_pipeline_whitespace_is_not_significant_and_lists_compose():
    """Spaces around passes are dropped; Pipeline + [BoundPass] prints as the joined string."""
    p = Pipeline.parse(" verify , infer-shapes ")
    assert str(p) == "verify,infer-shapes"
    assert str(p + [get_pass("canonicalize").bind()]) == "verify,infer-shapes,canonicalize"
    assert str(Pipeline.parse("")) == ""


@pytest.mark.parametrize("text,pattern", [
    ("verify,canonicalise", r"unknown pass 'canonicalise' \(did you mean 'canonicalize'\?\)"),
    ("select-solver{solvr=step}", r"\[select-solver\]: unknown option 'solvr' \(did you mean 'solver'\?\)"),
    ("verify{strict=true}", r"unknown option 'strict'; it takes no options"),
    ("select-solver{solver=fast}", r"option solver='fast': expected one of auto, step, analytical, hardware"),
    ("check-ops{allowed}", r"option 'allowed' is not of the form key=value"),
    ("verify,select-solver{solver=step", r"unbalanced '\{'"),
    ("verify}", r"unbalanced '\}'"),
])
def test_malformed_pipeline_is_a_pipeline_error(text, pattern):
    """Unknown passes and options, bad values and unbalanced braces are PipelineErrors that say which."""
    with pytest.raises(PipelineError, match=pattern):
        Pipeline.parse(text)


def test_named_pipelines_all_parse_and_end_in_their_solver():
    """Each named pipeline (and each solver's requirements) parses; it ends with select-solver for its name."""
    table = named_pipelines()
    assert {"auto", "step", "analytical", "hardware"} <= set(table)
    for solver, entry in table.items():
        p = resolve_pipeline(None, solver)
        assert str(p) == entry["passes"]
        assert str(p[-1]) == f"select-solver{{solver={solver}}}"
        assert p[0].name == "verify"
        for req in entry.get("requires", []):
            assert Pipeline.parse(req)[0].name.startswith("check-")


def test_unknown_solver_pipeline_suggests_a_name():
    """resolve_pipeline(None, solver) with an unknown solver lists the known ones."""
    with pytest.raises(PipelineError, match=r"no named pipeline for solver 'analytic' \(did you mean 'analytical'"):
        resolve_pipeline(None, "analytic")


# --------------------------------------------------------------------------- registry
def test_duplicate_pass_name_is_an_error_naming_both_origins(registry):
    """Registering a second function under an existing name fails, naming both module:function origins."""

    def my_canonicalize(graph, ctx):
        return graph

    with pytest.raises(CompileError) as info:
        register_pass("canonicalize")(my_canonicalize)
    text = str(info.value)
    assert "pass 'canonicalize' registered twice" in text
    assert "nircomp.passes.canonicalize:canonicalize" in text
    assert f"{__name__}:test_duplicate_pass_name_is_an_error_naming_both_origins.<locals>.my_canonicalize" in text
    assert registry["canonicalize"].fn.__module__ == "nircomp.passes.canonicalize"


def test_registering_the_same_function_again_is_harmless(registry):
    """Re-registering the very same function (a module imported again) keeps one entry."""
    info = registry["verify"]
    register_pass("verify")(info.fn)
    assert registry["verify"].fn is info.fn


@pytest.fixture
def tag_pass(registry):
    @register_pass("tag-graph")
    def tag_graph(graph, ctx, *, count: int = 1, gain: float = 1.0, flag: bool = False,
                  mode: Literal["a", "b"] = "a", names: tuple[str, ...] = (), limit: int | None = None):
        """Store the option values in graph.attrs['tag'].

        Used to test typed options.
        """
        graph.attrs["tag"] = (count, gain, flag, mode, names, limit)
        return graph

    return registry["tag-graph"]


def test_custom_pass_runs_with_typed_options(tag_pass):
    """A pass registered with @register_pass runs in a pipeline; int/float/bool/Literal/tuple/optional options
    are parsed to their types."""
    text = "tag-graph{count=3 flag=true gain=0.5 limit=7 mode=b names=x,y}"
    graph, log = nircomp.run_passes(small(), "infer-shapes," + text)
    tag = graph.attrs["tag"]
    assert tag == (3, 0.5, True, "b", ("x", "y"), 7)
    assert [type(v) for v in tag] == [int, float, bool, str, tuple, int]
    assert log[-1].name == text
    assert str(Pipeline.parse(text)) == text


def test_custom_pass_defaults_summary_and_option_errors(tag_pass):
    """Without options the defaults apply; the summary is the docstring's first line; bad values are errors."""
    graph, _ = nircomp.run_passes(small(), "tag-graph")
    assert graph.attrs["tag"] == (1, 1.0, False, "a", (), None)
    assert nircomp.run_passes(small(), "tag-graph{limit=none}")[0].attrs["tag"][-1] is None
    assert tag_pass.summary == "Store the option values in graph.attrs['tag']."
    assert [o.describe() for o in tag_pass.options] == [
        "count=1 (int)", "gain=1.0 (float)", "flag=false (bool)", "mode=a (a|b)", "names= (tuple)",
        "limit=None (int | None)"]
    for bad, pattern in [("count=x", "expected int"), ("gain=fast", "expected float"),
                         ("flag=maybe", "expected true or false"), ("mode=c", "expected one of a, b"),
                         ("limit=many", "expected int")]:
        with pytest.raises(PipelineError, match=pattern):
            Pipeline.parse(f"tag-graph{{{bad}}}")


# --------------------------------------------------------------------------- instruments
def test_print_ir_after_named_pass_only():
    """PrintIR(names=...) prints one MLIR-style header and the IR after each named pass, nothing else."""
    stream = io.StringIO()
    nircomp.run_passes(small(), "infer-shapes,canonicalize,mark-recurrence",
                       instruments=[PrintIR(stream, names=("canonicalize",))])
    header, *body = stream.getvalue().rstrip("\n").split("\n")
    assert re.fullmatch(r"// -----// IR after canonicalize \(\d+\.\d ms\) //----- //", header)
    expected = nircomp.format_graph(nircomp.run_passes(small(), "infer-shapes,canonicalize")[0])
    assert "\n".join(body) == expected


def test_timing_collects_one_row_per_pass():
    """Timing records (pipeline form, seconds) per pass; its report lists them and a 100 % total."""
    timing = Timing()
    nircomp.run_passes(small(), "infer-shapes,select-solver{solver=step}", instruments=[timing])
    assert [name for name, _ in timing.rows] == ["infer-shapes", "select-solver{solver=step}"]
    assert all(s >= 0 for _, s in timing.rows)
    lines = timing.report().splitlines()
    assert lines[1].startswith("infer-shapes") and lines[2].startswith("select-solver{solver=step}")
    assert lines[-1].startswith("total") and lines[-1].endswith("100.0")
    assert sum(float(line.split()[-1]) for line in lines[1:-1]) == pytest.approx(100, abs=0.2)


def test_dump_ir_writes_numbered_files(tmp_path):
    """DumpIR writes DIR/NN_<pass>.txt per pass: the pass on the first line, then the IR after it."""
    nircomp.run_passes(small(), "infer-shapes,canonicalize,fuse-affine-cubalif", instruments=[DumpIR(str(tmp_path))])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00_infer-shapes.txt", "01_canonicalize.txt", "02_fuse-affine-cubalif.txt"]
    text = (tmp_path / files[2]).read_text()
    final = nircomp.run_passes(small(), "infer-shapes,canonicalize,fuse-affine-cubalif")[0]
    assert text == f"// fuse-affine-cubalif\n{nircomp.format_graph(final)}\n"
    assert "DenseLIF" in text and "DenseLIF" not in (tmp_path / files[1]).read_text()


@pytest.fixture
def breaking_pass(registry):
    @register_pass("drop-output-edges")
    def drop_output_edges(graph, ctx):
        """Remove every edge into an Output (leaves the IR invalid)."""
        for name in graph.outputs():
            for pred in graph.predecessors(name):
                graph.nx.remove_edge(pred, name)
        return graph


def test_verify_each_names_the_pass_that_broke_the_ir(breaking_pass):
    """With verify_each the IR is verified after every pass, so the breaking pass is named; without, no check."""
    with pytest.raises(CompileError) as info:
        nircomp.run_passes(small(), "infer-shapes,drop-output-edges,canonicalize")
    err = info.value
    assert err.pass_name == "verify after drop-output-edges"
    assert "IR invalid after pass drop-output-edges: Output receives no input" in str(err)
    assert err.nodes == ("output",)
    graph, _ = nircomp.run_passes(small(), "infer-shapes,drop-output-edges", verify_each=False)
    assert graph.predecessors("output") == []


@pytest.fixture
def failing_passes(registry):
    @register_pass("explode")
    def explode(graph, ctx):
        """Fail with a Python exception (a bug in the pass)."""
        return {}["missing"]

    @register_pass("refuse")
    def refuse(graph, ctx):
        """Fail with a CompileError that names no pass."""
        raise CompileError("cannot do this", nodes=["lif"])


def test_internal_error_in_a_pass_becomes_compile_error(failing_passes):
    """A non-CompileError exception in a pass is wrapped: the pass, the passes before it, the cause kept."""
    with pytest.raises(CompileError) as info:
        nircomp.run_passes(small(), "infer-shapes,canonicalize,explode,verify")
    err = info.value
    assert err.pass_name == "explode"
    assert err.previous_passes == ("infer-shapes", "canonicalize")
    assert err.message == "internal error: KeyError: 'missing'"
    assert isinstance(err.__cause__, KeyError)
    assert "[explode]: internal error: KeyError" in str(err) and "please report" in str(err)
    assert err.render(nircomp.load(small())).endswith("(in pass explode, after infer-shapes, canonicalize)")


def test_compile_error_from_a_pass_gets_pass_and_history_filled_in(failing_passes):
    """A CompileError raised without a pass name gets the running pass, the source and the previous passes."""
    with pytest.raises(CompileError) as info:
        nircomp.run_passes(small(), "infer-shapes,refuse")
    err = info.value
    assert (err.pass_name, err.previous_passes, err.source) == ("refuse", ("infer-shapes",), "<NIRGraph>")
    assert str(err) == "<NIRGraph>: node 'lif' [refuse]: cannot do this"


def test_empty_entry_in_a_pipeline_is_an_error():
    """A stray comma leaves an empty pass name: refused with a PipelineError, never silently skipped; the
    empty string is the empty pipeline."""
    from nircomp.errors import PipelineError
    from nircomp.pipeline import Pipeline

    with pytest.raises(PipelineError, match="empty pass name"):
        Pipeline.parse("verify,,infer-shapes")
    with pytest.raises(PipelineError, match="empty pass name"):
        Pipeline.parse("verify,")
    assert len(Pipeline.parse("")) == 0
