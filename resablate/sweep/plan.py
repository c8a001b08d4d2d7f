"""Planning: sweep file -> validated spec -> expanded, validated trials with stable ids.

Everything a user can get wrong is found here, before Ray starts or MLflow is touched: ``resablate
sweep`` and ``resablate plan`` both begin with :func:`make_plan`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resablate.errors import ConfigError, SpecError
from resablate.registry import did_you_mean
from resablate.spec.catalog import trial_config
from resablate.spec.grid import (
    EmptyGridError,
    Trial,
    canonical,
    cell_id,
    config_id,
    expand,
    matches,
    set_path,
    unmatched,
)
from resablate.spec.loader import Origins, load
from resablate.spec.schema import DataSpec, InitSpec, ModelSpec, SweepSpec, TrialConfig


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


LIMIT = 1000  # trials a sweep runs without --yes


def check_size(plan: Plan, yes: bool, limit: int = LIMIT) -> None:
    """Refuse, in one line, a sweep of more than ``limit`` trials that was not confirmed."""
    total = search_size(plan)["total_trials"] if plan.spec.search else len(plan.trials)
    if total > limit and not yes:
        raise SpecError(
            plan.source,
            "grid",
            f"{total} trials is more than {limit}; check them with `resablate plan"
            f" {plan.source}` and pass --yes to run them",
        )


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


def data_specs(plan: Plan) -> list[DataSpec]:
    """The distinct data sets the plan's trials read."""
    keys = dict.fromkeys(canonical(trial.config["data"]) for trial in plan.trials)
    return [DataSpec.model_validate(json.loads(key)) for key in keys]


def prepare_data(plan: Plan) -> None:
    """Make sure every data set the trials read is on disk (downloading it if it can) before
    anything starts; a missing one is a one-line UserError saying which files to put where.

    Trials resolve a relative data folder against the driver's working directory, which the
    runner keeps as their working directory too."""
    from resablate.trial import data

    for spec in data_specs(plan):
        data.prepare(spec)


def check_data(plan: Plan) -> list[str]:
    """``resablate plan``'s look at the data the trials read, fetching and creating nothing:
    notes of what ``sweep`` will download; a one-line UserError for what it cannot get."""
    from resablate.trial import data

    notes = (data.check(spec) for spec in data_specs(plan))
    return [note for note in notes if note]


def params(trial: Trial) -> int:
    """Trainable parameters of the network ``trial`` builds (counted without training)."""
    from resablate import models
    from resablate.trial import data

    cfg = TrialConfig.model_validate(trial.config)
    return models.count_params(cfg.model, cfg.init, data.DATASETS[cfg.data.name].shape(cfg.data))


def to_json(plan: Plan) -> dict[str, Any]:
    """The ``resablate plan --json`` contract: ``{"sweep", "n_trials", "trials": [{id, config,
    params}]}``; later issues add keys, never remove these."""
    counted: dict[str, int] = {}
    trials: list[dict[str, Any]] = []
    for trial in plan.trials:
        key = canonical({k: trial.config[k] for k in ("model", "init", "data")})
        if key not in counted:
            counted[key] = params(trial)
        trials.append(
            {
                "id": trial.id,
                "cell": trial.cell,
                "grid": trial.assignment,
                "config": trial.config,
                "params": counted[key],
            }
        )
    out: dict[str, Any] = {"sweep": plan.spec.name, "n_trials": len(trials), "trials": trials}
    if plan.spec.search:
        out["search"] = search_size(plan)
    out["checkpoints"] = checkpoint_disk(plan, [t["params"] for t in trials])
    return out


def checkpoint_bytes(trial: Trial, params: int) -> int:
    """About how large one checkpoint of ``trial`` is: its float32 weights and the optimizer's
    state (a network's buffers, the generators and the reports add little: a CIFAR ResNet-110's
    is 13.5 MB measured, 13.7 MB by this count)."""
    from resablate.trial.optim import state_slots

    train = trial.config["train"]
    return 4 * params * (1 + state_slots(train["optimizer"], train["momentum"]))


def checkpoint_disk(plan: Plan, params: list[int]) -> dict[str, Any]:
    """What a sweep's checkpoints take on disk (estimates): per trial, at once while the trials
    that run together on this machine each keep their last KEEP, and in MLflow artifacts when
    ``train.keep_checkpoint`` keeps each finished trial's last one."""
    from resablate.trial.checkpoint import KEEP

    sizes = [checkpoint_bytes(t, n) for t, n in zip(plan.trials, params, strict=True)]
    slots = slots_in(plan, local_resources())
    largest = sorted(sizes, reverse=True)[:slots]
    # a search runs each searched grid trial once per candidate
    runs = search_size(plan)["total_trials"] / len(sizes) if plan.spec.search and sizes else 1
    return {
        "bytes_per_trial": max(sizes, default=0),
        "kept_per_trial": KEEP,
        "trials_at_once": slots,
        "peak_bytes": KEEP * sum(largest),
        "artifact_bytes": round(sum(sizes) * runs) if plan.spec.train.keep_checkpoint else 0,
    }


def local_resources() -> dict[str, float]:
    """This machine's CPUs and GPUs, as Ray counts them."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


RAY_UNIT = 10_000  # Ray counts resources in fixed point, to 1/10,000 of a unit


def fit(have: float, each: float) -> int:
    """How many shares of ``each`` Ray fits in ``have``, in Ray's fixed point: 10 of 0.1 GPU
    in 1 (float division says 1.0 // 0.1 == 9)."""
    return round(have * RAY_UNIT) // max(1, round(each * RAY_UNIT))


def slots_in(plan: Plan, have: dict[str, float]) -> int:
    """How many of the plan's trials ``have`` (Ray's resources: CPU, GPU) runs at once."""
    wanted = plan.spec.resources
    fits = [fit(have.get("CPU", 0.0), wanted.cpu)]
    if wanted.gpu > 0:
        fits.append(fit(have.get("GPU", 0.0), wanted.gpu))
    if wanted.max_concurrent_trials is not None:
        fits.append(wanted.max_concurrent_trials)
    return max(1, min(fits))


def disk_text(disk: dict[str, Any]) -> str:
    """`resablate plan`'s line: the estimate of :func:`checkpoint_disk`."""
    line = (
        f"checkpoints: about {size_text(disk['bytes_per_trial'])} per trial (weights and"
        f" optimizer state); each running trial keeps its last {disk['kept_per_trial']}: about"
        f" {size_text(disk['peak_bytes'])} at once with {disk['trials_at_once']} running here;"
        " deleted when a trial finishes"
    )
    if disk["artifact_bytes"]:
        line += (
            f", but for its last, logged to MLflow (train.keep_checkpoint): about"
            f" {size_text(disk['artifact_bytes'])} in all"
        )
    return line


def size_text(n: float) -> str:
    """Bytes as a short human number: 13.5 MB, 2.1 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def searched(plan: Plan, trial: Trial) -> bool:
    """Whether the search runs in ``trial``'s cell (``search.where``; default: every cell)."""
    assert plan.spec.search is not None
    return matches(plan.spec.search.where, trial.assignment)


def unsearched(plan: Plan) -> list[Trial]:
    """The grid's trials that run once, as the sweep sets them: those outside
    ``search.where``, and with ``search.carry`` every one (the untuned arm)."""
    assert plan.spec.search is not None
    if plan.spec.search.carry:
        return list(plan.trials)
    return [t for t in plan.trials if not searched(plan, t)]


def _untuned_key(plan: Plan, trial: Trial) -> str:
    """A trial's grid values without its seed, the searched parameter and the carried axes."""
    assert plan.spec.search is not None
    drop = {"seed", plan.spec.search.param, *plan.spec.search.carry}
    return canonical({k: v for k, v in trial.assignment.items() if k not in drop})


def carried(plan: Plan) -> dict[str, list[Trial]]:
    """``search.carry``: by searched cell, the grid trials its best value runs at (the same
    grid values but for the carried axes, outside ``search.where``)."""
    search = plan.spec.search
    assert search is not None
    if not search.carry:
        return {}
    source = {_untuned_key(plan, trials[0]): cell for cell, trials in search_cells(plan).items()}
    out: dict[str, list[Trial]] = {}
    for trial in plan.trials:
        if searched(plan, trial):
            continue
        at = {**trial.assignment, **{a: search.where[a] for a in search.carry}}
        cell = source.get(_untuned_key(plan, trial))
        if cell is not None and matches(search.where, at):
            out.setdefault(cell, []).append(trial)
    return out


def with_value(trial: Trial, param: str, value: float, cell: str) -> Trial:
    """``trial`` with the searched ``param`` set to ``value``, tagged with the searched cell."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in trial.config.items()}
    set_path(raw, param, value)
    config = trial_config(raw).model_dump(mode="json")
    return Trial(
        config_id(config),
        config,
        {**trial.assignment, param: value},
        cell_id(config),
        tags={"search_cell": cell, "c": repr(value), "seed": str(config["seed"])},
    )


def search_cells(plan: Plan) -> dict[str, list[Trial]]:
    """The searched grid trials by cell: a grid point without the searched parameter and the
    seed."""
    assert plan.spec.search is not None
    cells: dict[str, list[Trial]] = {}
    for trial in plan.trials:
        if not searched(plan, trial):
            continue
        cells.setdefault(cell_id(trial.config, drop=("seed", plan.spec.search.param)), []).append(
            trial
        )
    return cells


def search_size(plan: Plan) -> dict[str, Any]:
    """Cells × candidates × seeds: the trials a search will run, and the grid's trials outside
    the search (``search.where``), which run once."""
    search = plan.spec.search
    assert search is not None
    cells = search_cells(plan)
    seeds = {t.config["seed"] for trials in cells.values() for t in trials}
    fixed = len(unsearched(plan))
    carry = sum(len(trials) for trials in carried(plan).values())
    out = {
        "param": search.param,
        "cells": len(cells),
        "candidates_per_cell": search.n_trials,
        "seeds": len(seeds),
        "unsearched_trials": fixed,
        "total_trials": len(cells) * search.n_trials * len(seeds) + fixed + carry,
    }
    if search.carry:
        out["carried_trials"] = carry
    return out
