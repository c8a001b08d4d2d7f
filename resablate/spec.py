"""The sweep file: YAML -> frozen, validated spec.

A sweep file has the sections of one trial's config (``seed``, ``model``, ``init``, ``data``,
``train``: the base every trial starts from), a ``grid`` of dotted paths into that config, and the
sections that belong to the whole sweep (``name``, ``description``, ``resources``, ``tracking``).
Field names are the YAML names of ../shared/science.md.

Every mistake becomes a :class:`~resablate.errors.SpecError`: one line naming the file, the field,
the bad value and the fix. Names of variants are checked against the registries of the modules that
build them (imported lazily, so that this module and grid.py stay free of torch).
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from resablate.errors import ConfigError, SpecError
from resablate.registry import did_you_mean

# Sections later issues add; naming them here turns "unknown field" into "not yet, see issue N".
RESERVED_SECTIONS = {"search": 6, "probes": 5, "scheduler": 6}


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def registries() -> dict[str, Any]:
    """The registry that names the legal values of each field that picks a variant."""
    from resablate import data, models, train

    return {
        "model.family": models.FAMILIES,
        "model.shortcut": models.SHORTCUTS,
        "model.norm": models.NORMS,
        "model.act": models.ACTS,
        "init.scheme": models.INITS,
        "data.name": data.DATASETS,
        "train.optimizer": train.OPTIMIZERS,
    }


def _registry_name(path: str, value: str) -> str:
    """Check ``value`` against the registry of field ``path`` (torch-side modules load here)."""
    return registries()[path].check(value)


class ModelSpec(Section):
    family: str = "mlp"
    depth: int = Field(4, ge=1)
    width: int = Field(10, ge=1)
    shortcut: str = "identity"
    shortcut_depth: int = Field(2, ge=1)
    activation: str = "mid"
    norm: str = "none"
    act: str = "relu"
    downsample: Literal["A", "B"] = "A"

    @field_validator("family", "shortcut", "norm", "act")
    @classmethod
    def _known(cls, value: str, info: Any) -> str:
        return _registry_name(f"model.{info.field_name}", value)

    @field_validator("activation")
    @classmethod
    def _placement(cls, value: str) -> str:
        from resablate.models import parse_placement

        parse_placement(value)
        return value


class InitSpec(Section):
    scheme: str = "he"
    c: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    eps: float = Field(1e-3, ge=0.0, allow_inf_nan=False)

    @field_validator("scheme")
    @classmethod
    def _known(cls, value: str) -> str:
        return _registry_name("init.scheme", value)


class DataSpec(Section):
    name: str = "digits"
    whiten: int | None = Field(None, ge=1)
    target: Literal["label", "onehot"] = "label"
    # `digits`, `synthetic`: share of the examples held out; torchvision sets keep their own split.
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = 0
    # Folder of the torchvision sets' files; null: $RESABLATE_DATA, else ./data.
    root: str | None = Field(None, min_length=1)
    # Keep this many training examples (seeded by split_seed): CPU-scale runs of big sets.
    subset: int | None = Field(None, ge=10)
    # Pad-crop-flip the training batches; null: the data set's standard (on for cifar10/100).
    augment: bool | None = None
    # `synthetic` only: Gaussian inputs labelled by a fixed random teacher.
    samples: int = Field(2000, ge=10)
    features: int = Field(20, ge=1)
    classes: int = Field(10, ge=2)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return _registry_name("data.name", value)


class TrainSpec(Section):
    loss: Literal["ce", "mse"] = "ce"
    optimizer: str = "sgd"
    lr: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(10, ge=1)
    batch_size: int | Literal["full"] = "full"
    # A training loss above this (or NaN/inf) ends the trial as `diverged` (science.md §4).
    diverge_above: float = Field(1e6, gt=0.0)

    @field_validator("optimizer")
    @classmethod
    def _known(cls, value: str) -> str:
        return _registry_name("train.optimizer", value)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> int | str:
        if value == "full" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        raise ValueError("use a positive integer or 'full' (the whole training set per step)")


class TrialConfig(Section):
    """Everything one trial needs; the resolved form of this is what the trial id hashes."""

    seed: int = 0
    model: ModelSpec = ModelSpec()
    init: InitSpec = InitSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        from resablate import data, models

        if self.train.loss == "mse" and self.data.target != "onehot":
            raise ConfigError(
                "data.target", "loss mse needs one-hot targets; set data.target: onehot"
            )
        if self.model.norm == "batch" and self.train.batch_size == 1:
            raise ConfigError(
                "train.batch_size", "batch norm needs 2 or more samples per batch; use 2 or more"
            )
        shape = data.DATASETS[self.data.name].shape(self.data)  # raises ConfigError
        models.check(self.model, self.init, shape)  # raises ConfigError
        return self


class ResourcesSpec(Section):
    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)
    max_concurrent_trials: int | None = Field(None, ge=1)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # safe as a folder name and in a URL


class TrackingSpec(Section):
    uri: str | None = None
    experiment: str | None = Field(None, pattern=NAME_PATTERN)


class GridSpec(Section):
    """Axes (path -> values) multiplied out, ``zip`` groups walked in step, ``exclude`` rules."""

    axes: dict[str, list[Any]] = {}
    zip: list[dict[str, list[Any]]] = []
    exclude: list[dict[str, Any]] = []

    def paths(self) -> list[str]:
        return list(self.axes) + [p for group in self.zip for p in group]


class SweepSpec(Section):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = 0
    model: ModelSpec = ModelSpec()
    init: InitSpec = InitSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    grid: GridSpec = GridSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()

    def base_config(self) -> dict[str, Any]:
        """The trial config every grid point starts from, as plain nested dicts."""
        return self.model_dump(mode="json", include=set(TrialConfig.model_fields))

    def hash(self) -> str:
        """Stable hash of the resolved spec (what ran, whatever the YAML's formatting)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Field paths


def _section_of(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def trial_paths() -> list[str]:
    """Every dotted path a grid axis may name: ``seed``, ``model.depth``, ..."""
    paths = []
    for name in TrialConfig.model_fields:
        section = _section_of(TrialConfig, name)
        paths += [f"{name}.{f}" for f in section.model_fields] if section else [name]
    return paths


def describe() -> list[tuple[str, Any, str]]:
    """(dotted path, default, legal values) of every trial-config field (``resablate fields``)."""
    from resablate.models.placement import POSITIONS

    names = {path: ", ".join(r.names()) for path, r in registries().items()}
    names["model.activation"] = f"{', '.join(POSITIONS)}, combinations joined by '+', linear"
    out = []
    for path in trial_paths():
        section, _, leaf = path.partition(".")
        model = _section_of(TrialConfig, section) if leaf else None
        field = model.model_fields[leaf] if model else TrialConfig.model_fields[section]
        bounds = [_bound(m) for m in field.metadata]
        legal = names.get(path) or " ".join([_type_name(field.annotation), *filter(None, bounds)])
        out.append((path, field.default, legal))
    return out


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in args)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _bound(constraint: Any) -> str:
    for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if hasattr(constraint, attr):
            return f"{sign} {getattr(constraint, attr)}"
    return ""


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields of the section at ``loc`` (for did-you-mean), or []."""
    model: type[BaseModel] = SweepSpec
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            return []
        section = _section_of(model, part)
        if section is None:
            return []
        model = section
    return list(model.model_fields)


# --------------------------------------------------------------------------------------------
# Errors


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(error: ValidationError, prefix: tuple[Any, ...] = ()) -> tuple[str, str]:
    """The first pydantic error as (dotted field, one-line problem with the value and the fix)."""
    first = error.errors()[0]
    loc = tuple(p for p in first["loc"] if p not in ("int", "constrained-str"))
    # Union branches add their type name to the location; keep only real field names.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("literal[")))
    kind, value = first["type"], first.get("input")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause.field, cause.problem
    field = _dotted(prefix + loc)
    if kind == "extra_forbidden":
        name = str(loc[-1])
        if not loc[:-1] and name in RESERVED_SECTIONS:
            issue = RESERVED_SECTIONS[name]
            return field, f"the '{name}' section is not supported yet (planned in issue {issue})"
        legal = _fields_at(prefix + loc[:-1])
        hint = did_you_mean(name, legal)
        return field, f"unknown field '{name}'{hint} (fields here: {', '.join(legal)})"
    if kind == "missing":
        return field, "this field is required"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return field, f"{_short(value)} is not allowed; use {expected}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return field, f"expected a mapping of fields, got {_short(value)}"
    if kind == "string_pattern_mismatch":
        return field, (
            f"{_short(value)} is not a valid name; use letters, digits, '_', '.', '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    if cause is not None:
        return field, f"{_short(value)}: {cause}"
    return field, f"{_short(value)}: {first['msg'][:1].lower()}{first['msg'][1:]}"


# --------------------------------------------------------------------------------------------
# Loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a sweep file with ``yaml.safe_load``; every failure is a one-line SpecError."""
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
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            source, "", f"{where}invalid YAML ({problem}); fix the syntax there"
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(
            source, "", f"a sweep file is a YAML mapping with at least 'name', got {_short(raw)}"
        )
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise SpecError(source, _short(bad[0]), "field names must be strings")
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """``'model.depth=8'`` -> ``('model.depth', 8)``; the value is read as YAML."""
    source = f"--set {text}"
    path, sep, value_text = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError(source, "", "expected FIELD=VALUE, e.g. --set model.depth=8")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        raise SpecError(source, path, f"cannot read {value_text!r} as a YAML value") from None
    if value is None:
        raise SpecError(source, path, "empty value; write e.g. --set model.depth=8")
    top = path.split(".")[0]
    if top in RESERVED_SECTIONS:
        issue = RESERVED_SECTIONS[top]
        raise SpecError(source, path, f"the '{top}' section is not supported yet (issue {issue})")
    if top == "grid":
        if path == "grid" or path.count(".") == 0:
            raise SpecError(source, path, "name a grid axis, e.g. --set grid.model.depth=[2,4]")
        return path, value
    known = (
        [f for f in SweepSpec.model_fields]
        + trial_paths()
        + [f"{s}.{f}" for s in ("resources", "tracking") for f in _fields_at((s,))]
    )
    if path not in known:
        raise SpecError(source, path, f"unknown field{did_you_mean(path, known)}")
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw YAML mapping, before validation.

    ``--set grid.<axis>=[...]`` replaces (or adds) a grid axis; setting a field that is a plain
    grid axis removes the axis, so the trial config takes the one value given.
    """
    out = json.loads(json.dumps(raw, default=str)) if overrides else raw
    for text in overrides:
        path, value = parse_override(text)
        grid = out.get("grid")
        if grid is None:
            grid = out["grid"] = {}
        if not isinstance(grid, dict):
            raise SpecError(f"--set {text}", "grid", "the sweep's grid is not a mapping")
        if path.startswith("grid."):
            grid[path[len("grid.") :]] = value
            continue
        for group in grid.get("zip") or []:
            if isinstance(group, dict) and path in group:
                raise SpecError(
                    f"--set {text}",
                    path,
                    "is part of a zip group; override it with --set grid.zip=...",
                )
        grid.pop(path, None)
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {text}", part, "is not a section in the sweep file")
            node = child
        node[parts[-1]] = value
    if out.get("grid") == {} and "grid" not in raw:
        del out["grid"]
    return out


def _parse_values(source: str, field: str, values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise SpecError(source, field, f"{_short(values)} is not a list; write e.g. [2, 4, 8]")
    if not values:
        raise SpecError(source, field, "an empty list gives no trial; give at least one value")
    seen: list[str] = []
    for value in values:
        key = json.dumps(value, sort_keys=True, default=str)
        if key in seen:
            raise SpecError(source, field, f"value {_short(value)} is listed twice")
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
            parsed[path] = _parse_values(source, f"{where}.{path}", values)
            lengths.add(len(values))
            taken.add(path)
        if len(lengths) > 1:
            sizes = ", ".join(f"{p}: {len(v)}" for p, v in parsed.items())
            raise SpecError(source, where, f"zipped lists must have one length, got {sizes}")
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


def parse_sweep(raw: dict[str, Any], source: str) -> SweepSpec:
    """A raw mapping (YAML after overrides) -> SweepSpec, or one SpecError."""
    grid = parse_grid(raw.get("grid"), source)
    try:
        return SweepSpec.model_validate({**raw, "grid": grid})
    except ValidationError as exc:
        field, problem = explain(exc)
        raise SpecError(source, field, problem) from None


def blame(source: str, overrides: list[str] | tuple[str, ...], field: str) -> str:
    """The override that set ``field`` (``--set model.depth=7``), else the file ``source``."""
    for text in reversed(list(overrides)):
        path = text.partition("=")[0].strip()
        if field == path or field.startswith(path + ".") or field.startswith(path + "["):
            return f"--set {text}"
    return source


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read, override and validate a sweep file (the grid is expanded by grid.py / plan.py).

    An error in a field that an override set names the override instead of the file.
    """
    raw = read_yaml(path)
    try:
        return parse_sweep(apply_overrides(raw, list(overrides)), str(path))
    except SpecError as exc:
        source = blame(str(path), overrides, exc.field)
        if exc.source != str(path) or source == exc.source:
            raise
        raise SpecError(source, exc.field, exc.problem) from None
