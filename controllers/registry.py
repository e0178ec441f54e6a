"""A name -> factory registry filled by a decorator: what the controller, training-loop agent
and environment-task registries (`controllers.base`, `controllers.agents`,
`worldmodels.tasks`) are built on.

    CONTROLLERS = Registry("controller")
    @CONTROLLERS.register("ppo")
    def _ppo(cfg, **deps): ...
    CONTROLLERS.get("ppo")       # the factory
    CONTROLLERS.get("pppo")      # ValueError: unknown controller 'pppo' (known: ppo); did you mean ppo?

Lives in `controllers` because it is the lowest package the three share (`worldmodels`
imports `controllers`, never the other way).
"""
from __future__ import annotations

import difflib
from typing import Callable


class Registry:
    """Named factories of one ``kind`` (used in error messages, e.g. "environment");
    ``flag``: the command-line flag that selects one (prefixes the error, e.g.
    ``--env.name``)."""

    def __init__(self, kind: str, flag: str = ""):
        self.kind, self.flag = kind, flag
        self._items: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: ``@registry.register("name")`` on a factory (function or class); returns
        it unchanged. A name registered again is replaced (re-imports, tests)."""
        def deco(factory):
            self._items[name] = factory
            return factory
        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str) -> Callable:
        """The factory registered as ``name``; else a one-line ValueError naming the known
        names and the closest ones."""
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            prefix = f"{self.flag}: " if self.flag else ""
            raise ValueError(f"{prefix}unknown {self.kind} {name!r} (known: {', '.join(self.names())}){hint}")
        return self._items[name]
