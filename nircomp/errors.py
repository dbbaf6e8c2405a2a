"""The error family of nircomp: every user-facing failure is a `CompileError`.

`str(err)` is the one line the CLI prints, e.g.
``net.nir: node 'fc2' [check-zero-bias]: bias != 0 (max |b| = 0.31); the analytical solver needs
zero bias: use solver='step'``. `err.render(graph)` shows the IR with the offending nodes marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from nircomp.ir import Graph


class CompileError(Exception):
    """A located, user-facing error: what went wrong, where (file, node, pass) and what to do."""

    def __init__(
        self,
        message: str,
        *,
        pass_name: str | None = None,
        nodes: Sequence[str] = (),
        hint: str | None = None,
        source: str | None = None,
        previous_passes: Sequence[str] = (),
    ):
        super().__init__(message)
        self.message = message
        self.pass_name = pass_name
        self.nodes = tuple(nodes)
        self.hint = hint
        self.source = source
        self.previous_passes = tuple(previous_passes)

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.nodes:
            names = ", ".join(repr(n) for n in self.nodes[:5])
            more = f" (+{len(self.nodes) - 5} more)" if len(self.nodes) > 5 else ""
            where.append(("node " if len(self.nodes) == 1 else "nodes ") + names + more)
        head = ": ".join(where)
        if self.pass_name:
            head = f"{head} [{self.pass_name}]" if head else f"[{self.pass_name}]"
        text = f"{head}: {self.message}" if head else self.message
        if self.hint:
            text += f"; {self.hint}"
        return text.replace("\r", "\\r").replace("\n", "\\n")  # one line even when file text holds newlines

    def render(self, graph: Graph) -> str:
        """The IR text with each offending node's line underlined and this error below it."""
        from nircomp.printer import format_graph

        lines = []
        for line in format_graph(graph).splitlines():
            lines.append(line)
            stripped = line.lstrip()
            if any(stripped.startswith(f"%{n} ") for n in self.nodes):
                indent = len(line) - len(stripped)
                lines.append(" " * indent + "^" * len(stripped))
                lines.append(" " * indent + f"error: {self.message}")
        if self.pass_name:
            lines.append(f"(in pass {self.pass_name}" + (
                f", after {', '.join(self.previous_passes)})" if self.previous_passes else ")"))
        return "\n".join(lines)


class LoadError(CompileError):
    """The file or `nir.NIRGraph` cannot be read into the IR."""


class VerifyError(CompileError):
    """The IR breaks an invariant (dangling edge, bad parameter, shape mismatch)."""


class PipelineError(CompileError):
    """The pipeline string or its options are malformed, or a pass name is unknown."""


class CheckError(CompileError):
    """A solver requirement (homogeneous parameters, zero bias, feed-forward) does not hold."""


class LoadWarning(UserWarning):
    """A file was repaired on load (the message names the node and the repair)."""


class CompileWarning(UserWarning):
    """A compile succeeded but a choice may not mean what the user expects (the message says why)."""
