"""The IR printer: value formatting, the text form, and the JSON and dot renderings of the same walk."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from nircomp import Graph, Op, format_graph
from nircomp.printer import format_value

HASH = r"#[0-9a-f]{4}"


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("value,text", [
    ("same", "'same'"),  # string options (padding) print as Python literals
    (np.float64(0.25), "0.25"),  # scalars by their shortest repr
    (np.array(0.1, dtype=np.float32), "0.1"),
    (np.array(3), "3"),
    (np.array([1, 2, 3]), "[1, 2, 3]"),  # small integer arrays (strides, kernel sizes) as lists
    (np.array([[1, 2], [3, 4]], dtype=np.int32), "[1, 2, 3, 4]"),
    (np.array([True, False]), "[True, False]"),
    (np.full(6, 7), "7 homog"),  # one repeated value: `value homog`
    (np.full((2, 3), 0.5, dtype=np.float32), "0.5 homog"),
    (np.array([0.5]), "[0.5]"),  # a single float in brackets (an array, not a scalar)
])
def test_format_value_rules(value, text):
    """Strings, scalars, small int arrays, homogeneous and single-element arrays each have a readable form."""
    assert format_value(value) == text


@pytest.mark.parametrize("value,prefix", [
    (np.arange(6, dtype=np.float32).reshape(2, 3), "f32[2,3]"),
    (np.arange(6, dtype=np.float64), "f64[6]"),
    (np.arange(5), "i64[5]"),
    (np.arange(24, dtype=np.float16).reshape(2, 3, 4), "f16[2,3,4]"),
])
def test_format_value_of_other_arrays_is_dtype_shape_hash(value, prefix):
    """Any other array prints as dtype[shape]#hash (4 hex digits)."""
    assert re.fullmatch(re.escape(prefix) + HASH, format_value(value))


def test_hash_follows_the_values():
    """Equal values give equal text (copies, transposed views); changing one weight changes the hash."""
    w = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3)
    changed = w.copy()
    changed[1, 2] += 1
    assert format_value(w) == format_value(w.copy())
    assert format_value(w) != format_value(changed)
    assert format_value(w.T) == format_value(np.ascontiguousarray(w.T))
    assert format_value(w.T) != format_value(w.reshape(3, 2))  # same bytes, different shape
    assert format_value(w.astype(np.float64)).startswith("f64[2,3]#")


# --------------------------------------------------------------------------- text
W = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
LIF = {"tau": np.full(2, 0.01), "r": np.ones(2), "v_leak": np.zeros(2), "v_threshold": np.ones(2)}


def recurrent(odd_name: str = "rec") -> Graph:
    """input -> fc -> lif -> output, lif -> <odd_name> -> lif (a marked back edge)."""
    g = Graph(name="g", attrs={"solver": "step"})
    g.add_op("input", Op("Input", {"shape": [2]}, (2,), (2,), origin=("input",)))
    g.add_op("fc", Op("Linear", {"weight": W}, (2,), (2,), origin=("fc",)))
    g.add_op("lif", Op("LIF", LIF, (2,), (2,), origin=("lif",), attrs={"z": 1, "a": "b"}))
    g.add_op(odd_name, Op("Linear", {"weight": np.eye(2)}, (2,), (2,), origin=("x", "rec")))
    g.add_op("output", Op("Output", {"shape": [2]}, (2,), (2,)))
    for u, v in [("input", "fc"), ("fc", "lif"), ("lif", odd_name), ("lif", "output")]:
        g.add_edge(u, v)
    g.add_edge(odd_name, "lif", back=True)
    return g


def test_text_form():
    """One line per node in topological order (back edges ignored, ties by name); back edges as @prev;
    origin only when it differs from the name; op attrs sorted after the params; graph attrs in the header."""
    text = format_graph(recurrent())
    lif = "tau=0.01 homog, r=1.0 homog, v_leak=0.0 homog, v_threshold=1.0 homog"
    assert text.splitlines() == [
        "graph g  inputs: %input  outputs: %output  {solver=step}",
        "  %input = Input() : [2]",
        f"  %fc = Linear(%input) : [2] -> [2] {{weight={format_value(W)}}}",
        f"  %lif = LIF(%fc, %rec@prev) : [2] -> [2] {{{lif}, a=b, z=1}}",
        "  %output = Output(%lif) : [2]",
        f"  %rec = Linear(%lif) : [2] -> [2] {{weight={format_value(np.eye(2))}, origin=[x, rec]}}",
    ]


def test_origin_printed_only_when_it_differs_from_the_name():
    """origin=(name,) and origin=() print nothing; a fused or renamed node prints its origin list."""
    g = Graph(name="g")
    for name, origin in [("a", ("a",)), ("b", ()), ("c", ("fc", "c")), ("d", ("old",))]:
        g.add_op(name, Op("Identity", {}, (1,), (1,), origin=origin))
    lines = format_graph(g).splitlines()[1:]
    assert lines == ["  %a = Identity() : [1] -> [1]", "  %b = Identity() : [1] -> [1]",
                     "  %c = Identity() : [1] -> [1] {origin=[fc, c]}", "  %d = Identity() : [1] -> [1] {origin=[old]}"]


def test_unknown_shapes_print_as_question_mark_and_unknown_format_is_an_error():
    """Shapes not yet inferred print as `?`; a format other than text/json/dot is a ValueError."""
    g = Graph(name="g")
    g.add_op("n", Op("Identity", {}))
    assert format_graph(g).splitlines()[1] == "  %n = Identity() : ? -> ?"
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        format_graph(g, "yaml")


# --------------------------------------------------------------------------- json and dot
def test_json_form_is_parseable_and_complete():
    """--format json: the same nodes in the same order, operands with their back flag, params as in text."""
    data = json.loads(format_graph(recurrent(), "json"))
    assert (data["name"], data["inputs"], data["outputs"], data["attrs"]) == ("g", ["input"], ["output"],
                                                                             {"solver": "step"})
    assert [n["name"] for n in data["nodes"]] == ["input", "fc", "lif", "output", "rec"]
    lif = data["nodes"][2]
    assert lif["inputs"] == [{"name": "fc", "back": False}, {"name": "rec", "back": True}]
    assert (lif["kind"], lif["input_shape"], lif["output_shape"]) == ("LIF", [2], [2])
    assert lif["params"]["tau"] == "0.01 homog" and lif["attrs"] == {"z": 1, "a": "b"}
    assert data["nodes"][1]["params"] == {"weight": format_value(W)}
    assert data["nodes"][4]["origin"] == ["x", "rec"]


def _strip_strings(dot: str) -> str:
    """The dot text with every double-quoted string (with backslash escapes) replaced by S."""
    out, i = [], 0
    while i < len(dot):
        if dot[i] == '"':
            i += 1
            while dot[i] != '"':
                i += 2 if dot[i] == "\\" else 1
            out.append("S")
        else:
            out.append(dot[i])
        i += 1
    return "".join(out)


def test_dot_form_is_well_formed_and_complete():
    """--format dot: one digraph, balanced braces and quotes (names escaped), every node and edge, back edges dashed."""
    odd = 'r"e\\c'
    g = recurrent(odd)
    dot = format_graph(g, "dot")
    bare = _strip_strings(dot)
    assert bare.startswith("digraph S {") and bare.rstrip().endswith("}")
    assert bare.count("{") == bare.count("}") == 1 and bare.count("[") == bare.count("]")
    statements = [s.strip() for s in bare[bare.index("{") + 1:bare.rindex("}")].split(";") if s.strip()]
    assert all(re.fullmatch(r"node \[.*\]|S( \[.*\])?|S -> S( \[.*\])?", s) for s in statements), statements

    def q(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    for name in g:
        assert re.search(re.escape(q(name)) + r" \[label=", dot), name
    for u, v in g.nx.edges:
        assert f"{q(u)} -> {q(v)}" in dot
    back = [line for line in dot.splitlines() if "@prev" in line]
    assert back == [f'  {q(odd)} -> "lif" [style=dashed, label="@prev"];']
    assert len(statements) == 1 + len(g) + g.nx.number_of_edges()
