"""Run a compiled NIR graph data-parallel across processes (hosts) with `jax.distributed`.

Start one process per host, all with the same --num-processes and --coordinator (host:port of process 0):

    python examples/multihost.py --process-id 0 --num-processes 2 --coordinator 10.0.0.1:12355   # host A
    python examples/multihost.py --process-id 1 --num-processes 2 --coordinator 10.0.0.1:12355   # host B

On one machine, over loopback, with 2 virtual CPU devices per process (4 devices in all):

    python examples/multihost.py --process-id 0 --num-processes 2 --coordinator 127.0.0.1:12355 --local-devices 2 &
    python examples/multihost.py --process-id 1 --num-processes 2 --coordinator 127.0.0.1:12355 --local-devices 2

`jax.distributed.initialize` connects the processes; afterwards `jax.devices()` lists every process's
devices, and `nircomp.compile(..., devices="all")` shards the batch over all of them. Each process passes
its own part of the batch (here: its slice of one seeded global batch) and gets back the global result
array; `process_allgather` copies it to every host. Two checks, printed by every process:
1. the outputs equal, bit for bit, the one-device model run on each device's part of the batch;
2. one data-parallel gradient (batch sharded over the processes, parameters replicated; XLA inserts the
   cross-process all-reduce, over gloo on the CPU) matches the one-device gradient of the whole batch.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

HERE = pathlib.Path(__file__).parent
T, DT, PER_DEVICE = 40, 1e-3, 3


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--coordinator", required=True, metavar="HOST:PORT", help="address of process 0")
    ap.add_argument("--local-devices", type=int, metavar="N",
                    help="make N virtual CPU devices in this process (XLA_FLAGS; for trying it on one machine)")
    args = ap.parse_args(argv)
    if args.local_devices:  # must happen before jax starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.local_devices}")
    import equinox as eqx
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    import nircomp
    from nircomp.sharding import batch_sharding, replicated

    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
    pid, n_dev = jax.process_index(), jax.device_count()
    prog = nircomp.compile(HERE / "cubalif_chain.nir", dt=DT, solver="step", devices="all",
                           surrogate="superspike", slope=10.0)
    sharded, model = prog.model, prog.model.model
    rng = np.random.default_rng(0)  # the same global batch on every process
    x = (rng.random((PER_DEVICE * n_dev, T, 16)) < 0.3).astype(np.float32)
    local = len(jax.local_devices()) * PER_DEVICE
    mine = x[pid * local:(pid + 1) * local]  # this process's rows: its devices come in this order in the mesh

    # 1. forward: the global result, gathered on every host, against the one-device runs
    y, rec = sharded(mine, record=["lif1"])
    y, rec = multihost_utils.process_allgather((y, rec), tiled=True)
    one = eqx.filter_jit(jax.vmap(lambda x: model(x, record=["lif1"])))
    parts = [one(x[i:i + PER_DEVICE]) for i in range(0, len(x), PER_DEVICE)]
    ref = jax.tree.map(lambda *a: np.concatenate(a), *parts)
    forward_equal = bool(np.array_equal(y, ref[0]) and np.array_equal(rec["lif1"], ref[1]["lif1"]))

    # 2. one data-parallel gradient across the processes
    def loss(params, x):
        m = eqx.combine(params, static)
        return (jax.vmap(lambda x: m(x, record=["lif1"])[1]["lif1"])(x).mean(axis=1) ** 2).mean()

    params, static = eqx.partition(model, eqx.is_array)
    mesh = sharded.mesh
    grad = jax.jit(jax.grad(loss), in_shardings=(replicated(mesh), batch_sharding(mesh)),
                   out_shardings=replicated(mesh))
    xg = jax.make_array_from_process_local_data(batch_sharding(mesh), mine)
    g = multihost_utils.process_allgather(grad(params, xg), tiled=True)
    g_one = jax.jit(jax.grad(loss))(params, x)
    diffs = [float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) for a, b in
             zip(jax.tree.leaves(g), jax.tree.leaves(g_one), strict=True)]
    report = {"process": pid, "processes": jax.process_count(), "devices": n_dev, "batch": len(x),
              "spikes": float(rec["lif1"].sum()), "forward_equal": forward_equal, "grad_rel_diff": max(diffs),
              "grad_abs_max": max(float(np.max(np.abs(b))) for b in jax.tree.leaves(g_one))}
    print(json.dumps(report), flush=True)
    jax.distributed.shutdown()
    return report


if __name__ == "__main__":
    main()
