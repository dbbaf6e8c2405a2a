"""Program: what `nircomp.compile` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nircomp.instruments import PassRecord
from nircomp.ir import Graph


@dataclass(frozen=True)
class Program:
    """model: the lowered model (an equinox.Module for backend="equinox"); ir: the final Graph;
    log: one PassRecord per pass; options: the resolved compile options (semantics included);
    artifacts: the files the backend wrote, by role (e.g. {"nir": Path("net.nir")})."""

    model: Any
    ir: Graph
    log: tuple[PassRecord, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, Path] = field(default_factory=dict)

    def ir_with_params(self, model: Any = None) -> Graph:
        """A copy of the IR carrying the (trained) parameters of `model` (default: this program's), each cast
        back to the dtype it had in the IR (an integer parameter stays integer only while its values are
        integers). Save it with `nircomp.save` to write a trained graph to NIR."""
        import numpy as np

        model = self.model if model is None else model
        graph = self.ir.copy()
        for name, params in model.params.items():
            op = graph.op(name)
            new = {k: _cast_back(np.asarray(v), np.asarray(op.params[k]).dtype) for k, v in params.items()}
            graph.set_op(name, op.replace(params={**op.params, **new}))
        return graph

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


def _cast_back(value, dtype):
    """`value` in `dtype`, unless that would change it (a trained integer threshold stays float64)."""
    import numpy as np

    if dtype.kind == "f" or np.array_equal(value, value.astype(dtype)):
        return value.astype(dtype)
    return value.astype(np.float64)
