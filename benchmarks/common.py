"""What every benchmark's report starts with, and where it goes (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform


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
