"""Connectivity kernels: y = W x (+ b) by the kernel the `lower-connectivity` pass chose.

Each kernel computes what `dense` computes for ANY weights and inputs (the sums in another order): it checks
at run time what it relies on (the structure of W, the number of nonzeros per row) and otherwise runs
`dense`. Derivatives are those of `dense` (custom_jvp), so training sees the product itself, not the path
the kernel took. Plain JAX, like nircomp/kernels/step.py; backend="source" embeds this text after that
module's only when a graph uses these kernels (so the import of `dense` below is dropped there).
"""

import functools

import jax
import jax.numpy as jnp

from nircomp.kernels.step import dense

SLOTS = 16  # nonzeros per row gathered per loop iteration of the sparse kernels (benchmarks/RESULTS.md)
CSR_TILE = 256  # rows of x per tile of the CSR kernel (its gathered rows stay in cache)
SAMPLE = 16  # the event kernel first counts the nonzeros of every SAMPLE-th slice of x's first axis


def connected(p, x, kernel, budget, time_major=False):
    """W x (+ b) by `kernel` ("identity", "one-to-one", "all-to-all", "csr" or "event"); `budget`: the
    most nonzeros per row the sparse kernels handle (of W's rows for "csr", of x's rows for "event").
    `time_major`: x comes out of lax.scan, so under jax.vmap it lies in memory as [T, B, ...] (see `_sparse`)."""
    y = _connected(kernel, budget, time_major, p["weight"], x)
    return y + p["bias"] if "bias" in p else y


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _connected(kernel, budget, time_major, w, x):
    """W x by `kernel`, falling back to the dense product where its assumption fails at run time."""
    if kernel in _STRUCTURED:
        holds, fast = _STRUCTURED[kernel]
        return jax.lax.cond(holds(w), fast, _product, w, x)
    return _sparse(kernel, budget, time_major)(w, x)


def _product(w, x, *_):
    """The dense product W x (the fallback of every connectivity kernel)."""
    return dense({"weight": w}, x)


def _is_identity(w):
    return jnp.all(w == jnp.eye(*w.shape, dtype=w.dtype))


def _is_diagonal(w):
    return jnp.all((w == 0) | jnp.eye(*w.shape, dtype=bool))


def _all_equal(w):
    return jnp.all(w == w[0, 0])


def _identity(w, x):
    return x.astype(jnp.result_type(w, x))


def _one_to_one(w, x):
    return (x * jnp.diagonal(w)).astype(jnp.result_type(w, x))


def _all_to_all(w, x):
    total = (jnp.sum(x, -1, keepdims=True) * w[0, 0]).astype(jnp.result_type(w, x))
    return jnp.broadcast_to(total, x.shape[:-1] + w.shape[:1])


# kernel -> (what it needs of W, the product when it holds)
_STRUCTURED = {"identity": (_is_identity, _identity), "one-to-one": (_is_diagonal, _one_to_one),
               "all-to-all": (_all_equal, _all_to_all)}


@_connected.defjvp
def _connected_jvp(kernel, budget, time_major, primals, tangents):
    (w, x), (dw, dx) = primals, tangents
    return _connected(kernel, budget, time_major, w, x), dense({"weight": dw}, x) + dense({"weight": w}, dx)


@functools.cache
def _sparse(kernel, budget, time_major=False):
    """The sparse kernel as a function of (w, x) whose batching treats a vmapped batch axis of x as one more
    leading axis, so its run-time checks stay one decision for the whole batch (a batched `lax.cond` would
    run both branches). With `time_major`, a batched [B, T, ..., n] x is taken as [T, B, ..., n]: what
    lax.scan emits lies in memory that way, and the next lax.scan reads it that way, so XLA moves no data
    for the layout, where batch-major rows cost a transpose of the result (5-10 % of the sparse model's
    time). Only the step solver's loops with noise are lax.scans; its in-place loops keep the batch first
    (nircomp.runner._in_place_loop)."""

    @jax.custom_batching.custom_vmap
    def f(w, x):
        return (_event if kernel == "event" else _csr)(w, x, budget)

    @f.def_vmap
    def _batched(axis_size, in_batched, w, x):
        if in_batched[0]:  # a batch of weight matrices: the plain product
            return jax.vmap(_product, (0, 0 if in_batched[1] else None))(w, x), True
        if time_major and x.ndim >= 3:
            return jnp.swapaxes(f(w, jnp.swapaxes(x, 0, 1)), 0, 1), True
        return f(w, x), True

    return f


def _pack_rows(a):
    """Bit masks of the nonzeros of each row (last axis) of a [..., n] as 32-bit words [..., ceil(n/32)],
    and their inclusive running counts (cum[..., -1]: nonzeros per row)."""
    n = a.shape[-1]
    nw = -(-n // 32)
    pad = [(0, 0)] * (a.ndim - 1) + [(0, nw * 32 - n)]
    bits = jnp.pad(a != 0, pad).reshape(a.shape[:-1] + (nw, 32)).astype(jnp.uint32)
    words = jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), -1, dtype=jnp.uint32)
    return words, jnp.cumsum(jax.lax.population_count(words).astype(jnp.int32), axis=-1)


def _nth_bit(word, j):
    """Position of the j-th (from 0) set bit of each uint32 `word` (j < its popcount): binary search."""
    pos, j = jnp.zeros(word.shape, jnp.uint32), j.astype(jnp.uint32)
    for width in (16, 8, 4, 2, 1):
        below = jax.lax.population_count((word >> pos) & jnp.uint32((1 << width) - 1))
        skip = below <= j
        pos, j = jnp.where(skip, pos + width, pos), jnp.where(skip, j - below, j)
    return pos.astype(jnp.int32)


def _nonzero_columns(words, cum, ranks, n):
    """Column of the k-th nonzero of each row for k in `ranks` [S]: [..., S], n where a row has fewer."""
    nw = words.shape[-1]
    word_of = jnp.sum(cum[..., None, :] <= ranks[:, None], axis=-1, dtype=jnp.int32)  # nw: none left
    before = jnp.where(word_of > 0, jnp.take_along_axis(cum, jnp.maximum(word_of - 1, 0), -1), 0)
    word = jnp.take_along_axis(words, jnp.minimum(word_of, nw - 1), -1)
    return jnp.where(word_of < nw, word_of * 32 + _nth_bit(word, ranks - before), n)


def _with_zero_row(table):
    """table [n, m] and a row of zeros under it: the row `_gather_rows` reads for a rank past a row's last
    nonzero."""
    return jnp.concatenate([table, jnp.zeros((1, table.shape[1]), table.dtype)])


def _gather_rows(padded, a, words, cum, steps):
    """a @ table over the nonzeros of a's rows only, `padded` = _with_zero_row(table): the k-th nonzero
    a[..., j] of a row adds a[..., j] * table[j] to it, SLOTS ranks k per iteration, for `steps`
    iterations (enough for every row)."""
    n, dtype = a.shape[-1], jnp.result_type(padded, a)

    def body(step, acc):
        cols = _nonzero_columns(words, cum, step * SLOTS + jnp.arange(SLOTS, dtype=jnp.int32), n)
        vals = jnp.take_along_axis(a, cols, -1, mode="fill", fill_value=0)
        for s in range(SLOTS):
            term = padded.at[cols[..., s]].get(mode="promise_in_bounds") * vals[..., s:s + 1]
            acc = term.astype(dtype) if acc is None else acc + term
        return acc

    # the first SLOTS ranks start the sum (rows without nonzeros gather the zero row): no zero-filled
    # accumulator, a pass over memory as long as the output (a fifth of the kernel's time at 1 % input)
    return jax.lax.fori_loop(1, jnp.maximum(steps, 1), body, body(0, None))


def _event(w, x, budget):
    """x @ W.T touching only the rows of W.T of each row's nonzero inputs (BrainPy's EventCSRLinear idea);
    when a row has more than `budget` nonzeros, `dense`. Any leading axes, kept as they are (no reshape,
    so XLA keeps the layout the caller has). Every SAMPLE-th slice of the first axis is looked at first:
    when it already has a row over the budget, the dense product runs without counting the rest."""
    sample = x[::SAMPLE] if x.ndim > 1 else x
    busy = jnp.max(jnp.sum(sample != 0, axis=-1, dtype=jnp.int32), initial=0)
    # outside the branches, so that in a loop over chunks of time XLA computes it once, before the loop
    table = _with_zero_row(w.T)

    def count(w, x):
        words, cum = _pack_rows(x)
        most = jnp.max(cum[..., -1], initial=0)

        def gather(w, x, words, cum):
            return _gather_rows(table, x, words, cum, (most + SLOTS - 1) // SLOTS)

        return jax.lax.cond(most <= budget, gather, _product, w, x, words, cum)

    return jax.lax.cond(busy <= budget, count, _product, w, x)


def _csr(w, x, budget):
    """x @ W.T over W's nonzeros only (compressed rows of W, in tiles of CSR_TILE rows of x); when a row of
    W has more than `budget` nonzeros, `dense`."""
    words, cum = _pack_rows(w)
    most = jnp.max(cum[:, -1], initial=0)
    steps = (most + SLOTS - 1) // SLOTS  # from the data: the loop adapts to W (and XLA keeps it a loop)

    def sparse(w, x, words, cum):
        def tile(block):  # [C, n] -> [C, n_out]
            return _gather_rows(_with_zero_row(block.T), w, words, cum, steps).T

        rows = x.reshape(-1, x.shape[-1])
        count = rows.shape[0]
        if not isinstance(count, int) or count < 2 * CSR_TILE:  # symbolic (jax.export) or small: one tile
            return tile(rows).reshape(x.shape[:-1] + w.shape[:1])
        whole = count - count % CSR_TILE
        y = jax.lax.map(tile, rows[:whole].reshape(-1, CSR_TILE, rows.shape[1])).reshape(whole, -1)
        y = jnp.concatenate([y, tile(rows[whole:])]) if whole < count else y
        return y.reshape(x.shape[:-1] + w.shape[:1])

    return jax.lax.cond(most <= budget, sparse, _product, w, x, words, cum)
