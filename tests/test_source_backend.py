"""backend="source": the generated module against the Equinox backend, its isolation and its hygiene.

The reference is the Equinox backend: both lower the same schedule with the same kernels, so on the CPU
with the same dtype their outputs must be equal bit for bit (DESIGN §6). The generated module runs in a
subprocess of the base interpreter in isolated mode, where `import nircomp` fails (checked there).
Golden files: tests/golden/source/<example>/model.py; regenerate with `pytest --update-golden` and
review the diff (a change of nircomp/kernels/step.py changes them too: the module embeds its text).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import itertools
import pickle
import re
import shutil
import subprocess
import sys
import tokenize

import jax
import nir
import numpy as np
import pytest
from conftest import EXAMPLES, ROOT
from graphs import ALL_GRAPHS, DT, lif, sample_input, x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp.backends import available_backends
from nircomp.backends.source import KERNEL_IMPORTS, Namespace, split_kernels
from nircomp.errors import CompileError
from nircomp.kernels import step as kernels
from nircomp.semantics import CONVENTIONS

GOLDEN = ROOT / "tests" / "golden" / "source"
EXAMPLE_NAMES = ["conv_net", "recurrent_subgraph", "cubalif_chain"]
HOSTILE = ["__import__('pathlib').Path('PWNED').touch()", 'q"uo\'te', "new\nline", "ñeurón", "λ", "class",
           "print", "run", "x", "state", "values", "dense", "SEM", "jnp", "1st", "a-b", "a_b", "\u2028sep", "\\",
           "p_x", "__init__", "", "x = 1; import os"]


def _graph(name):
    return ALL_GRAPHS[name]() if name in ALL_GRAPHS else nir.read(EXAMPLES / f"{name}.nir")


def _source(name):
    return ALL_GRAPHS[name]() if name in ALL_GRAPHS else EXAMPLES / f"{name}.nir"


def _same(a, b) -> bool:
    """Equal pytrees: same structure, dtypes and bits."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(np.asarray(u).dtype == np.asarray(v).dtype and np.array_equal(u, v) for u, v in zip(la, lb)))


# The script the isolated interpreter runs: it may import only the standard library, numpy and jax. It runs
# in this environment's interpreter (jax must come from somewhere) with nircomp made unimportable by a
# finder placed first on sys.meta_path, so an import of nircomp by the generated module fails.
_RUNNER = r"""
import importlib.abc, importlib.util, pickle, sys


class _NoNircomp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nircomp":
            raise ImportError(f"{name} is hidden from this process")


sys.meta_path.insert(0, _NoNircomp())
try:
    import nircomp
    sys.exit("nircomp is importable: the subprocess is not isolated from it")
except ImportError:
    pass
import jax, numpy as np
results = {}
for name, folder in pickle.load(open(sys.argv[1], "rb")).items():
    spec = importlib.util.spec_from_file_location("m_" + str(len(results)), folder + "/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    case = pickle.load(open(folder + "/case.pkl", "rb"))
    results[name] = jax.tree.map(np.asarray, module.run(case["x"], record=case["record"]))
pickle.dump(results, open(sys.argv[2], "wb"))
"""


def test_every_graph_bitwise_equal_to_equinox_in_a_process_without_nircomp(tmp_path):
    """On every test graph and example, the generated module, run by an interpreter that cannot import
    nircomp, gives the Equinox backend's outputs and recordings of every recordable node bit for bit."""
    names = [*ALL_GRAPHS, *EXAMPLE_NAMES]
    cases, folders = {}, {}
    for name in names:
        folder = tmp_path / name
        prog = nircomp.compile(_source(name), dt=DT, solver="step", backend="source", out=folder)
        assert prog.artifacts == {"module": folder / "model.py", "weights": folder / "weights.npz"}
        cases[name] = {"x": sample_input(_graph(name), T=25), "record": list(prog.model.__globals__["NAMES"])}
        (folder / "case.pkl").write_bytes(pickle.dumps(cases[name]))
        folders[name] = str(folder)
    (tmp_path / "cases.pkl").write_bytes(pickle.dumps(folders))
    # the isolated run and the reference computation below overlap
    proc = subprocess.Popen([sys.executable, "-I", "-c", _RUNNER, str(tmp_path / "cases.pkl"),
                             str(tmp_path / "out.pkl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        expected = {}
        for name in names:
            model = nircomp.compile(_source(name), dt=DT, solver="step").model
            assert cases[name]["record"] == [n for n, _ in model.schedule.names]
            expected[name] = jax.tree.map(np.asarray, model(cases[name]["x"], record=cases[name]["record"]))
    finally:
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    got = pickle.loads((tmp_path / "out.pkl").read_bytes())
    for name, want in expected.items():
        assert _same(got[name], want), name


# each preset on a graph that exercises what it changes; with the default "nir" on every graph above
PRESET_CASES = [("nir", "delay_loop", "scc"), ("nir-explicit", "neurons", "per-step"),
                ("snntorch", "stateless_cycle", "auto"), ("norse", "heterogeneous", "auto"),
                ("spyx", "recurrent", "per-step"), ("spyx", "self_loop", "auto"), ("sinabs", "neurons", "scc"),
                ("rockpool", "neurons", "auto")]


@pytest.mark.filterwarnings("ignore::nircomp.errors.CompileWarning")
@pytest.mark.parametrize(("convention", "name", "schedule"), PRESET_CASES)
def test_every_convention_bitwise_equal_to_equinox(convention, name, schedule):
    """Every semantics preset (each sets other options: fire_timing, init, resets, multi-spike, layer dt,
    ...) and every schedule mode give the Equinox backend's outputs bit for bit, in-process."""
    assert {c for c, _, _ in PRESET_CASES} == set(CONVENTIONS)
    options = {"dt": DT, "solver": "step", "convention": convention, "schedule": schedule}
    want = nircomp.compile(ALL_GRAPHS[name](), **options).model
    got = nircomp.compile(ALL_GRAPHS[name](), backend="source", **options).model
    x = sample_input(ALL_GRAPHS[name](), T=20) * 3
    names = [n for n, _ in want.schedule.names]
    assert _same(got(x, record=names), want(x, record=names))


def test_vmap_and_jit_of_run_match_equinox():
    """run batches with jax.vmap and compiles with jax.jit like the Equinox model."""
    g = ALL_GRAPHS["recurrent"]
    want = nircomp.compile(g(), dt=DT, solver="step").model
    run = nircomp.compile(g(), dt=DT, solver="step", backend="source").model
    xb = np.stack([sample_input(g(), T=15, seed=s) for s in range(3)])
    assert _same(jax.vmap(run)(xb), jax.vmap(want)(xb))
    y = run(xb[0])  # no record: y alone
    np.testing.assert_array_equal(y, want(xb[0]))
    np.testing.assert_allclose(jax.jit(run)(xb[0]), y, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
def test_parameter_dtypes_survive_the_weights_file(dtype):
    """Parameters keep their dtype through weights.npz (bfloat16, which .npy cannot describe, included),
    and the outputs stay bitwise those of the Equinox model."""
    g = ALL_GRAPHS["heterogeneous"]
    want = nircomp.compile(g(), dt=DT, solver="step", dtype=dtype).model
    run = nircomp.compile(g(), dt=DT, solver="step", dtype=dtype, backend="source").model
    assert {str(a.dtype) for a in jax.tree.leaves(run.__globals__["PARAMS"])} == {dtype}
    x = sample_input(g(), T=15)
    assert _same(run(x, record=["lif1"]), want(x, record=["lif1"]))


# ----------------------------------------------------------------------------- the module's text
def _module_text(name, tmp_path, **options) -> str:
    nircomp.compile(_source(name), dt=DT, solver="step", backend="source", out=tmp_path / name, **options)
    return (tmp_path / name / "model.py").read_text(encoding="utf-8")


def test_imports_only_jax_numpy_and_the_kernels_stdlib(tmp_path):
    """The generated module imports only jax, numpy, math and functools (DESIGN §7)."""
    for name in ["conv_net", "delay_loop"]:
        tree = ast.parse(_module_text(name, tmp_path))
        imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for a in node.names}
        assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))
        assert imported == {"jax", "numpy", "math", "functools"}


def test_kernels_are_embedded_once_and_verbatim(tmp_path):
    """Single source of op semantics: the module holds the text of kernels/step.py after its imports,
    unchanged, and defines each kernel function exactly once."""
    text = _module_text("neurons", tmp_path)
    _, body = split_kernels()
    assert body in text and inspect.getsource(kernels).rstrip().endswith(body)
    defined = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]
    for fn in ("dense", "conv", "pool", "lif_step", "cubalif_step", "delay_step", "fire", "reset"):
        assert defined.count(fn) == 1, fn


def test_kernel_modules_import_only_allowed_modules(tmp_path):
    """Kernel modules import only jax, numpy, math, functools and each other (nircomp.kernels.*, whose text
    is embedded too), at their top (so they can be embedded); a kernel module importing anything else is
    refused."""
    for path in (ROOT / "nircomp" / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= KERNEL_IMPORTS, path
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert module.split(".")[0] in KERNEL_IMPORTS or module.startswith("nircomp.kernels."), path
    bad = tmp_path / "bad_kernels.py"
    bad.write_text('"""doc"""\n\nimport os\n\n\ndef f(x):\n    return x\n')
    spec = importlib.util.spec_from_file_location("bad_kernels", bad)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(CompileError, match="kernels may import only"):
        split_kernels(module)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_generated_source_golden(name, tmp_path, update_golden):
    """The module generated for each example is exactly the reviewed golden file."""
    got = _module_text(name, tmp_path)
    path = GOLDEN / name / "model.py"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run pytest --update-golden and review it"
    assert got == path.read_text(encoding="utf-8")


def _ruff() -> list[str] | None:
    if shutil.which("ruff"):
        return [shutil.which("ruff")]
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    return None


def test_golden_sources_pass_ruff():
    """Every golden generated module passes `ruff check` with the project's configuration."""
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install ruff, or the project's test extra)")
    paths = sorted(GOLDEN.glob("*/model.py"))
    assert {p.parent.name for p in paths} == set(EXAMPLE_NAMES)
    res = subprocess.run([*ruff, "check", "--no-cache", *map(str, paths)], capture_output=True, text=True, cwd=ROOT,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- names from the file
def _hostile_graph() -> nir.NIRGraph:
    """A chain through nodes named by HOSTILE (Affine, LIF, Scale, LI in turn) with a back edge."""
    rng = np.random.default_rng(3)
    makers = [lambda: nir.Affine(rng.normal(0, 1, (3, 3)).astype(np.float32), np.full(3, 0.1, np.float32)),
              lambda: lif(3, thr=0.5), lambda: nir.Scale(np.array([1.5, -1.0, 2.0], np.float32)),
              lambda: nir.LI(tau=np.full(3, 4e-3, np.float32), r=np.ones(3, np.float32),
                             v_leak=np.zeros(3, np.float32))]
    nodes = {"in": nir.Input(np.array([3]))} | {n: makers[i % 4]() for i, n in enumerate(HOSTILE)}
    nodes["out"] = nir.Output(np.array([3]))
    chain = ["in", *HOSTILE, "out"]
    return nir.NIRGraph(nodes=nodes, edges=[*itertools.pairwise(chain), (HOSTILE[5], HOSTILE[2])], type_check=False)


def test_hostile_names_are_never_code(tmp_path, monkeypatch):
    """Node names that are Python code, quotes, newlines, unicode, keywords, builtins or the module's own
    names reach the module only as string literals and sanitised identifiers: nothing runs, it parses,
    and it computes what the Equinox backend does, recording every node by its name."""
    monkeypatch.chdir(tmp_path)
    want = nircomp.compile(_hostile_graph(), dt=DT, solver="step").model
    prog = nircomp.compile(_hostile_graph(), dt=DT, solver="step", backend="source", out=tmp_path / "m")
    text = prog.artifacts["module"].read_text(encoding="utf-8")
    assert not (tmp_path / "PWNED").exists()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME:
            assert tok.string.isascii() and tok.string != "__import__", tok
        assert "PWNED" not in tok.string or tok.type in (tokenize.STRING, tokenize.COMMENT), tok
    x = sample_input(_hostile_graph(), T=20) * 2
    names = [n for n, _ in want.schedule.names]
    assert set(HOSTILE) <= set(names)
    assert _same(prog.model(x, record=names), want(x, record=names))
    assert not (tmp_path / "PWNED").exists()


def test_identifier_sanitiser():
    """identifier(): a valid ASCII identifier that is no keyword, builtin, dunder or reserved name, one
    per (name, prefix), stable when asked again, and recognisably the name where it can be."""
    ns = Namespace(reserved={"run", "dense"})
    idents = [ns.identifier(n) for n in HOSTILE]
    assert len(set(idents)) == len(HOSTILE)
    for ident in idents:
        assert ident.isidentifier() and ident.isascii() and not ident.startswith("__")
        assert ident not in {"class", "print", "run", "dense", "x = 1"}
    assert [ns.identifier(n) for n in HOSTILE] == idents
    assert ns.identifier("ñeurón") == "neuron" and ns.identifier("1st") == "n1st"
    assert ns.identifier("a-b") == "a_b" and ns.identifier("a_b") == "a_b_1"
    assert ns.identifier("run") == "run_1" and ns.identifier("class") == "class_1"
    assert ns.identifier("lif", "p_") == "p_lif" != ns.identifier("p_lif")


# ----------------------------------------------------------------------------- errors
def test_exception_in_generated_code_names_the_node(tmp_path):
    """An exception raised by a line computing a node carries a note naming that NIR node (the dense half
    of a fused CubaLI answers to the NIR Linear 'fc2'); NODE_OF_LINE points at lines of the module."""
    prog = nircomp.compile(EXAMPLES / "recurrent_subgraph.nir", dt=DT, solver="step", backend="source",
                           out=tmp_path)
    module = prog.model.__globals__
    lines = prog.artifacts["module"].read_text(encoding="utf-8").splitlines()
    table = module["NODE_OF_LINE"]
    assert set(table.values()) == {"fc1", "fc2", "li2", "lif1.lif", "lif1.w_rec", "output"}
    for number, line in enumerate(lines, start=1):  # the lines that compute li2's dense half: fc2's
        if re.match(r"\s+(p_)?li2_dense = ", line):
            assert table[number] == "fc2", line
        elif re.match(r"\s+state_li2, li2 = ", line):
            assert table[number] == "li2", line
    params = {k: dict(v) for k, v in module["PARAMS"].items()}
    params["li2"]["weight"] = np.zeros((7, 5), np.float32)  # fc2's weight, the wrong shape
    with pytest.raises(ValueError) as info:
        prog.model(np.zeros((4, 12), np.float32), params=params)
    assert any("NIR node 'fc2'" in note for note in getattr(info.value, "__notes__", []))


def test_bad_inputs_and_records_are_clear_errors(tmp_path):
    """Wrong input shapes and unknown nodes in record= raise one clear error, as the Equinox model does."""
    run = nircomp.compile(ALL_GRAPHS["two_io"](), dt=DT, solver="step", backend="source", out=tmp_path).model
    x = sample_input(ALL_GRAPHS["two_io"](), T=5)
    with pytest.raises(ValueError, match="pass a dict"):
        run(x["xa"])
    with pytest.raises(ValueError, match="missing input"):
        run({"xa": x["xa"]})
    with pytest.raises(ValueError, match=r"expected \[T, "):
        run({**x, "xa": x["xa"][:, :1]})
    with pytest.raises(ValueError, match="unknown node 'nope'"):
        run(x, record=["nope"])


def test_registration_and_backend_options(tmp_path):
    """"source" is a registered backend; `source{module=net}` names the module file; out= defaults to a
    new temporary directory; an unusable module name is a CompileError."""
    assert "source" in available_backends()
    prog = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend="source{module=net}",
                           out=tmp_path)
    assert prog.artifacts["module"] == tmp_path / "net.py" and (tmp_path / "weights.npz").exists()
    default = nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend="source")
    assert default.artifacts["module"].name == "model.py" and default.artifacts["module"].exists()
    with pytest.raises(CompileError, match="module name"):
        nircomp.compile(ALL_GRAPHS["affine_lif"](), dt=DT, solver="step", backend="source{module=a-b}", out=tmp_path)
