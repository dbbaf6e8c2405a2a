"""Backends (installed as `nircomp.backends`): the `Backend` protocol and the registry.

A backend declares what it lowers (`Capabilities`: solvers and op kinds) so the driver can refuse a
graph early, naming the nodes it cannot lower. Third-party backends register through the entry-point
group `nircomp.backends` (a module whose import calls `register_backend`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from nircomp.errors import CompileError
from nircomp.ir import Graph


@dataclass(frozen=True)
class Capabilities:
    """What a backend can lower: solver names and op kinds."""

    solvers: frozenset[str]
    kinds: frozenset[str]

    def unsupported(self, graph: Graph) -> list[tuple[str, str]]:
        """(node, kind) pairs this backend cannot lower."""
        return [(name, op.kind) for name, op in graph.ops() if op.kind not in self.kinds]


class Backend(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def lower(self, graph: Graph, options: dict[str, Any]) -> Any: ...


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Register a backend instance under its `name`; a second one of the same name is an error."""
    old = BACKENDS.get(backend.name)
    if old is not None and type(old) is not type(backend):
        raise CompileError(f"backend {backend.name!r} registered twice: {type(old).__module__}."
                           f"{type(old).__qualname__} and {type(backend).__module__}.{type(backend).__qualname__}")
    BACKENDS[backend.name] = backend
    return backend


def available_backends() -> Iterable[str]:
    """Names of the registered backends: the built-ins and every `nircomp.backends` plug-in."""
    import nircomp.backends.equinox  # noqa: F401  (registers "equinox")
    from nircomp.plugins import load_plugins

    load_plugins("nircomp.backends")
    return sorted(BACKENDS)
