"""Program: what `nircomp.compile` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nircomp.instruments import PassRecord
from nircomp.ir import Graph


@dataclass(frozen=True)
class Program:
    """model: the lowered model (an equinox.Module for backend="equinox"); ir: the final Graph;
    log: one PassRecord per pass; options: the resolved compile options (semantics included)."""

    model: Any
    ir: Graph
    log: tuple[PassRecord, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def as_text(self) -> str:
        from nircomp.printer import format_graph

        lines = [f"// {r.name}: {r.summary()}" for r in self.log]
        sem = self.options.get("semantics")
        if sem is not None:
            lines.append(f"// semantics: {sem.describe()}")
        schedule = getattr(self.model, "schedule", None)
        text = "\n".join(lines + [format_graph(self.ir)])
        if schedule is not None:
            text += "\n// schedule:\n" + "\n".join(f"//   {s.kind:<4} {', '.join(s.entries)}" for s in schedule.stages)
        return text
