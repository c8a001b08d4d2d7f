"""A sweep's own variants: ``plugins:`` names Python modules that register shortcuts, placements,
norms, activations, inits (any registry of :mod:`resablate`) before the sweep file is checked, so
that the sweep can name them like resablate's own.

    plugins: [my_shortcuts]          # a module importable from the sweep file's folder, or
    plugins: [variants/gates.py]     # a file, relative to the sweep file

Every process that builds the sweep's networks imports them too (a Ray worker, inline or on a
cluster, whose nodes must see the same files: clusters/README.md). Importing a plugin runs its
code, as the sweep runs the code of resablate itself: name only modules you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIX = "put it next to the sweep file, give a path to a .py file, or add its folder to PYTHONPATH"


class _NotFound(ValueError):
    """A plugin that is not where its entry says (not an error raised by the plugin's own code)."""


def entries(raw: Any) -> list[str]:
    """A sweep file's ``plugins:`` value as a list of entries (ValueError: not one)."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, str) and e for e in raw):
        raise ValueError("expected a list of module names or .py files")
    return raw


def resolved(entries: Sequence[str], base: str | Path) -> tuple[tuple[str, str], ...]:
    """``entries`` with the folder each is found from: (a module's dotted name, the sweep file's
    folder) or (a .py file's absolute path, "")."""
    folder = str(Path(base).resolve())
    return tuple(
        (str((Path(folder) / e).resolve()), "") if e.endswith(".py") else (e, folder)
        for e in entries
    )


def load(plugins: Sequence[tuple[str, str]]) -> None:
    """Import each plugin once per process (:func:`resolved`'s pairs); a ValueError names the one
    that cannot be imported and why, in one line."""
    for entry, folder in plugins:
        try:
            _import(entry, folder)
        except _NotFound:
            raise
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise ValueError(f"{entry!r} could not be imported ({why})") from None


def _import(entry: str, folder: str) -> None:
    if not folder:  # a file
        path = Path(entry)
        if not path.is_file():
            raise _NotFound(f"no file {entry}; {FIX}")
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        name = f"resablate_plugin_{path.stem}_{digest}"
        if name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return
    if entry in sys.modules:
        return
    if folder not in sys.path:
        sys.path.append(folder)  # after everything else: a plugin shadows no installed module
    try:
        importlib.import_module(entry)
    except ModuleNotFoundError as exc:
        if exc.name is not None and entry.startswith(exc.name):
            where = f"looked in {folder} and sys.path"
            raise _NotFound(f"no module {entry!r} ({where}); {FIX}") from None
        raise
