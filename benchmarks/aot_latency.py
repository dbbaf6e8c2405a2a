"""Start-up latency of an AOT artifact vs compiling from NIR, on the example graphs.

    python benchmarks/aot_latency.py [--repeats 3] [--steps 100] [--dt 1e-4] [--md FILE]

For each examples/*.nir, in fresh processes (nothing cached in memory; JAX's persistent compilation
cache stays off), the median over --repeats of:
- from NIR: `import` (nircomp, the Equinox backend), `nircomp.compile(file, solver="step")` (load, passes,
  lowering) and the first call of the jitted model (trace + XLA compile + run);
- AOT: `import` (nircomp.backends.aot), `load_artifact(dir)` (read + deserialise the jax.export artifact
  written beforehand by `nircomp.compile(..., backend="aot", out=dir)`) and its first call (XLA compile of
  the stored StableHLO + run; nothing is traced);
- AOT precompiled: the same with `precompile=true` and a fixed T: `load_artifact` also loads the stored
  XLA executable, so the first call compiles nothing.
The ratios are from-NIR time / this path's time: for load+first run, and for the whole start-up with
imports.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PATHS = {"nir": "compile from NIR", "aot": "AOT (T symbolic)", "pre": "AOT precompiled (T fixed)"}


def worker(mode: str, target: str, data: str, dt: float) -> dict[str, float]:
    """One cold start in this (fresh) process: seconds for import, load or compile, and first run."""
    t0 = time.perf_counter()
    import jax
    import numpy as np

    if mode == "nir":
        import equinox as eqx

        import nircomp.backends.equinox  # the backend's import (jax, equinox) counts as import time
    else:
        from nircomp.backends.aot import load_artifact
    t1 = time.perf_counter()
    x = np.load(data)
    if mode == "nir":
        model = eqx.filter_jit(nircomp.compile(target, dt=dt, solver="step").model)
    else:
        model = load_artifact(target)
    t2 = time.perf_counter()
    jax.block_until_ready(model(x))
    t3 = time.perf_counter()
    return {"import": t1 - t0, "load": t2 - t1, "first_run": t3 - t2}


def cold_start(mode: str, target: Path, data: Path, dt: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--worker", mode, str(target), str(data), str(dt)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100, help="time steps of the input (default 100)")
    ap.add_argument("--dt", type=float, default=1e-4)
    ap.add_argument("--md", help="also write the table to this file")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, target, data, dt = args.worker
        print(json.dumps(worker(mode, target, data, float(dt))))
        return

    import jax
    import numpy as np

    import nircomp

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(EXAMPLES.glob("*.nir")):
            art, pre = Path(tmp) / path.stem, Path(tmp) / f"{path.stem}-pre"
            model = nircomp.compile(path, dt=args.dt, solver="step", backend="aot", out=art).model
            nircomp.compile(path, dt=args.dt, solver="step", backend=f"aot{{input_shape={args.steps} precompile=true}}",
                            out=pre)
            shape = next(iter(model.inputs.values()))
            data = Path(tmp) / f"{path.stem}.npy"
            rng = np.random.default_rng(0)
            np.save(data, (rng.random((args.steps, *shape)) < 0.2).astype(np.float32))
            for mode, target in (("nir", path), ("aot", art), ("aot", pre)):
                runs = [cold_start(mode, target, data, args.dt) for _ in range(args.repeats)]
                rows.append((path.stem, PATHS[mode if target != pre else "pre"],
                             {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
    title = (f"AOT start-up latency (median of {args.repeats} fresh processes, T={args.steps}, dt={args.dt:g}; "
             f"{platform.machine()}, {jax.default_backend()}, jax {jax.__version__})\n")
    header = ("| graph | path | import | load or compile | first run | load+first run | ratio (NIR / this) "
              "| ratio with imports |")
    lines = [title, header, "|---|---|---|---|---|---|---|---|"]
    base = {}
    for name, label, m in rows:
        run = m["load"] + m["first_run"]
        total = run + m["import"]
        base.setdefault(name, (run, total))
        lines.append(f"| {name} | {label} | {m['import']:.2f} s | {m['load'] * 1e3:.0f} ms | "
                     f"{m['first_run'] * 1e3:.0f} ms | {run * 1e3:.0f} ms | {base[name][0] / run:.1f}x | "
                     f"{base[name][1] / total:.1f}x |")
    table = "\n".join(lines)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
