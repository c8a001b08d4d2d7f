"""User-facing errors: each one is a single line that names where, what and the fix."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad sweep file, unreachable store, ...).

    The command line prints ``str(error)`` as one line on stderr and exits with code 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class SpecError(UserError):
    """A sweep file or override that does not validate: ``<source>: <field>: <problem>``."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class ConfigError(ValueError):
    """A cross-field problem in one trial's config, raised with the dotted path it concerns."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


class StoreError(UserError):
    """The tracking store failed mid-sweep (disk full, server gone, database corrupt).

    Everything recorded before the failure stays; the sweep stops, and ``--resume`` continues
    it once the store works again.
    """

    reason: str = ""  # the store's own words
