"""Entry-point discovery for third-party passes (`nircomp.passes`) and backends (`nircomp.backends`).

An entry point names a module (``myplugin.passes = "myplugin.passes"``); loading it imports the module,
whose `@register_pass` / `@register_backend` decorators register what it provides. Duplicate names are
errors raised by the registries themselves.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from nircomp.errors import CompileError

_loaded: set[str] = set()


def load_plugins(group: str) -> None:
    if group in _loaded:
        return
    _loaded.add(group)
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as e:
            raise CompileError(f"plug-in {ep.name!r} ({ep.value}) of group {group} failed to load: "
                               f"{type(e).__name__}: {e}") from e
