"""Backends (installed as `nircomp.backends`): the `Backend` protocol and the registry.

A backend is an object with a `name`, its `capabilities` and a `lower(graph, options)` method:

- `capabilities` (`Capabilities`): the solvers and op kinds it lowers. `nircomp.compile` checks them
  before lowering and raises one CompileError naming every node of a kind the backend lacks.
- `lower(graph, options)` receives the graph after the pipeline (shapes inferred, back edges marked
  `back=True`, Affine/Linear + neuron pairs fused into Dense<neuron> nodes; `nircomp.schedule.
  build_schedule(graph, dt, mode)` turns it into the step solver's static schedule, fused nodes split
  again) and the resolved options: `dt`, `solver` (the one chosen), `semantics` (a
  `nircomp.semantics.Semantics`), `dtype` (None: the default float), `schedule` (a mode of
  `nircomp.schedule.MODES`), plus `out` and the backend's own options from the spec `"name{k=v ...}"`
  (values as text). It returns the model (`Program.model`), or `Lowered(model, artifacts)` when it
  writes files (`Program.artifacts`). It refuses what it cannot do (an option, a parameter) with a
  `CompileError`; the driver adds the source file and `[lower:<name>]`.
- Registration: `register_backend(instance)` when the module is imported. Built-ins are imported by
  `available_backends`; third-party backends are modules named in the entry-point group
  `nircomp.backends` (examples/plugin_backend is a complete one). A second backend class under a taken
  name is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from nircomp.errors import CompileError
from nircomp.ir import Graph


@dataclass(frozen=True)
class Capabilities:
    """What a backend can lower: solver names and op kinds; `noise`: whether it runs models compiled with
    `noise=` (nircomp.noise; compile refuses the option for a backend without it)."""

    solvers: frozenset[str]
    kinds: frozenset[str]
    noise: bool = False

    def unsupported(self, graph: Graph) -> list[tuple[str, str]]:
        """(node, kind) pairs this backend cannot lower."""
        return [(name, op.kind) for name, op in graph.ops() if op.kind not in self.kinds]


class Backend(Protocol):
    """What `nircomp.compile` lowers a graph with (the module docstring states the contract)."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def lower(self, graph: Graph, options: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Lowered:
    """What `lower` returns when it writes files: the model and the written files by role
    (`Program.artifacts`). A backend that writes nothing returns the model itself."""

    model: Any
    artifacts: Mapping[str, Path] = field(default_factory=dict)


def parse_backend_spec(text: str) -> tuple[str, dict[str, str]]:
    """A backend spec in the pipeline option syntax: `"source{module=net out=build}"` -> ("source",
    {"module": "net", "out": "build"}); values stay text for the backend to parse."""
    name, brace, rest = text.strip().partition("{")
    if brace and not rest.endswith("}"):
        raise CompileError(f"expected '}}' at the end of backend spec {text!r}")
    options = {}
    for item in rest[:-1].split():
        key, eq, value = item.partition("=")
        if not eq:
            raise CompileError(f"backend option {item!r} in {text!r} is not of the form key=value")
        options[key] = value
    return name.strip(), options


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
    import nircomp.backends.aot  # noqa: F401  (registers "aot")
    import nircomp.backends.equinox  # noqa: F401  (registers "equinox")
    import nircomp.backends.source  # noqa: F401  (registers "source")
    import nircomp.backends.to_nir  # noqa: F401  (registers "nir")
    from nircomp.plugins import load_plugins

    load_plugins("nircomp.backends")
    return sorted(BACKENDS)


def inputs_by_name(x: Any, names: Sequence[str], owner: str = "graph") -> dict[str, Any]:
    """A model's input `x` as {input name: value}: `x` itself for a graph with one Input, else a dict that
    must hold every input. `owner` names the model in the error ("graph", "artifact")."""
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        if missing:
            raise CompileError(f"missing input(s) {', '.join(missing)}; the {owner}'s inputs are {', '.join(names)}")
        return {n: x[n] for n in names}
    if len(names) == 1:
        return {names[0]: x}
    raise CompileError(f"the {owner} has {len(names)} inputs ({', '.join(names)}); pass a dict")
