"""Fuzzing the load path: a damaged `.nir` file fails with one located CompileError, never a crash.

Valid files (examples/*.nir, written by nir with gzip, and a few test graphs written uncompressed by
nircomp) are mutated the ways real files get damaged: cut short, bytes flipped, a dataset or group
deleted, a dataset replaced by one of the wrong type or shape. `nircomp.run_passes` on the result must
either succeed (the damage hit only weight values) or raise a `CompileError` whose text is one line and
which is not the pass manager's wrapper around an unexpected exception ("internal error").
`pytest --hypothesis-show-statistics` shows how the cases split between mutations and outcomes.
"""

from __future__ import annotations

import faulthandler
import io
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import EXAMPLES
from graphs import ALL_GRAPHS
from hypothesis import event, given, settings
from hypothesis import strategies as st

import nircomp
from nircomp.errors import CompileError

HANG_LIMIT_S = 60  # a mutant that makes load hang (libhdf5 loops on some damage) kills the run with a traceback


@dataclass(frozen=True)
class Seed:
    """A valid file: its bytes, its HDF5 objects and the byte offsets outside any dataset's raw data."""

    name: str
    blob: bytes = field(repr=False)
    objects: tuple[tuple[str, bool], ...] = field(repr=False)  # (path, is_dataset)
    structure: np.ndarray = field(repr=False)  # offsets of HDF5 metadata: headers, heaps, b-trees


def _raw_extents(ds: h5py.Dataset):
    """(offset, size) of each stored piece of a dataset's data (contiguous or chunked)."""
    if ds.chunks is None:
        offset = ds.id.get_offset()
        return [(offset, ds.id.get_storage_size())] if offset is not None else []
    infos = (ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks()))
    return [(c.byte_offset, c.size) for c in infos]


def make_seed(name: str, blob: bytes) -> Seed:
    objects: list[tuple[str, bool]] = []
    is_data = np.zeros(len(blob), bool)
    with h5py.File(io.BytesIO(blob), "r") as f:
        def visit(path, obj):
            objects.append((path, isinstance(obj, h5py.Dataset)))
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind != "O":
                for offset, size in _raw_extents(obj):
                    is_data[offset:offset + size] = True

        f.visititems(visit)
    return Seed(name, blob, tuple(objects), np.flatnonzero(~is_data))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(workdir) -> list[Seed]:
    out = [make_seed(p.name, p.read_bytes()) for p in sorted(EXAMPLES.glob("*.nir"))]
    for name in ("conv1d_net", "delay_loop", "threshold_scale", "neurons", "two_io"):
        nircomp.save(nircomp.load(ALL_GRAPHS[name]()), workdir / f"{name}.nir")
        out.append(make_seed(f"{name}.nir", (workdir / f"{name}.nir").read_bytes()))
    return out


def test_seeds_are_valid(seeds, workdir):
    """The unmutated files compile, so every failure below comes from the mutation."""
    assert len(seeds) == 8
    for seed in seeds:
        path = workdir / "seed.nir"
        path.write_bytes(seed.blob)
        graph, _ = nircomp.run_passes(path)
        assert graph.inputs() and graph.outputs()


# --------------------------------------------------------------------------- mutations
def truncate(seed: Seed, data) -> bytes:
    return seed.blob[:data.draw(st.integers(0, len(seed.blob) - 1), label="cut at")]


def flip_bytes(seed: Seed, data) -> bytes:
    """Flip bits anywhere or, more usefully, in HDF5 metadata (where raw weight data is not)."""
    anywhere = data.draw(st.booleans(), label="anywhere")
    pool = np.arange(len(seed.blob)) if anywhere else seed.structure
    picks = data.draw(st.lists(st.tuples(st.integers(0, len(pool) - 1), st.integers(0, 7)), min_size=1,
                               max_size=8), label="flips (index, bit)")
    blob = bytearray(seed.blob)
    for i, bit in picks:
        blob[pool[i]] ^= 1 << bit
    return bytes(blob)


def _edit(seed: Seed, edit) -> bytes:
    buf = io.BytesIO(seed.blob)
    with h5py.File(buf, "r+") as f:
        edit(f)
    return buf.getvalue()


def delete_object(seed: Seed, data) -> bytes:
    path, _ = data.draw(st.sampled_from(seed.objects), label="delete")
    return _edit(seed, lambda f: f.__delitem__(path))


WRONG_VALUES = {
    "text": lambda old: "not a number",
    "scalar": lambda old: np.float64(3.5),
    "empty": lambda old: np.zeros(0, np.float32),
    "3-d": lambda old: np.ones((2, 3, 4), np.float32),
    "one axis more": lambda old: np.asarray(old)[None],
    "one element less": lambda old: np.asarray(old).reshape(-1)[:-1],
    "bools": lambda old: np.array([True, False]),
    "negative ints": lambda old: np.array([-1, 0], np.int64),
    "nan": lambda old: np.full(np.shape(old), np.nan),
    "huge": lambda old: np.full(np.shape(old), 1e300),
    "fixed-length bytes": lambda old: np.array([b"a", b"b", b"c"]),
    "group": lambda old: {},
}


def replace_dataset(seed: Seed, data) -> bytes:
    datasets = [p for p, is_dataset in seed.objects if is_dataset]
    path = data.draw(st.sampled_from(datasets), label="replace")
    how = data.draw(st.sampled_from(sorted(WRONG_VALUES)), label="with")

    def edit(f):
        value = WRONG_VALUES[how](f[path][()])
        del f[path]
        if isinstance(value, dict):
            f.create_group(path)
        elif isinstance(value, str):
            f.create_dataset(path, data=value, dtype=h5py.string_dtype())
        else:
            f.create_dataset(path, data=value)

    return _edit(seed, edit)


MUTATIONS = {f.__name__: f for f in (truncate, flip_bytes, delete_object, replace_dataset)}


# --------------------------------------------------------------------------- the property
@pytest.mark.filterwarnings("ignore::nircomp.errors.LoadWarning")  # repairs of damaged subgraphs are fine
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_file_gives_compile_error_or_succeeds(seeds, workdir, data):
    """Any damage to a valid file ends in success or one single-line CompileError naming the file and the
    pass, and never in the pass manager's wrapper around an unexpected exception ("internal error")."""
    seed = data.draw(st.sampled_from(seeds), label="seed")
    mutation = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
    path = workdir / "mutant.nir"
    path.write_bytes(MUTATIONS[mutation](seed, data))
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    try:
        nircomp.run_passes(path)
        event(f"{mutation}: compiles")
    except CompileError as e:
        event(f"{mutation}: {type(e).__name__} [{e.pass_name}]")
        text = str(e)
        assert "\n" not in text, repr(text)
        assert not e.message.startswith("internal error"), text
        assert text.startswith(str(path)) and e.pass_name, text
    finally:
        faulthandler.cancel_dump_traceback_later()
