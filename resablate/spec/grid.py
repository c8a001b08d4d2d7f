"""Grid expansion: spec -> grid points (product, zip, exclude) in a deterministic order.

Pure dictionaries: this module imports neither ray nor torch. Axes multiply in the order the YAML
names them (the first varies slowest, as in ``itertools.product``), each ``zip`` group counts as
one axis placed after the plain axes, and ``exclude`` rules drop the points that match all their
keys. Trial ids are short hashes of the resolved trial config, so the same config has the same id
on any machine and in any sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resablate.spec.schema import GridSpec, SweepSpec

ID_LENGTH = 10


@dataclass(frozen=True)
class GridPoint:
    """One point of the grid: the axis values it sets and the raw trial config they give."""

    assignment: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class Trial:
    """One trial: its stable id, resolved config (nested sections) and grid values."""

    id: str
    config: dict[str, Any]
    assignment: dict[str, Any] = field(default_factory=dict)
    cell: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags (search: cell, c, seed)

    def label(self, skip: tuple[str, ...] = ()) -> str:
        """A short readable name from the grid values: ``depth=4 shortcut=none seed=1``; the
        values of the ``skip`` paths left out ("" when nothing is left)."""
        return " ".join(
            f"{path.rsplit('.', 1)[-1]}={_plain(v)}"
            for path, v in self.assignment.items()
            if path not in skip
        )


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_id(config: Mapping[str, Any]) -> str:
    """Stable short id of a resolved config: the same config gives the same id anywhere."""
    return hashlib.sha256(canonical(config).encode()).hexdigest()[:ID_LENGTH]


def cell_id(config: Mapping[str, Any], drop: tuple[str, ...] = ("seed",)) -> str:
    """Id of the grid cell a trial belongs to: its config without the ``drop`` paths (seeds)."""
    return config_id(without(config, drop))


def without(config: Mapping[str, Any], paths: tuple[str, ...]) -> dict[str, Any]:
    out = json.loads(canonical(config))
    for path in paths:
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return out


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def matches(rule: Mapping[str, Any], assignment: Mapping[str, Any]) -> bool:
    """Whether ``assignment`` has, for each path of ``rule``, its value or one of its list."""

    def hit(path: str, wanted: Any) -> bool:
        value = assignment[path]
        options = wanted if isinstance(wanted, list) and not isinstance(value, list) else [wanted]
        return any(canonical({"v": value}) == canonical({"v": w}) for w in options)

    return all(hit(path, wanted) for path, wanted in rule.items())


def assignments(grid: GridSpec) -> list[dict[str, Any]]:
    """The grid's points as {path: value} dicts, product order, before exclusion."""
    factors: list[list[dict[str, Any]]] = [
        [{path: v} for v in values] for path, values in grid.axes.items()
    ]
    for group in grid.zip:
        paths = list(group)
        factors.append(
            [dict(zip(paths, row, strict=True)) for row in zip(*group.values(), strict=True)]
        )
    points = []
    for combo in itertools.product(*factors):
        merged: dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        points.append(merged)
    return points


class EmptyGridError(ValueError):
    """The grid (after ``exclude``) has no point, or a rule matches none."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def unmatched(spec: SweepSpec) -> list[int]:
    """The indices of the ``exclude`` rules that match no grid point."""
    points = assignments(spec.grid)
    return [
        i for i, rule in enumerate(spec.grid.exclude) if not any(matches(rule, p) for p in points)
    ]


def expand(spec: SweepSpec, tolerated: Sequence[int] = ()) -> list[GridPoint]:
    """All grid points of ``spec`` with their raw trial configs (validated later, in plan.py).

    An ``exclude`` rule that matches no point is an error, unless its index is ``tolerated``
    (a rule of the file that a command-line override left with nothing to match)."""
    base = spec.base_config()
    points = assignments(spec.grid)
    kept = [p for p in points if not any(matches(rule, p) for rule in spec.grid.exclude)]
    for i in unmatched(spec):
        if i not in tolerated:
            raise EmptyGridError(
                f"grid.exclude[{i}]", "this rule matches no grid point; check its values"
            )
    if not kept:
        raise EmptyGridError("grid.exclude", "every grid point is excluded; nothing would run")
    out = []
    for point in kept:
        config = json.loads(canonical(base))
        for path, value in point.items():
            set_path(config, path, value)
        if "train.epochs" in point and "train.max_iterations" not in point:
            # an axis over the run's length in epochs: a recipe's max_iterations would decide
            # instead and make the axis a no-op
            config.setdefault("train", {})["max_iterations"] = None
        out.append(GridPoint(assignment=point, config=config))
    return out
