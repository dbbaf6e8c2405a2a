"""Instruments watch a pipeline run: the change log, IR printing, verification, IR dumps.

Each is a small object with `before_pass`/`after_pass` (TVM's instrument protocol), carried by the
`PassContext`; the pass manager knows none of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TextIO

from nircomp.ir import Graph, Op
from nircomp.pipeline import BoundPass, PassContext, get_pass


@dataclass(frozen=True)
class PassRecord:
    """What one pass did: its pipeline form, wall time, the nodes it added/removed/replaced, the edges it
    added/removed/re-marked, and its notes (e.g. why a solver was chosen)."""

    name: str
    seconds: float
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    edges_added: tuple[tuple[str, str], ...] = ()
    edges_removed: tuple[tuple[str, str], ...] = ()
    edges_marked: tuple[tuple[str, str], ...] = ()  # edges whose back-edge flag changed
    notes: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.replaced or self.edges_added or self.edges_removed
                    or self.edges_marked)

    def summary(self) -> str:
        parts = []
        for label, items in (("added", self.added), ("removed", self.removed), ("replaced", self.replaced)):
            if items:
                parts.append(f"{label} {_names(items)}")
        for label, items in (("+edges", self.edges_added), ("-edges", self.edges_removed),
                             ("re-marked edges", self.edges_marked)):
            if items:
                parts.append(f"{label} {_names([f'{u}->{v}' for u, v in items])}")
        parts.extend(self.notes)
        return "; ".join(parts) if parts else "no change"

    def as_dict(self) -> dict[str, Any]:
        return {"pass": self.name, "seconds": self.seconds, "added": list(self.added),
                "removed": list(self.removed), "replaced": list(self.replaced),
                "edges_added": [list(e) for e in self.edges_added],
                "edges_removed": [list(e) for e in self.edges_removed],
                "edges_marked": [list(e) for e in self.edges_marked], "notes": list(self.notes)}


def _names(items, limit: int = 6) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f" (+{len(items) - limit})" if len(items) > limit else "")


def _edges(graph: Graph) -> dict[tuple[str, str], bool]:
    return {(u, v): bool(b) for u, v, b in graph.nx.edges(data="back")}


class ChangeLog:
    """Records a PassRecord per pass by diffing node identities (Ops are immutable) and edges.

    Instruments only watch, so the graph after one pass is the graph before the next: the snapshot
    taken after a pass serves as the next pass's "before" when that pass receives the same Graph.
    """

    def __init__(self) -> None:
        self.records: list[PassRecord] = []
        self._nodes: dict[str, Op] = {}
        self._edges: dict[tuple[str, str], bool] = {}
        self._after: tuple[Graph, dict[str, Op], dict[tuple[str, str], bool]] | None = None

    def before_pass(self, p: BoundPass, graph: Graph, ctx: PassContext) -> None:
        if self._after is not None and self._after[0] is graph:
            _, self._nodes, self._edges = self._after
        else:
            self._nodes, self._edges = dict(graph.ops()), _edges(graph)

    def after_pass(self, p: BoundPass, graph: Graph, ctx: PassContext, seconds: float) -> None:
        after = dict(graph.ops())
        edges = _edges(graph)
        self._after = (graph, after, edges)
        before, same = self._nodes, after.keys() == self._nodes.keys()
        added = () if same else tuple(n for n in after if n not in before)
        removed = () if same else tuple(n for n in before if n not in after)
        replaced = tuple(n for n, op in after.items() if before.get(n, op) is not op)
        e_add = tuple(sorted(edges.keys() - self._edges.keys()))
        e_rem = tuple(sorted(self._edges.keys() - edges.keys()))
        marked = tuple(sorted(e for e, b in edges.items() if self._edges.get(e, b) != b))
        self.records.append(PassRecord(str(p), seconds, added, removed, replaced, e_add, e_rem, marked,
                                       tuple(ctx.notes)))


class PrintIR:
    """Prints the IR after every pass (`names` empty) or after the named passes only."""

    def __init__(self, stream: TextIO, names: tuple[str, ...] = (), fmt: str = "text",
                 log: ChangeLog | None = None) -> None:
        self.stream, self.names, self.fmt, self.log = stream, names, fmt, log

    def before_pass(self, p: BoundPass, graph: Graph, ctx: PassContext) -> None:
        pass

    def after_pass(self, p: BoundPass, graph: Graph, ctx: PassContext, seconds: float) -> None:
        if self.names and p.name not in self.names:
            return
        from nircomp.printer import format_graph

        change = f"; {self.log.records[-1].summary()}" if self.log and self.log.records else ""
        self.stream.write(f"// -----// IR after {p} ({seconds * 1e3:.1f} ms{change}) //----- //\n")
        self.stream.write(format_graph(graph, self.fmt) + "\n")


class DumpIR:
    """Writes the IR after each pass to numbered files: DIR/00_verify.txt, DIR/01_infer-shapes.txt, ..."""

    def __init__(self, directory: str) -> None:
        self.directory, self.count = directory, 0
        os.makedirs(directory, exist_ok=True)

    def before_pass(self, p: BoundPass, graph: Graph, ctx: PassContext) -> None:
        pass

    def after_pass(self, p: BoundPass, graph: Graph, ctx: PassContext, seconds: float) -> None:
        from nircomp.printer import format_graph

        path = os.path.join(self.directory, f"{self.count:02d}_{p.name}.txt")
        with open(path, "w") as f:
            f.write(f"// {p}\n{format_graph(graph)}\n")
        self.count += 1


class VerifyEach:
    """Runs the `verify` pass after every other pass, so a pass that breaks the IR is named at once."""

    def before_pass(self, p: BoundPass, graph: Graph, ctx: PassContext) -> None:
        pass

    def after_pass(self, p: BoundPass, graph: Graph, ctx: PassContext, seconds: float) -> None:
        if p.name == "verify":
            return
        from nircomp.errors import CompileError

        try:
            get_pass("verify").bind()(graph, ctx)
        except CompileError as e:
            e.message = f"IR invalid after pass {p}: {e.message}"
            e.pass_name = f"verify after {p.name}"
            raise


@dataclass
class Timing:
    """Collects (pass, seconds) pairs; `report()` is the table `--time-passes` prints."""

    rows: list[tuple[str, float]] = field(default_factory=list)

    def before_pass(self, p: BoundPass, graph: Graph, ctx: PassContext) -> None:
        pass

    def after_pass(self, p: BoundPass, graph: Graph, ctx: PassContext, seconds: float) -> None:
        self.rows.append((str(p), seconds))

    def report(self) -> str:
        total = sum(s for _, s in self.rows) or 1e-12
        lines = [f"{'pass':<48} {'ms':>9} {'%':>6}"]
        lines += [f"{name:<48} {s * 1e3:9.2f} {100 * s / total:6.1f}" for name, s in self.rows]
        lines.append(f"{'total':<48} {total * 1e3:9.2f} {100.0:6.1f}")
        return "\n".join(lines)
