"""The schema's fields by dotted path (``model.depth``), and pydantic's errors as one line that
names one of them.

Reflection over :mod:`resablate.spec.schema` only: what a grid axis or ``--set`` may name, a
field's type and bounds for ``resablate fields``, and the fields of a section for a did-you-mean.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from resablate.errors import ConfigError
from resablate.registry import did_you_mean
from resablate.spec.schema import SweepSpec, TrialConfig
from resablate.spec.section import Section


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for a one-line error."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dotted(loc: tuple[Any, ...]) -> str:
    """``("grid", "zip", 0)`` -> ``"grid.zip[0]"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def names(model: type[BaseModel]) -> list[str]:
    """The YAML names of a section's fields (``lambda`` for ``lambda_``)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _by_name(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {f.alias or name: f for name, f in model.model_fields.items()}


def section_of(field: FieldInfo) -> type[Section] | None:
    """The section a field holds (``search: SearchSpec | None`` holds SearchSpec), or None."""
    annotation = field.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def fields_at(loc: tuple[Any, ...], root: type[BaseModel] = SweepSpec) -> list[str]:
    """YAML names of the fields of ``root``'s section at ``loc`` (for did-you-mean), or []."""
    model = root
    for part in loc:
        field = _by_name(model).get(part) if isinstance(part, str) else None
        section = section_of(field) if field else None
        if section is None:
            return []
        model = section
    return names(model)


def trial_fields() -> list[tuple[str, FieldInfo]]:
    """(dotted path, field) of every field of a trial's config: ``seed``, ``model.depth``, ..."""
    out = []
    for name, field in TrialConfig.model_fields.items():
        section = section_of(field)
        if section is None:
            out.append((name, field))
        else:
            out += [(f"{name}.{leaf}", f) for leaf, f in _by_name(section).items()]
    return out


def trial_paths() -> list[str]:
    """Every dotted path a grid axis may name: ``seed``, ``model.depth``, ..."""
    return [path for path, _ in trial_fields()]


def legal(field: FieldInfo) -> str:
    """A field's type and bounds, as ``resablate fields`` shows them: ``int ≥ 1``."""
    bounds = [_bound(m) for m in field.metadata]
    return " ".join([_type_name(field.annotation), *filter(None, bounds)])


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in args)
    if typing.get_origin(annotation) is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _bound(constraint: Any) -> str:
    for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if hasattr(constraint, attr):
            return f"{sign} {getattr(constraint, attr)}"
    return ""


def explain(
    error: ValidationError, prefix: tuple[Any, ...] = (), root: type[BaseModel] = SweepSpec
) -> tuple[str, str]:
    """The first pydantic error as (dotted field, one-line problem with the value and the fix);
    ``root`` is the model that was validated (a sweep, or one trial's config)."""
    first = error.errors()[0]
    loc = tuple(p for p in first["loc"] if p not in ("int", "constrained-str"))
    # Union branches add their type name to the location; keep only real field names.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("literal[")))
    kind, value = first["type"], first.get("input")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause.field, cause.problem
    field = dotted(prefix + loc)
    if kind == "extra_forbidden":
        name = str(loc[-1])
        legal = fields_at(prefix + loc[:-1], root)
        hint = did_you_mean(name, legal)
        return field, f"unknown field '{name}'{hint} (fields here: {', '.join(legal)})"
    if kind == "missing":
        return field, "this field is required"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return field, f"{short(value)} is not allowed; use {expected}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return field, f"expected a mapping of fields, got {short(value)}"
    if kind == "string_pattern_mismatch":
        return field, (
            f"{short(value)} is not a valid name; use letters, digits, '_', '.', '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    if cause is not None:
        return field, f"{short(value)}: {cause}"
    return field, f"{short(value)}: {first['msg'][:1].lower()}{first['msg'][1:]}"
