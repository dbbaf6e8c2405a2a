"""Data parallelism with JAX's own machinery: a compiled step model sharded over a 1-D device mesh.

`nircomp.compile(..., devices=...)` wraps the StepModel in a `ShardedModel`, whose call takes a batch
and runs `jax.jit(jax.vmap(model), in_shardings=..., out_shardings=...)` over a `jax.sharding.Mesh`
with one axis, "batch": the samples are split evenly over the devices, the parameters are replicated
on every device, and XLA's SPMD partitioner writes the per-device program (each sample is independent,
so the devices never communicate in the forward pass; under `jax.grad` the partitioner inserts the
all-reduce of the parameter gradients itself). The result is one `jax.Array` holding the whole batch,
sharded along the batch axis; `np.asarray` gathers it to the host.

Across hosts the same code runs after `jax.distributed.initialize` (see examples/multihost.py): the
mesh then spans every process's devices and each process passes its own part of the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nircomp.errors import CompileError

AXIS = "batch"


def resolve_devices(devices: Any) -> list:
    """The devices that `devices` names: "all" (every device, of every process), an int n (the first n of
    `jax.devices()`) or a sequence of jax devices (in mesh order, no repeats)."""
    available = jax.devices()
    if isinstance(devices, str):
        if devices != "all":
            raise CompileError(f"devices={devices!r}: expected None, 'all', a number of devices or a list of "
                               f"jax devices")
        return list(available)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise CompileError(f"devices={int(devices)}: this process sees {len(available)} device(s) "
                               f"({available[0].platform})",
                               hint="on the CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N (set before "
                                    "jax starts) makes N virtual devices")
        return list(available[:devices])
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        if len(set(devices)) != len(devices):
            raise CompileError("devices= lists a device more than once")
        return list(devices)
    raise CompileError(f"devices={devices!r}: expected None, 'all', a number of devices or a non-empty list of "
                       f"jax devices")


def make_mesh(devices: Any) -> Mesh:
    """A 1-D mesh with the axis "batch" over `devices` (anything `resolve_devices` takes)."""
    return Mesh(np.array(resolve_devices(devices)), (AXIS,))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Arrays split along `batch_axis` over the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays copied whole onto every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


class ShardedModel(eqx.Module):
    """A step model run data-parallel: `sharded(x)` -> y, `sharded(x, record=[...])` -> (y, {name: array}).

    x is a batch, `[B, T, *shape]` for batch_axis=0 (default) or `[T, B, *shape]` for batch_axis=1 (a dict
    {input name: array} for several Inputs); outputs and recorded values have the batch on the same axis.
    Each device runs `jax.vmap(model)` on its part of the batch, so the results equal bit for bit that
    one-device program on those parts (XLA may pick other kernels for another batch size, so one call with
    the whole batch on one device can differ in the last bit, as it can between any two batch sizes).
    When B is not a multiple of the number of devices the batch is padded with zero samples up to the
    next multiple and the padding is sliced off the results (it costs the padded samples' compute and
    never changes a real sample). With `key=` (a model compiled with noise=) sample b gets the key
    `jax.random.split(key, B)[b]`, whatever the padding. Across processes
    each process passes its own part of the batch (a multiple of its local device count) and gets back
    the global array; `jax.experimental.multihost_utils.process_allgather` fetches it.
    """

    model: Any
    mesh: Mesh = eqx.field(static=True)
    batch_axis: int = eqx.field(static=True, default=0)

    def __check_init__(self):
        if self.batch_axis not in (0, 1):
            raise CompileError(f"batch_axis={self.batch_axis!r}: expected 0 ([B, T, ...]) or 1 ([T, B, ...])")

    # ------------------------------------------------------------------ what the wrapped model has
    @property
    def params(self):
        return self.model.params

    @property
    def schedule(self):
        return self.model.schedule

    @property
    def semantics(self):
        return self.model.semantics

    @property
    def dt(self) -> float:
        return self.model.dt

    @property
    def devices(self) -> list:
        return list(self.mesh.devices.flat)

    def _entry_of(self, name: str) -> str:
        return self.model._entry_of(name)

    # ------------------------------------------------------------------ running
    def __call__(self, x, record: Sequence[str] | None = None, key=None):
        for name in record or ():
            self.model._entry_of(name)  # an unknown node is a CompileError, not a trace error
        fn, args, size = self._prepare(x, record, key)
        out = fn(*args)
        if size is None:
            return out
        return jax.tree.map(lambda a: jax.lax.slice_in_dim(a, 0, size, axis=self.batch_axis), out)

    def lower(self, x, record: Sequence[str] | None = None, key=None) -> jax.stages.Lowered:
        """The sharded computation lowered for `x` (padded as a call pads it): `.compile().memory_analysis()`
        gives the per-device argument, output and temporary sizes."""
        fn, args, _ = self._prepare(x, record, key)
        return fn.lower(*args)

    def _prepare(self, x, record, key):
        fn = _sharded_fn(self.mesh, self.batch_axis, None if record is None else tuple(record), key is not None)
        xs, keys, size = self._place(x, key)
        return fn, (self.model, xs, keys), size

    def _place(self, x, key):
        """The batch as the jitted function takes it, with one key per sample (`jax.random.split(key, B)`,
        the keys `jax.vmap(model)` would take) when `key` is given: padded to a multiple of the device count
        (returns the real size to slice back to, or None), or assembled from each process's part."""
        leaves = jax.tree.leaves(x)
        sizes = {np.shape(a)[self.batch_axis] if np.ndim(a) > self.batch_axis else None for a in leaves}
        if len(sizes) != 1 or None in sizes:
            raise CompileError(f"a sharded model takes a batch with the batch on axis {self.batch_axis}; the "
                               f"input(s) have shapes {[list(np.shape(a)) for a in leaves]}")
        size = sizes.pop()
        keys = None if key is None else jax.random.split(key, size)
        if jax.process_count() > 1 and not isinstance(leaves[0], jax.Array):
            local = len(self.mesh.local_devices)
            if size % local:
                raise CompileError(f"this process's batch of {size} is not a multiple of its {local} device(s)",
                                   hint="give every process an equal part of the batch, a multiple of its devices")
            if keys is not None:
                raise CompileError("key= is not supported across processes", hint="run noisy models on one host")
            sharding = batch_sharding(self.mesh, self.batch_axis)
            xs = jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), x)
            return xs, None, None
        pad = -size % self.mesh.size
        if not pad:
            return x, keys, None

        def padded(a):
            widths = [(0, 0)] * np.ndim(a)
            widths[self.batch_axis] = (0, pad)
            return np.pad(a, widths) if isinstance(a, np.ndarray) else jnp.pad(a, widths)

        keys = None if keys is None else jnp.concatenate([keys, keys[:1].repeat(pad, axis=0)])
        return jax.tree.map(padded, x), keys, size


@functools.lru_cache(maxsize=64)
def _sharded_fn(mesh: Mesh, batch_axis: int, record: tuple[str, ...] | None, keyed: bool):
    """`jax.jit(jax.vmap(model))` with the batch (and the per-sample keys) split over `mesh` and the model's
    arrays (its parameters) replicated; the model is an argument, so jit's own cache keys the compiled
    executable by the model's structure (static fields included) and the input shapes."""
    kw = {} if record is None else {"record": list(record)}

    def run(model, xs, keys):
        if not keyed:
            return jax.vmap(lambda x: model(x, **kw), in_axes=batch_axis, out_axes=batch_axis)(xs)
        return jax.vmap(lambda x, k: model(x, key=k, **kw), in_axes=(batch_axis, 0), out_axes=batch_axis)(xs, keys)

    data = batch_sharding(mesh, batch_axis)
    return jax.jit(run, in_shardings=(replicated(mesh), data, batch_sharding(mesh)), out_shardings=data)


def shard_artifact(model: Any, devices: Any, chunk: int):
    """An AOT artifact (`backends.aot.AotModel`) run data-parallel: (call, samples per call), where
    `call(xs, record)` -> (outputs, recorded) runs the exported function under `jax.jit` with the batch
    split over the devices and the parameters replicated (an export for one device partitions like any
    jitted function). Calls take exactly that many samples: `chunk` rounded up to a multiple of the
    device count for a symbolic batch ("B"), the artifact's own batch (a multiple of it) otherwise."""
    mesh = make_mesh(devices)
    n = mesh.size
    if model.batch is None:
        raise CompileError("the artifact has no batch axis, so it cannot be split over devices",
                           hint="compile it with --aot --batch B")
    if model.batch != "B" and model.batch % n:
        raise CompileError(f"the artifact's batch of {model.batch} does not split over {n} devices",
                           hint="compile with --batch B (any size), or use a device count that divides it")
    data = batch_sharding(mesh)
    fn = jax.jit(model.exported.call, in_shardings=(replicated(mesh), data), out_shardings=data)

    def call(xs, record):
        y, rec = fn(model.params, xs)
        return y, {name: rec[name] for name in record}

    return call, (-(-chunk // n) * n if model.batch == "B" else model.batch)


def shard(model: Any, devices: Any, batch_axis: int = 0) -> ShardedModel:
    """`model` (a StepModel) run data-parallel over `devices` (see `resolve_devices`)."""
    from nircomp.backends.equinox import StepModel

    if devices is None:
        raise CompileError(f"batch_axis={batch_axis!r} applies only to a sharded model", hint="pass devices= too")
    if not isinstance(model, StepModel):
        raise CompileError(f"devices= shards the step model of the equinox backend (got a {type(model).__name__})",
                           hint="compile with backend='equinox' and the step solver")
    return ShardedModel(model, make_mesh(devices), batch_axis)
