"""What every benchmark's report starts with, and where it goes (imported by the scripts beside it)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

# glibc malloc settings under which freed memory stays in the process for the next call: XLA:CPU allocates
# every temporary buffer of a call afresh, and by default glibc maps buffers over 32 MiB from the kernel and
# returns them after the call, so each call touches fresh pages (~0.75 us per 4 KiB page on this VM, a
# quarter to a third of a call of the 700-512-512-20 MLP). README, "CPU performance".
TUNED_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "4000000000",
                "MALLOC_TRIM_THRESHOLD_": "100000000000"}
MALLOC_MODES = ("default", "tuned")


def add_malloc_option(ap) -> None:
    """--malloc default|tuned|both on an argparse parser; `malloc_modes(args.malloc)` lists the chosen."""
    ap.add_argument("--malloc", choices=[*MALLOC_MODES, "both"], default="both",
                    help="glibc malloc at its defaults, tuned (common.TUNED_MALLOC), or both in turn")


def malloc_modes(choice: str) -> tuple[str, ...]:
    return MALLOC_MODES if choice == "both" else (choice,)


def worker_result(cmd: list[str], env: dict) -> dict:
    """Run a benchmark's worker process and return the JSON object its last output line holds; exit
    with the worker's stderr when it fails."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def malloc_env(mode: str, env: dict | None = None) -> dict:
    """`env` (default: os.environ) with glibc's malloc at its defaults ("default") or TUNED_MALLOC ("tuned")."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if k not in TUNED_MALLOC}
    return env | TUNED_MALLOC if mode == "tuned" else env


def machine(load: bool = True) -> str:
    """One line: processor, cores, python and (optionally) the load averages now."""
    line = f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python " \
           f"{platform.python_version()}"
    if load and hasattr(os, "getloadavg"):
        line += "; load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return line


def report(text: str, md: str | None) -> None:
    """Print the report and, with --md FILE, append it to FILE."""
    print(text)
    if md:
        with open(md, "a") as f:
            f.write(text + "\n")
