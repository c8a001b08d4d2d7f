"""Name -> factory registries: every ablation axis is one (timm's norm and act maps).

YAML strings are the keys; a duplicate registration raises; an unknown name raises a ValueError
that lists the legal names and a did-you-mean, which the spec turns into a one-line user error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """An ordered mapping of YAML names to factories of one kind (``what``: 'shortcut', ...)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(factory: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.what} '{name}' is registered twice")
            self._entries[name] = factory
            return factory

        return add

    def add(self, name: str, factory: T) -> None:
        self.register(name)(factory)

    def names(self) -> list[str]:
        return list(self._entries)

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise ValueError naming the choices."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.what} '{name}'{did_you_mean(name, self.names())}"
                f" (choices: {', '.join(self.names())})"
            )
        return name

    def __getitem__(self, name: str) -> T:
        return self._entries[self.check(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
