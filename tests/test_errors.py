"""Bad inputs: each gives one clear line naming the file, the node and the pass (DESIGN §8, STYLE §8.6).

Every bad file is one defect away from a valid graph (Input 3 -> Affine 2x3 -> LIF 2 -> Output 2) and is
written by hand with h5py in NIR's layout (a `version` dataset; a `node` group with `type`, `nodes/<name>/`
and an N x 2 string `edges` dataset), since nir's own writer refuses most of them. For each one:
the API raises a `CompileError` whose text starts with the file and names the node and the stage
(`[load]` for what cannot be read into the IR, `[verify]` for what breaks an IR invariant), and the CLI
(`nircomp inspect FILE`) exits 1 printing exactly that text as its one `error:` line, with no traceback
unless `--debug` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli

import nircomp
from nircomp.errors import CompileError, PipelineError

f32 = np.float32


# --------------------------------------------------------------------------- hand-written files
def write_nir(path: Path, nodes: dict, edges: list) -> None:
    """A NIR HDF5 file holding one flat graph, written with h5py directly."""
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0.8", dtype=h5py.string_dtype())
        top = f.create_group("node")
        top.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
        group = top.create_group("nodes")
        for name, params in nodes.items():
            node = group.create_group(name)
            for key, value in params.items():
                if isinstance(value, str):
                    node.create_dataset(key, data=value, dtype=h5py.string_dtype())
                else:
                    node.create_dataset(key, data=np.asarray(value))
        top.create_dataset("edges", data=np.array(edges, dtype=h5py.string_dtype()).reshape(-1, 2))


def valid_graph() -> tuple[dict, list]:
    nodes = {"input": {"type": "Input", "shape": np.array([3])},
             "fc": {"type": "Affine", "weight": np.ones((2, 3), f32), "bias": np.zeros(2, f32)},
             "lif": {"type": "LIF", "tau": np.full(2, 0.01, f32), "r": np.ones(2, f32),
                     "v_leak": np.zeros(2, f32), "v_threshold": np.ones(2, f32)},
             "output": {"type": "Output", "shape": np.array([2])}}
    return nodes, [("input", "fc"), ("fc", "lif"), ("lif", "output")]


def graph_file(edit: Callable[[dict, list], None]) -> Callable[[Path], None]:
    """A writer for the valid graph after `edit(nodes, edges)` changed it in place."""
    def write(path: Path) -> None:
        nodes, edges = valid_graph()
        edit(nodes, edges)
        write_nir(path, nodes, edges)

    return write


def _truncated(path: Path) -> None:
    write_nir(path, *valid_graph())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero_length_heap_object(path: Path) -> None:
    """Node types and edges are variable-length strings in HDF5's global heap (a 'GCOL' collection of
    16-byte-header objects). A zeroed second object header (index 0, length 0) makes libhdf5 loop forever
    when it walks the collection (checked by hand: h5py hangs reading `node/edges` of such a file)."""
    write_nir(path, *valid_graph())
    data = bytearray(path.read_bytes())
    first = data.find(b"GCOL") + 16
    second = first + 16 + -(-int.from_bytes(data[first + 8:first + 16], "little") // 8) * 8
    data[second:second + 16] = bytes(16)
    path.write_bytes(data)


def _not_nir(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("weights", data=np.ones(3))


def _set(node: str, key: str, value) -> Callable[[dict, list], None]:
    return lambda nodes, edges: nodes[node].__setitem__(key, value)


def _del(node: str, key: str) -> Callable[[dict, list], None]:
    return lambda nodes, edges: nodes[node].__delitem__(key)


def _drop_node(node: str) -> Callable[[dict, list], None]:
    def edit(nodes, edges):
        del nodes[node]
        edges[:] = [e for e in edges if node not in e]

    return edit


@dataclass(frozen=True)
class Bad:
    """A bad input: how to write it, the stage that must reject it, the node it must name (None when the
    defect is not in one node) and phrases the message must contain."""

    write: Callable[[Path], None] | None  # None: the file does not exist
    stage: str
    node: str | None
    phrases: tuple[str, ...]


BAD = {
    "file-not-found": Bad(None, "load", None, ("file not found",)),
    "not-hdf5": Bad(lambda p: p.write_text("input,fc\nfc,lif\n"), "load", None, ("not an HDF5 file",)),
    "truncated-hdf5": Bad(_truncated, "load", None, ("truncated",)),
    "damaged-string-heap": Bad(_zero_length_heap_object, "load", None, ("corrupt HDF5 file", "heap")),
    "hdf5-but-not-nir": Bad(_not_nir, "load", None, ("not a NIR file", "'node' group")),
    "unknown-node-type": Bad(graph_file(_set("lif", "type", "Lif")), "load", "lif",
                             ("unknown node type 'Lif'", "did you mean 'LIF'")),
    "type-not-text": Bad(graph_file(_set("fc", "type", np.array([1, 2]))), "load", "fc", ("'type'",)),
    "missing-parameter": Bad(graph_file(_del("lif", "tau")), "load", "lif",
                             ("LIF is missing required parameter 'tau'",)),
    "text-parameter": Bad(graph_file(_set("lif", "tau", "fast")), "load", "lif", ("'tau'", "text")),
    "nan-parameter": Bad(graph_file(_set("lif", "tau", np.array([0.01, np.nan], f32))), "verify", "lif",
                         ("'tau'", "NaN")),
    "inf-parameter": Bad(graph_file(_set("lif", "v_threshold", np.array([1.0, np.inf], f32))), "verify",
                         "lif", ("'v_threshold'", "inf")),
    "tau-zero": Bad(graph_file(_set("lif", "tau", np.array([0.01, 0.0], f32))), "verify", "lif",
                    ("'tau'", "must be > 0")),
    "tau-negative": Bad(graph_file(_set("lif", "tau", np.full(2, -0.01, f32))), "verify", "lif",
                        ("'tau'", "must be > 0", "-0.01")),
    # the Input declares 3 values, the weight takes 4 (W has shape out x in)
    "weight-vs-input-shape": Bad(graph_file(_set("fc", "weight", np.ones((2, 4), f32))), "load", "fc",
                                 ("[3]", "[4]")),
    # the LIF emits 2 values, the Output declares 5
    "output-vs-received-shape": Bad(graph_file(_set("output", "shape", np.array([5]))), "load", "output",
                                    ("[2]", "[5]")),
    "edge-to-unknown-node": Bad(graph_file(lambda n, e: e.__setitem__(-1, ("lif", "outptu"))), "load", "outptu",
                                ("edge lif -> outptu refers to unknown node 'outptu'", "did you mean 'output'")),
    "no-input": Bad(graph_file(_drop_node("input")), "verify", None, ("no Input node",)),
    "no-output": Bad(graph_file(_drop_node("output")), "verify", None, ("no Output node",)),
    "empty-graph": Bad(lambda p: write_nir(p, {}, []), "load", None, ("empty",)),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad")
    paths = {}
    for name, bad in BAD.items():
        path = folder / f"{name}.nir"
        if bad.write is not None:
            bad.write(path)
        paths[name] = str(path)
    return paths


@pytest.fixture(scope="module")
def cli_runs(bad_files):
    """`nircomp inspect FILE` on every bad file, run concurrently (each run is a fresh interpreter)."""
    with ThreadPoolExecutor(4) as pool:
        runs = {name: pool.submit(run_cli, "inspect", path) for name, path in bad_files.items()}
        return {name: run.result() for name, run in runs.items()}


def api_error(path: str, **kwargs) -> CompileError:
    with pytest.raises(CompileError) as info:
        nircomp.run_passes(path, **kwargs)
    return info.value


def assert_one_error_line(run, expected: str | None = None) -> str:
    """Exit 1, no traceback, exactly one `error:` line on stderr (other lines are warnings); returns it."""
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and all(line.startswith(("error: ", "warning: ")) for line in lines), run.stderr
    if expected is not None:
        assert errors[0] == f"error: {expected}"
    return errors[0]


# --------------------------------------------------------------------------- bad files
def test_the_valid_graph_compiles(tmp_path):
    """The graph the bad inputs are made from is valid, so each failure comes from its one defect."""
    write_nir(tmp_path / "ok.nir", *valid_graph())
    graph, _ = nircomp.run_passes(tmp_path / "ok.nir")
    assert graph.inputs() and graph.outputs()


@pytest.mark.parametrize("name", BAD)
def test_api_error_names_file_node_and_stage(name, bad_files):
    """run_passes raises a one-line CompileError: '<file>: node '<n>' [<stage>]: <what is wrong>'."""
    bad, path = BAD[name], bad_files[name]
    err = api_error(path)
    text = str(err)
    assert "\n" not in text
    where = f"{path}: node '{bad.node}' [{bad.stage}]: " if bad.node else f"{path} [{bad.stage}]: "
    assert text.startswith(where), text
    for phrase in bad.phrases:
        assert phrase in text, text
    assert err.nodes == ((bad.node,) if bad.node else ())


@pytest.mark.parametrize("name", BAD)
def test_load_rejects_exactly_the_load_stage_defects(name, bad_files):
    """A [load] defect fails `nircomp.load` with the same error; a [verify] defect loads and fails the
    verify pass (so the error really comes from the stage it names)."""
    bad, path = BAD[name], bad_files[name]
    if bad.stage == "load":
        with pytest.raises(CompileError) as info:
            nircomp.load(path)
        assert str(info.value) == str(api_error(path))
    else:
        graph = nircomp.load(path)
        assert len(graph) > 0


@pytest.mark.parametrize("name", BAD)
def test_cli_prints_the_error_as_one_line_and_exits_1(name, bad_files, cli_runs):
    """`nircomp inspect FILE` exits 1 with `error: <the API's message>` and no traceback."""
    assert_one_error_line(cli_runs[name], str(api_error(bad_files[name])))


@pytest.mark.parametrize("name", ["missing-parameter", "tau-zero"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(name, where, bad_files, cli):
    """With --debug (before or after the command) the CompileError propagates with its traceback."""
    args = ["--debug", "inspect", bad_files[name]] if where == "before" else ["inspect", bad_files[name], "--debug"]
    run = cli(*args)
    assert run.returncode != 0
    assert "Traceback (most recent call last)" in run.stderr
    kind = "LoadError" if BAD[name].stage == "load" else "VerifyError"
    assert f"nircomp.errors.{kind}: {api_error(bad_files[name])}" in run.stderr


# --------------------------------------------------------------------------- bad pipelines and options
@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("good") / "net.nir"
    write_nir(path, *valid_graph())
    return str(path)


BAD_PIPELINES = {  # pipeline string -> (pass the error names or None, phrases)
    "verfy,infer-shapes": (None, ("unknown pass 'verfy'", "did you mean 'verify'", "nircomp passes")),
    "verify{": (None, ("unbalanced '{'",)),
    "verify},infer-shapes": (None, ("unbalanced '}'",)),
    "select-solver{solver}": ("select-solver", ("'solver'", "key=value")),
    "select-solver{solvr=step}": ("select-solver", ("unknown option 'solvr'", "did you mean 'solver'")),
    "select-solver{solver=fast}": ("select-solver", ("solver='fast'", "auto, step, analytical, hardware")),
    "verify{strict=true}": ("verify", ("unknown option 'strict'", "takes no options")),
}


@pytest.mark.parametrize("pipeline", BAD_PIPELINES)
def test_bad_pipeline_is_a_pipeline_error(pipeline, good_file, cli):
    """A malformed pipeline, unknown pass, unknown option or bad option value is a PipelineError naming
    the pass (when there is one); the CLI prints it as its one error line and exits 1."""
    pass_name, phrases = BAD_PIPELINES[pipeline]
    with pytest.raises(PipelineError) as info:
        nircomp.run_passes(good_file, pipeline)
    text = str(info.value)
    assert info.value.pass_name == pass_name
    if pass_name:
        assert text.startswith(f"[{pass_name}]: "), text
    for phrase in phrases:
        assert phrase in text, text
    assert_one_error_line(cli("inspect", good_file, "--pipeline", pipeline), text)


def test_print_after_an_unknown_pass_is_an_error(good_file, cli):
    """--print-after NAME of no pass fails (not a silent no-op) with a did-you-mean."""
    line = assert_one_error_line(cli("inspect", good_file, "--print-after", "canonicalise"))
    assert "unknown pass 'canonicalise'" in line and "did you mean 'canonicalize'" in line


def test_unknown_solver_lists_the_known_ones(good_file, cli):
    """--solver of no named pipeline names the known solvers."""
    line = assert_one_error_line(cli("inspect", good_file, "--solver", "fast"))
    assert "no named pipeline for solver 'fast'" in line and "analytical" in line


def test_unknown_command_line_flag_is_a_usage_error(good_file, cli):
    """An unknown flag is argparse's usage error: exit 2, the flag named, no traceback."""
    run = cli("inspect", good_file, "--bogus")
    assert run.returncode == 2
    assert "unrecognized arguments: --bogus" in run.stderr and "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def bias_file(tmp_path_factory) -> str:
    """The valid graph with a nonzero Affine bias (max |b| = 0.31): fine for the step solver only."""
    path = tmp_path_factory.mktemp("bias") / "net.nir"
    nodes, edges = valid_graph()
    nodes["fc"]["bias"] = np.array([0.0, -0.31], f32)
    write_nir(path, nodes, edges)
    return str(path)


def test_explicit_solver_whose_check_fails_names_node_check_and_fix(bias_file, cli):
    """solver='analytical' on a nonzero bias fails in check-zero-bias naming the node, the bias and the
    fix (solver='step'); the same graph compiles with the step solver."""
    err = api_error(bias_file, solver="analytical")
    text = str(err)
    assert text.startswith(f"{bias_file}: node 'fc' [check-zero-bias]: "), text
    assert "0.31" in text and "analytical solver" in text and "solver='step'" in text
    assert_one_error_line(cli("inspect", bias_file, "--solver", "analytical"), text)
    graph, _ = nircomp.run_passes(bias_file, solver="step")
    assert graph.attrs["solver"] == "step"


def test_select_solver_with_an_explicit_solver_names_the_failed_check(bias_file, cli):
    """select-solver{solver=analytical} refuses the graph naming the node and the check it ran."""
    line = assert_one_error_line(cli("inspect", bias_file, "--pipeline",
                                     "verify,infer-shapes,select-solver{solver=analytical}"))
    assert line.startswith(f"error: {bias_file}: node 'fc' [select-solver: check-zero-bias]: ")
    assert "solver='analytical'" in line and "solver='step'" in line
