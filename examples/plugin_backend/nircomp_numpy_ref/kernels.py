"""NumPy kernels of the default "nir" step semantics: one time step of one sample (no time or batch axis).

Neurons advance by forward Euler with the input held over the step: tau dv/dt = v_leak - v + r x becomes
v += dt / tau * (v_leak + r x - v). A spiking neuron (IF, LIF, CubaLIF) fires when v > v_threshold, with
amplitude 1, and its membrane is set to v_reset in the same step. CubaLI/CubaLIF first update the
synaptic current (tau_syn di/dt = w_in x - i), then drive the membrane with the updated current.
Windowed ops follow PyTorch: cross-correlation, padding given as (low, high) per spatial axis, average
pooling dividing by the window size (padding counted).
"""

from __future__ import annotations

import itertools

import numpy as np


# ----------------------------------------------------------------------------- stateless
def dense(p, x):
    """Affine/Linear: W x (+ b)."""
    y = p["weight"] @ x
    return y + p["bias"] if "bias" in p else y


def _window(offset, dilation, stride, out):
    """The strided slices that pick, for every output position, the input under kernel tap `offset`."""
    return tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offset, dilation, stride, out))


def conv(p, x, stride, padding, dilation, groups):
    """Conv1d/Conv2d: x [C_in, *S], weight [C_out, C_in/groups, *K]; a sum over the kernel taps."""
    w = p["weight"]
    x = np.pad(x, ((0, 0), *padding))
    kernel = w.shape[2:]
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(x.shape[1:], kernel, stride, dilation)]
    c_in, c_out = w.shape[1], w.shape[0] // groups
    y = np.zeros((w.shape[0], *out), x.dtype)
    for offset in itertools.product(*map(range, kernel)):
        taps = x[(slice(None), *_window(offset, dilation, stride, out))]  # [C_in, *out]
        for g in range(groups):
            w_g = w[(slice(g * c_out, (g + 1) * c_out), slice(None), *offset)]  # [c_out, c_in]
            y[g * c_out:(g + 1) * c_out] += np.tensordot(w_g, taps[g * c_in:(g + 1) * c_in], axes=1)
    return y + np.reshape(p["bias"], (-1,) + (1,) * len(out))


def pool(x, kernel, stride, padding, average):
    """SumPool2d/AvgPool2d over the last two axes of x [C, H, W] (zero padding on both sides)."""
    x = np.pad(x, ((0, 0), *((q, q) for q in padding)))
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:], kernel, stride)]
    y = np.zeros((x.shape[0], *out), x.dtype)
    for offset in itertools.product(*map(range, kernel)):
        y += x[(slice(None), *_window(offset, (1, 1), stride, out))]
    return y / float(np.prod(kernel)) if average else y


def threshold(p, x):
    return (x > p["threshold"]).astype(x.dtype)


# ----------------------------------------------------------------------------- neurons: (p, state, x, dt) -> (state, y)
def _euler(v, target, tau, dt):
    return v + dt / tau * (target - v)


def _fire(p, v):
    z = (v > p["v_threshold"]).astype(v.dtype)
    return np.where(z > 0, p["v_reset"], v).astype(v.dtype), z


def integrator(p, v, x, dt):
    v = v + p["r"] * x
    return v, v


def if_(p, state, x, dt):
    v, z = _fire(p, state[0] + p["r"] * x)
    return (v, z), z


def li(p, v, x, dt):
    v = _euler(v, p["v_leak"] + p["r"] * x, p["tau"], dt)
    return v, v


def lif(p, state, x, dt):
    v, z = _fire(p, _euler(state[0], p["v_leak"] + p["r"] * x, p["tau"], dt))
    return (v, z), z


def _cuba(p, i, v, x, dt):
    i = _euler(i, p["w_in"] * x, p["tau_syn"], dt)
    return i, _euler(v, p["v_leak"] + p["r"] * i, p["tau_mem"], dt)


def cubali(p, state, x, dt):
    i, v = _cuba(p, *state, x, dt)
    return (i, v), v


def cubalif(p, state, x, dt):
    i, v = _cuba(p, state[0], state[1], x, dt)
    v, z = _fire(p, v)
    return (i, v, z), z


def delay(steps, buf, x):
    """y(t) = x(t - steps) per element; buf[k] holds x(t - k)."""
    buf = np.concatenate([x[None], buf[:-1]])
    return buf, np.take_along_axis(buf, steps[None], axis=0)[0]


NEURONS = {"I": integrator, "IF": if_, "LI": li, "LIF": lif, "CubaLI": cubali, "CubaLIF": cubalif}


def init_state(kind, shape, dtype, delay_steps=0):
    """Zero state: v (I, LI), (v, z) for IF/LIF, (i, v) for CubaLI, (i, v, z) for CubaLIF, a buffer for Delay."""
    z = np.zeros(shape, dtype)
    return {"I": z, "LI": z, "IF": (z, z), "LIF": (z, z), "CubaLI": (z, z), "CubaLIF": (z, z, z),
            "Delay": np.zeros((delay_steps + 1, *shape), dtype)}[kind]
