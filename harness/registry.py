"""A small generic registry: names -> lazily imported targets, with "did you mean" errors.

Built-ins are registered as `"module:attr"` strings so listing them imports nothing heavy; a target is
imported only when it is used. Third-party packages add entries through the entry-point group
`memory_harness.<kind>` (e.g. `memory_harness.systems`), each entry point naming its target.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoints, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")

ENTRY_POINT_PREFIX = "memory_harness"


class UnknownNameError(KeyError):
    """Raised for a name no registry entry has; the message suggests close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    target: str
    """`module:attr`, imported on first use."""
    description: str


class Registry(Generic[T]):
    """Names of one kind of plugin (tasks, systems, backends or metrics)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, T] = {}
        self._entry_points_read = False

    def register(self, name: str, target: str, description: str = "") -> None:
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        self._entries[name] = Entry(name, target, description)
        self._loaded.pop(name, None)

    def add(self, name: str, obj: T, description: str = "") -> None:
        """Register an object that is already imported (scripts and tests; built-ins use `register`)."""
        self._entries[name] = Entry(name, f"{getattr(obj, '__module__', '?')}:<object>", description)
        self._loaded[name] = obj

    def entries(self) -> list[Entry]:
        self._read_entry_points()
        return sorted(self._entries.values(), key=lambda e: e.name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def get(self, name: str) -> T:
        self._read_entry_points()
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self._unknown_message(name))
        module_name, attr = entry.target.split(":", 1)
        obj: T = getattr(importlib.import_module(module_name), attr)
        self._loaded[name] = obj
        return obj

    def _unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(known) or '(none)'}."

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in _plugin_entry_points().get(f"{ENTRY_POINT_PREFIX}.{self.kind}", ()):
            self._entries.setdefault(ep.name, Entry(ep.name, ep.value, f"plugin ({ep.dist.name if ep.dist else '?'})"))


@cache
def _plugin_entry_points() -> dict[str, EntryPoints]:
    # Each `entry_points(group=...)` call rescans every installed distribution (~15 ms with a few hundred):
    # scan once for all the registries, so `ls` pays for one scan rather than one per kind.
    installed = entry_points()
    return {g: installed.select(group=g) for g in installed.groups if g.startswith(f"{ENTRY_POINT_PREFIX}.")}
