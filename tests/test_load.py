"""The lenient load path and flattening (DESIGN §2).

Real exports exist that `nir.read` rejects: an Output declaring [1, 1, 1] for one neuron, nested graphs
whose inner edges use a stale node name. nircomp repairs what is unambiguous and says so with a
`LoadWarning` naming the node and the repair; what is ambiguous is a `LoadError` naming the node.
Nested graphs are flattened to dotted names, their Input/Output ports recorded on edges as `via`.

Files are written by hand with h5py in NIR's layout (a top-level `version` dataset and a `node` group
holding `type`, `nodes`, `edges`), independently of nircomp's own writer. nir.read is called only on
acyclic graphs: its type check may never return on a cyclic one (a nir bug).
"""

from __future__ import annotations

import warnings

import h5py
import nir
import numpy as np
import pytest

import nircomp
from nircomp.errors import CompileError, LoadError, LoadWarning

f32 = np.float32


# --------------------------------------------------------------------------- hand-written files
def write_file(path, graph: dict) -> str:
    """`graph` (nested dicts in the file layout) as a NIR HDF5 file, written with h5py directly."""
    def write(group, d):
        for k, v in d.items():
            if isinstance(v, dict):
                write(group.create_group(k), v)
            elif k == "edges":
                group.create_dataset(k, data=np.array(v, dtype=h5py.string_dtype()).reshape(-1, 2))
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            else:
                group.create_dataset(k, data=np.asarray(v))

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0", dtype=h5py.string_dtype())
        write(f.create_group("node"), graph)
    return str(path)


def graph(nodes: dict, edges: list) -> dict:
    return {"type": "NIRGraph", "nodes": nodes, "edges": edges}


def io(kind: str, shape) -> dict:
    return {"type": kind, "shape": np.array(shape)}


def lif(n: int) -> dict:
    return {"type": "LIF", "tau": np.full(n, 0.01, f32), "r": np.ones(n, f32), "v_leak": np.zeros(n, f32),
            "v_threshold": np.ones(n, f32), "v_reset": np.zeros(n, f32)}


def linear(m: int, n: int) -> dict:
    return {"type": "Linear", "weight": np.arange(m * n, dtype=f32).reshape(m, n)}


def load_warnings(source) -> tuple[nircomp.Graph, list[str]]:
    """Load, returning the messages of the LoadWarnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = nircomp.load(source)
    return g, [str(w.message) for w in caught if issubclass(w.category, LoadWarning)]


def edges_with_via(g: nircomp.Graph) -> dict[tuple[str, str], tuple]:
    return {(u, v): via or () for u, v, via in g.nx.edges(data="via")}


def one_neuron_to_big_output():
    return graph({"input": io("Input", [1]), "lif": lif(1), "output": io("Output", [1, 1, 1])},
                 [("input", "lif"), ("lif", "output")])


def stale_rnn():
    """The shape of real snnTorch exports: subgraph `lif1` whose inner edges name `rnn.lif`, its node
    being `lif`."""
    lif1 = graph({"input": io("Input", [3]), "lif": lif(3), "w_rec": linear(3, 3), "output": io("Output", [3])},
                 [("input", "rnn.lif"), ("rnn.lif", "w_rec"), ("w_rec", "rnn.lif"), ("rnn.lif", "output")])
    return graph({"input": io("Input", [2]), "fc": linear(3, 2), "lif1": lif1, "output": io("Output", [3])},
                 [("input", "fc"), ("fc", "lif1"), ("lif1", "output")])


# --------------------------------------------------------------------------- (a) singleton shapes
def test_output_with_singleton_axes_is_repaired_with_a_warning(tmp_path):
    """An Output declaring [1, 1, 1] fed by 1 neuron differs only by axes of size 1: it loads, its shape
    becomes [1] (dtype kept), and one LoadWarning names the node, the declared and the repaired shape."""
    g, msgs = load_warnings(write_file(tmp_path / "a.nir", one_neuron_to_big_output()))
    assert len(msgs) == 1
    assert "node 'output'" in msgs[0] and "[1, 1, 1]" in msgs[0] and "repaired to [1]" in msgs[0]
    op = g.op("output")
    assert op.params["shape"].tolist() == [1] and op.params["shape"].dtype == np.int64
    assert op.input_shape == op.output_shape == (1,)


def test_repaired_output_saves_the_repair(tmp_path):
    """After the repair, save writes shape [1]: loading the saved file needs no repair."""
    g, _ = load_warnings(write_file(tmp_path / "a.nir", one_neuron_to_big_output()))
    nircomp.save(g, tmp_path / "saved.nir")
    g2, msgs = load_warnings(tmp_path / "saved.nir")
    assert msgs == [] and g2.op("output").params["shape"].tolist() == [1]


def test_nir_object_with_singleton_output_is_repaired_too():
    """The same repair applies to a nir.NIRGraph object (both sources share one path)."""
    obj = nir.NIRGraph({"input": nir.Input(np.array([1])), "lif": nir.LIF(
        tau=np.ones(1), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.ones(1)),
        "output": nir.Output(np.array([1, 1, 1]))}, [("input", "lif"), ("lif", "output")], type_check=False)
    g, msgs = load_warnings(obj)
    assert len(msgs) == 1 and "node 'output'" in msgs[0]
    assert g.op("output").output_shape == (1,)


def test_subgraph_port_with_singleton_axes_is_repaired(tmp_path):
    """A subgraph's Output port declaring [1, 1] while carrying [1] is repaired the same way, named by
    its dotted name."""
    sub = graph({"input": io("Input", [1]), "lif": lif(1), "output": io("Output", [1, 1])},
                [("input", "lif"), ("lif", "output")])
    path = write_file(tmp_path / "p.nir", graph({"input": io("Input", [1]), "sub": sub, "output": io("Output", [1])},
                                                [("input", "sub"), ("sub", "output")]))
    g, msgs = load_warnings(path)
    assert len(msgs) == 1 and "node 'sub.output'" in msgs[0] and "repaired to [1]" in msgs[0]
    assert g.ports["sub.output"].params["shape"].tolist() == [1]


def test_output_shape_mismatch_beyond_singletons_is_an_error(tmp_path):
    """An Output declaring [2] fed by 3 neurons is not a singleton difference: a located error, no repair."""
    path = write_file(tmp_path / "m.nir", graph({"input": io("Input", [3]), "lif": lif(3),
                                                  "output": io("Output", [2])},
                                                 [("input", "lif"), ("lif", "output")]))
    with pytest.raises(CompileError) as err:
        nircomp.load(path)
    assert err.value.nodes == ("output",) and "m.nir" in str(err.value)


# --------------------------------------------------------------------------- (b) stale names
def test_stale_inner_edge_names_are_repaired_with_a_warning(tmp_path):
    """`rnn.lif` inside subgraph `lif1` can only mean its node `lif` (the name with the old prefix
    dropped): every such edge is repaired, with a warning naming the subgraph, the edge and the repair."""
    g, msgs = load_warnings(write_file(tmp_path / "s.nir", stale_rnn()))
    assert len(msgs) == 4  # one per stale endpoint: input->, ->w_rec, w_rec->, ->output
    assert all("subgraph 'lif1'" in m and "unknown node 'rnn.lif'" in m and "repaired to 'lif'" in m
               for m in msgs)
    assert any("edge input -> rnn.lif" in m for m in msgs)
    assert edges_with_via(g) == {
        ("input", "fc"): (), ("fc", "lif1.lif"): ("lif1.input",), ("lif1.lif", "lif1.w_rec"): (),
        ("lif1.w_rec", "lif1.lif"): (), ("lif1.lif", "output"): ("lif1.output",)}


def test_stale_names_in_a_nir_object_are_repaired_too():
    """A nir.NIRGraph built with type_check=False and stale inner names loads with the same repair."""
    n = 3
    lif1 = nir.NIRGraph({"input": nir.Input(np.array([n])), "lif": nir.LIF(
        tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n)), "output": nir.Output(np.array([n]))},
        [("input", "rnn.lif"), ("rnn.lif", "output")], type_check=False)
    obj = nir.NIRGraph({"input": nir.Input(np.array([n])), "lif1": lif1, "output": nir.Output(np.array([n]))},
                       [("input", "lif1"), ("lif1", "output")], type_check=False)
    g, msgs = load_warnings(obj)
    assert len(msgs) == 2 and all("repaired to 'lif'" in m for m in msgs)
    assert edges_with_via(g) == {("input", "lif1.lif"): ("lif1.input",), ("lif1.lif", "output"): ("lif1.output",)}


def test_ambiguous_stale_name_is_a_located_error(tmp_path):
    """`net.rnn.lif` in a subgraph holding both a node `lif` and a subgraph `rnn` with a node `lif` could
    mean either (dropping `net.` or `net.rnn.`): a LoadError naming the node and both candidates."""
    rnn = graph({"input": io("Input", [3]), "lif": lif(3), "output": io("Output", [3])},
                [("input", "lif"), ("lif", "output")])
    lif1 = graph({"input": io("Input", [3]), "lif": lif(3), "rnn": rnn, "output": io("Output", [3])},
                 [("input", "lif"), ("lif", "rnn"), ("net.rnn.lif", "output")])
    path = write_file(tmp_path / "amb.nir", graph({"input": io("Input", [3]), "lif1": lif1,
                                                    "output": io("Output", [3])},
                                                   [("input", "lif1"), ("lif1", "output")]))
    with pytest.raises(LoadError) as err:
        nircomp.load(path)
    assert err.value.nodes == ("lif1.net.rnn.lif",)
    assert "amb.nir" in str(err.value) and "rnn.lif, lif" in str(err.value)


def test_unknown_name_without_candidates_is_a_located_error(tmp_path):
    """An inner edge naming a node that no suffix of the name matches is a LoadError naming it."""
    sub = graph({"input": io("Input", [3]), "lif": lif(3), "output": io("Output", [3])},
                [("input", "old.neuron"), ("lif", "output")])
    path = write_file(tmp_path / "u.nir", graph({"input": io("Input", [3]), "sub": sub, "output": io("Output", [3])},
                                                [("input", "sub"), ("sub", "output")]))
    with pytest.raises(LoadError) as err:
        nircomp.load(path)
    assert err.value.nodes == ("sub.old.neuron",) and "does not exist" in str(err.value)


# --------------------------------------------------------------------------- (c) beyond nir.read
def _conv_without_input_shape():
    conv = {"type": "Conv2d", "weight": np.ones((4, 2, 3, 3), f32), "stride": np.array([2, 2]),
            "padding": np.array([1, 1]), "dilation": np.array([1, 1]), "groups": np.array(1),
            "bias": np.zeros(4, f32)}
    # H = (7 + 2 - 2 - 1) // 2 + 1 = 4, W = (9 + 2 - 2 - 1) // 2 + 1 = 5
    return graph({"input": io("Input", [2, 7, 9]), "conv": conv, "output": io("Output", [4, 4, 5])},
                 [("input", "conv"), ("conv", "output")]), {"input": (2, 7, 9), "conv": (4, 4, 5), "output": (4, 4, 5)}


def _identity():
    return graph({"input": io("Input", [3]), "id": {"type": "Identity", "shape": np.array([3])},
                  "output": io("Output", [3])}, [("input", "id"), ("id", "output")]), \
        {"input": (3,), "id": (3,), "output": (3,)}


def _explicit_port():
    sub = graph({"input": io("Input", [2]), "lif": lif(2), "output": io("Output", [2])},
                [("input", "lif"), ("lif", "output")])
    return graph({"input": io("Input", [2]), "sub": sub, "output": io("Output", [2])},
                 [("input", "sub.input"), ("sub.output", "output")]), {"input": (2,), "sub.lif": (2,), "output": (2,)}


NIR_REJECTS = {  # name: (graph and shapes, LoadWarnings nircomp gives, what nir.read says)
    "singleton-output": (lambda: (one_neuron_to_big_output(), {"input": (1,), "lif": (1,), "output": (1,)}), 1,
                         "type mismatch"),
    "stale-inner-names": (lambda: (stale_rnn(), {"input": (2,), "fc": (3,), "lif1.lif": (3,), "lif1.w_rec": (3,),
                                                 "output": (3,)}), 4, "'rnn.lif' which does not exist"),
    "conv-without-input_shape": (_conv_without_input_shape, 0, "missing 1 required positional argument: 'input_shape'"),
    "identity": (_identity, 0, "^$"),  # a bare assert on nir's registry of node types
    "explicit-port-names": (_explicit_port, 0, "'sub.input' which does not exist"),
}


@pytest.mark.parametrize("name", NIR_REJECTS)
def test_files_nir_read_rejects_load(name, tmp_path):
    """Files nir.read (1.0.8) raises on load in nircomp with the shapes worked out by hand, warning only
    where something was repaired: singleton Output, stale inner names, Conv without input_shape (nir's
    reader requires it), Identity (not in nir's registry), explicit port names in edges. (Every graph
    here is acyclic at the top level, and nested ones fail while being built, so nir.read returns.)"""
    make, n_warnings, nir_says = NIR_REJECTS[name]
    data, shapes = make()
    path = write_file(tmp_path / f"{name}.nir", data)
    with pytest.raises((ValueError, TypeError, AssertionError), match=nir_says):
        nir.read(path)
    g, msgs = load_warnings(path)
    assert len(msgs) == n_warnings
    assert {n: op.output_shape for n, op in g.ops()} == shapes


# --------------------------------------------------------------------------- (d) flattening
def _two_level():
    b = graph({"input": io("Input", [2]), "li": {"type": "LI", "tau": np.ones(2), "r": np.ones(2),
                                                 "v_leak": np.zeros(2)}, "output": io("Output", [2])},
              [("input", "li"), ("li", "output")])
    a = graph({"input": io("Input", [2]), "b": b, "w": linear(2, 2), "output": io("Output", [2])},
              [("input", "b"), ("b", "w"), ("w", "output")])
    return graph({"input": io("Input", [2]), "a": a, "output": io("Output", [2])}, [("input", "a"), ("a", "output")])


def test_nested_graphs_flatten_to_dotted_names_with_ports_on_edges(tmp_path):
    """Nodes of nested graphs get dotted names; their Inputs/Outputs leave the node set, kept as ports,
    and each edge through them records the ports passed, in order, as `via`."""
    g, msgs = load_warnings(write_file(tmp_path / "n.nir", _two_level()))
    assert msgs == []
    assert set(g.nx) == {"input", "a.b.li", "a.w", "output"}
    assert set(g.ports) == {"a.input", "a.output", "a.b.input", "a.b.output"}
    assert {p: op.kind for p, op in g.ports.items()} == {"a.input": "Input", "a.output": "Output",
                                                         "a.b.input": "Input", "a.b.output": "Output"}
    assert edges_with_via(g) == {("input", "a.b.li"): ("a.input", "a.b.input"),
                                 ("a.b.li", "a.w"): ("a.b.output",), ("a.w", "output"): ("a.output",)}
    assert set(g.scopes) == {"a", "a.b"}


def test_outer_edge_may_name_a_port_explicitly(tmp_path):
    """An outer edge naming `sub.input` (or `sub.output`) means the same as naming `sub`."""
    explicit, _ = _explicit_port()
    short = graph(explicit["nodes"], [("input", "sub"), ("sub", "output")])
    g1 = nircomp.load(write_file(tmp_path / "e.nir", explicit))
    g2 = nircomp.load(write_file(tmp_path / "s.nir", short))
    assert edges_with_via(g1) == edges_with_via(g2) == {("input", "sub.lif"): ("sub.input",),
                                                        ("sub.lif", "output"): ("sub.output",)}


@pytest.mark.parametrize("role", ["Input", "Output"])
def test_subgraph_with_two_ports_addressed_as_a_whole_is_an_error(role, tmp_path):
    """A subgraph with two Inputs (Outputs) named as a whole in an edge is ambiguous: a LoadError naming
    the subgraph and suggesting an explicit port name."""
    sub = graph({"in_a": io("Input", [2]), "in_b": io("Input", [2]), "s": {"type": "Scale", "scale": np.ones(2)},
                 "out_a": io("Output", [2]), "out_b": io("Output", [2])},
                [("in_a", "s"), ("in_b", "s"), ("s", "out_a"), ("s", "out_b")])
    edges = ([("input", "sub"), ("sub.out_a", "output")] if role == "Input"
             else [("input", "sub.in_a"), ("sub", "output")])
    path = write_file(tmp_path / "two.nir", graph({"input": io("Input", [2]), "sub": sub,
                                                   "output": io("Output", [2])}, edges))
    with pytest.raises(LoadError) as err:
        nircomp.load(path)
    assert err.value.nodes == ("sub",)
    assert f"2 {role} nodes" in str(err.value) and "two.nir" in str(err.value)
    assert ("sub.in_a" if role == "Input" else "sub.out_a") in str(err.value)


def test_names_that_flatten_alike_are_an_error(tmp_path):
    """A top-level node literally named `sub.lif` beside subgraph `sub` holding `lif` flatten to one
    name: a LoadError naming it."""
    sub = graph({"input": io("Input", [2]), "lif": lif(2), "output": io("Output", [2])},
                [("input", "lif"), ("lif", "output")])
    path = write_file(tmp_path / "d.nir", graph({"input": io("Input", [2]), "sub": sub, "sub.lif": lif(2),
                                                 "output": io("Output", [2])},
                                                [("input", "sub"), ("sub", "sub.lif"), ("sub.lif", "output")]))
    with pytest.raises(LoadError) as err:
        nircomp.load(path)
    assert err.value.nodes == ("sub.lif",)


def test_two_paths_between_the_same_nodes_are_an_error(tmp_path):
    """A self-loop inside a subgraph plus a loop around it connect `sub.lif` to itself twice; the IR
    holds one edge per pair, so this is a LoadError naming the node, not a silent merge."""
    sub = graph({"input": io("Input", [2]), "lif": lif(2), "output": io("Output", [2])},
                [("input", "lif"), ("lif", "lif"), ("lif", "output")])
    path = write_file(tmp_path / "tp.nir", graph({"input": io("Input", [2]), "sub": sub,
                                                  "output": io("Output", [2])},
                                                 [("input", "sub"), ("sub", "sub"), ("sub", "output")]))
    with pytest.raises(LoadError, match="two paths") as err:
        nircomp.load(path)
    assert err.value.nodes == ("sub.lif", "sub.lif")


def test_port_connected_on_one_side_warns(tmp_path):
    """A subgraph Output that nothing outside reads is dropped from the data flow with a warning naming it."""
    sub = graph({"input": io("Input", [2]), "lif": lif(2), "out_a": io("Output", [2]), "out_b": io("Output", [2])},
                [("input", "lif"), ("lif", "out_a"), ("lif", "out_b")])
    path = write_file(tmp_path / "o.nir", graph({"input": io("Input", [2]), "sub": sub,
                                                 "output": io("Output", [2])},
                                                [("input", "sub"), ("sub.out_a", "output")]))
    g, msgs = load_warnings(path)
    assert len(msgs) == 1 and "node 'sub.out_b'" in msgs[0] and "one side only" in msgs[0]
    assert edges_with_via(g) == {("input", "sub.lif"): ("sub.input",), ("sub.lif", "output"): ("sub.out_a",)}


# --------------------------------------------------------------------------- (e) what load accepts
@pytest.mark.parametrize("source", [42, None, b"net.nir", {"type": "NIRGraph"}, ["input"],
                                    nir.Scale(np.ones(2))], ids=["int", "None", "bytes", "dict", "list", "Scale"])
def test_load_of_something_else_is_a_load_error(source):
    """Only a path (str | PathLike) or a nir.NIRGraph loads; anything else, a bare nir node included, is a
    LoadError naming what it got."""
    with pytest.raises(LoadError, match=f"cannot load a {type(source).__name__}"):
        nircomp.load(source)
