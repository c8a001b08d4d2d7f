"""Reading a sweep: YAML file -> profile and ``--set`` overrides -> grid -> checked SweepSpec.

Every mistake becomes one :class:`~resablate.errors.SpecError` naming where the bad value came
from: the file, a profile (``sweep.yaml (profile cpu)``) or an override (``--set
model.depth=7``). Each override's origin is recorded when it is applied (:class:`Origins`), so
later errors about a field (a grid point that does not fit, see plan.py) name it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resablate.errors import ConfigError, SpecError
from resablate.registry import did_you_mean
from resablate.spec import catalog, plugins
from resablate.spec.fields import dotted, fields_at, short, trial_paths
from resablate.spec.schema import GridSpec, ResourcesSpec, SweepSpec

# --------------------------------------------------------------------------------------------
# YAML


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that gives one key twice (PyYAML would silently keep the last value)."""

    def __init__(self, field: str, key: Any, first: int, second: int) -> None:
        super().__init__(f"{field}: key {key!r} is given twice")
        self.field, self.key, self.lines = field, key, (first, second)


def _duplicate(root: yaml.Node | None) -> DuplicateKeyError | None:
    """The first mapping in the composed document that gives a key twice (a ``<<`` merge may be
    overridden), walking keys and indices from the root; None when there is none."""
    stack: list[tuple[yaml.Node | None, tuple[Any, ...]]] = [(root, ())]
    seen: set[int] = set()  # anchors may make the document a graph
    while stack:
        node, path = stack.pop(0)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, Any], int] = {}
            for key, _ in node.value:
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                    continue
                line = key.start_mark.line + 1
                if (key.tag, key.value) in lines:
                    first = lines[(key.tag, key.value)]
                    return DuplicateKeyError(dotted((*path, key.value)), key.value, first, line)
                lines[(key.tag, key.value)] = line
            stack += [(v, (*path, getattr(k, "value", "?"))) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(v, (*path, i)) for i, v in enumerate(node.value)]
    return None


def _load(text: str) -> Any:
    """``yaml.safe_load``, refusing a key given twice in a mapping (PyYAML keeps the last)."""
    raw = yaml.safe_load(text)
    twice = _duplicate(yaml.compose(text))  # nodes only: composing constructs no object
    if twice is not None:
        raise twice
    return raw


def _twice(error: DuplicateKeyError) -> str:
    first, second = error.lines
    where = f"lines {first} and {second}" if first != second else f"line {first}"
    return f"key {error.key!r} is given twice ({where}); keep one"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a sweep file as ``yaml.safe_load`` does; every failure (a key given twice too) is a
    one-line SpecError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            source, "", "no such file; check the path (ready sweeps are in sweeps/)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            source, "", f"cannot read the file ({exc.__class__.__name__}: {exc})"
        ) from None
    try:
        raw = _load(text)
    except DuplicateKeyError as exc:
        raise SpecError(source, exc.field, _twice(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            source, "", f"{where}invalid YAML ({problem}); fix the syntax there"
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(
            source, "", f"a sweep file is a YAML mapping with at least 'name', got {short(raw)}"
        )
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise SpecError(source, short(bad[0]), "field names must be strings")
    return raw


# --------------------------------------------------------------------------------------------
# Overrides


@dataclass(frozen=True)
class Origins:
    """Where the value of each field came from: the profile entry or ``--set`` that set it or a
    section above it (``set_by``: dotted path -> origin, recorded as each was applied), else the
    sweep file ``source``."""

    source: str
    set_by: Mapping[str, str] = field(default_factory=dict)

    def of(self, field: str) -> str:
        path = field
        while path:
            if path in self.set_by:
                return self.set_by[path]
            path = path[: max(path.rfind("."), path.rfind("["), 0)]
        return self.source


Override = tuple[str, str, Any]  # (where it came from, for errors; dotted path; value)


def parse_override(text: str) -> tuple[str, Any]:
    """``'model.depth=8'`` -> ``('model.depth', 8)``; the value is read as YAML."""
    source = f"--set {text}"
    path, sep, value_text = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError(source, "", "expected FIELD=VALUE, e.g. --set model.depth=8")
    if not value_text.strip():  # an explicit null is a value (train.recipe=null)
        raise SpecError(source, path, "empty value; write e.g. --set model.depth=8")
    try:
        value = _load(value_text)
    except DuplicateKeyError as exc:
        field = path + ("" if exc.field.startswith("[") else ".") + exc.field
        raise SpecError(source, field, _twice(exc)) from None
    except yaml.YAMLError:
        raise SpecError(source, path, f"cannot read {value_text!r} as a YAML value") from None
    check_path(source, path)
    return path, value


def check_path(source: str, path: str) -> None:
    """A field an override (or a profile) may set: a grid axis, a nested section's field, or a
    known field of the sweep; else a one-line error naming ``source``."""
    top = path.split(".")[0]
    if top == "grid":
        if path == "grid" or path.count(".") == 0:
            raise SpecError(source, path, "name a grid axis, e.g. --set grid.model.depth=[2,4]")
        return
    if top in (
        "probes",
        "search",
        "scheduler",
        "report",
    ):  # nested: checked by the schema like the file
        return
    known = (
        [f for f in SweepSpec.model_fields]
        + trial_paths()
        + [f"{s}.{f}" for s in ("resources", "tracking") for f in fields_at((s,))]
        + [f"resources.{former}" for former in ResourcesSpec.FORMER_NAMES]
    )
    if path not in known:
        raise SpecError(source, path, f"unknown field{did_you_mean(path, known)}")


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], before: list[Override] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``--set`` overrides (after the already parsed ``before``, a profile's entries) to
    the raw YAML mapping, before validation; returns it with the origin of each path set.

    ``--set grid.<axis>=[...]`` replaces (or adds) a grid axis; setting a field that is a plain
    grid axis removes the axis, so the trial config takes the one value given.
    """
    items = [*(before or []), *((f"--set {t}", *parse_override(t)) for t in overrides)]
    out = json.loads(json.dumps(raw, default=str)) if items else raw
    set_by: dict[str, str] = {}
    for where, path, value in items:
        grid = out.get("grid")
        if grid is None:
            grid = out["grid"] = {}
        if not isinstance(grid, dict):
            raise SpecError(where, "grid", "the sweep's grid is not a mapping")
        for earlier in [p for p in set_by if p == path or p.startswith((path + ".", path + "["))]:
            del set_by[earlier]  # this override replaces what they set
        set_by[path] = where
        if path.startswith("grid."):
            grid[path[len("grid.") :]] = value
            continue
        for group in grid.get("zip") or []:
            if isinstance(group, dict) and path in group:
                raise SpecError(
                    where,
                    path,
                    "is part of a zip group; override it with --set grid.zip=...",
                )
        grid.pop(path, None)
        set_by.pop(f"grid.{path}", None)
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(where, part, "is not a section in the sweep file")
            node = child
        node[parts[-1]] = value
    if out.get("grid") == {} and "grid" not in raw:
        del out["grid"]
    return out, set_by


def profile_overrides(raw: dict[str, Any], source: str, profile: str | None) -> list[Override]:
    """Take the ``profiles:`` section out of a raw sweep file; the chosen profile's entries
    (dotted field -> value, as ``--set`` takes them) become overrides applied before ``--set``."""
    if "profile" in raw:  # SweepSpec's record of the --profile applied, never the file's
        raise SpecError(
            source,
            "profile",
            "unknown top-level key; did you mean 'profiles:' (a mapping of profile names to"
            " fields, chosen with --profile NAME)?",
        )
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise SpecError(
            source,
            "profiles",
            "must map each profile name to fields, e.g. {cpu: {train.epochs: 2}}",
        )
    if profile is None:
        return []
    if profile not in profiles:
        choices = ", ".join(profiles) or "none: the file has no profiles: section"
        raise SpecError(source, "--profile", f"no profile {profile!r}; choose from {choices}")
    raw["profile"] = profile
    where = f"{source} (profile {profile})"
    for name in profiles[profile]:
        check_path(where, str(name))
    return [(where, str(name), value) for name, value in profiles[profile].items()]


# --------------------------------------------------------------------------------------------
# The grid


def _parse_values(source: str, field: str, values: Any, unique: bool = True) -> list[Any]:
    if not isinstance(values, list):
        raise SpecError(source, field, f"{short(values)} is not a list; write e.g. [2, 4, 8]")
    if not values:
        raise SpecError(source, field, "an empty list gives no trial; give at least one value")
    seen: list[str] = []
    for value in values if unique else []:
        key = json.dumps(value, sort_keys=True, default=str)
        if key in seen:
            raise SpecError(source, field, f"value {short(value)} is listed twice")
        seen.append(key)
    return values


def _check_axis(source: str, path: str) -> None:
    legal = trial_paths()
    if path not in legal:
        raise SpecError(
            source,
            f"grid.{path}",
            f"not a field of the trial config{did_you_mean(path, legal)}"
            " (grid axes are dotted paths such as model.depth, init.c, seed)",
        )


def _mappings(
    grid: dict[str, Any], key: str, source: str, shape: str
) -> list[tuple[str, dict[str, Any]]]:
    """``grid[key]`` as (field path, non-empty mapping) pairs: zip groups, exclude rules."""
    items = grid.get(key) or []
    if not isinstance(items, list):
        raise SpecError(source, f"grid.{key}", f"must be a list of mappings {shape}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item:
            raise SpecError(source, f"grid.{key}[{i}]", f"must be a non-empty mapping {shape}")
    return [(f"grid.{key}[{i}]", item) for i, item in enumerate(items)]


def parse_grid(raw: Any, source: str) -> GridSpec:
    """The ``grid`` mapping -> GridSpec, checking every path, list and rule."""
    if raw is None:
        return GridSpec()
    if not isinstance(raw, dict):
        raise SpecError(source, "grid", "must be a mapping of axis -> list of values")
    axes: dict[str, list[Any]] = {}
    zips: list[dict[str, list[Any]]] = []
    taken: set[str] = set()
    for path, values in raw.items():
        if path in ("zip", "exclude"):
            continue
        _check_axis(source, str(path))
        axes[path] = _parse_values(source, f"grid.{path}", values)
        taken.add(path)
    for where, group in _mappings(raw, "zip", source, "axis -> list of values"):
        lengths = set()
        parsed: dict[str, list[Any]] = {}
        for path, values in group.items():
            _check_axis(source, str(path))
            if path in taken:
                raise SpecError(source, f"{where}.{path}", "this axis is already in the grid")
            # a zipped list may repeat a value; the zipped tuples may not
            parsed[path] = _parse_values(source, f"{where}.{path}", values, unique=False)
            lengths.add(len(values))
            taken.add(path)
        if len(lengths) > 1:
            sizes = ", ".join(f"{p}: {len(v)}" for p, v in parsed.items())
            raise SpecError(source, where, f"zipped lists must have one length, got {sizes}")
        rows = [json.dumps(row, default=str) for row in zip(*parsed.values(), strict=True)]
        for i, row in enumerate(rows):
            if row in rows[:i]:
                raise SpecError(source, where, f"entry {i} repeats entry {rows.index(row)}")
        zips.append(parsed)
    rules = _mappings(raw, "exclude", source, "axis -> value or list of values")
    for where, rule in rules:
        for path in rule:
            if path not in taken:
                raise SpecError(
                    source,
                    f"{where}.{path}",
                    f"not a grid axis{did_you_mean(str(path), sorted(taken))}"
                    f" (axes: {', '.join(sorted(taken)) or 'none'})",
                )
    return GridSpec(axes=axes, zip=zips, exclude=[rule for _, rule in rules])


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class Loaded:
    """A validated sweep and where each of its overridden fields came from."""

    spec: SweepSpec
    origins: Origins


def load(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), profile: str | None = None
) -> Loaded:
    """Read, override and validate a sweep file (the grid is expanded by grid.py / plan.py).

    The file's ``profiles.<profile>`` entries apply first, then ``overrides`` (``--set``). An
    error in a field that an override set names the override instead of the file, and one that
    a profile set names the profile.
    """
    source = str(path)
    raw = read_yaml(path)
    chosen = profile_overrides(raw, source, profile)
    raw, set_by = apply_overrides(raw, list(overrides), chosen)
    origins = Origins(source, set_by)
    _load_plugins(raw.get("plugins"), Path(path).parent, origins)
    try:
        grid = parse_grid(raw.get("grid"), source)
        spec = catalog.sweep_spec({**raw, "grid": grid})
    except ConfigError as exc:
        raise SpecError(origins.of(exc.field), exc.field, exc.problem) from None
    except SpecError as exc:
        raise SpecError(origins.of(exc.field), exc.field, exc.problem) from None
    return Loaded(spec, origins)


def _load_plugins(entries: Any, base: Path, origins: Origins) -> None:
    """Import the sweep's ``plugins`` before its names are checked (spec/plugins.py)."""
    try:
        plugins.load(plugins.resolved(plugins.entries(entries), base))
    except ValueError as exc:
        raise SpecError(origins.of("plugins"), "plugins", str(exc)) from None


def load_sweep(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), profile: str | None = None
) -> SweepSpec:
    """The validated SweepSpec of :func:`load`."""
    return load(path, overrides, profile).spec
