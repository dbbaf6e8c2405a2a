"""A NIR graph compiled by nircomp for the step solver: a standalone module.

It imports only jax, numpy and the standard-library modules its kernels import; the weights are in
weights.npz beside it.

    y = run(x)                         # x: [T, *input shape], or {input name: array} for several inputs
    y, rec = run(x, record=["lif1"])   # rec: {NIR node name: [T, *shape]}
    ys = jax.vmap(run)(xs)             # a batch

The first part is the text of nircomp/kernels/step.py, the op semantics the Equinox backend runs too;
the second runs the schedule: a "seq" stage applies a kernel to the whole [T, ...] sequence, a "scan"
stage steps its nodes over time with jax.lax.scan. NODE_OF_LINE maps the lines that compute a node to
its name; an exception raised there carries a note naming the node.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


# ================================================================== kernels: nircomp/kernels/step.py
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

# ================================================================== the compiled graph
# compiled from 'recurrent_subgraph.nir'
DT = 0.001
WEIGHTS_FILE = "weights.npz"


class Semantics:
    """The resolved step-solver options (read by the kernels as attributes; frozen)."""

    __slots__ = ()
    method = 'euler'
    cuba_order = 'current-first'
    reset = 'value'
    reset_timing = 'same-step'
    threshold = 'gt'
    spike = 'unit'
    spike_count = 'single'
    honour_r = True
    honour_w_in = True
    honour_v_leak = True
    honour_v_reset = True
    input_scale = 'dt/tau'
    surrogate = 'superspike'
    slope = 25.0
    forward = 'heaviside'
    fire_timing = 'after-update'
    reset_after_leak = ()
    flatten_order = 'channels-first'
    init = 'zero'
    syn_leak = 'zero'
    v_floor = ()
    decayed_input = ()
    v_leak_as = 'rest'
    layer_dt = 'global'


SEM = Semantics()
# input -> shape of one time step
INPUTS = {
    'input': (12,),
}
OUTPUTS = ('output',)
# NIR node -> the entry whose output it is
NAMES = {
    'fc1': 'fc1',
    'fc2': 'li2/dense',
    'input': 'input',
    'li2': 'li2',
    'lif1.lif': 'lif1.lif',
    'lif1.w_rec': 'lif1.w_rec',
    'output': 'output',
}
# NIR node -> why its output cannot be recorded
LOST = {}
# the entries later stages read, and the outputs
NEEDED = frozenset(('input', 'output'))


def _load_weights():
    """{node: {parameter: array}} from WEIGHTS_FILE in this module's folder."""
    folder = __file__[: max(__file__.rfind("/"), __file__.rfind("\\")) + 1]
    with np.load(folder + WEIGHTS_FILE) as f:
        return {
            'fc1': {
                'weight': jnp.asarray(f['fc1.weight']),
            },
            'li2': {
                'weight': jnp.asarray(f['li2.weight']),
                'tau_syn': jnp.asarray(f['li2.tau_syn']),
                'tau_mem': jnp.asarray(f['li2.tau_mem']),
                'r': jnp.asarray(f['li2.r']),
                'v_leak': jnp.asarray(f['li2.v_leak']),
                'w_in': jnp.asarray(f['li2.w_in']),
            },
            'lif1.lif': {
                'tau_syn': jnp.asarray(f['lif1_lif.tau_syn']),
                'tau_mem': jnp.asarray(f['lif1_lif.tau_mem']),
                'r': jnp.asarray(f['lif1_lif.r']),
                'v_leak': jnp.asarray(f['lif1_lif.v_leak']),
                'v_threshold': jnp.asarray(f['lif1_lif.v_threshold']),
                'v_reset': jnp.asarray(f['lif1_lif.v_reset']),
                'w_in': jnp.asarray(f['lif1_lif.w_in']),
            },
            'lif1.w_rec': {
                'weight': jnp.asarray(f['lif1_w_rec.weight']),
            },
        }


PARAMS = _load_weights()


def _p(params, node, keys):
    """The parameters a kernel reads: those of `keys` the node has (runner._p)."""
    node = params.get(node, {})
    return {k: node[k] for k in keys if k in node}


# stage 1 (scan): 'fc1' (Linear), 'lif1.lif' (CubaLIF), 'li2/dense' (Linear), 'li2' (CubaLI), 'lif1.w_rec' (Linear),
#   'output' (Output)
def stage_1(params, values, dtype, emit):
    p_fc1 = _p(params, 'fc1', ('weight',))
    p_lif1_lif = _p(params, 'lif1.lif', ('tau_syn', 'tau_mem', 'r', 'v_leak', 'v_threshold', 'v_reset', 'w_in'))
    p_li2_dense = _p(params, 'li2', ('weight',))
    p_li2 = _p(params, 'li2', ('tau_syn', 'tau_mem', 'r', 'v_leak', 'w_in'))
    p_lif1_w_rec = _p(params, 'lif1.w_rec', ('weight',))
    init_lif1_lif = initial_state('CubaLIF', (38,), dtype, p_lif1_lif, SEM, 0)
    init_li2 = initial_state('CubaLI', (7,), dtype, p_li2, SEM, 0)
    prev_lif1_w_rec = jnp.broadcast_to(dense(p_lif1_w_rec, jnp.zeros((38,), dtype)), (38,)).astype(dtype)

    def step(carry, xs):
        state, prev = carry
        fc1 = dense(p_fc1, xs['input'])
        state_lif1_lif, lif1_lif = cubalif_step(p_lif1_lif, state['lif1.lif'], fc1 + prev['lif1.w_rec'], SEM, DT)
        li2_dense = dense(p_li2_dense, lif1_lif)
        state_li2, li2 = cubali_step(p_li2, state['li2'], li2_dense, SEM, DT)
        lif1_w_rec = dense(p_lif1_w_rec, lif1_lif)
        output = li2
        out = {
            'fc1': fc1,
            'lif1.lif': lif1_lif,
            'li2/dense': li2_dense,
            'li2': li2,
            'lif1.w_rec': lif1_w_rec,
            'output': output,
        }
        state = {
            'lif1.lif': state_lif1_lif,
            'li2': state_li2,
        }
        prev = {
            'lif1.w_rec': lif1_w_rec,
        }
        return (state, prev), {n: y for n, y in out.items() if n in emit}

    state = {
        'lif1.lif': init_lif1_lif,
        'li2': init_li2,
    }
    prev = {
        'lif1.w_rec': prev_lif1_w_rec,
    }
    xs = {
        'input': values['input'],
    }
    _, ys = jax.lax.scan(step, (state, prev), xs)
    return ys


def _inputs(x):
    """{input: array} from x ([T, *shape] for one input, or a dict), checked; integers become floats."""
    names = tuple(INPUTS)
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        if missing:
            raise ValueError(f"missing input(s) {', '.join(missing)}; the graph's inputs are {', '.join(names)}")
        data = {n: jnp.asarray(x[n]) for n in names}
    elif len(names) == 1:
        data = {names[0]: jnp.asarray(x)}
    else:
        raise ValueError(f"the graph has {len(names)} inputs ({', '.join(names)}); pass a dict")
    for n, arr in data.items():
        want, got = INPUTS[n], tuple(arr.shape[1:])
        if got != want:
            hint = " (batch with jax.vmap)" if got[1:] == want else ""
            raise ValueError(f"input '{n}' has shape {list(arr.shape)}, expected [T, {', '.join(map(str, want))}]"
                             + hint)
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            data[n] = arr.astype(jnp.result_type(float))
    return data


def _entry_of(name):
    if name in NAMES:
        return NAMES[name]
    if name in LOST:
        raise ValueError(f"cannot record node '{name}': {LOST[name]} (compile with a pipeline without "
                         "canonicalize to record it)")
    raise ValueError(f"cannot record unknown node '{name}'; known: {', '.join(sorted(NAMES))}")


def _run(x, record, params):
    inputs = _inputs(x)
    keep = {_entry_of(name) for name in record}
    values = dict(inputs)
    # state in the promoted dtype of inputs and parameters
    dtype = jnp.result_type(*inputs.values(), *jax.tree_util.tree_leaves(params))
    values.update(stage_1(params, values, dtype, keep | NEEDED))
    y = {n: values[n] for n in OUTPUTS}
    y = y[OUTPUTS[0]] if len(OUTPUTS) == 1 else y
    if not record:
        return y
    return y, {name: values[_entry_of(name)] for name in record}


def _failing_node(tb):
    """The node of the innermost line of this module in traceback `tb` that computes one (or None)."""
    node = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == __file__:
            node = NODE_OF_LINE.get(tb.tb_lineno, node)
        tb = tb.tb_next
    return node


def run(x, record=(), params=None):
    """Simulate over the time axis of x: y, or (y, {node: [T, *shape]}) when `record` names nodes.

    x: [T, *input shape] (one input) or {input name: array}; params: {node: {parameter: array}}
    (default: the weights of weights.npz, PARAMS).
    """
    try:
        return _run(x, record, PARAMS if params is None else params)
    except Exception as err:
        node = _failing_node(err.__traceback__)
        if node is not None:
            err.add_note(f"raised in the generated code of NIR node {node!r} ({__file__})")
        raise


NODE_OF_LINE = {
    507: 'fc1',
    508: 'lif1.lif',
    509: 'fc2',
    510: 'li2',
    511: 'lif1.w_rec',
    512: 'lif1.lif',
    513: 'li2',
    514: 'lif1.w_rec',
    518: 'fc1',
    519: 'lif1.lif',
    520: 'fc2',
    521: 'li2',
    522: 'lif1.w_rec',
    523: 'output',
}
