"""Data in and out of `nircomp run`: input files, chunked runs with a progress line, results, plots.

Arrays are `[T, *shape]` for one sample or `[N, T, *shape]` for N samples (a batch axis first), per
Input/Output name. Input files: `.npy` (one Input), `.npz` (one array per Input name) or NIR data
(`nir.read_data`: the Input node's observable, TimeGriddedData as is, EventData binned on the dt grid).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from nircomp.errors import CompileError
from nircomp.progress import ProgressLine

Arrays = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- input
def read_inputs(path: str | Path, inputs: Mapping[str, tuple[int, ...]], dt: float) -> Arrays:
    """The arrays of `path` for each Input name (`inputs`: name -> per-step shape); see the module doc."""
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"{path}: no such input file" if not path.exists() else f"{path}: not a file")
    names = list(inputs)
    if path.suffix == ".npy":
        if len(names) != 1:
            raise CompileError(f"{path}: a .npy file holds one array, but the graph has {len(names)} inputs "
                               f"({', '.join(names)}); use a .npz with one array per input name")
        return {names[0]: _load_npy(path)}
    if path.suffix == ".npz":
        with np.load(path) as z:
            keys = list(z.keys())
            if len(names) == 1 and len(keys) == 1:
                return {names[0]: z[keys[0]]}
            missing = [n for n in names if n not in keys]
            if missing:
                raise CompileError(f"{path}: no array for input(s) {', '.join(missing)} (it has "
                                   f"{', '.join(keys) or 'none'}); name one array per input")
            return {n: z[n] for n in names}
    import h5py

    if h5py.is_hdf5(path):
        return _read_nir_data(path, inputs, dt)
    raise CompileError(f"{path}: unsupported input format; expected .npy, .npz or a NIR data file (HDF5)")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")  # memory-mapped: chunks are read as they run
    except ValueError as e:
        raise CompileError(f"{path}: cannot read ({e})") from None


def _read_nir_data(path: Path, inputs: Mapping[str, tuple[int, ...]], dt: float) -> Arrays:
    import nir

    try:
        data = nir.read_data(str(path))
    except (ValueError, KeyError, OSError) as e:
        raise CompileError(f"{path}: not NIR data ({e})") from None
    out = {}
    for name, shape in inputs.items():
        node = data.nodes.get(name)
        if not isinstance(node, nir.NIRNodeData):
            raise CompileError(f"{path}: no data for input {name!r} (it has {', '.join(data.nodes) or 'none'})")
        obs = node.observables
        key = next(iter(obs)) if len(obs) == 1 else "output" if "output" in obs else None
        if key is None:
            raise CompileError(f"{path}: input {name!r} has observables {', '.join(obs)}; expected one, or "
                               "one named 'output'")
        out[name] = _gridded(obs[key], dt, shape, f"{path}: input {name!r}")
    return out


def _gridded(obs, dt: float, shape: tuple[int, ...], where: str) -> np.ndarray:
    """[N, T, *shape] from TimeGriddedData (at this dt) or EventData (events summed into dt bins)."""
    import nir

    n = math.prod(shape)
    if isinstance(obs, nir.TimeGriddedData):
        if not math.isclose(obs.dt, dt, rel_tol=1e-9):
            raise CompileError(f"{where}: sampled at dt={obs.dt:g}, but the model runs at dt={dt:g}")
        data = np.asarray(obs.data)
        if data.shape[2] != n:
            raise CompileError(f"{where}: {data.shape[2]} neurons, the input has {n} ({list(shape)})")
        return data.reshape(data.shape[:2] + tuple(shape))
    if obs.n_neurons != n:
        raise CompileError(f"{where}: {obs.n_neurons} neurons, the input has {n} ({list(shape)})")
    steps = obs.t_max / dt
    n_steps = round(steps) if math.isclose(steps, round(steps), rel_tol=1e-9) else math.ceil(steps)
    grid = np.zeros((obs.n_samples, n_steps, n), dtype=np.float32)
    values = getattr(obs, "value", None)
    sample, event = np.nonzero((obs.idx >= 0) & np.isfinite(obs.time) & (obs.time < obs.t_max))
    step = np.floor(obs.time[sample, event] / dt + 1e-9).astype(int)
    weight = 1.0 if values is None else values[sample, event]
    np.add.at(grid, (sample, np.minimum(step, n_steps - 1), obs.idx[sample, event]), weight)
    return grid.reshape((obs.n_samples, n_steps) + tuple(shape))


def batch_of(data: Arrays, inputs: Mapping[str, tuple[int, ...]], time: int | str = "T", where: str = "input"
             ) -> int | None:
    """N when every array is [N, T, *shape], None when every one is [T, *shape]; else a CompileError."""
    ns, ts = set(), set()
    for name, arr in data.items():
        shape = tuple(inputs[name])
        lead = arr.ndim - len(shape)
        if lead not in (1, 2) or tuple(arr.shape[lead:]) != shape:
            raise CompileError(f"{where}: input '{name}' has shape {list(arr.shape)}, expected [T, "
                               f"{', '.join(map(str, shape))}] or [N, T, {', '.join(map(str, shape))}]")
        ns.add(arr.shape[0] if lead == 2 else None)
        ts.add(arr.shape[lead - 1])
    if len(ns) > 1 or len(ts) > 1:
        raise CompileError(f"{where}: the inputs disagree on batch or time axes: "
                           f"{', '.join(f'{k} {list(v.shape)}' for k, v in data.items())}")
    t = ts.pop()
    if time != "T" and t != time:
        raise CompileError(f"{where}: the inputs have {t} time steps; the artifact was compiled for {time}",
                           hint="compile with --input-shape T,... for any length")
    return ns.pop()


# ----------------------------------------------------------------------------- running
ChunkFn = Callable[[Arrays], tuple[Arrays, Arrays]]


def run_chunks(fn: ChunkFn, data: Arrays, n: int, chunk: int, pad: bool = False,
               progress: bool = False) -> tuple[Arrays, Arrays]:
    """Apply `fn` ({name: [c, T, ...]} -> (outputs, recorded), each {name: [c, T, ...]}) to `chunk`
    samples at a time; `pad`: fill the last chunk up to `chunk` (a fixed-batch artifact) and drop the
    padding. Results are gathered into [n, T, ...] host arrays; a progress line goes to stderr."""
    results: tuple[Arrays, Arrays] = ({}, {})
    bar = ProgressLine(progress)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        xs = {k: np.asarray(v[lo:hi]) for k, v in data.items()}
        if pad and hi - lo < chunk:
            xs = {k: np.concatenate([v, np.zeros((chunk - (hi - lo),) + v.shape[1:], v.dtype)]) for k, v in xs.items()}
        for store, got in zip(results, fn(xs), strict=True):
            for k, v in got.items():
                v = np.asarray(v)[: hi - lo]
                if k not in store:
                    store[k] = np.empty((n,) + v.shape[1:], v.dtype)
                store[k][lo:hi] = v
        bar.show(lambda hi=hi: f"run: {hi}/{n} samples, {-(-hi // chunk)}/{-(-n // chunk)} chunks, "
                               f"{bar.elapsed:.1f} s", force=hi == n)
    bar.close()
    return results


def chunk_runner(model, record, batched: bool, chunk: int, devices=None) -> tuple[ChunkFn, int, bool]:
    """(fn, chunk size, pad) for `run_chunks` with a StepModel or an AotModel: one sample per call for
    unbatched data or an artifact without a batch axis, else `chunk` samples per call (vmapped), or
    exactly the batch of a fixed-batch artifact (the last chunk padded). `devices` ("all", a number):
    every call splits its samples over that many devices (nircomp.sharding), one sample included."""
    from nircomp.backends.aot import AotModel

    rec = tuple(record)
    if devices is not None:
        from nircomp import sharding

        if isinstance(model, AotModel):
            call, chunk = sharding.shard_artifact(model, devices, chunk)
            return _whole(lambda xs: call(xs, rec), list(model.outputs)), chunk, True
        sharded = sharding.shard(model, devices)
        return _whole(lambda xs: sharded(xs, record=rec), list(model.schedule.outputs)), chunk, False
    if isinstance(model, AotModel):
        outs = list(model.outputs)

        def call(xs):
            return model(xs, record=rec)

        if model.batch is None:
            return _per_sample(call, outs), 1, False
        return _whole(call, outs), (chunk if model.batch == "B" else model.batch), model.batch != "B"
    import equinox as eqx
    import jax

    outs = list(model.schedule.outputs)
    if not batched:
        scall = eqx.filter_jit(lambda m, x: m(x, record=rec))
        return _per_sample(lambda xs: scall(model, xs), outs), 1, False
    vcall = eqx.filter_jit(lambda m, xs: jax.vmap(lambda x: m(x, record=rec))(xs))
    return _whole(lambda xs: vcall(model, xs), outs), chunk, False


def _as_dict(y, outs) -> dict:
    return y if isinstance(y, dict) else {outs[0]: y}


def _per_sample(call, outs) -> ChunkFn:
    def fn(xs):
        y, rec = call({k: v[0] for k, v in xs.items()})
        return {k: np.asarray(v)[None] for k, v in _as_dict(y, outs).items()}, {
            k: np.asarray(v)[None] for k, v in rec.items()}
    return fn


def _whole(call, outs) -> ChunkFn:
    def fn(xs):
        y, rec = call(xs)
        return _as_dict(y, outs), rec
    return fn


# ----------------------------------------------------------------------------- output
def is_spikes(arr: np.ndarray) -> bool:
    """Spike trains: every value 0 or 1 (written as bool to NIR data, drawn as a raster)."""
    return bool(np.all((arr == 0) | (arr == 1)))


def write_results(path: str | Path, results: Arrays, dt: float, batched: bool) -> None:
    """Results {node name: array} to `.npz` (one array per name, as they are) or NIR data (`.nir`: per
    node the observable "output", TimeGriddedData [N, T, neurons]). Nodes of subgraphs keep their dotted
    names as keys of the top level (nir 1.0.8's write_data recurses forever on nested NIRGraphData)."""
    path = Path(path)
    if path.suffix == ".npz":
        with zipfile.ZipFile(path, "w") as zf:  # np.savez's layout, for any name (even "file")
            for name, arr in results.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(arr))
        return
    if path.suffix != ".nir":
        raise CompileError(f"{path}: unsupported output format; use a .npz or .nir file name")
    import nir

    nodes = {}
    for name, arr in results.items():
        arr = arr if batched else arr[None]
        data = arr.reshape(arr.shape[:2] + (-1,))
        data = data.astype(bool) if is_spikes(data) else data
        nodes[name] = nir.NIRNodeData({"output": nir.TimeGriddedData(data, dt)})
    nir.write_data(str(path), nir.NIRGraphData(nodes))


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a CompileError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CompileError("--plot needs matplotlib: pip install 'nircomp[plot]'") from None
    return plt


def plot(path: str | Path, results: Arrays, dt: float) -> None:
    """One panel per node (sample 0 of [N, T, ...] arrays): a spike raster for spike trains, membrane
    traces (up to 16 neurons) otherwise; time in seconds."""
    plt = pyplot()
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 1.2 + 1.8 * len(results)), sharex=True, squeeze=False)
    for ax, (name, arr) in zip(axes[:, 0], results.items(), strict=True):
        flat = arr.reshape(arr.shape[0], -1)
        t = np.arange(flat.shape[0]) * dt
        if is_spikes(flat):
            step, neuron = np.nonzero(flat)
            ax.scatter(t[step], neuron, marker="|", s=30, color="k")
            ax.set_ylim(-0.5, flat.shape[1] - 0.5)
            ax.set_ylabel("neuron")
            ax.set_title(f"{name}: spikes ({int(flat.sum())})", fontsize=9, loc="left")
        else:
            ax.plot(t, flat[:, :16], linewidth=0.8)
            ax.set_ylabel("value")
            ax.set_title(f"{name}: traces" + (f" (16 of {flat.shape[1]})" if flat.shape[1] > 16 else ""),
                         fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].set_xlim(0, len(t) * dt)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
