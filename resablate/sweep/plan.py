"""Planning: sweep file -> validated spec -> expanded, validated trials with stable ids.

Everything a user can get wrong is found here, before Ray starts or MLflow is touched: ``resablate
sweep`` and ``resablate plan`` both begin with :func:`make_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resablate.errors import ConfigError, SpecError
from resablate.registry import did_you_mean
from resablate.spec import plugins
from resablate.spec.catalog import trial_config
from resablate.spec.grid import (
    EmptyGridError,
    Trial,
    canonical,
    cell_id,
    config_id,
    expand,
    matches,
    unmatched,
)
from resablate.spec.loader import Origins, load
from resablate.spec.schema import InitSpec, ModelSpec, SweepSpec


@dataclass(frozen=True)
class Plan:
    source: str
    spec: SweepSpec
    trials: list[Trial]
    overrides: tuple[str, ...] = ()
    origins: Origins | None = None  # where overridden fields came from; None: all from source
    notes: tuple[str, ...] = ()  # what the user should know but that stops nothing

    def error(self, field: str, problem: str) -> SpecError:
        """A one-line error about ``field``, naming the override that set it, else the file."""
        return SpecError(self.origins.of(field) if self.origins else self.source, field, problem)

    def axes(self) -> list[str]:
        return self.spec.grid.paths()

    def plugins(self) -> tuple[tuple[str, str], ...]:
        """The sweep's plugins as every process that builds its networks imports them."""
        return plugins.resolved(self.spec.plugins, Path(self.source).parent)


def make_plan(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), profile: str | None = None
) -> Plan:
    """Load ``path`` with its ``profile`` and ``overrides``, expand its grid and validate every
    trial's config."""
    source = str(path)
    loaded = load(path, overrides, profile)
    spec, origins = loaded.spec, loaded.origins
    if spec.search and spec.search.param in spec.grid.paths():
        field = f"grid.{spec.search.param}"
        raise SpecError(
            origins.of(field), field, "is searched by search.param; remove it from the grid"
        )
    if spec.search:
        _check_where(origins, spec)
    stale = _stale_excludes(path, profile, spec) if overrides else {}
    try:
        points = expand(spec, tuple(stale))
    except EmptyGridError as exc:
        raise SpecError(source, exc.field, exc.problem) from None
    trials: list[Trial] = []
    seen: dict[str, dict[str, Any]] = {}
    checked: dict[str, dict[str, Any]] = {}  # raw config -> resolved (grids repeat sub-configs)
    for point in points:
        key = canonical(point.config)
        if key not in checked:
            try:
                checked[key] = _resolve(source, point.config, point.assignment)
            except SpecError as exc:
                raise SpecError(origins.of(exc.field), exc.field, exc.problem) from None
        config = checked[key]
        trial_id = config_id(config)
        if trial_id in seen:
            raise SpecError(
                source,
                "grid",
                f"grid points {seen[trial_id]} and {point.assignment} resolve to the same trial;"
                " remove one of the duplicate values",
            )
        seen[trial_id] = point.assignment
        trials.append(Trial(trial_id, config, point.assignment, cell_id(config)))
    notes: tuple[str, ...] = ()
    if stale:
        rules = "; ".join(f"grid.exclude[{i}] ({rule})" for i, rule in stale.items())
        which = "matches" if len(stale) == 1 else "match"
        notes = (
            f"note: {rules} {which} no grid point after"
            f" {' '.join(f'--set {o}' for o in overrides)}: nothing excluded by"
            f" {'it' if len(stale) == 1 else 'them'} this time",
        )
    plan = Plan(source, spec, trials, tuple(overrides), origins, notes)
    _check_probes(plan)
    return plan


def _stale_excludes(path: str | Path, profile: str | None, spec: SweepSpec) -> dict[int, str]:
    """The ``exclude`` rules that match no grid point only because of ``--set`` overrides (a
    narrowed grid): by index, each as written. A rule that matches nothing in the file itself
    (with its profile) is not among them: that one stays an error."""
    missing = unmatched(spec)
    if not missing:
        return {}
    own = load(path, (), profile).spec
    matched = [rule for i, rule in enumerate(own.grid.exclude) if i not in unmatched(own)]
    rules = spec.grid.exclude
    return {
        i: ", ".join(f"{k}={v}" for k, v in rules[i].items())
        for i in missing
        if rules[i] in matched
    }


def _check_where(origins: Origins, spec: SweepSpec) -> None:
    """``search.where`` names grid axes (not the seed) and values they take."""
    assert spec.search is not None
    axes = {path: values for path, values in spec.grid.axes.items()}
    for group in spec.grid.zip:
        axes.update(group)
    for path, wanted in spec.search.where.items():
        field = f"search.where.{path}"
        if path not in axes or path == "seed":
            _not_an_axis(
                origins, field, path, axes, "the search runs in the cells whose grid values match"
            )
        if not any(matches({path: wanted}, {path: v}) for v in axes[path]):
            raise SpecError(
                origins.of(field),
                field,
                f"{wanted!r} is not a value of grid axis {path} (values: {axes[path]})",
            )
    for path in spec.search.carry:
        field = "search.carry"
        wanted = spec.search.where.get(path)
        if path not in axes or path == "seed":
            _not_an_axis(
                origins,
                field,
                path,
                axes,
                "the best value is carried to the other values of grid axes",
            )
        if wanted is None or (isinstance(wanted, list) and len(wanted) != 1):
            raise SpecError(
                origins.of(field),
                field,
                f"{path} is carried, so the search tunes at one value of it: give"
                f" search.where.{path} one of {axes[path]}",
            )


def _not_an_axis(origins: Origins, field: str, path: str, axes: dict[str, Any], why: str) -> None:
    choices = [a for a in axes if a != "seed"]
    raise SpecError(
        origins.of(field),
        field,
        f"{path!r} is not a grid axis{did_you_mean(path, choices)}"
        f" (axes: {', '.join(choices) or 'none'}); {why}",
    )


def _check_probes(plan: Plan) -> None:
    """Probes that cannot measure what they claim on some trial of the grid."""
    if plan.spec.probes.hessian is None:
        return
    from resablate.probes.hessian import degenerate_hessian

    seen = set()
    for trial in plan.trials:
        key = canonical({k: trial.config[k] for k in ("model", "init")})
        if key in seen:
            continue
        seen.add(key)
        model = ModelSpec.model_validate(trial.config["model"])
        reason = degenerate_hessian(model, InitSpec.model_validate(trial.config["init"]))
        if reason:
            where = f" (grid point {_point(trial.assignment)})" if trial.assignment else ""
            raise plan.error("probes.hessian", reason + where)


def _resolve(source: str, config: dict[str, Any], assignment: dict[str, Any]) -> dict[str, Any]:
    try:
        resolved = trial_config(config)
    except ConfigError as exc:
        field, problem = exc.field, exc.problem
        if field in assignment:
            field = f"grid.{field}"
        where = "" if not assignment else f" (grid point {_point(assignment)})"
        raise SpecError(source, field, problem + where) from None
    return resolved.model_dump(mode="json")


def _point(assignment: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in assignment.items())
