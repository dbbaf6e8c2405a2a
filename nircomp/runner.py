"""Executes a step-solver Schedule with the kernels: the semantics the Equinox backend traces.

`run` walks the static schedule at trace time: a "seq" stage applies its kernel to the whole `[T, ...]`
sequence, a "scan" stage runs `lax.scan` over time for its entries, carrying neuron state and the
previous-step outputs of back-edge sources. Evaluation of a long sequence runs the whole schedule a chunk
of steps at a time (`chunk_steps`). `step` advances every entry by one step (online use).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nircomp.kernels import connectivity as C
from nircomp.kernels import step as K
from nircomp.noise import draw, increments
from nircomp.ops import DENSE_KINDS, NEURON_KINDS
from nircomp.schedule import Entry, Schedule

_NEURONS = {"I": K.integrator_step, "IF": K.if_step, "LI": K.li_step, "LIF": K.lif_step,
            "CubaLI": K.cubali_step, "CubaLIF": K.cubalif_step}


def _p(params: Mapping[str, Any], e: Entry) -> dict[str, Any]:
    node = params.get(e.node, {})
    return {k: node[k] for k in e.params if k in node}


def apply_stateless(e: Entry, p: dict, x, sem, dt, cl_in=False, cl_out=False, scanned=False, bl=False):
    """A stateless kernel on x with any leading axes (`cl_in`/`cl_out`: x / the result channels-last,
    for the kinds `channels_last` lets hold it; `scanned`: x is a whole sequence lax.scan emitted, which
    lies time-major under jax.vmap; `bl`: x and the result hold a batch as their last axis, for the kinds
    `batch_last` admits)."""
    k = e.kind
    if k in DENSE_KINDS:  # the kernel lower-connectivity chose, if it ran
        if bl:
            return K.dense_batch_last(p, x)
        if e.static:
            return C.connected(p, x, e.opt("connectivity"), e.opt("budget"), scanned)
        return K.dense(p, x)
    if k == "Scale":
        return K.scale(p, x)
    if k in ("Conv1d", "Conv2d"):
        return K.conv(p, x, e.opt("stride"), e.opt("padding"), e.opt("dilation"), e.opt("groups"), cl_in, cl_out)
    if k in ("SumPool2d", "AvgPool2d"):
        return K.pool(x, e.opt("kernel"), e.opt("stride"), e.opt("padding"), k == "AvgPool2d", cl_out)
    if k == "Flatten":
        y = K.flatten(x, e.in_shape, e.shape, sem.flatten_order, cl_in)
        return _settled(y) if cl_in else y
    if k == "Threshold":
        return K.threshold(p, x, sem, dt)
    if k in ("Identity", "Output"):
        return x
    raise NotImplementedError(f"no step kernel for {k}")


def init_entry(e: Entry, dtype, p=None, sem=None):
    """Initial state of a stateful entry (the kernels' rule), None for a stateless one."""
    if not e.stateful:
        return None
    depth = max(e.opt("steps")) + 1 if e.kind == "Delay" else 0
    return K.initial_state(e.kind, e.shape, dtype, p, sem, depth)


def step_entry(e: Entry, p: dict, state, x, sem, dt, noise=None):
    """One step of a stateful entry (`noise`: its Wiener draws for this step, nircomp.noise.increments)."""
    if e.kind == "Delay":
        return K.delay_step(jnp.asarray(e.opt("steps")).reshape(e.shape), state, x)
    if e.kind in _NEURONS:
        return _NEURONS[e.kind](p, state, x, sem, dt, noise)
    return state, apply_stateless(e, p, x, sem, dt)


def _sum(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out + v
    return out


def initial_state(schedule: Schedule, entries: tuple[str, ...], dtype, params=None, sem=None) -> dict[str, Any]:
    """Initial state for the given entries: neuron/delay state (zero unless `sem.init` says otherwise, which
    needs `params`), and the "previous" outputs of back-edge sources: what each source outputs before the
    first step, when every state is zero (zero for neurons, the bias for an Affine)."""
    by = schedule._by_name
    back_sources = {src for n in entries for src, back in by[n].inputs if back}

    def before_start(e):
        zeros = jnp.zeros(e.shape, dtype)
        if e.stateful or e.kind == "Threshold" or params is None:  # no spike before the start
            return zeros
        out = apply_stateless(e, _p(params, e), jnp.zeros(e.in_shape, dtype), sem, 1.0)
        return jnp.broadcast_to(out, e.shape).astype(dtype)

    return {"state": {n: init_entry(by[n], dtype, None if params is None else _p(params, by[n]), sem)
                      for n in entries if by[n].stateful},
            "prev": {n: before_start(by[n]) for n in sorted(back_sources)}}


# ----------------------------------------------------------------------------- batch-last scans
# the kinds that act elementwise, and so take values in either layout of a loop (channels- or batch-last)
_ELEMENTWISE = frozenset(NEURON_KINDS) | {"Scale", "Threshold", "Identity"}
_BL_KINDS = _ELEMENTWISE | {"Output"} | frozenset(DENSE_KINDS)
# when a batch-last loop pays (benchmarks/RESULTS.md, "Batch-last loops"): a batch that fills the vector
# registers, and small products, whose outputs fill them badly (W @ [n, B] against [B, n] @ W.T, one
# thread: 2.2x at n = 38, B = 64 or 256; 1.7x at n = 16, B = 64; even at n = 64 or 128)
BL_MIN_BATCH = 64
BL_MAX_OUT = 64


def batch_last(schedule: Schedule, entries) -> bool:
    """Whether a scan stage can run with the batch as the last axis of its values under jax.vmap: it
    holds dense products (Affine/Linear with the dense kernel) and otherwise only elementwise entries."""
    es = [schedule._by_name[n] for n in entries]
    dense = [e for e in es if e.kind in DENSE_KINDS]
    return bool(dense) and all(e.kind in _BL_KINDS for e in es) and not any(e.static for e in dense)


def batch_last_pays(schedule: Schedule, entries, size: int) -> bool:
    """Whether running the stage batch-last for a batch of `size` is faster: vmap holds the batch first,
    so a product in the loop is [B, n_in] @ W.T, whose short output axis n_out fills XLA:CPU's vector
    registers badly; batch-last it is W @ [n_in, B]. Taken when the batch is a multiple of 16 and at least
    BL_MIN_BATCH, every product has fewer than BL_MAX_OUT outputs, and the stage's inputs from outside
    the loop are no larger than its products' outputs (they change layout once per call: in a loop fed
    by a 512-wide layer the transposes cost more than a 512 -> 20 product gains)."""
    by = schedule._by_name
    members = set(entries)
    outs = [math.prod(by[n].shape) for n in entries if by[n].kind in DENSE_KINDS]
    inputs = sum(math.prod(by[s].shape) for s in {s for n in entries for s, _ in by[n].inputs if s not in members})
    return size % 16 == 0 and size >= BL_MIN_BATCH and max(outs) < BL_MAX_OUT and inputs <= sum(outs)


def _bl_params(kind: str, p: dict) -> dict:
    """An entry's parameters against batch-last values: per-neuron arrays gain a trailing axis, so they
    broadcast over the batch; a dense weight stays, as the left factor of W @ x."""
    return {k: v if k == "weight" and kind in DENSE_KINDS or jnp.ndim(v) == 0 else v[..., None]
            for k, v in p.items()}


def _axes(in_batched):
    """jax.vmap's in_axes for the arguments a custom_vmap rule got: 0 where batched, None elsewhere."""
    return jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(in_batched))


def _batch_last_vmap(plain, scan, pays, by):
    """plain(ps, carry0, xs) -> ys, whose batching (jax.vmap) runs scan(..., bl=True) batch-last when
    `pays(size)`: state and inputs [..., B], the per-neuron parameters [..., 1], ys moved back to
    batch-first. A batch of parameters, an input without the batch, or a batch for which it does not pay
    runs the vmap of `plain`. custom_vmap has no reverse mode: see `_forward_only`."""
    tree = jax.tree_util

    @jax.custom_batching.custom_vmap
    def f(ps, carry0, xs):
        return plain(ps, carry0, xs)

    @f.def_vmap
    def _rule(size, in_batched, ps, carry0, xs):
        p_b, c_b, x_b = in_batched
        if any(tree.tree_leaves(p_b)) or not all(tree.tree_leaves(x_b)) or not pays(size):
            ys = jax.vmap(plain, _axes(in_batched))(ps, carry0, xs)
        else:
            def last(v, batched):
                return jnp.moveaxis(v, 0, -1) if batched else jnp.broadcast_to(v[..., None], v.shape + (size,))

            ys = scan({n: _bl_params(by[n].kind, p) for n, p in ps.items()}, tree.tree_map(last, carry0, c_b),
                      tree.tree_map(last, xs, x_b), bl=True)
            ys = tree.tree_map(lambda y: jnp.moveaxis(y, -1, 0), ys)
        return ys, tree.tree_map(lambda _: True, ys)

    return f


def _forward_only(fast, plain):
    """`fast` for evaluation, and the derivatives of `plain`, computing the same values: neither the
    in-place loop nor the chunks of time (their carries hold whole sequences, which reverse mode would
    store at every step) nor custom_vmap (no reverse mode) is differentiated."""

    @jax.custom_jvp
    def g(*args):
        return fast(*args)

    @g.defjvp
    def _plain_jvp(primals, tangents):
        return jax.jvp(plain, primals, tangents)

    return g


# ----------------------------------------------------------------------------- channels-last chains
_CL_AWARE = frozenset({"Conv2d", "SumPool2d", "AvgPool2d", "Flatten"})  # take either layout


def channels_last(schedule: Schedule, entries, params) -> frozenset[str]:
    """The entries of a scan whose outputs the loop holds channels-last ([..., H, W, C]): every Conv2d
    (XLA:CPU convolves channels-last), and the pooling and elementwise entries (neurons, Scale, Threshold)
    fed only by such entries, with [C, H, W] outputs and parameters that are scalars or [C, H, W]-shaped.
    A conv chain then runs without a layout change per layer and step; values leave it channels-first."""
    by = schedule._by_name

    def can(e):
        return len(e.shape) == 3 and bool(e.inputs) and (e.kind in ("SumPool2d", "AvgPool2d") or e.kind in
                _ELEMENTWISE and all(jnp.ndim(v) in (0, 3) for v in _p(params, e).values()))

    cl = {n for n in entries if by[n].kind == "Conv2d" or can(by[n])}
    while True:  # the largest set closed under "fed only by the set" (cycles through back edges included)
        drop = {n for n in cl if by[n].kind != "Conv2d" and any(src not in cl for src, _ in by[n].inputs)}
        if not drop:
            return frozenset(cl)
        cl -= drop


def _to_layout(x, held_cl: bool, want_cl: bool):
    if held_cl == want_cl:
        return x
    return K.to_channels_last(x) if want_cl else _settled(K.to_channels_first(x))


def _settled(x):
    """x materialised before its reader: XLA would otherwise fuse the layout change into the next kernel
    in some programs and not others (a matmul then sums in another order: the sharded model would differ
    from the one-device model in the last bit)."""
    return jax.lax.optimization_barrier(x)


def _cl_params(p: dict) -> dict:
    return {k: K.to_channels_last(v) if jnp.ndim(v) == 3 else v for k, v in p.items()}


def _carry_layout(carry, names, to):
    """A scan's carry with the state and previous outputs of `names` (each an array or a tuple of arrays)
    moved by `to` (K.to_channels_last or K.to_channels_first)."""
    return {part: {n: jax.tree_util.tree_map(to, v) if n in names else v for n, v in carry[part].items()}
            for part in ("state", "prev")}


def _advance(schedule: Schedule, entries, params, carry, external, sem, dt, noise=None, draws=None,
             cl: frozenset[str] = frozenset(), ps: Mapping[str, dict] | None = None, bl: bool = False):
    """One time step of `entries` (in order): returns the new carry and every entry's output. With `noise`
    (a nircomp.noise.Noise), `draws` are this step's (nircomp.noise.draw). `cl`: the entries whose outputs
    (and state) are held channels-last (`channels_last`); `ps`: parameters already in the layout the step
    holds (by entry name). `bl`: every value holds a batch as its last axis (`batch_last`).

    With fire_timing="before-update" a spiking neuron's output is known from its state before the step: it
    is emitted first, the neuron updates after the other entries, and a back edge from or to it carries this
    step's value (the neuron's own one-step lag closes the cycle, as in spyx)."""
    by = schedule._by_name
    ps = ps or {}
    state = dict(carry["state"])
    early = {n for n in entries if sem.fire_timing == "before-update" and by[n].kind in K.SPIKING}
    out: dict[str, Any] = {n: K.emission(state[n], sem, dt) for n in early}
    for n in [n for n in entries if n not in early] + [n for n in entries if n in early]:
        e = by[n]
        srcs = [(src, carry["prev"][src] if back and src not in early and n not in early else
                 (out[src] if src in out else external[src])) for src, back in e.inputs]
        held = [src in cl for src, _ in srcs]
        # what this entry reads in: its own layout, or, for the kinds that take either, the inputs' own
        want = all(held) if e.kind in _CL_AWARE else n in cl
        x = _sum(_to_layout(v, h, want) for (_, v), h in zip(srcs, held))
        p = ps[n] if n in ps else _p(params, e)
        if e.stateful:
            state[n], out[n] = step_entry(e, p, state[n], x, sem, dt, increments(noise, draws, n))
        else:
            out[n] = apply_stateless(e, p, x, sem, dt, want, n in cl, bl=bl)
    prev = {src: out[src] for src in carry["prev"]}
    return {"state": state, "prev": prev}, out


# scan stages evaluate as `_in_place_loop` (False: lax.scan, the loop their derivatives come from)
IN_PLACE = True


def _in_place_loop(body, carry0, xs, emit, free):
    """lax.scan(body, carry0, xs) as a fori_loop that writes each step's outputs into whole-sequence
    buffers it carries. An output takes over the buffer of an input in `free` (read by no one after the
    loop) of its shape and dtype: step t reads its input there before writing its output there. XLA then
    updates the buffers in place: no zero-filled buffer per output, no second sequence buffer for such an
    input, and under jax.vmap the batch stays the leading axis (lax.scan's batching puts time first,
    transposing the inputs and outputs). Measured: 7 % on the conv net, 0-8 % and a quarter fewer page
    faults on the sparse MLP (benchmarks/RESULTS.md)."""
    tree = jax.tree_util
    steps = tree.tree_leaves(xs)[0].shape[0]
    outs = jax.eval_shape(body, carry0, tree.tree_map(lambda v: v[0], xs))[1]
    owner: dict[str, str] = {}  # input -> the output that takes over its buffer
    for n in emit:
        s = next((s for s in free if s not in owner and xs[s].shape[1:] == outs[n].shape
                  and xs[s].dtype == outs[n].dtype), None)
        if s is not None:
            owner[s] = n
    taken = {n: s for s, n in owner.items()}
    bufs = {n: xs[taken[n]] if n in taken else jnp.zeros((steps, *outs[n].shape), outs[n].dtype) for n in emit}

    def step(t, c):
        carry, bufs = c
        xs_t = {s: jax.lax.dynamic_index_in_dim(bufs[owner[s]] if s in owner else v, t, keepdims=False)
                for s, v in xs.items()}
        carry, out = body(carry, xs_t)
        return carry, {n: jax.lax.dynamic_update_index_in_dim(bufs[n], out[n], t, 0) for n in emit}

    return jax.lax.fori_loop(0, steps, step, (carry0, bufs))


def _scan_stage(schedule: Schedule, entries, emit, params, carry0, xs, sem, dt, noise, free=()):
    """One scan stage over time: (the final carry, its outputs `emit` ([T, ...] each)) from the initial
    `carry0` and the stage's inputs `xs` (with the noise draws, if `noise`). `free`: the inputs no one reads
    after this stage, whose buffers the outputs may take over (`_in_place_loop`)."""
    by = schedule._by_name
    ps = {n: _p(params, by[n]) for n in entries}
    held_cl = frozenset() if noise else channels_last(schedule, entries, params)

    def step_fn(ps, carry0, bl):
        """One step of the stage, in the layout it holds (channels-last chains, or batch-last), and the
        initial carry in that layout."""
        cl = frozenset() if bl else held_cl
        ps = {n: _cl_params(p) if n in cl and by[n].kind != "Conv2d" else p for n, p in ps.items()}
        carry0 = _carry_layout(carry0, cl, K.to_channels_last)

        def body(carry, xs_t):
            xs_t, draws_t = xs_t if noise else (xs_t, None)
            carry, out = _advance(schedule, entries, None, carry, xs_t, sem, dt, noise, draws_t, cl, ps, bl)
            # only what later stages, outputs or record= read, channels-first as every node's output is
            return carry, {n: _to_layout(out[n], n in cl, False) for n in emit}

        return body, carry0

    def channels_first(carry):  # the final carry as the next chunk of time takes it (`run`)
        return _carry_layout(carry, held_cl, K.to_channels_first)

    def scan(ps, carry0, xs, bl=False):
        body, carry0 = step_fn(ps, carry0, bl)
        carry, ys = jax.lax.scan(body, carry0, xs)
        return (carry if bl else channels_first(carry)), ys

    def in_place(ps, carry0, xs):
        body, carry0 = step_fn(ps, carry0, False)
        carry, ys = _in_place_loop(body, carry0, xs, emit, free)
        return channels_first(carry), ys

    if noise:
        return scan(ps, carry0, xs)
    fast = in_place if IN_PLACE else scan
    if batch_last(schedule, entries):
        fast = _batch_last_vmap(fast, scan, lambda size: batch_last_pays(schedule, entries, size), by)
    return _forward_only(fast, scan)(ps, carry0, xs)


def _needed(schedule: Schedule) -> set[str]:
    """The entries whose whole sequence a later stage, or the caller, reads: the outputs, and the sources of
    edges between stages."""
    stage_of = {n: i for i, st in enumerate(schedule.stages) for n in st.entries}
    return set(schedule.outputs) | {src for e in schedule.entries for src, _ in e.inputs
                                    if stage_of.get(src) != stage_of.get(e.name)}


def _initial_carries(schedule: Schedule, dtype, params, sem) -> dict[int, Any]:
    """Stage index -> the initial carry of every scan stage."""
    return {i: initial_state(schedule, st.entries, dtype, params, sem)
            for i, st in enumerate(schedule.stages) if st.kind == "scan"}


def _stages(schedule: Schedule, params, inputs, sem, dt, dtype, keep, noise=None, drawn=None, carries=None):
    """Every stage over the time axis of `inputs`, from the initial state or from `carries` (stage index ->
    the carry a scan stage ended an earlier stretch of time with): (values, the final carries)."""
    carries = carries or _initial_carries(schedule, dtype, params, sem)
    values: dict[str, Any] = dict(inputs)
    by = schedule._by_name
    needed = _needed(schedule)
    from_scan: set[str] = set()  # time-major sequences: what lax.scan emitted (or computed from such alone)
    readers: dict[str, set[str]] = {}
    for e in schedule.entries:
        for src, _ in e.inputs:
            readers.setdefault(src, set()).add(e.name)
    finals = {}
    for i, stage in enumerate(schedule.stages):
        if stage.kind == "seq":
            e = by[stage.entries[0]]
            scanned = all(s in from_scan for s, _ in e.inputs)
            values[e.name] = apply_stateless(e, _p(params, e), _sum(values[s] for s, _ in e.inputs), sem, dt,
                                             scanned=scanned)
            if scanned:
                from_scan.add(e.name)
            continue
        members = set(stage.entries)
        external = sorted({s for n in stage.entries for s, _ in by[n].inputs if s not in members})
        carry0 = carries[i]
        emit = tuple(n for n in stage.entries if n in keep or n in needed)
        xs = {s: values[s] for s in external}
        if noise:
            xs = (xs, {n: drawn[n] for n in stage.entries if n in drawn})
        # inputs of this stage alone: their buffers can hold the stage's outputs
        free = [s for s in external if readers[s] <= members and s not in keep and s not in schedule.outputs
                and by[s].kind != "Input"]
        finals[i], ys = _scan_stage(schedule, stage.entries, emit, params, carry0, xs, sem, dt, noise, free)
        values.update(ys)
        if noise:  # lax.scan: under jax.vmap its outputs lie time-major
            from_scan.update(ys)
    return values, finals


# ----------------------------------------------------------------------------- chunks of time
# Evaluation runs the schedule on stretches of time when its sequence-long values would fill more than
# CHUNK_BYTES for the whole batch, each stretch filling at most that (benchmarks/RESULTS.md, "Chunks of
# time"). XLA:CPU allocates an executable's temporaries as one block, with malloc: above glibc's largest
# dynamic mmap threshold (32 MiB) the block is mapped afresh at every call, and every page of it faults on
# its first write (62k faults per call of the 700-512-512-20 MLP at batch 64, T = 500: a quarter of its
# time); below it, the freed block is reused. Under the threshold one pass is as fast or faster: a loop
# over chunks made the conv net 6-19 % slower.
CHUNKED = True
CHUNK_BYTES = 16 << 20
MIN_CHUNK = 8  # shorter stretches make the products too short (20 % slower at 5 steps)


def chunk_steps(schedule: Schedule, keep, steps: int, size: int, itemsize: int) -> int | None:
    """The steps per chunk of time for a batch of `size`, or None for one pass over the sequence. The
    sequence-long values are the outputs of stateless entries outside the loops, and what a loop emits
    (for later stages, the outputs, `keep`); the inputs are the caller's. Chunks: the most steps under
    CHUNK_BYTES (not below MIN_CHUNK), or a divisor of `steps` not under half of that, which leaves no
    shorter last chunk to trace. A symbolic length or batch (an AOT artifact's) runs in one pass."""
    if not (CHUNKED and isinstance(steps, int) and isinstance(size, int)):
        return None
    by = schedule._by_name
    scanned = {n for st in schedule.stages if st.kind == "scan" for n in st.entries}
    sequences = {n for n in by if n not in scanned and n not in schedule.inputs}
    sequences |= scanned & (keep | _needed(schedule))
    per_step = size * itemsize * sum(math.prod(by[n].shape) for n in sequences)
    if steps * per_step <= CHUNK_BYTES or steps < 2 * MIN_CHUNK:
        return None
    most = min(max(MIN_CHUNK, CHUNK_BYTES // per_step), steps // 2)
    divisor = max(d for d in range(1, most + 1) if steps % d == 0)
    return divisor if 2 * divisor >= most and divisor >= MIN_CHUNK else most


def _in_chunks(stages, carries0, inputs, wanted, chunk: int):
    """stages(inputs, carries) -> (values, carries) over the time axis of `inputs` a chunk of steps at a
    time, in a fori_loop carrying the stages' state, the `wanted` values written into whole-sequence
    buffers; a last, shorter chunk runs after the loop."""
    steps = jax.tree_util.tree_leaves(inputs)[0].shape[0]

    def piece(carries, start, n):
        xs = {k: jax.lax.dynamic_slice_in_dim(v, start, n) for k, v in inputs.items()}
        values, carries = stages(xs, carries)
        return carries, {k: values[k] for k in wanted}

    shapes = jax.eval_shape(lambda c: piece(c, 0, chunk)[1], carries0)
    bufs = {k: jnp.zeros((steps, *v.shape[1:]), v.dtype) for k, v in shapes.items()}

    def body(i, c):
        carries, bufs = c
        carries, ys = piece(carries, i * chunk, chunk)
        return carries, {k: jax.lax.dynamic_update_slice_in_dim(bufs[k], ys[k], i * chunk, 0) for k in wanted}

    full, tail = divmod(steps, chunk)
    carries, bufs = jax.lax.fori_loop(0, full, body, (carries0, bufs))
    if tail:
        ys = piece(carries, full * chunk, tail)[1]
        bufs = {k: jax.lax.dynamic_update_slice_in_dim(bufs[k], ys[k], full * chunk, 0) for k in wanted}
    return bufs


def run(schedule: Schedule, params, inputs: Mapping[str, Any], sem, dt, keep: frozenset[str] = frozenset(),
        noise=None, keys=None):
    """Simulate over the time axis of `inputs` (name -> [T, *shape]); returns entry name -> [T, ...] for the
    outputs and the entries in `keep` (those asked for by record=). With `noise` (a nircomp.noise.Noise),
    `keys` holds one key per step.

    Evaluation runs in chunks of time (`chunk_steps`, sized for the batch jax.vmap gives); derivatives are
    those of the one pass over the sequence."""
    # state in the promoted dtype of inputs and parameters (float32 input, float64 params: float64 carry)
    dtype = jnp.result_type(*inputs.values(), *jax.tree_util.tree_leaves(params))
    wanted = tuple(dict.fromkeys([*schedule.outputs, *sorted(keep)]))
    # noise for every step at once, outside the loops: one vectorised PRNG call
    drawn = jax.vmap(lambda k: draw(noise, k, dtype))(keys) if noise else None

    def whole(params, inputs):
        values = _stages(schedule, params, inputs, sem, dt, dtype, keep, noise, drawn)[0]
        return {k: values[k] for k in wanted}

    if noise:  # lax.scan stages, one pass
        return whole(params, inputs)

    def chunked(size):
        steps = jax.tree_util.tree_leaves(inputs)[0].shape[0]
        chunk = chunk_steps(schedule, keep, steps, size, jnp.dtype(dtype).itemsize)
        if chunk is None:
            return whole

        def f(params, inputs):
            stages = (lambda xs, carries: _stages(schedule, params, xs, sem, dt, dtype, keep, carries=carries))
            return _in_chunks(stages, _initial_carries(schedule, dtype, params, sem), inputs, wanted, chunk)

        return f

    @jax.custom_batching.custom_vmap
    def fast(params, inputs):
        return chunked(1)(params, inputs)

    @fast.def_vmap
    def _rule(size, in_batched, params, inputs):
        ys = jax.vmap(chunked(size), _axes(in_batched))(params, inputs)
        return ys, jax.tree_util.tree_map(lambda _: True, ys)

    return _forward_only(fast, whole)(params, inputs)
