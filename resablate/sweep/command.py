"""The ``resablate sweep`` options that name a sweep again: its profile and overrides, where it
keeps its trials and which Ray runs them. The --resume line a stopped sweep prints and the
command a Ray Job runs on the head node are both built from them, so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Sequence

RESULTS_DIR = "resablate-runs"  # --results-dir's default


def sweep_options(
    profile: str | None,
    overrides: Sequence[str],
    results_dir: str = RESULTS_DIR,
    storage: str | None = None,
    address: str | None = None,
    inline: bool = False,
) -> list[str]:
    """The options that find the same sweep (its spec), its trial folders and checkpoints, and
    its cluster; those at their default are left out."""
    return [
        *(["--profile", profile] if profile else []),
        *(word for override in overrides for word in ("--set", override)),
        *(["--results-dir", results_dir] if results_dir != RESULTS_DIR else []),
        *(["--storage", storage] if storage else []),
        *(["--address", address] if address else []),
        *(["--inline"] if inline else []),
    ]
