"""The op-kind registry: one `OpKind` entry per primitive.

Each entry declares the kind's parameters (required and optional, with the default NIR gives an absent
one), whether it carries state, which parameters are time constants, and its shape rule. Adding a
primitive is one `register_kind(...)` call here; loading, saving, verification and shape inference
read this table and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]
Params = Mapping[str, Any]


class ShapeError(ValueError):
    """A shape rule cannot be satisfied; the message says which parameter and why."""


@dataclass(frozen=True)
class OpKind:
    """What the compiler knows about one kind of node.

    `shape(params, in_shape)` returns `(in_shape, out_shape)`. It receives the shape arriving on the
    node's input edge (None when unknown) and must check it against what the parameters declare.
    """

    name: str
    required: tuple[str, ...] = ()
    optional: Mapping[str, Callable[[dict], Any] | None] = field(default_factory=dict)
    shape: Callable[[Params, Shape | None], tuple[Shape | None, Shape | None]] = None  # type: ignore[assignment]
    stateful: bool = False
    time_params: tuple[str, ...] = ()  # must be > 0 (time constants)
    nonneg_params: tuple[str, ...] = ()  # must be >= 0 (delays)
    elementwise: tuple[str, ...] = ()  # per-neuron parameters, all of the node's shape
    nir: bool = True  # a NIR 1.0 primitive (False: a compiler kind such as a fused node)
    doc: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.required + tuple(self.optional)


KINDS: dict[str, OpKind] = {}

# Parameters that describe structure (shapes, windows, dims) rather than values a solver computes with;
# every other numeric parameter is a value (weights, time constants, thresholds), whatever its dtype in
# the file (an integer v_threshold=1 is a value).
STRUCTURAL_PARAMS = frozenset({"shape", "stride", "padding", "dilation", "groups", "kernel_size", "start_dim",
                               "end_dim", "input_shape", "input_type", "delay"})


def register_kind(kind: OpKind) -> OpKind:
    if kind.name in KINDS:
        raise ValueError(f"op kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> OpKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(name) from None


# --------------------------------------------------------------------------- shape helpers
def as_shape(x: Any) -> Shape:
    """A shape from whatever a file holds (array, list, scalar) as a tuple of Python ints."""
    arr = np.asarray(x)
    if arr.ndim == 0:
        return (int(arr),)
    return tuple(int(v) for v in arr.reshape(-1))


def _expect(in_shape: Shape | None, declared: Shape, what: str) -> Shape:
    if in_shape is not None and tuple(in_shape) != tuple(declared):
        raise ShapeError(f"input of shape {list(in_shape)} does not match {what} {list(declared)}")
    return declared


def _elementwise(*names: str) -> Callable[[Params, Shape | None], tuple[Shape | None, Shape | None]]:
    """Input and output have the shape of the per-neuron parameters `names` (which must agree). A 0-d
    (scalar) parameter applies to every neuron, as real exports write for default-valued cells; when
    all are scalars the shape comes from the input."""

    def rule(params: Params, in_shape: Shape | None) -> tuple[Shape | None, Shape | None]:
        shapes = {n: tuple(np.shape(params[n])) for n in names if n in params}
        arrays = {n: s for n, s in shapes.items() if s != ()}
        if len(set(arrays.values())) > 1:
            detail = ", ".join(f"{n}{list(s)}" for n, s in shapes.items())
            raise ShapeError(f"per-neuron parameters differ in shape: {detail}")
        if not arrays:
            return in_shape, in_shape
        first, declared = next(iter(arrays.items()))
        shape = _expect(in_shape, declared, f"the shape of {first}")
        return shape, shape

    return rule


def _dense(params: Params, in_shape: Shape | None) -> tuple[Shape, Shape]:
    w = np.shape(params["weight"])
    if len(w) < 2:
        raise ShapeError(f"weight must be at least 2-D, got shape {list(w)}")
    declared_in, out = tuple(w[:-2]) + (w[-1],), tuple(w[:-2]) + (w[-2],)
    _expect(in_shape, declared_in, "the weight's input size")
    if "bias" in params:
        b = tuple(np.shape(params["bias"]))
        if b not in ((), (1,), out, out[-1:]):
            raise ShapeError(f"bias of shape {list(b)} does not fit output shape {list(out)}")
    return declared_in, out


def per_dim(value: Any, ndim: int, name: str) -> tuple[int, ...]:
    """An int or per-dimension parameter (stride, padding, ...) as `ndim` ints; one value applies to all."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        return (int(arr),) * ndim
    vals = tuple(int(v) for v in arr.reshape(-1))
    if len(vals) == 1:
        return vals * ndim
    if len(vals) != ndim:
        raise ShapeError(f"{name} has {len(vals)} values, expected {ndim}")
    return vals


def _window_out(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length of a sliding window; `pad_total` is the padding of both ends together."""
    if stride <= 0:
        raise ShapeError(f"stride must be positive, got {stride}")
    if kernel <= 0 or dilation <= 0:
        raise ShapeError(f"kernel size and dilation must be positive, got {kernel} and {dilation}")
    n = (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1
    if n <= 0:
        raise ShapeError(
            f"window of size {kernel} (dilation {dilation}) does not fit input size {size} "
            f"with total padding {pad_total}")
    return n


def conv_padding(padding: Any, ndim: int, kernel: tuple[int, ...],
                 dilation: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Per-dimension (low, high) padding, PyTorch conventions ('same' puts the odd pad high)."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ShapeError(f"padding must be 'same', 'valid' or integers, got {padding!r}")
    return tuple((p, p) for p in per_dim(padding, ndim, "padding"))


def _conv(ndim: int):
    def rule(params: Params, in_shape: Shape | None) -> tuple[Shape, Shape]:
        w = np.shape(params["weight"])
        if len(w) != ndim + 2:
            raise ShapeError(f"weight must be {ndim + 2}-D (C_out, C_in/groups, *kernel), got {list(w)}")
        groups = int(np.asarray(params["groups"]))
        if groups <= 0 or w[0] % groups:
            raise ShapeError(f"groups={groups} must be positive and divide C_out={w[0]}")
        channels = w[1] * groups
        kernel = tuple(w[2:])
        stride = per_dim(params["stride"], ndim, "stride")
        dilation = per_dim(params["dilation"], ndim, "dilation")
        pads = conv_padding(params["padding"], ndim, kernel, dilation)
        if isinstance(params["padding"], str) and params["padding"] == "same" and any(s != 1 for s in stride):
            raise ShapeError("padding='same' needs stride 1")
        declared = params.get("input_shape")
        spatial: tuple[int, ...] | None = None
        if declared is not None:
            spatial = as_shape(declared)
            if len(spatial) != ndim:
                raise ShapeError(f"input_shape has {len(spatial)} values, expected {ndim}")
        if in_shape is not None:
            if len(in_shape) != ndim + 1 or in_shape[0] != channels:
                raise ShapeError(
                    f"input of shape {list(in_shape)} does not match ({channels}, "
                    + ", ".join("N" for _ in range(ndim)) + ") from the weight's C_in*groups")
            if spatial is not None and tuple(in_shape[1:]) != spatial:
                raise ShapeError(f"input of shape {list(in_shape)} does not match input_shape {list(spatial)}")
            spatial = tuple(in_shape[1:])
        if spatial is None:
            return None, None
        out = tuple(_window_out(n, k, s, lo + hi, d)
                    for n, k, s, (lo, hi), d in zip(spatial, kernel, stride, pads, dilation))
        return (channels, *spatial), (int(w[0]), *out)

    return rule


def _pool(params: Params, in_shape: Shape | None) -> tuple[Shape | None, Shape | None]:
    kernel = per_dim(params["kernel_size"], 2, "kernel_size")
    stride = per_dim(params["stride"], 2, "stride")
    pad = per_dim(params["padding"], 2, "padding")
    if in_shape is None:
        return None, None
    if len(in_shape) != 3:
        raise ShapeError(f"input must be (C, H, W), got {list(in_shape)}")
    out = tuple(_window_out(n, k, s, 2 * p, 1) for n, k, s, p in zip(in_shape[1:], kernel, stride, pad))
    return tuple(in_shape), (in_shape[0], *out)


def flatten_shape(in_shape: Shape, start_dim: int, end_dim: int) -> Shape:
    """torch.flatten on an unbatched shape (NIR's dims exclude the batch axis)."""
    n = len(in_shape)
    s = start_dim + n if start_dim < 0 else start_dim
    e = end_dim + n if end_dim < 0 else end_dim
    if not (0 <= s < n and 0 <= e < n) or s > e:
        raise ShapeError(f"start_dim={start_dim}, end_dim={end_dim} do not fit input shape {list(in_shape)}")
    return tuple(in_shape[:s]) + (math.prod(in_shape[s:e + 1]),) + tuple(in_shape[e + 1:])


def _flatten(params: Params, in_shape: Shape | None) -> tuple[Shape | None, Shape | None]:
    declared = params.get("input_type")
    if declared is not None:
        declared = as_shape(declared)
        in_shape = _expect(in_shape, declared, "the declared input_type")
    if in_shape is None:
        return None, None
    start, end = int(np.asarray(params["start_dim"])), int(np.asarray(params["end_dim"]))
    return tuple(in_shape), flatten_shape(tuple(in_shape), start, end)


def _io(params: Params, in_shape: Shape | None) -> tuple[Shape, Shape]:
    shape = _expect(in_shape, as_shape(params["shape"]), "the declared shape")
    return shape, shape


def _identity(params: Params, in_shape: Shape | None) -> tuple[Shape | None, Shape | None]:
    if "shape" in params:
        return _io(params, in_shape)
    return in_shape, in_shape


# --------------------------------------------------------------------------- the NIR 1.0 kinds
def _zeros_like(name: str):
    return lambda p: np.zeros_like(np.asarray(p[name]))


def _ones_like(name: str):
    return lambda p: np.ones_like(np.asarray(p[name]))


_LIF = ("tau", "r", "v_leak", "v_threshold", "v_reset")
_CUBA = ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")

register_kind(OpKind("Input", ("shape",), shape=_io, doc="graph input"))
register_kind(OpKind("Output", ("shape",), shape=_io, doc="graph output"))
register_kind(OpKind("Identity", (), {"shape": None}, shape=_identity, doc="y = x"))
register_kind(OpKind("Affine", ("weight", "bias"), shape=_dense, doc="y = W x + b"))
register_kind(OpKind("Linear", ("weight",), shape=_dense, doc="y = W x"))
register_kind(OpKind("Scale", ("scale",), shape=_elementwise("scale"), doc="y = s * x"))
_CONV_OPT = {"input_shape": None}
register_kind(OpKind("Conv1d", ("weight", "stride", "padding", "dilation", "groups", "bias"), _CONV_OPT,
                     shape=_conv(1), doc="1-d cross-correlation, PyTorch conventions"))
register_kind(OpKind("Conv2d", ("weight", "stride", "padding", "dilation", "groups", "bias"), _CONV_OPT,
                     shape=_conv(2), doc="2-d cross-correlation, PyTorch conventions"))
register_kind(OpKind("Flatten", (), {"start_dim": lambda p: np.asarray(1), "end_dim": lambda p: np.asarray(-1),
                                     "input_type": None}, shape=_flatten, doc="torch.flatten, no batch axis"))
register_kind(OpKind("SumPool2d", ("kernel_size", "stride", "padding"), shape=_pool, doc="2-d sum pooling"))
register_kind(OpKind("AvgPool2d", ("kernel_size", "stride", "padding"), shape=_pool, doc="2-d average pooling"))
register_kind(OpKind("Delay", ("delay",), shape=_elementwise("delay"), stateful=True,
                     nonneg_params=("delay",), elementwise=("delay",), doc="y(t) = x(t - delay)"))
register_kind(OpKind("Threshold", ("threshold",), shape=_elementwise("threshold"),
                     elementwise=("threshold",), doc="z = x > threshold"))
register_kind(OpKind("I", ("r",), shape=_elementwise("r"), stateful=True, elementwise=("r",),
                     doc="integrator: dv/dt = r I"))
register_kind(OpKind("IF", ("r", "v_threshold"), {"v_reset": _zeros_like("v_threshold")},
                     shape=_elementwise("r", "v_threshold", "v_reset"), stateful=True,
                     elementwise=("r", "v_threshold", "v_reset"), doc="integrate-and-fire"))
register_kind(OpKind("LI", ("tau", "r", "v_leak"), shape=_elementwise("tau", "r", "v_leak"),
                     stateful=True, time_params=("tau",), elementwise=("tau", "r", "v_leak"),
                     doc="leaky integrator"))
register_kind(OpKind("LIF", ("tau", "r", "v_leak", "v_threshold"), {"v_reset": _zeros_like("v_threshold")},
                     shape=_elementwise(*_LIF), stateful=True, time_params=("tau",), elementwise=_LIF,
                     doc="leaky integrate-and-fire"))
register_kind(OpKind("CubaLI", ("tau_syn", "tau_mem", "r", "v_leak"), {"w_in": _ones_like("v_leak")},
                     shape=_elementwise("tau_syn", "tau_mem", "r", "v_leak", "w_in"), stateful=True,
                     time_params=("tau_syn", "tau_mem"),
                     elementwise=("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
                     doc="current-based leaky integrator"))
register_kind(OpKind("CubaLIF", ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold"),
                     {"v_reset": _zeros_like("v_threshold"), "w_in": _ones_like("v_threshold")},
                     shape=_elementwise(*_CUBA), stateful=True, time_params=("tau_syn", "tau_mem"),
                     elementwise=_CUBA, doc="current-based leaky integrate-and-fire"))

NIR_KINDS: tuple[str, ...] = tuple(KINDS)
NEURON_KINDS = ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
DENSE_KINDS = ("Affine", "Linear")


# --------------------------------------------------------------------------- fused kinds
def _fused(neuron: str) -> OpKind:
    base = KINDS[neuron]

    def rule(params: Params, in_shape: Shape | None):
        dense_in, dense_out = _dense(params, in_shape)
        _, neuron_out = base.shape({k: v for k, v in params.items() if k in base.param_names}, dense_out)
        return dense_in, neuron_out

    return OpKind(f"Dense{neuron}", ("weight",) + base.required, {"bias": None, **base.optional}, shape=rule,
                  stateful=True, time_params=base.time_params, elementwise=base.elementwise, nir=False,
                  doc=f"Affine/Linear feeding a {neuron}, fused (origin keeps both)")


for _n in ("LI", "LIF", "CubaLI", "CubaLIF"):
    register_kind(_fused(_n))

FUSED_KINDS = {f"Dense{n}": n for n in ("LI", "LIF", "CubaLI", "CubaLIF")}
