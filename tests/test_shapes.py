"""Shape inference against independent references: jax.lax's own conv/pool output shapes, numpy reshape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nircomp
from nircomp.errors import CompileError


def _graph(node, in_shape):
    return nir.NIRGraph(nodes={"input": nir.Input(np.array(in_shape)), "n": node,
                               "output": nir.Output(np.array([1]))},
                        edges=[("input", "n"), ("n", "output")], type_check=False)


def _inferred(node, in_shape):
    """The node's output shape as nircomp infers it (the Output's declared shape is left unconstrained)."""
    from nircomp.load import graph_from_dict, nir_to_dict
    from nircomp.shapes import infer_shapes

    d = nir_to_dict(_graph(node, in_shape))
    del d["nodes"]["output"]
    d["edges"] = [("input", "n")]
    g = graph_from_dict(d)
    infer_shapes(g)
    return g.op("n").output_shape


@settings(max_examples=60, deadline=None)
@given(c_in=st.integers(1, 3), groups=st.integers(1, 2), c_out_per=st.integers(1, 3), h=st.integers(5, 12),
       w=st.integers(5, 12), kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2))
def test_conv2d_shape_matches_lax(c_in, groups, c_out_per, h, w, kh, kw, sh, sw, ph, pw, dh, dw):
    """Conv2d output size = what jax.lax.conv_general_dilated returns for the same stride/padding/dilation/groups."""
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        return
    weight = np.zeros((c_out_per * groups, c_in, kh, kw), np.float32)
    node = nir.Conv2d(input_shape=None, weight=weight, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                      groups=groups, bias=np.zeros(c_out_per * groups, np.float32))
    ref = jax.eval_shape(lambda x: jax.lax.conv_general_dilated(
        x, jnp.asarray(weight), (sh, sw), [(ph, ph), (pw, pw)], rhs_dilation=(dh, dw),
        feature_group_count=groups), jax.ShapeDtypeStruct((1, c_in * groups, h, w), jnp.float32)).shape
    assert _inferred(node, [c_in * groups, h, w]) == tuple(ref[1:])


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("k,d", [(3, 1), (4, 1), (3, 2)])
def test_conv1d_string_padding_matches_lax(padding, k, d):
    """'same' keeps the length (stride 1) and 'valid' pads nothing, as lax's SAME/VALID with dilation."""
    weight = np.zeros((4, 2, k), np.float32)
    node = nir.Conv1d(input_shape=None, weight=weight, stride=1, padding=padding, dilation=d, groups=1,
                      bias=np.zeros(4, np.float32))
    ref = jax.eval_shape(lambda x: jax.lax.conv_general_dilated(x, jnp.asarray(weight), (1,), padding.upper(),
                                                                rhs_dilation=(d,)),
                         jax.ShapeDtypeStruct((1, 2, 11), jnp.float32)).shape
    assert _inferred(node, [2, 11]) == tuple(ref[1:])


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 4), h=st.integers(4, 12), w=st.integers(4, 12), k=st.integers(1, 3), s=st.integers(1, 3),
       p=st.integers(0, 1), avg=st.booleans())
def test_pool_shape_matches_reduce_window(c, h, w, k, s, p, avg):
    """SumPool2d/AvgPool2d output size = jax.lax.reduce_window's for the same window, stride and padding."""
    if p * 2 > k:
        return
    cls = nir.AvgPool2d if avg else nir.SumPool2d
    node = cls(kernel_size=np.array([k, k]), stride=np.array([s, s]), padding=np.array([p, p]))
    ref = jax.eval_shape(lambda x: jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, k, k), (1, s, s),
                                                         [(0, 0), (p, p), (p, p)]),
                         jax.ShapeDtypeStruct((c, h, w), jnp.float32)).shape
    assert _inferred(node, [c, h, w]) == tuple(ref)


@pytest.mark.parametrize("shape,start,end", [((2, 3, 4), 0, -1), ((2, 3, 4), 1, -1), ((2, 3, 4), 0, 1),
                                             ((2, 3, 4, 5), 1, 2), ((2, 3, 4), -2, -1), ((7,), 0, 0)])
def test_flatten_matches_torch_semantics(shape, start, end):
    """Flatten merges dims start..end inclusive (negative dims count from the end), like torch.flatten."""
    s, e = start % len(shape), end % len(shape)
    expected = np.zeros(shape).reshape(shape[:s] + (-1,) + shape[e + 1:]).shape
    node = nir.Flatten(input_type=None, start_dim=start, end_dim=end)
    assert _inferred(node, list(shape)) == expected


def test_affine_and_neuron_shapes_from_params():
    """Affine maps [in] -> [out] of its weight; neurons keep the shape of their parameters."""
    g = nircomp.load(nir.NIRGraph.from_list(
        nir.Input(np.array([3])), nir.Affine(np.ones((5, 3)), np.zeros(5)),
        nir.LIF(tau=np.ones(5), r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.ones(5)),
        nir.Output(np.array([5])), type_check=False))
    shapes = {n: (op.input_shape, op.output_shape) for n, op in g.ops()}
    assert shapes["affine"] == ((3,), (5,))
    assert shapes["lif"] == ((5,), (5,))


def test_summed_inputs_must_agree():
    """Two edges into one node are summed, so their shapes must be equal; otherwise a located error."""
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "a": nir.Linear(np.ones((4, 3))),
                            "b": nir.Linear(np.ones((5, 3))), "lif": nir.I(r=np.ones(4)),
                            "output": nir.Output(np.array([4]))},
                     edges=[("input", "a"), ("input", "b"), ("a", "lif"), ("b", "lif"), ("lif", "output")],
                     type_check=False)
    with pytest.raises(CompileError, match=r"node 'lif'.*summed"):
        nircomp.load(g)


def test_shape_through_back_edge_only():
    """A pooling node fed only through a cycle still gets its shape (second sweep)."""
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([1, 4, 4])), "i": nir.I(r=np.ones((1, 4, 4))),
                            "pool": nir.SumPool2d(kernel_size=np.array([1, 1]), stride=np.array([1, 1]),
                                                  padding=np.array([0, 0])),
                            "output": nir.Output(np.array([1, 4, 4]))},
                     edges=[("input", "i"), ("i", "pool"), ("pool", "i"), ("i", "output")], type_check=False)
    graph = nircomp.load(g)
    assert graph.op("pool").output_shape == (1, 4, 4)
