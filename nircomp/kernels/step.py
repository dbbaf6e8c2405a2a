"""Step-solver kernels, one per op kind: plain JAX functions of (params, inputs, static options).

Stateless kernels take `x` with any leading axes (time, batch) before the node's own shape, so the
scheduler can apply them to a whole `[T, ...]` sequence at once. Neuron kernels advance one step:
`step(p, state, x, sem, dt, noise=None) -> (state, y)`. `sem` is the resolved Semantics (read by attribute
only); `noise` holds this step's Wiener draws (see `wiener`; None: none, the computation unchanged).
Imports: jax, numpy, math only (the source backend embeds this module).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------- spike function
@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def spike_fn(x, ge, surrogate, slope):
    """Heaviside of x (x > 0, or x >= 0 when `ge`), with a surrogate derivative for gradients."""
    return (x >= 0 if ge else x > 0).astype(x.dtype)


@spike_fn.defjvp
def _spike_jvp(ge, surrogate, slope, primals, tangents):
    (x,), (dx,) = primals, tangents
    return spike_fn(x, ge, surrogate, slope), surrogate_grad(x, surrogate, slope) * dx


def surrogate_grad(x, surrogate, slope):
    """d spike / d x as the named surrogate: SuperSpike (Zenke & Ganguli), fast sigmoid, arctan, sigmoid."""
    if surrogate == "superspike":
        return 1.0 / (slope * jnp.abs(x) + 1.0) ** 2
    if surrogate == "fast-sigmoid":
        return slope / (slope * jnp.abs(x) + 1.0) ** 2
    if surrogate == "arctan":
        return (slope / 2.0) / (1.0 + (math.pi / 2.0 * slope * x) ** 2)
    if surrogate == "sigmoid":
        s = jax.nn.sigmoid(slope * x)
        return slope * s * (1.0 - s)
    raise ValueError(f"unknown surrogate {surrogate!r}")


def _amp(sem, dt):
    return 1.0 / dt if sem.spike == "dirac" else 1.0


def spike(x, sem):
    """The spike function of the semantics: Heaviside with a surrogate gradient, or the smooth sigmoid."""
    if sem.forward == "smooth":
        return jax.nn.sigmoid(sem.slope * x)
    return spike_fn(x, sem.threshold == "ge", sem.surrogate, sem.slope)


def fire(p, v, sem, dt):
    """Spikes of membrane v and the membrane after reset: (v, z) with z of amplitude 1 (or 1/dt)."""
    th, v_reset = p["v_threshold"], _v_reset(p, sem)
    z = spike(v - th, sem)
    if sem.spike_count == "multi":
        unit = th - v_reset
        n = jnp.maximum(jnp.floor((v - v_reset) / unit), 0.0)
        n = jax.lax.stop_gradient(n - z) + z  # counts forward, surrogate gradient through the first spike
        z = n
    if sem.reset_timing == "same-step":
        v = reset(v, z, p, sem)
    return v, z


def _v_reset(p, sem):
    return p.get("v_reset", 0.0) if sem.honour_v_reset else 0.0


def reset(v, z, p, sem):
    th, v_reset = p["v_threshold"], _v_reset(p, sem)
    if sem.reset == "value":
        # at most one reset per step; not jnp.minimum(z, 1), whose derivative at the tie z = 1 is 1/2
        return v - jnp.where(z > 1.0, 1.0, z) * (v - v_reset)
    if sem.reset == "subtract":
        return v - z * (th - v_reset)
    return v


# ----------------------------------------------------------------------------- stateless kernels
def dense(p, x):
    """y = W x (+ b) over the last axis; any leading axes."""
    y = jnp.einsum("...i,oi->...o", x, p["weight"])
    return y + p["bias"] if "bias" in p else y


def dense_batch_last(p, x):
    """`dense` of values holding a batch as their last axis: [..., i, B] -> [..., o, B] (the bias, if
    any, already [o, 1])."""
    y = jnp.einsum("oi,...ib->...ob", p["weight"], x)
    return y + p["bias"] if "bias" in p else y


def scale(p, x):
    return x * p["scale"]


def _lead(x, ndim):
    """Fold leading axes into one batch axis for lax ops: (x', restore)."""
    lead = x.shape[: x.ndim - ndim]
    flat = x.reshape((-1,) + x.shape[x.ndim - ndim:])
    return flat, lambda y: y.reshape(lead + y.shape[1:])


def conv(p, x, stride, padding, dilation, groups, cl_in=False, cl_out=False):
    """PyTorch-convention cross-correlation (Conv1d/Conv2d), `padding` as ((lo, hi), ...) pairs. `cl_in` /
    `cl_out`: x / the result are channels-last ([..., *spatial, C], see `to_channels_last`)."""
    nd = len(stride)
    flat, restore = _lead(x, nd + 1)
    # XLA:CPU convolves channels-last much faster; NC... in and out are moved to and from it here.
    spatial = "HW"[:nd] if nd <= 2 else "DHW"
    lhs = flat if cl_in else jnp.moveaxis(flat, 1, -1)
    rhs = jnp.moveaxis(p["weight"].astype(flat.dtype), (0, 1), (-1, -2))
    if nd == 2 and groups == 1 and tuple(dilation) == (1, 1) and max(stride) > 1 and lhs.shape[-1] <= S2D_CHANNELS:
        lhs, rhs, stride, padding = _space_to_depth(lhs, rhs, tuple(stride), tuple(padding))
    y = jax.lax.conv_general_dilated(lhs, rhs, tuple(stride), tuple(padding), rhs_dilation=tuple(dilation),
                                     feature_group_count=groups,
                                     dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
    if "bias" in p:
        y = y + p["bias"]
    return restore(y if cl_out else jnp.moveaxis(y, -1, 1))


S2D_CHANNELS = 4  # strided 2-D convolutions of at most this many input channels run as space-to-depth


def _space_to_depth(x, w, stride, padding):
    """A strided convolution of a few input channels as a stride-1 one over blocks: x [N, H, W, C] padded
    and cut into stride-sized blocks [N, H/sh, W/sw, sh*sw*C], w [kh, kw, C, O] zero-padded to whole blocks
    [kh/sh, kw/sw, sh*sw*C, O]; the same products, summed in another order. XLA:CPU convolves 2 input
    channels at a fraction of its speed on 8 (2->16 channels, 5x5, stride 2: 1.7x faster this way)."""
    n, c = x.shape[0], x.shape[-1]
    size, pads, blocks = [], [], []
    for i, (s, (lo, hi)) in enumerate(zip(stride, padding)):
        k, extent = w.shape[i], x.shape[1 + i] + lo + hi
        out = (extent - k) // s + 1
        kb = -(-k // s)  # kernel in blocks
        rows = s * (out - 1 + kb)  # the rows the outputs read, in whole blocks
        pads.append((lo, hi + rows - extent))  # more zeros, or a negative pad: rows no output reads
        size.append(rows // s)
        blocks.append(kb)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    (sh, sw), (bh, bw) = stride, size
    x = x.reshape(n, bh, sh, bw, sw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, bh, bw, sh * sw * c)
    (kh, kw), o = blocks, w.shape[-1]
    w = jnp.pad(w, [(0, kh * sh - w.shape[0]), (0, kw * sw - w.shape[1]), (0, 0), (0, 0)])
    w = w.reshape(kh, sh, kw, sw, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(kh, kw, sh * sw * c, o)
    return x, w, (1, 1), ((0, 0), (0, 0))


def to_channels_last(x):
    """[..., C, H, W] -> [..., H, W, C]: the layout the step loop keeps convolution chains in."""
    return jnp.moveaxis(x, -3, -1)


def to_channels_first(x):
    return jnp.moveaxis(x, -1, -3)


POOL_SLICES = 16  # windows up to this many elements are summed as strided slices (see `pool`)


def pool(x, kernel, stride, padding, average, cl=False):
    """Sum (or average, counting padding as PyTorch does by default) pooling over the last two axes (the
    two before the last with `cl`, channels-last).

    Small windows are summed as one strided slice per window element (row-major order; reduce_window's
    sums can differ in the last bit): XLA:CPU fuses that into one loop, where reduce_window on
    [N, C, H, W] ran ~5x slower inside the step loop (benchmarks/RESULTS.md)."""
    (kh, kw), (sh, sw) = kernel, stride
    if kh * kw > POOL_SLICES:
        if cl:
            return to_channels_last(pool(to_channels_first(x), kernel, stride, padding, average))
        flat, restore = _lead(x, 3)
        window, strides = (1, 1) + tuple(kernel), (1, 1) + tuple(stride)
        pads = ((0, 0), (0, 0)) + tuple((q, q) for q in padding)
        y = restore(jax.lax.reduce_window(flat, jnp.zeros((), flat.dtype), jax.lax.add, window, strides, pads))
    else:
        tail = 1 if cl else 0  # axes after W
        if any(padding):
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 2 - tail) + [(q, q) for q in padding] + [(0, 0)] * tail)
        h, w = x.shape[x.ndim - 2 - tail: x.ndim - tail]
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        y = None
        for a in range(kh):
            for b in range(kw):
                idx = (slice(a, a + sh * (oh - 1) + 1, sh), slice(b, b + sw * (ow - 1) + 1, sw))
                part = x[(..., *idx) + (slice(None),) * tail]
                y = part if y is None else y + part
    if average:
        y = y / float(np.prod(kernel))
    return y


def flatten(x, in_shape, out_shape, order="channels-first", cl=False):
    """Reshape the trailing in_shape to out_shape; "channels-last" flattens a [C, H, W] input as [H, W, C].
    `cl`: x holds the [C, H, W] input channels-last."""
    to_vector = order == "channels-last" and len(in_shape) == 3 and len(out_shape) == 1
    if cl != to_vector:
        x = to_channels_first(x) if cl else to_channels_last(x)
    lead = x.shape[: x.ndim - len(in_shape)]
    return x.reshape(lead + tuple(out_shape))


def threshold(p, x, sem, dt):
    return spike(x - p["threshold"], sem) * _amp(sem, dt)


# ----------------------------------------------------------------------------- neuron kernels
def _r(p, sem, kind):
    """r, or 1 where it is ignored (honour_r: True, False, or the tuple of kinds that honour it)."""
    honour = sem.honour_r if isinstance(sem.honour_r, bool) else kind in sem.honour_r
    return p["r"] if honour else 1.0


def _leak(p, sem):
    return p["v_leak"] if sem.honour_v_leak else 0.0


def _syn_leak(p, sem):
    """What the synaptic current relaxes to without input: 0 (NIR) or v_leak (syn_leak="v_leak")."""
    return _leak(p, sem) if sem.syn_leak == "v_leak" else 0.0


def rest_state(p, sem):
    """Initial (membrane, synaptic current) of leaky neurons: zero, or with init="v_leak" the membrane at
    v_leak and the current at its own leak target."""
    if sem.init == "v_leak":
        return _leak(p, sem), _syn_leak(p, sem)
    return 0.0, 0.0


def _floor(v, p, sem, kind):
    """v_floor: clip the membrane of the listed kinds from below at -v_threshold (no gradient to the
    threshold, and none to v where it is clipped, as sinabs' min_v_mem)."""
    if kind not in sem.v_floor:
        return v
    lo = -jax.lax.stop_gradient(p["v_threshold"])
    return jnp.where(v > lo, v, lo)


def _step_dt(p, sem, dt, tau_key):
    """The time step of a leaky node: the compile dt, or with layer_dt="tau/(1+r)" the smallest
    tau/(1 + r) over the node's neurons (r as given, whether or not honoured)."""
    if sem.layer_dt == "global":
        return dt
    return jnp.min(p[tau_key] / (1.0 + p["r"]))


def _relax(v, target, tau, sem, dt):
    """One step of tau dv/dt = target - v with target held: Euler or exact."""
    if sem.method == "exact":
        return target + (v - target) * jnp.exp(-dt / tau)
    return v + dt / tau * (target - v)


def _drive(v, u, tau, p, sem, dt, decayed=False):
    """Advance tau dv/dt = v_leak - v + u (u = r * input), with the 'one' input-scale variant (the input
    added after the decay, or before it when `decayed`) and v_leak as a rest value or a bias."""
    leak = _leak(p, sem)
    if sem.v_leak_as == "bias":
        u, leak = u + leak, 0.0
    if sem.input_scale == "one":
        return _relax(v + u, leak, tau, sem, dt) if decayed else _relax(v, leak, tau, sem, dt) + u
    return _relax(v, leak + u, tau, sem, dt)


def wiener(u, noise, which, p, sem, dt, tau_key=None):
    """u + sigma sqrt(dt) xi, the Wiener increment of state `which` ("v" or "i") over the node's step, when
    `noise` ({which: (sigma, xi)}, xi ~ N(0, 1) drawn by the caller) holds one; else u itself."""
    if not noise or which not in noise:
        return u
    sigma, xi = noise[which]
    return u + sigma * jnp.sqrt(_step_dt(p, sem, dt, tau_key) if tau_key else dt) * xi


def integrator_step(p, v, x, sem, dt, noise=None):
    """I: v += r x (an input spike is a unit charge)."""
    v = wiener(v + _r(p, sem, "I") * x, noise, "v", p, sem, dt)
    return v, v


def _late_reset(v, z_prev, p, sem, kind, after_leak):
    """The reset of the previous step's spike (reset_timing="next-step"), before the step's leak and input
    or, for the kinds in reset_after_leak, after them (so the leak does not decay it)."""
    if sem.reset_timing == "next-step" and (kind in sem.reset_after_leak) == after_leak:
        return reset(v, z_prev, p, sem)
    return v


SPIKING = ("IF", "LIF", "CubaLIF")


def emission(state, sem, dt):
    """What a spiking neuron with fire_timing="before-update" emits this step, known from its state alone."""
    return state[-1] * _amp(sem, dt)


def _emit(z, z_prev, sem, dt):
    """The spike a neuron emits this step: this step's, or the previous one's (fire_timing="before-update")."""
    return (z_prev if sem.fire_timing == "before-update" else z) * _amp(sem, dt)


def if_step(p, state, x, sem, dt, noise=None):
    v, z_prev = state
    v = _late_reset(v, z_prev, p, sem, "IF", after_leak=False)
    v = wiener(v + _r(p, sem, "IF") * x, noise, "v", p, sem, dt)
    v = _late_reset(v, z_prev, p, sem, "IF", after_leak=True)
    v, z = fire(p, v, sem, dt)
    return (_floor(v, p, sem, "IF"), z), _emit(z, z_prev, sem, dt)


def li_step(p, v, x, sem, dt, noise=None):
    v = _drive(v, _r(p, sem, "LI") * x, p["tau"], p, sem, _step_dt(p, sem, dt, "tau"), "LI" in sem.decayed_input)
    v = wiener(v, noise, "v", p, sem, dt, "tau")
    return v, v


def lif_step(p, state, x, sem, dt, noise=None):
    v, z_prev = state
    v = _late_reset(v, z_prev, p, sem, "LIF", after_leak=False)
    v = _drive(v, _r(p, sem, "LIF") * x, p["tau"], p, sem, _step_dt(p, sem, dt, "tau"), "LIF" in sem.decayed_input)
    v = wiener(v, noise, "v", p, sem, dt, "tau")
    v = _late_reset(v, z_prev, p, sem, "LIF", after_leak=True)
    v, z = fire(p, v, sem, dt)
    return (_floor(v, p, sem, "LIF"), z), _emit(z, z_prev, sem, dt)


def _cuba(p, i, v, x, sem, dt, kind):
    """Synaptic current and membrane of CubaLI/CubaLIF over one step."""
    w_in = p["w_in"] if sem.honour_w_in else 1.0
    tau_syn, tau_mem, r = p["tau_syn"], p["tau_mem"], _r(p, sem, kind)
    dt = _step_dt(p, sem, dt, "tau_mem")
    if sem.method == "exact" and sem.input_scale == "dt/tau":
        i_inf = w_in * x + _syn_leak(p, sem)
        v_inf = _leak(p, sem) + r * i_inf
        a_s, a_m = jnp.exp(-dt / tau_syn), jnp.exp(-dt / tau_mem)
        d = i - i_inf
        # coupling = tau_syn / (tau_syn - tau_mem) * (a_s - a_m) = dt/tau_mem * a_m * expm1(e) / e with
        # e = dt/tau_mem - dt/tau_syn: no cancellation when the time constants are (nearly) equal
        e = dt / tau_mem - dt / tau_syn
        small = jnp.abs(e) < 1e-4
        safe = jnp.where(small, 1.0, e)
        coupling = dt / tau_mem * a_m * jnp.where(small, 1.0 + e / 2 + e * e / 6, jnp.expm1(safe) / safe)
        if sem.cuba_order == "voltage-first":  # the membrane sees the current held from the previous step
            v_new = _relax(v, _leak(p, sem) + r * i, tau_mem, sem, dt)
        else:
            v_new = v_inf + (v - v_inf) * a_m + r * d * coupling
        return i_inf + d * a_s, v_new
    if sem.input_scale == "dt/tau":
        i_new = _relax(i, w_in * x + _syn_leak(p, sem), tau_syn, sem, dt)
    elif kind in sem.decayed_input:
        i_new = _relax(i + w_in * x, _syn_leak(p, sem), tau_syn, sem, dt)
    else:
        i_new = _relax(i, _syn_leak(p, sem), tau_syn, sem, dt) + w_in * x
    drive = i if sem.cuba_order == "voltage-first" else i_new
    return i_new, _drive(v, r * drive, tau_mem, p, sem, dt)


def cubali_step(p, state, x, sem, dt, noise=None):
    i, v = state
    i, v = _cuba(p, i, v, x, sem, dt, "CubaLI")
    i, v = wiener(i, noise, "i", p, sem, dt, "tau_mem"), wiener(v, noise, "v", p, sem, dt, "tau_mem")
    return (i, v), v


def cubalif_step(p, state, x, sem, dt, noise=None):
    i, v, z_prev = state
    v = _late_reset(v, z_prev, p, sem, "CubaLIF", after_leak=False)
    i, v = _cuba(p, i, v, x, sem, dt, "CubaLIF")
    i, v = wiener(i, noise, "i", p, sem, dt, "tau_mem"), wiener(v, noise, "v", p, sem, dt, "tau_mem")
    v = _late_reset(v, z_prev, p, sem, "CubaLIF", after_leak=True)
    v, z = fire(p, v, sem, dt)
    return (i, _floor(v, p, sem, "CubaLIF"), z), _emit(z, z_prev, sem, dt)


def initial_state(kind, shape, dtype, p, sem, depth=0):
    """The state of a stateful op before the first step: zeros, except leaky membranes and currents under
    init="v_leak" (rest_state); a Delay holds `depth` past inputs."""
    z = jnp.zeros(shape, dtype)
    if kind == "Delay":
        return jnp.zeros((depth,) + tuple(shape), dtype)
    v0, i0 = rest_state(p, sem) if kind in ("LI", "LIF", "CubaLI", "CubaLIF") else (0.0, 0.0)
    states = {"I": lambda: z, "LI": lambda: z + v0, "IF": lambda: (z, z), "LIF": lambda: (z + v0, z),
              "CubaLI": lambda: (z + i0, z + v0), "CubaLIF": lambda: (z + i0, z + v0, z)}
    return states[kind]()


def delay_step(steps, buf, x):
    """y(t) = x(t - d) per neuron, d = `steps` (an int array of the node's shape); buf[k] = x(t - k)."""
    buf = jnp.concatenate([x[None], buf[:-1]], axis=0)
    y = jnp.take_along_axis(buf, jnp.asarray(steps)[None], axis=0)[0]
    return buf, y
