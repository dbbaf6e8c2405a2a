"""lower-connectivity and its kernels: every kernel computes the dense product, whatever it was chosen for.

The reference is `kernels.dense` (one einsum). A connectivity kernel sums the same products in another
order, so results agree to float rounding: tolerance rtol = atol = 1e-5 in float32 (a few ulps of sums of
up to ~100 terms of magnitude ~1), 1e-12 in float64. Run-time fallbacks (W no longer structured, more
nonzeros per row than the budget) must also give the dense product, and so must gradients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from graphs import ALL_GRAPHS, DT, chain, cubalif, io, sample_input, x64  # noqa: F401 (x64: a fixture)

import nircomp
from nircomp.errors import CompileError
from nircomp.kernels import connectivity as C
from nircomp.kernels import step as K
from nircomp.pipeline import named_pipelines
from nircomp.printer import format_text
from nircomp.semantics import resolve_semantics

F32, F64 = 1e-5, 1e-12
STEP = named_pipelines()["step"]["passes"]


def _close(a, b, tol):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _weights(rng, dtype=np.float32):
    """kernel -> (W [n_out, n_in], budget) with the structure the kernel is for."""
    n = 40
    sparse = rng.normal(size=(30, n)) * (rng.random((30, n)) < 0.1)
    return {"identity": (np.eye(n), 0), "one-to-one": (np.diag(rng.normal(size=n)), 0),
            "all-to-all": (np.full((30, n), -0.7), 0),
            "csr": (sparse, int(np.count_nonzero(sparse, axis=1).max())),
            "event": (rng.normal(size=(30, n)), 12)}


def _inputs(rng, shape=(3, 50, 40), rate=0.1):
    """Mostly zero, nonzeros of any sign and size (the kernels are exact for any values)."""
    return (rng.random(shape) < rate) * rng.normal(0, 2, shape)


KERNELS = ["identity", "one-to-one", "all-to-all", "csr", "event"]


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_equals_dense_under_jit_vmap_and_scan(kernel):
    """Each kernel gives the dense product (with bias) jitted, under vmap and nested vmap (the batch one
    more leading axis), and per step inside lax.scan."""
    rng = np.random.default_rng(0)
    w, budget = _weights(rng)[kernel]
    p = {"weight": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(rng.normal(size=w.shape[0]), jnp.float32)}
    x = jnp.asarray(_inputs(rng), jnp.float32)
    want = K.dense(p, x)

    def f(x):
        return C.connected(p, x, kernel, budget)

    _close(jax.jit(f)(x), want, F32)
    _close(jax.jit(jax.vmap(f))(x), want, F32)
    _close(jax.jit(jax.vmap(jax.vmap(f)))(x), want, F32)
    scanned = jax.vmap(lambda xs: jax.lax.scan(lambda c, xt: (c, f(xt)), 0, xs)[1])(x)
    _close(scanned, want, F32)
    # time_major: under vmap the rows are taken [T, B] (how a scan's output lies), the result is the same
    _close(jax.jit(jax.vmap(lambda x: C.connected(p, x, kernel, budget, True)))(x), want, F32)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_equals_dense_in_float64(kernel):
    """In float64 the reordered sums agree with the dense product to 1e-12."""
    rng = np.random.default_rng(1)
    w, budget = _weights(rng)[kernel]
    p = {"weight": jnp.asarray(w, jnp.float64)}
    x = jnp.asarray(_inputs(rng), jnp.float64)
    _close(jax.jit(lambda x: C.connected(p, x, kernel, budget))(x), K.dense(p, x), F64)


@pytest.mark.parametrize("kernel", KERNELS)
def test_broken_structure_falls_back_to_dense(kernel):
    """A weight that lost the structure its kernel was chosen for (e.g. after training) gives the dense
    product: the kernel checks W at run time, nothing is dropped."""
    rng = np.random.default_rng(2)
    w, budget = _weights(rng)[kernel]
    w = w.copy()
    w[:, 0] = 0.25  # off the diagonal, unequal, and a nonzero in every row (above the csr budget below)
    p = {"weight": jnp.asarray(w, jnp.float32)}
    x = jnp.asarray(_inputs(rng), jnp.float32)
    budget = 1 if kernel in ("csr", "event") else budget  # also: more nonzeros per row than the budget
    _close(jax.jit(lambda x: C.connected(p, x, kernel, budget))(x), K.dense(p, x), F32)
    _close(jax.jit(jax.vmap(lambda x: C.connected(p, x, kernel, budget)))(x), K.dense(p, x), F32)


def test_event_budget_changes_the_path_not_the_result():
    """The event kernel runs the dense product when a sampled slice already exceeds its budget (budget 0),
    counts every row and runs the dense product when only an unsampled row does (budget = busiest - 1),
    and gathers rows otherwise (SLOTS nonzeros per loop iteration): every path gives the dense product."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(30, 70)), jnp.float32)
    x = _inputs(rng, (4, 25, 70), rate=0.3)
    x[0] *= rng.random(x[0].shape) < 0.5  # the sampled slice x[::SAMPLE] = x[:1]: quieter than the rest
    most, sampled = int(np.count_nonzero(x, axis=-1).max()), int(np.count_nonzero(x[:: C.SAMPLE], axis=-1).max())
    x = jnp.asarray(x, jnp.float32)
    assert sampled < most and most > C.SLOTS  # the second path exists; several loop iterations
    want = K.dense({"weight": w}, x)
    for budget in (0, most - 1, most, 70):
        _close(jax.jit(lambda x, b=budget: C.connected({"weight": w}, x, "event", b))(x), want, F32)
    steps = -(-most // C.SLOTS)
    gathered = jax.jit(lambda x: C._gather_rows(C._with_zero_row(w.T), x, *C._pack_rows(x), steps))(x)
    _close(gathered, want, F32)


def test_csr_tiles_and_remainder():
    """The CSR kernel tiles the rows of x (CSR_TILE each, then the rest); rows in whole tiles and the
    remainder give the dense product."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(20, 50)) * (rng.random((20, 50)) < 0.1)
    p = {"weight": jnp.asarray(w, jnp.float32)}
    x = jnp.asarray(rng.normal(size=(2 * C.CSR_TILE + 37, 50)), jnp.float32)
    budget = int(np.count_nonzero(w, axis=1).max())
    _close(jax.jit(lambda x: C.connected(p, x, "csr", budget))(x), K.dense(p, x), F32)


def test_nonzero_columns_match_numpy():
    """The bit-packed rank search finds, for each row, the columns of its nonzeros in order (numpy's
    nonzero), and n past the last one; rows of n = 1, 32, 33 and 100 columns, empty and full rows."""
    rng = np.random.default_rng(5)
    for n in (1, 32, 33, 100):
        a = (rng.random((9, n)) < 0.3).astype(np.float32)
        a[0], a[1] = 0, 1
        cols = np.asarray(jax.jit(lambda a, n=n: C._nonzero_columns(*C._pack_rows(a), jnp.arange(n + 2), n))(a))
        for row, got in zip(a, cols):
            nz = np.flatnonzero(row)
            assert list(got) == list(nz) + [n] * (n + 2 - len(nz)), (n, row)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_are_the_dense_products(kernel):
    """Gradients with respect to weights, bias and input are those of the dense product (custom_jvp),
    whatever path the forward pass took, also under vmap."""
    rng = np.random.default_rng(6)
    w, budget = _weights(rng)[kernel]
    p = {"weight": jnp.asarray(w, jnp.float32), "bias": jnp.ones(w.shape[0], jnp.float32)}
    x = jnp.asarray(_inputs(rng), jnp.float32)

    def loss(f):
        return lambda p, x: jnp.sum(jnp.sin(f(p, x)))

    want = jax.jit(jax.grad(loss(K.dense), (0, 1)))(p, x)
    got = jax.jit(jax.grad(loss(lambda p, x: C.connected(p, x, kernel, budget)), (0, 1)))(p, x)
    jax.tree.map(lambda a, b: _close(a, b, 1e-4), got, want)
    per_sample = jax.jit(jax.vmap(jax.grad(loss(lambda p, x: C.connected(p, x, kernel, budget))), (None, 0)))(p, x)
    _close(per_sample["weight"].sum(0), want[0]["weight"], 1e-4)


# ----------------------------------------------------------------------------- the pass
def _layers_graph(rng):
    """Input 64 -> (Linear, CubaLIF) x 5 with crafted weights -> LI -> Linear -> LI -> Linear 3 -> Output."""
    n = 64
    sparse = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.02)
    sparse[0, :2] = 1.0  # the densest row: 2 + its random nonzeros
    weights = {"eye": np.eye(n), "diag": np.diag(rng.uniform(1, 2, n)), "same": np.full((n, n), 0.05),
               "spiky": rng.normal(size=(n, n)), "sparse": sparse}
    nodes, edges, prev = {"in": io(n)[0]}, [], "in"
    for name, w in weights.items():
        nodes[f"fc_{name}"], nodes[f"lif_{name}"] = nir.Linear(w.astype(np.float32)), cubalif(n)
        edges += [(prev, f"fc_{name}"), (f"fc_{name}", f"lif_{name}")]
        prev = f"lif_{name}"
    def li():
        return nir.LI(tau=np.full(n, 4e-3, np.float32), r=np.ones(n, np.float32), v_leak=np.zeros(n, np.float32))

    nodes |= {"li": li(), "fc_dense": nir.Linear(rng.normal(size=(n, n)).astype(np.float32)), "li2": li(),
              "fc_small": nir.Linear(rng.normal(size=(3, n)).astype(np.float32)), "out": io(3)[1]}
    edges += [(prev, "li"), ("li", "fc_dense"), ("fc_dense", "li2"), ("li2", "fc_small"), ("fc_small", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_pass_records_kernel_and_reason():
    """Each weight gets the kernel of its structure, in order identity, one-to-one, all-to-all, event
    (input spikes), csr (sparse rows), dense; the choice, its budget and the reason are node attributes
    the text IR shows; a layer below min_weights stays dense."""
    g = _layers_graph(np.random.default_rng(7))
    graph, log = nircomp.run_passes(g, STEP + ",lower-connectivity{min_weights=100 csr_density=0.1}", solver="step")
    got = {name: graph.op(name).attrs["connectivity"] for name in graph if "connectivity" in graph.op(name).attrs}
    kernels = {name: c["kernel"] for name, c in got.items()}
    assert kernels == {"lif_eye": "identity", "lif_diag": "one-to-one", "lif_same": "all-to-all",
                       "lif_spiky": "event", "lif_sparse": "event", "li2": "dense", "fc_small": "dense"}
    n_in = g.nodes["fc_spiky"].weight.shape[1]
    assert got["lif_spiky"]["budget"] == math.ceil(0.15 * n_in)  # the default event_budget, 0.15 of the inputs
    assert "'lif_same' (DenseCubaLIF) spikes" in got["lif_spiky"]["reason"]
    assert "'li' is LI, which does not spike" in got["li2"]["reason"]
    assert "'li2' is DenseLI, which does not spike" in got["fc_small"]["reason"]  # 3 x 64 = 192 >= 100
    assert "connectivity={'kernel': 'identity'" in format_text(graph)
    assert log[-1].name.startswith("lower-connectivity")


def test_pass_csr_and_min_weights():
    """Without spiking inputs a weight whose densest row has at most csr_density * n_in nonzeros gets csr
    with that row count as budget; smaller layers than min_weights stay dense, saying so."""
    g = _layers_graph(np.random.default_rng(7))
    w = np.asarray(g.nodes["fc_sparse"].weight)
    densest = int(np.count_nonzero(w, axis=1).max())
    graph, _ = nircomp.run_passes(g, STEP + ",lower-connectivity{min_weights=200 csr_density=0.1}", solver="step",
                                  semantics=resolve_semantics("nir", forward="smooth"))
    sparse = graph.op("lif_sparse").attrs["connectivity"]
    assert (sparse["kernel"], sparse["budget"]) == ("csr", densest)
    assert "forward='smooth'" in graph.op("lif_spiky").attrs["connectivity"]["reason"]
    assert graph.op("fc_small").attrs["connectivity"]["reason"] == "192 weights < min_weights=200"


def test_pass_declared_spike_input_and_errors():
    """A graph Input feeds an event kernel only when named in spike_inputs; naming a node that is no
    Input is a CompileError of the pass; compile(connectivity=...) takes True or a dict."""
    g = chain(8 * 8 * 4, ("fc", nir.Linear(np.random.default_rng(8).normal(size=(16, 256)).astype(np.float32))),
              out_shape=16)
    plain, _ = nircomp.run_passes(g, STEP + ",lower-connectivity{min_weights=0}", solver="step")
    assert plain.op("fc").attrs["connectivity"]["kernel"] == "dense"
    assert "'in' is Input not named in spike_inputs" in plain.op("fc").attrs["connectivity"]["reason"]
    spikes = nircomp.compile(g, dt=DT, solver="step", connectivity={"spike_inputs": ["in"], "min_weights": 0})
    assert spikes.ir.op("fc").attrs["connectivity"]["kernel"] == "event"
    with pytest.raises(CompileError, match=r"lower-connectivity.*'nope'.*not an Input"):
        nircomp.compile(g, dt=DT, solver="step", connectivity={"spike_inputs": ["nope"]})
    with pytest.raises(CompileError, match="connectivity='yes'"):
        nircomp.compile(g, dt=DT, solver="step", connectivity="yes")


def test_not_in_the_default_pipelines():
    """The pass is opt-in (counting nonzeros costs a few % when only unsampled rows exceed the budget, and
    the sparse kernels take longer to compile): no named pipeline runs it, a default compile records nothing."""
    assert all("lower-connectivity" not in table["passes"] for table in named_pipelines().values())
    prog = nircomp.compile(ALL_GRAPHS["cubalif_chain"](), dt=DT, solver="step")
    assert not any("connectivity" in op.attrs for _, op in prog.ir.ops())


# ----------------------------------------------------------------------------- whole graphs
LOWER_ALL = "event_budget=1.0 csr_density=1.0"  # event on spiking and declared inputs, csr on every other layer


def _with_pass(graph, **kw):
    inputs = ",".join(nircomp.load(graph).inputs())
    return nircomp.compile(graph, dt=DT, solver="step", pipeline=STEP + ",lower-connectivity{min_weights=0 "
                           f"spike_inputs={inputs} {LOWER_ALL}}}", **kw)


@pytest.mark.parametrize("name", ALL_GRAPHS)
def test_every_graph_matches_dense(name):
    """On every test graph, with every dense layer lowered (event kernels on spiking and declared inputs,
    csr elsewhere), outputs and every recordable node match the plain compile (float32)."""
    graph = ALL_GRAPHS[name]()
    x = sample_input(graph, T=30)
    ref = nircomp.compile(graph, dt=DT, solver="step").model
    names = [n for n, _ in ref.schedule.names]
    jax.tree.map(lambda a, b: _close(a, b, F32), _with_pass(graph).model(x, record=names), ref(x, record=names))


def test_batched_graph_with_hoisted_sparse_layers_matches_dense():
    """Under jax.vmap with every layer on whole sequences (schedule="scc"), the event kernels of layers fed
    by a scan take their rows time-major: the batch's outputs and recorded nodes match the plain compile."""
    graph = ALL_GRAPHS["cubalif_chain"]()
    x = np.stack([sample_input(graph, T=30, seed=s) for s in range(4)])
    ref = nircomp.compile(graph, dt=DT, solver="step", schedule="scc").model
    names = [n for n, _ in ref.schedule.names]
    got = jax.vmap(lambda x: _with_pass(graph, schedule="scc").model(x, record=names))(x)
    jax.tree.map(lambda a, b: _close(a, b, F32), got, jax.vmap(lambda x: ref(x, record=names))(x))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", ["cubalif_chain", "recurrent", "conv1d_net", "stateless_cycle"])
def test_graph_matches_dense_in_float64(name):
    """In float64 whole-graph results (event kernels in scans and on sequences, csr in a cycle) agree with
    the plain compile to 1e-12."""
    graph = ALL_GRAPHS[name]()
    x = jax.tree.map(lambda a: a.astype(np.float64), sample_input(graph, T=20))
    ref = nircomp.compile(graph, dt=DT, solver="step", dtype=jnp.float64).model(x)
    jax.tree.map(lambda a, b: _close(a, b, F64), _with_pass(graph, dtype=jnp.float64).model(x), ref)


def test_source_backend_bitwise_equal_with_the_pass(tmp_path):
    """The generated module calls the same connectivity kernels: its outputs equal the Equinox backend's
    bit for bit, on graphs where every kernel occurs (identity, one-to-one, all-to-all, event, csr). It
    embeds nircomp/kernels/connectivity.py only then (the golden modules, compiled without the pass, do not)."""
    cases = {"layers": _layers_graph(np.random.default_rng(7)), "conv1d_net": ALL_GRAPHS["conv1d_net"]()}
    for name, graph in cases.items():
        x = sample_input(graph, T=20)
        eqx_y = _with_pass(graph).model(x)
        src_y = _with_pass(graph, backend="source", out=tmp_path / name).model(x)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), src_y, eqx_y)
        assert "def connected(" in (tmp_path / name / "model.py").read_text()
    plain = nircomp.compile(cases["layers"], dt=DT, solver="step", backend="source", out=tmp_path / "plain")
    assert "def connected(" not in plain.artifacts["module"].read_text()


def test_aot_symbolic_time_and_batch(tmp_path):
    """jax.export with a symbolic time axis and batch (the kernels' shapes are read at trace time) gives
    the plain compile's outputs."""
    graph = ALL_GRAPHS["cubalif_chain"]()
    x = sample_input(graph, T=20)
    want = np.asarray(nircomp.compile(graph, dt=DT, solver="step").model(x))
    prog = nircomp.compile(graph, dt=DT, solver="step", backend="aot{input_shape=T,5 batch=B}", out=tmp_path,
                           connectivity={"spike_inputs": ["in"], "min_weights": 0, "csr_density": 1.0})
    _close(np.asarray(prog.model(np.stack([x, x])))[1], want, F32)


def test_inspect_shows_the_choice_and_nir_drops_it(cli, examples_dir, tmp_path):
    """`nircomp inspect` with the pass prints each choice and its reason; the nir backend writes a plain
    NIR file (the attribute is the compiler's, not NIR's) that loads without it."""
    path = examples_dir / "cubalif_chain.nir"
    out = cli("inspect", path, "--pipeline", STEP + ",lower-connectivity{min_weights=0 spike_inputs=input}")
    assert out.returncode == 0, out.stderr
    assert "connectivity={'kernel': 'event', 'budget': 3, 'reason': \"input 'input' (Input) spikes" in out.stdout
    nircomp.compile(path, dt=DT, solver="step", backend="nir", out=tmp_path / "x.nir",
                    connectivity={"spike_inputs": ["input"], "min_weights": 0})
    assert not any(op.attrs for _, op in nircomp.load(tmp_path / "x.nir").ops())
