"""One registry pattern for everything a run picks by name: CAM methods, model sources, segmentation backends,
jobs and map products.

A :class:`Registry` maps names to entries. An entry is added with :meth:`Registry.register`, as a decorator
where it is defined, or as a ``"module:attribute"`` string, imported only when a run asks for it (a backend that
imports SAM 2, a job that imports timm). Looking up a name that is not there raises a KeyError naming the kind and
every known name.

Examples
--------
>>> COLOURS = Registry("colour")
>>> @COLOURS.register("red")
... def red():
...     return (255, 0, 0)
>>> _ = COLOURS.register("path", "os.path:join")  # imported when asked for
>>> sorted(COLOURS), COLOURS["red"](), COLOURS["path"]("a", "b")
(['path', 'red'], (255, 0, 0), 'a/b')
>>> COLOURS["blue"]
Traceback (most recent call last):
KeyError: "unknown colour 'blue'; known: path, red"
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any


class Registry(MutableMapping):
    """Named entries of one kind (``kind`` names it in errors).

    Parameters
    ----------
    kind : str
        What an entry is ("CAM method", "job"), for error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None) -> Any:
        """Add ``entry`` under ``name`` and return it; without an entry, a decorator that adds what it decorates.
        A string entry ``"module:attribute"`` is imported on first lookup. A name is registered once."""
        if entry is None:
            return lambda decorated: self.register(name, decorated)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries)) or '(none)'}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attribute = entry.split(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def __setitem__(self, name: str, entry: Any) -> None:
        self.register(name, entry)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:  # without importing a lazy entry
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
