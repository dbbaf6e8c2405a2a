"""The step solver's schedule, API and discretisation options, each against an independent reference.

References: the plain per-step schedule (everything in one scan) for the SCC schedule; numpy loops of
DESIGN §4's update rules for whole networks; the definitions of the recorded ops; hand calculations for
recurrence and for every option (reset, threshold, spike amplitude, multi-spike, CubaLIF update order).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from graphs import ALL_GRAPHS, DT, chain, cubali, cubalif, if_, li, lif, sample_input, x64  # noqa: F401 (the fixture, used by name)

import nircomp
from nircomp.errors import CompileError

SPIKING = (nir.IF, nir.LIF, nir.CubaLIF, nir.Threshold)


def compile_(graph, **options):
    return nircomp.compile(graph, dt=options.pop("dt", DT), solver="step", **options)


def run(graph, x, **options):
    return np.asarray(compile_(graph, **options).model(jnp.asarray(x)))


def _f(x):
    return np.asarray(x, dtype=np.float32)


def spiking_names(graph: nir.NIRGraph, prefix: str = "") -> list[str]:
    """Dotted names of the spiking nodes of a (nested) NIR graph."""
    names = []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            names += spiking_names(node, f"{prefix}{name}.")
        elif isinstance(node, SPIKING):
            names.append(prefix + name)
    return names


# ----------------------------------------------------------------------------- numpy references (DESIGN §4)
def ref_lif(x, p, dt=DT):
    """LIF, Euler: v += dt/tau (v_leak - v + r x); z = v > th; v = v_reset where z."""
    v, out = np.zeros(x.shape[1:]), []
    for xt in x:
        v = v + dt / p.tau * (p.v_leak - v + p.r * xt)
        z = v > p.v_threshold
        v = np.where(z, p.v_reset, v)
        out.append(z)
    return np.array(out, dtype=np.float64)


def ref_cubalif(x, p, dt=DT):
    """CubaLIF, Euler, current first: I += dt/ts (-I + w_in x); v += dt/tm (v_leak - v + r I); fire, reset."""
    i, v, out = np.zeros(x.shape[1:]), np.zeros(x.shape[1:]), []
    for xt in x:
        i = i + dt / p.tau_syn * (-i + p.w_in * xt)
        v = v + dt / p.tau_mem * (p.v_leak - v + p.r * i)
        z = v > p.v_threshold
        v = np.where(z, p.v_reset, v)
        out.append(z)
    return np.array(out, dtype=np.float64)


def ref_li(x, p, dt=DT):
    v, out = np.zeros(x.shape[1:]), []
    for xt in x:
        v = v + dt / p.tau * (p.v_leak - v + p.r * xt)
        out.append(v)
    return np.array(out)


# ----------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("name", ALL_GRAPHS)
def test_scc_schedule_matches_per_step(name):
    """The SCC schedule (stateless ops on whole sequences, scans per component) reproduces the plain
    per-step schedule on every test graph: identical spikes at every spiking node, every recorded node
    and output allclose."""
    g = ALL_GRAPHS[name]()
    x = sample_input(g, 40)
    scc, per_step = compile_(g, schedule="scc").model, compile_(g, schedule="per-step").model
    assert len(per_step.schedule.stages) == 1
    names = sorted(dict(scc.schedule.names))
    runs = [eqx.filter_jit(lambda m, x: m(x, record=names))(m, x) for m in (scc, per_step)]
    (y1, rec1), (y2, rec2) = runs
    for key in names:
        if key in spiking_names(g):
            np.testing.assert_array_equal(rec1[key], rec2[key], err_msg=key)
        np.testing.assert_allclose(rec1[key], rec2[key], rtol=1e-6, atol=1e-6, err_msg=key)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), y1, y2)
    assert sum(float(np.abs(rec1[k]).sum()) for k in spiking_names(g)) > 0 or not spiking_names(g)


def test_cpu_schedule_hoists_only_large_dense_layers():
    """schedule="cpu" applies a dense layer of >= 32768 weights to the whole sequence (its own "seq"
    stage), keeps a small one in the scan, and gives the per-step schedule's results."""
    g = chain(200, ("big", nir.Linear(np.random.default_rng(0).normal(0, 0.3, (200, 200)).astype(np.float32))),
              ("lif1", lif(200)), ("small", nir.Linear(np.full((3, 200), 0.05, np.float32))), ("lif2", lif(3)),
              out_shape=3)
    x = (np.random.default_rng(1).random((30, 200)) < 0.3).astype(np.float32)
    cpu, per_step = compile_(g, schedule="cpu").model, compile_(g, schedule="per-step").model
    seq = [s.entries for s in cpu.schedule.stages if s.kind == "seq"]
    assert seq == [("lif1/dense",)]  # canonicalize+fuse made big+lif1 one node; its dense part is hoisted
    np.testing.assert_array_equal(cpu(x), per_step(x))


def conv_loop() -> nir.NIRGraph:
    """Input 2x6x6 -> Conv2d(3x3 same) -> LIF (per-neuron thresholds) -> Output, with LIF -> Conv2d(3x3
    same) -> Scale -> back into the LIF: a convolution chain inside a cycle."""
    rng = np.random.default_rng(5)
    thr = _f(rng.uniform(0.4, 1.0, (2, 6, 6)))
    node = lif((2, 6, 6))
    node = nir.LIF(node.tau, node.r, node.v_leak, thr, node.v_reset)
    return nir.NIRGraph(
        nodes={"in": nir.Input(np.array([2, 6, 6])),
               "c_in": nir.Conv2d(None, _f(rng.normal(0, 0.7, (2, 2, 3, 3))), 1, "same", 1, 1, _f(np.zeros(2))),
               "lif": node,
               "c_rec": nir.Conv2d(None, _f(rng.normal(0, 0.5, (2, 2, 3, 3))), 1, "same", 1, 1, _f(rng.normal(0, 0.1, 2))),
               "gain": nir.Scale(_f(np.full((2, 6, 6), 0.8))),
               "out": nir.Output(np.array([2, 6, 6]))},
        edges=[("in", "c_in"), ("c_in", "lif"), ("lif", "c_rec"), ("c_rec", "gain"), ("gain", "lif"), ("lif", "out")])


@pytest.mark.parametrize("name", ["conv2d_net", "conv_loop"])
def test_channels_last_chains_equal_channels_first(name, monkeypatch):
    """Inside a scan, convolution chains (conv, pooling, neurons, Scale) are held channels-last
    ([..., H, W, C]); every node's recorded output and the outputs equal, bit for bit, the same model run
    with every value channels-first."""
    from nircomp import runner

    g = conv_loop() if name == "conv_loop" else ALL_GRAPHS[name]()
    x = sample_input(g, 30)
    model = compile_(g, schedule="per-step").model
    stage = model.schedule.stages[0].entries
    held = runner.channels_last(model.schedule, stage, model.params)
    want = {"conv2d_net": {"conv1", "if1", "pool1", "conv2", "lif2", "pool2"},
            "conv_loop": {"c_in", "lif", "c_rec", "gain"}}[name]
    assert set(held) == want
    names = sorted(dict(model.schedule.names))
    fn = eqx.filter_jit(lambda m, x: m(x, record=names))
    y_cl, rec_cl = fn(model, x)
    monkeypatch.setattr(runner, "channels_last", lambda *a: frozenset())
    y_cf, rec_cf = eqx.filter_jit(lambda m, x: m(x, record=names))(model, x)
    np.testing.assert_array_equal(y_cl, y_cf)
    for key in names:
        np.testing.assert_array_equal(rec_cl[key], rec_cf[key], err_msg=key)
    assert float(np.abs(rec_cl["lif" if name == "conv_loop" else "if1"]).sum()) > 0


@pytest.mark.parametrize("batched", [False, True])
def test_in_place_loops_equal_lax_scan(batched, monkeypatch):
    """Scan stages evaluate as fori_loops writing into whole-sequence buffers (an output over the buffer of
    an input no one reads later). On every test graph, with either schedule, one sample or a vmapped batch,
    every node's recorded output and the outputs equal, bit for bit, the same model run with lax.scan."""
    from nircomp import runner

    for name, make in ALL_GRAPHS.items():
        g = make()
        for schedule in ("cpu", "per-step"):
            model = compile_(g, schedule=schedule).model
            names = sorted(dict(model.schedule.names))
            x = _batch(g, n=3) if batched else sample_input(g, 25)

            def go(m, x):
                f = (lambda x: m(x, record=names))
                return (jax.vmap(f) if batched else f)(x)

            got = eqx.filter_jit(go)(model, x)
            with monkeypatch.context() as mp:
                mp.setattr(runner, "IN_PLACE", False)
                want = eqx.filter_jit(go)(model, x)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} ({schedule})")


def test_in_place_loops_reuse_the_input_buffers(monkeypatch):
    """The point of the in-place loops, in XLA's own memory plan: Linear -> LIF -> Linear -> LIF over 200
    steps of a batch of 8 needs about one [B, T, 256] sequence of temporary memory, where lax.scan needs
    three (each product's output, and each loop's zero-filled output)."""
    from nircomp import runner

    def linear(n_out, n_in):
        return nir.Linear(np.full((n_out, n_in), 0.01, np.float32))

    names = ["fc1", "lif1", "fc2", "lif2"]
    nodes = {"in": nir.Input(np.array([300])), "fc1": linear(256, 300), "lif1": cubalif(256),
             "fc2": linear(256, 256), "lif2": cubalif(256), "out": nir.Output(np.array([256]))}
    g = nir.NIRGraph(nodes=nodes, edges=list(zip(["in"] + names, names + ["out"])), type_check=False)
    model = compile_(g, schedule="scc").model
    x = jnp.zeros((8, 200, 300), jnp.float32)
    sequence = 8 * 200 * 256 * 4

    def temp():
        return jax.jit(jax.vmap(model)).lower(x).compile().memory_analysis().temp_size_in_bytes

    monkeypatch.setattr(runner, "CHUNKED", False)  # one pass over the sequence (see the chunks of time)
    in_place = temp()
    monkeypatch.setattr(runner, "IN_PLACE", False)
    plain = temp()
    assert in_place < 1.5 * sequence < 2.5 * sequence < plain


def _batch(g, n=4, T=25):
    xs = [sample_input(g, T, seed=s) for s in range(n)]
    if isinstance(xs[0], dict):
        return {k: jnp.stack([jnp.asarray(x[k]) for x in xs]) for k in xs[0]}
    return jnp.stack([jnp.asarray(x) for x in xs])


def _batch_last_graphs():
    """(name, schedule) of the test graphs with a scan stage that runs batch-last under jax.vmap."""
    from nircomp import runner

    found = []
    for name, make in ALL_GRAPHS.items():
        for schedule in ("cpu", "per-step"):
            sch = compile_(make(), schedule=schedule).model.schedule
            if any(st.kind == "scan" and runner.batch_last(sch, st.entries) for st in sch.stages):
                found.append((name, schedule))
    return found


def test_batch_last_loops_equal_the_plain_vmap(monkeypatch):
    """Under jax.vmap a scan stage with dense products and elementwise entries can hold the batch as the
    last axis (XLA's small matrix products run twice as fast as W @ [n, B]). On every test graph that has
    such a stage, with either schedule and the layout forced for this small batch, every node's recorded
    output equals the plain vmap of the loop: the spikes exactly, the other values to float32 rounding
    (the products sum in another order)."""
    from nircomp import runner

    monkeypatch.setattr(runner, "batch_last_pays", lambda *a: True)
    cases = _batch_last_graphs()
    assert {"recurrent", "nested", "heterogeneous"} <= {n for n, _ in cases}
    for name, schedule in cases:
        g = ALL_GRAPHS[name]()
        model = compile_(g, schedule=schedule).model
        names = sorted(dict(model.schedule.names))
        xb = _batch(g)

        def go(m, x):
            return jax.vmap(lambda x: m(x, record=names))(x)

        y_bl, rec_bl = eqx.filter_jit(go)(model, xb)
        with monkeypatch.context() as mp:
            mp.setattr(runner, "batch_last", lambda *a: False)
            y_ref, rec_ref = eqx.filter_jit(go)(model, xb)
        for key in names:
            np.testing.assert_allclose(rec_bl[key], rec_ref[key], rtol=1e-5, atol=1e-5, err_msg=f"{name}: {key}")
        for a, b in zip(jax.tree_util.tree_leaves(y_bl), jax.tree_util.tree_leaves(y_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        spiking = [n for n in names if isinstance(g.nodes.get(n), (nir.LIF, nir.CubaLIF, nir.IF))]
        for key in spiking:
            np.testing.assert_array_equal(rec_bl[key], rec_ref[key], err_msg=f"{name}: {key}")


def test_batch_last_only_where_it_pays():
    """The layout is taken for a batch that is a multiple of 16 and at least 64, small products, and inputs
    from outside the loop no larger than the products' outputs: the recurrent 12-38-7 network of the
    benchmarks at batch 256 (2.2x faster products), not at batch 8 or 100, and not the last loop of the
    700-512-512-20 MLP, fed by a 512-wide layer."""
    from nircomp import runner

    def stage(g):
        sch = compile_(g).model.schedule
        st = [st for st in sch.stages if st.kind == "scan" and runner.batch_last(sch, st.entries)]
        assert len(st) == 1
        return sch, st[0].entries

    def linear(n_out, n_in):
        return nir.Linear(np.full((n_out, n_in), 0.1, np.float32))

    def graph(nodes, edges, n_in, n_out):
        nodes = {"in": nir.Input(np.array([n_in])), **nodes, "out": nir.Output(np.array([n_out]))}
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)

    rec = graph({"fc1": linear(38, 12), "lif1": cubalif(38), "w_rec": linear(38, 38), "fc2": linear(7, 38),
                 "lif2": cubalif(7)}, [("in", "fc1"), ("fc1", "lif1"), ("lif1", "w_rec"), ("w_rec", "lif1"),
                                       ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "out")], 12, 7)
    sch, entries = stage(rec)
    assert runner.batch_last_pays(sch, entries, 256) and runner.batch_last_pays(sch, entries, 64)
    assert not runner.batch_last_pays(sch, entries, 8) and not runner.batch_last_pays(sch, entries, 100)
    names = ["fc1", "lif1", "fc2", "lif2", "fc3", "lif3"]
    sizes = [(512, 700), 512, (512, 512), 512, (20, 512), 20]
    mlp = graph({n: linear(*z) if isinstance(z, tuple) else cubalif(z) for n, z in zip(names, sizes)},
                list(zip(["in"] + names, names + ["out"])), 700, 20)
    sch, entries = stage(mlp)
    assert not runner.batch_last_pays(sch, entries, 256)


def test_batch_last_transformations(monkeypatch):
    """The batch-last loop composes with the other transformations: nested vmap equals a loop over the
    outer axis; a vmap over the weights (the input shared) takes the plain batched loop and equals a
    loop over the weights; the gradient of a batch loss (grad of vmap) equals the sum of the per-sample
    gradients (vmap of grad), and both equal the gradient of a loop over the samples."""
    from nircomp import runner

    monkeypatch.setattr(runner, "batch_last_pays", lambda *a: True)
    g = ALL_GRAPHS["recurrent"]()
    model = compile_(g).model
    xb = _batch(g, n=6)
    nested = eqx.filter_jit(jax.vmap(jax.vmap(model)))(xb.reshape((2, 3) + xb.shape[1:]))
    flat = np.stack([np.asarray(model(x)) for x in xb])
    np.testing.assert_allclose(np.asarray(nested).reshape(flat.shape), flat, rtol=1e-5, atol=1e-5)

    w_rec = model.params["w_rec"]["weight"]
    ws = jnp.stack([w_rec * s for s in (0.5, 1.0, 2.0)])

    def with_w(w, x):
        return eqx.tree_at(lambda m: m.params["w_rec"]["weight"], model, w)(x)

    by_w = jax.jit(jax.vmap(with_w, (0, None)))(ws, xb[0])
    for w, y in zip(ws, by_w):
        np.testing.assert_allclose(y, with_w(w, xb[0]), rtol=1e-5, atol=1e-5)

    def loss(m, x):
        return jnp.sum(m(x) ** 2)

    batch_grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(jax.vmap(lambda x: loss(m, x))(xb))))(model)
    per_sample = eqx.filter_jit(jax.vmap(eqx.filter_grad(loss), in_axes=(None, 0)))(model, xb)
    looped = [eqx.filter_grad(loss)(model, x) for x in xb]
    for node, ps in batch_grad.params.items():
        for k, gk in ps.items():
            summed = per_sample.params[node][k].sum(0)
            ref = sum(np.asarray(gr.params[node][k]) for gr in looped)
            np.testing.assert_allclose(gk, summed, rtol=1e-4, atol=1e-6, err_msg=f"{node}.{k}")
            np.testing.assert_allclose(gk, ref, rtol=1e-4, atol=1e-6, err_msg=f"{node}.{k}")
    assert float(jnp.abs(batch_grad.params["w_rec"]["weight"]).max()) > 0


def test_chunks_of_time_equal_one_pass(monkeypatch):
    """Evaluation runs the schedule a chunk of steps at a time, carrying every loop's state from one chunk
    to the next. Forced to 7 steps (a loop over three chunks, and a last one of 4 out of 25), on every
    test graph with either schedule, one sample and a batch, every node's recorded output equals the one
    pass over the sequence bit for bit; so does the gradient of a batch loss (derivatives always come from
    the one pass)."""
    from nircomp import runner

    asked = []

    def forced(schedule, keep, steps, size, itemsize):
        asked.append((steps, size))
        return 7

    for name, make in ALL_GRAPHS.items():
        g = make()
        for schedule in ("cpu", "per-step"):
            model = compile_(g, schedule=schedule).model
            names = sorted(dict(model.schedule.names))
            x1, xb = sample_input(g, 25), _batch(g, n=3)

            def go(m, x, xb):
                f = (lambda x: m(x, record=names))
                return f(x), jax.vmap(f)(xb)

            def grad(m, xb):
                def loss(m):
                    ys = jax.tree_util.tree_leaves(jax.vmap(m)(xb))
                    return sum(jnp.sum(jnp.tanh(y)) for y in ys)
                return eqx.filter_grad(loss)(m).params

            def both(m, x1, xb):  # the gradient with one schedule: its code path is the same for both
                return go(m, x1, xb), grad(m, xb) if schedule == "cpu" else None

            with monkeypatch.context() as mp:
                mp.setattr(runner, "chunk_steps", forced)
                got = eqx.filter_jit(both)(model, x1, xb)
            want = eqx.filter_jit(both)(model, x1, xb)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} ({schedule})")
    assert (25, 1) in asked and (25, 3) in asked  # sized for one sample, and for the batch vmap gives


def test_chunk_steps_keep_temporaries_small():
    """The chunk length for the benchmarks' 700-512-512-20 CubaLIF MLP at batch 64, T = 500, by hand: the
    sequence-long values per sample and step (the input is the caller's) are the two hoisted products
    (512 each), the first loop's spikes (512) and the output (20): 1556 floats, 398,336 bytes for the
    batch. 16 MiB of them is 42 steps, and 25, the largest divisor of 500 up to 42, leaves no shorter last
    chunk. XLA's temporaries for the whole call then stay under 32 MiB (glibc's largest dynamic mmap
    threshold, above which they are mapped afresh, and fault, at every call); in one pass they are over
    100 MiB. A batch of 8 at T = 25 is one pass."""
    from nircomp import runner

    names = ["fc1", "lif1", "fc2", "lif2", "fc3", "lif3"]
    sizes = [(512, 700), 512, (512, 512), 512, (20, 512), 20]
    nodes = {"in": nir.Input(np.array([700])), "out": nir.Output(np.array([20]))}
    for n, z in zip(names, sizes):
        nodes[n] = nir.Linear(np.full(z, 0.01, np.float32)) if isinstance(z, tuple) else cubalif(z)
    g = nir.NIRGraph(nodes=nodes, edges=list(zip(["in"] + names, names + ["out"])), type_check=False)
    model = compile_(g).model
    assert runner.CHUNK_BYTES == 16 << 20
    assert runner.chunk_steps(model.schedule, frozenset(), 500, 64, 4) == 25
    assert runner.chunk_steps(model.schedule, frozenset(), 25, 8, 4) is None
    assert runner.chunk_steps(model.schedule, frozenset(), 499, 64, 4) == 42  # 499 is prime: a tail of 37

    x = jax.ShapeDtypeStruct((64, 500, 700), jnp.float32)
    temp = jax.jit(jax.vmap(model)).lower(x).compile().memory_analysis().temp_size_in_bytes
    assert temp < 32 << 20
    runner_chunked = runner.CHUNKED
    try:
        runner.CHUNKED = False
        whole = jax.jit(jax.vmap(model)).lower(x).compile().memory_analysis().temp_size_in_bytes
    finally:
        runner.CHUNKED = runner_chunked
    assert whole > 100 << 20


# ----------------------------------------------------------------------------- API
def test_jit_and_vmap():
    """filter_jit and jax.jit of a lambda give the eager result; jax.vmap over a batch equals running
    each sample on its own."""
    g = ALL_GRAPHS["recurrent"]()
    model = compile_(g).model
    xb = jnp.stack([jnp.asarray(sample_input(g, 20, seed=s)) for s in range(3)])
    eager = np.stack([np.asarray(model(x)) for x in xb])
    np.testing.assert_allclose(eqx.filter_jit(model)(xb[0]), eager[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(model, xb[1]), eager[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(eqx.filter_jit(jax.vmap(model))(xb), eager, rtol=1e-6, atol=1e-6)


def test_record_fused_names_and_subgraph_names():
    """record= takes NIR names: in a fused Affine+LIF the Affine's name gives W x + b and the LIF's name
    its spikes (which equal the numpy LIF of that drive); inside a nested graph `sub.w_rec` records the
    recurrent Linear, which is W_rec times the recorded `sub.lif` spikes."""
    g = ALL_GRAPHS["affine_lif"]()
    prog = compile_(g)
    assert "fc" not in prog.ir.nx  # fused into `lif`
    x = sample_input(g, 30)
    y, rec = prog.model(x, record=["fc", "lif", "in"])
    drive = x @ g.nodes["fc"].weight.T + g.nodes["fc"].bias
    np.testing.assert_allclose(rec["fc"], drive, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rec["in"], x)
    np.testing.assert_array_equal(rec["lif"], y)
    np.testing.assert_array_equal(y, ref_lif(drive.astype(np.float64), g.nodes["lif"]))
    assert y.sum() > 0

    g = ALL_GRAPHS["nested"]()
    _, rec = compile_(g).model(sample_input(g, 30), record=["sub.lif", "sub.w_rec"])
    w = g.nodes["sub"].nodes["w_rec"].weight
    assert rec["sub.lif"].sum() > 0
    np.testing.assert_allclose(rec["sub.w_rec"], rec["sub.lif"] @ w.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("then_lif", [True, False])
def test_record_name_folded_by_canonicalize(then_lif):
    """Affine `fc` -> Scale `s` (-> LIF): canonicalize folds s into fc, so fc's own output no longer exists:
    recording it is a CompileError saying so, whether or not the result is then fused with the LIF (the
    unfused node keeps the name `fc` but outputs s's value); `s` gives s * (W x + b)."""
    rng = np.random.default_rng(0)
    w, b, s = _f(rng.normal(size=(2, 3))), _f([0.1, -0.2]), _f([2.0, -0.5])
    tail = [("lif", lif(2))] if then_lif else []
    model = compile_(chain(3, ("fc", nir.Affine(w, b)), ("s", nir.Scale(s)), *tail, out_shape=2)).model
    x = sample_input(chain(3), 10)
    with pytest.raises(CompileError, match="'fc'.*folded"):
        model(x, record=["fc"])
    with pytest.raises(CompileError, match="unknown node 'nope'"):
        model(x, record=["nope"])
    _, rec = model(x, record=["s"])
    np.testing.assert_allclose(rec["s"], s * (x @ w.T + b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["recurrent", "delay_loop", "stateless_cycle", "two_io", "conv1d_net"])
def test_single_step_api_equals_full_run(name):
    """init_state() and step(state, x_t) repeated T times give the full run's outputs."""
    g = ALL_GRAPHS[name]()
    model = compile_(g).model
    x = sample_input(g, 15)
    step = eqx.filter_jit(lambda m, s, xt: m.step(s, xt))
    state, ys = model.init_state(), []
    for t in range(15):
        state, yt = step(model, state, jax.tree_util.tree_map(lambda a, t=t: a[t], x))
        ys.append(yt)
    stepped = jax.tree_util.tree_map(lambda *a: np.stack(a), *ys)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stepped, model(x))


def test_two_inputs_two_outputs_as_dicts():
    """Several Inputs/Outputs are dicts keyed by NIR name: yb is the LI of xb alone, ya the LIF of the
    summed drives of xa and xb (numpy references); vmap works over dicts; a bare array or a missing key
    is a CompileError."""
    g = ALL_GRAPHS["two_io"]()
    model = compile_(g).model
    x = sample_input(g, 30)
    y = model(x)
    assert set(y) == {"ya", "yb"}
    np.testing.assert_allclose(y["yb"], ref_li(x["xb"].astype(np.float64), g.nodes["li"]), rtol=1e-5, atol=1e-6)
    fa, fb = g.nodes["fa"], g.nodes["fb"]
    drive = x["xa"] @ fa.weight.T + fa.bias + x["xb"] @ fb.weight.T
    np.testing.assert_array_equal(y["ya"], ref_lif(drive.astype(np.float64), g.nodes["lif"]))
    assert y["ya"].sum() > 0
    yb = jax.vmap(model)({k: np.stack([v, v[::-1]]) for k, v in x.items()})
    np.testing.assert_allclose(yb["yb"][0], y["yb"], rtol=1e-6)
    with pytest.raises(CompileError, match="pass a dict"):
        model(x["xa"])
    with pytest.raises(CompileError, match="missing input"):
        model({"xa": x["xa"]})


def test_wrong_input_shape_is_compile_error():
    """An input whose shape is not [T, *input_shape] is a CompileError naming the expected shape; a batch
    axis gets the hint to use jax.vmap."""
    model = compile_(ALL_GRAPHS["affine_lif"]()).model
    with pytest.raises(CompileError, match=r"expected \[T, 3\]"):
        model(np.zeros((5, 4), np.float32))
    with pytest.raises(CompileError, match="jax.vmap"):
        model(np.zeros((2, 5, 3), np.float32))


def test_back_edge_delays_one_step():
    """Cycles see the previous step's value. I (r=1) with feedback I -> Scale 0.5 -> I, x = 1, 0, 0:
    v = 1, 1 + 0.5 * 1 = 1.5, 1.5 + 0.5 * 1.5 = 2.25. Stateless: Linear(1) with feedback Scale 0.5,
    x = 1, 2, 3: y = 1, 2 + 0.5 = 2.5, 3 + 1.25 = 4.25."""
    g = chain(1, ("int", nir.I(_f([1.0]))), edges=[("int", "fb"), ("fb", "int")])
    g.nodes["fb"] = nir.Scale(_f([0.5]))
    np.testing.assert_allclose(run(g, _f([[1], [0], [0]]))[:, 0], [1.0, 1.5, 2.25], rtol=1e-6)
    g = chain(1, ("a", nir.Linear(_f([[1.0]]))), edges=[("a", "fb"), ("fb", "a")])
    g.nodes["fb"] = nir.Scale(_f([0.5]))
    np.testing.assert_allclose(run(g, _f([[1], [2], [3]]))[:, 0], [1.0, 2.5, 4.25], rtol=1e-6)


@pytest.mark.usefixtures("x64")
def test_heterogeneous_parameters_honoured():
    """Per-neuron tau, r, v_leak, v_threshold, v_reset (LIF) and tau_syn, tau_mem, w_in, ... (CubaLIF) that
    all differ give exactly the spikes of the numpy reference (float64 both sides)."""
    g = ALL_GRAPHS["heterogeneous"]()
    x = sample_input(g, 80).astype(np.float64) * 2
    y, rec = compile_(g, dtype=jnp.float64).model(jnp.asarray(x), record=["lif1"])
    z1 = ref_lif(x @ g.nodes["fc1"].weight.T, g.nodes["lif1"])
    z2 = ref_cubalif(z1 @ g.nodes["fc2"].weight.T + g.nodes["fc2"].bias, g.nodes["lif2"])
    np.testing.assert_array_equal(rec["lif1"], z1)
    np.testing.assert_array_equal(y, z2)
    assert len({tuple(c) for c in z1.T}) > 2 and z2.sum() > 0


def test_w_in_and_r_honoured():
    """CubaLI with v_leak = 0 is linear in r * w_in: neurons (w_in, r) = (2, 1) and (1, 2) respond alike,
    at twice the response of (1, 1); honour_w_in=False takes w_in as 1."""
    n = nir.CubaLI(tau_syn=_f([2e-3] * 3), tau_mem=_f([5e-3] * 3), r=_f([1, 2, 1]), v_leak=_f([0] * 3),
                   w_in=_f([2, 1, 1]))
    x = np.zeros((10, 3), np.float32)
    x[0] = 1
    y = run(chain(3, ("li", n)), x)
    assert y[:, 2].max() > 0
    np.testing.assert_allclose(y[:, 0], 2 * y[:, 2], rtol=1e-6)
    np.testing.assert_allclose(y[:, 1], 2 * y[:, 2], rtol=1e-6)
    y = run(chain(3, ("li", n)), x, honour_w_in=False)
    np.testing.assert_allclose(y[:, 0], y[:, 2], rtol=1e-6)


# ----------------------------------------------------------------------------- options
def test_reset_subtract():
    """IF with reset="subtract", constant input c = 0.37, th = 1: v keeps the excess, so after n steps
    floor(0.37 n) spikes (22 in 60 steps), one at each step where floor(0.37 (n+1)) grows."""
    y = run(chain(1, ("if", if_(1, thr=1.0))), np.full((60, 1), 0.37, np.float32), reset="subtract")[:, 0]
    n = np.arange(61)
    np.testing.assert_array_equal(y, np.diff(np.floor(0.37 * n)))
    assert y.sum() == 22


def test_threshold_ge():
    """threshold="ge": IF with c = 0.25, th = 1 (exact in binary) spikes when 4 c = 1 >= 1, every 4 steps
    (every 5 under the default "gt"); a Threshold node fires at equality."""
    x = np.full((20, 1), 0.25, np.float32)
    g = chain(1, ("if", if_(1, thr=1.0)))
    np.testing.assert_array_equal(np.flatnonzero(run(g, x, threshold="ge")[:, 0]), [3, 7, 11, 15, 19])
    np.testing.assert_array_equal(np.flatnonzero(run(g, x)[:, 0]), [4, 9, 14, 19])
    t = chain(2, ("t", nir.Threshold(_f([0.5, 0.5]))))
    np.testing.assert_array_equal(run(t, _f([[0.5, 0.4]]), threshold="ge"), [[1.0, 0.0]])


def test_spike_dirac_amplitude():
    """spike="dirac": spikes have amplitude 1/dt. IF (th 0.5) spikes at t=0 with value 1000; through
    Linear(1) into LI (tau = 10 dt) the membrane jumps by dt/tau * 1000 = 100 and decays as 0.9^n."""
    g = chain(1, ("if", if_(1, thr=0.5)), ("fc", nir.Linear(_f([[1.0]]))), ("li", li(1, tau=1e-2)))
    x = np.zeros((6, 1), np.float32)
    x[0] = 1.0
    y, rec = compile_(g, spike="dirac").model(x, record=["if"])
    np.testing.assert_allclose(rec["if"][:, 0], [1000, 0, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(y[:, 0], 100 * 0.9 ** np.arange(6), rtol=1e-5)


def test_spike_count_multi():
    """spike_count="multi" with reset="subtract" (sinabs): floor(v / th) spikes per step, each subtracting
    th. th = 1, x = 2.5, 2.7, 0.7, 0.2, 0: v = 2.5 -> 2 spikes (0.5 left); 3.2 -> 3 (0.2); 0.9 -> 0;
    1.1 -> 1 (0.1); 0.1 -> 0. Single spikes: one per step while v > 1 (v = 2.5, 4.2, 3.9, 3.1, 2.1)."""
    g = chain(1, ("if", if_(1, thr=1.0)))
    x = _f([[2.5], [2.7], [0.7], [0.2], [0.0]])
    np.testing.assert_array_equal(run(g, x, reset="subtract", spike_count="multi")[:, 0], [2, 3, 0, 1, 0])
    np.testing.assert_array_equal(run(g, x, reset="subtract")[:, 0], [1, 1, 1, 1, 1])


def test_cuba_order_voltage_first():
    """CubaLI after a pulse (ts = 2 dt, tm = 5 dt): I = 0.5, 0.25, ...; current-first (default)
    v = 0.2 * 0.5 = 0.1, then 0.8 * 0.1 + 0.2 * 0.25 = 0.13; voltage-first (and convention "nir-explicit")
    drives v with the previous step's current: v = 0, 0.1, 0.13, i.e. one step later."""
    g = chain(1, ("li", cubali(1, tau_syn=2e-3, tau_mem=5e-3)))
    x = np.zeros((8, 1), np.float32)
    x[0] = 1
    first = run(g, x)[:, 0]
    np.testing.assert_allclose(first[:2], [0.1, 0.13], rtol=1e-6)
    later = run(g, x, cuba_order="voltage-first")[:, 0]
    np.testing.assert_allclose(later[:3], [0.0, 0.1, 0.13], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(later[1:], first[:-1], rtol=1e-6)
    np.testing.assert_allclose(run(g, x, convention="nir-explicit")[:, 0], later, rtol=1e-6)


def test_integer_valued_parameters_are_values():
    """A file may store v_threshold (or a weight) as integers: they are values, so the model uses them
    (as floats) while the IR keeps the file's dtype for an exact round trip."""
    import nir

    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "fc": nir.Linear(np.array([[2, 0], [0, 1]])),
                            "if": nir.IF(r=np.ones(2), v_threshold=np.array([1, 1]), v_reset=np.zeros(2)),
                            "output": nir.Output(np.array([2]))},
                     edges=[("input", "fc"), ("fc", "if"), ("if", "output")], type_check=False)
    prog = nircomp.compile(g, dt=1e-3, solver="step")
    assert prog.ir.op("if").params["v_threshold"].dtype.kind == "i"
    y = np.asarray(prog.model(np.ones((3, 2), np.float32)))
    # IF: v += r * (W x); neuron 0 gets 2 per step (fires every step), neuron 1 gets 1 (1 > 1 is false, then 2)
    np.testing.assert_array_equal(y, [[1, 0], [1, 1], [1, 0]])
