"""Names and fit: the one place where a config meets the registries of the modules that build it.

The schema (:mod:`resablate.spec.schema`) holds variant names as plain strings. Here they are
checked against the registries of :mod:`resablate.models`, :mod:`resablate.trial.data` and
:mod:`resablate.trial.train` (and the recipes); the fields a model family or a training recipe sets
by itself are filled in; and a trial's config is checked to fit its family and its data.

Two ways in, each raising :class:`~resablate.errors.ConfigError` (dotted field, problem):
``trial_config(raw)`` turns a raw trial config (a grid point, a test's dict) into a resolved,
checked :class:`~resablate.spec.schema.TrialConfig`; ``sweep_spec(raw)`` does the same for a whole
sweep. The torch-side modules are imported on first use: importing this module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from resablate.errors import ConfigError
from resablate.registry import Registry, did_you_mean
from resablate.results import METRICS
from resablate.spec.claims import SEARCH_KEY
from resablate.spec.fields import explain, legal, short, trial_fields
from resablate.spec.options import SchedulerSpec, SearchSpec
from resablate.spec.recipes import RECIPES, recipe_defaults, with_recipe
from resablate.spec.schema import SweepSpec, TrialConfig

PLACEMENT = "model.activation"  # names a placement (models.parse_placement), not one registry


def registries() -> dict[str, Registry[Any]]:
    """The registry that names the legal values of each field that picks a variant."""
    from resablate import models
    from resablate.trial import data, optim

    return {
        "model.family": models.FAMILIES,
        "model.shortcut": models.SHORTCUTS,
        "model.norm": models.NORMS,
        "model.act": models.ACTS,
        "init.scheme": models.INITS,
        "data.name": data.DATASETS,
        "train.optimizer": optim.OPTIMIZERS,
        "train.schedule": optim.SCHEDULES,
        "train.recipe": RECIPES,
    }


def resolve(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A raw trial config with what it leaves to others filled in: the fields of ``model`` the
    user left out take the family's defaults, ``train`` takes its recipe's preset (the fields
    written override it one by one) and what the recipe adds for this network (the deep nets'
    warm-up). Anything malformed is left for the schema to name."""
    from resablate.models import FAMILIES

    out = dict(raw)
    model = out.get("model", {})
    train = out.get("train", {})
    if isinstance(model, dict):
        family = model.get("family", "mlp")
        if isinstance(family, str) and family in FAMILIES:  # else the name check says why
            model = out["model"] = {**FAMILIES[family].defaults(model), **model}
            if isinstance(train, dict):
                train = recipe_defaults(train, {**model, "family": family})
    if isinstance(train, dict):
        out["train"] = _with_recipe(train)
    return out


def trial_config(raw: Mapping[str, Any]) -> TrialConfig:
    """A raw trial config -> the resolved, checked TrialConfig whose dump a trial id hashes."""
    try:
        config = TrialConfig.model_validate(resolve(raw))
    except ValidationError as exc:
        raise ConfigError(*explain(exc, root=TrialConfig)) from None
    check_names(config)
    check_fit(config)
    return config


def sweep_spec(raw: Mapping[str, Any]) -> SweepSpec:
    """A raw sweep mapping (its grid already a GridSpec) -> the checked SweepSpec. Its trial
    sections stay as written (plus the recipe's preset): each grid point resolves its own."""
    raw = dict(raw)
    if isinstance(raw.get("train"), dict):
        raw["train"] = _with_recipe(raw["train"])
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(*explain(exc)) from None
    check_names(spec)
    if spec.search is not None:
        check_search(spec.search)
    check_scheduler(spec.scheduler)
    check_claims(spec)
    return spec


def _with_recipe(train: dict[str, Any]) -> dict[str, Any]:
    try:
        return with_recipe(train)
    except ValueError as exc:
        raise ConfigError("train.recipe", f"{short(train['recipe'])}: {exc}") from None


def check_names(config: TrialConfig | SweepSpec) -> None:
    """Every field of the trial sections that names a variant names a registered one."""
    from resablate.models import parse_placement

    found = registries()
    for path, _ in trial_fields():
        if path not in found and path != PLACEMENT:
            continue
        section, _, leaf = path.partition(".")
        value = getattr(getattr(config, section), leaf)
        if value is None:  # train.recipe: none
            continue
        try:
            parse_placement(value) if path == PLACEMENT else found[path].check(value)
        except ValueError as exc:
            raise ConfigError(path, f"{short(value)}: {exc}") from None


def check_fit(config: TrialConfig) -> None:
    """The network fits its family and the data's shape, and is defined (models.check)."""
    from resablate import models
    from resablate.trial import data

    shape = data.DATASETS[config.data.name].shape(config.data)  # raises ConfigError
    models.check(config.model, config.init, shape)  # raises ConfigError


def numeric_paths() -> list[str]:
    """The trial config's numeric fields (a search's ``param``), the seed aside."""
    return [
        path
        for path, field in trial_fields()
        if isinstance(field.default, (int, float))
        and not isinstance(field.default, bool)
        and path != "seed"
    ]


def check_search(search: SearchSpec) -> None:
    """The objective is a reported metric (or a probe's number) and the parameter is numeric."""
    metric = search.objective.metric
    if metric not in METRICS and "." not in metric:  # or a probe's number, hessian.cond
        raise ConfigError(
            "search.objective.metric",
            f"{metric!r} is not a reported metric"
            f"{did_you_mean(metric, list(METRICS))} (choices: {', '.join(METRICS)},"
            " or a probe's <probe>.<key>)",
        )
    numeric = numeric_paths()
    if search.param not in numeric:
        raise ConfigError(
            "search.param",
            f"{search.param!r} is not a numeric field of the"
            f" trial config{did_you_mean(search.param, numeric)}",
        )


def check_scheduler(scheduler: SchedulerSpec) -> None:
    """The scheduler's metric is one each epoch reports."""
    if scheduler.metric is not None and scheduler.metric not in METRICS:
        raise ConfigError(
            "scheduler.metric",
            f"{scheduler.metric!r} is not a per-epoch metric"
            f"{did_you_mean(scheduler.metric, list(METRICS))} (choices: {', '.join(METRICS)})",
        )


def recorded(spec: SweepSpec, at: str) -> list[str]:
    """The metrics a sweep's runs record: at ``last`` the reported metrics and every number of
    a probe that runs after init; at ``init`` (step 0) the numbers of probes that run there."""
    found = list(METRICS) if at == "last" else []
    for name, probe in spec.probes.chosen().items():
        runs = "init" in probe.at if at == "init" else ("end" in probe.at or bool(probe.every))
        found += [f"{name}.{key}" for key in probe.records] if runs else []
    return found


def check_claims(spec: SweepSpec) -> None:
    """Claim ids are unique, name grid axes only and metrics that the sweep records."""
    axes = [a for a in spec.grid.paths() if a != "seed"]
    seen: set[str] = set()
    for claim in spec.claims:
        if claim.id in seen:
            raise ConfigError(f"claims.{claim.id}", "two claims have this id; ids are unique")
        seen.add(claim.id)
        for field, named in claim.axes().items():
            for axis in named:
                if axis == SEARCH_KEY and spec.search is not None:
                    continue  # tuned / written, checked with the claim
                if axis not in axes:
                    raise ConfigError(
                        field if field.endswith("over") else f"{field}.{axis}",
                        f"{axis!r} is not a grid axis of this sweep{did_you_mean(axis, axes)}"
                        f" (axes: {', '.join(axes) or 'none'})",
                    )
        metrics = recorded(spec, claim.at)
        if claim.metric not in metrics:
            when = "at init (step 0)" if claim.at == "init" else "at the last epoch"
            raise ConfigError(
                f"claims.{claim.id}.metric",
                f"{claim.metric!r} is not recorded {when} by this sweep"
                f"{did_you_mean(claim.metric, metrics)} (recorded: {', '.join(metrics) or 'none'};"
                " a probe's numbers need the probe in probes:, at init or at the end)",
            )


@dataclass(frozen=True)
class FieldInfo:
    """What ``resablate fields`` shows of one trial-config field."""

    path: str
    default: Any
    legal: str
    help: str
    # family -> its default where the family sets the field (basic units; model.* only)
    by_family: dict[str, Any]
    families: int  # how many families there are

    def shown_default(self) -> str:
        """``4``, or each family's own where they differ: ``mlp "mid", cifar "post", ...``,
        then the schema's default for the families that leave the field alone, if it differs."""
        shown = {name: json.dumps(v) for name, v in self.by_family.items()}
        default = json.dumps(self.default)
        if set(shown.values()) <= {default}:
            return default
        text = ", ".join(f"{name} {v}" for name, v in shown.items())
        others = len(shown) < self.families and default not in shown.values()
        return text + (f"; the others {default}" if others else "")


def describe() -> list[FieldInfo]:
    """Every trial-config field: its default (and each family's), legal values and meaning."""
    from resablate.models import FAMILIES
    from resablate.models.placement import PLACEMENTS, POSITIONS
    from resablate.spec.field_help import HELP

    names = {path: ", ".join(r.names()) for path, r in registries().items()}
    names[PLACEMENT] = (
        f"{', '.join(PLACEMENTS)}; or {', '.join(POSITIONS)}, combined with '+', or linear"
    )
    families = {name: FAMILIES[name].defaults({}) for name in FAMILIES.names()}
    out = []
    for path, field in trial_fields():
        section, _, leaf = path.partition(".")
        by_family = {
            name: found[leaf]
            for name, found in families.items()
            if section == "model" and leaf in found
        }
        legal_values = names.get(path) or legal(field)
        help_ = HELP[path]
        out.append(FieldInfo(path, field.default, legal_values, help_, by_family, len(families)))
    return out
