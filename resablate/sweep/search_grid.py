"""Which of a plan's grid trials a search tunes, which run once as the sweep sets them, and which
run at the best value a search found (``search.carry``); and how many trials that makes."""

from __future__ import annotations

from typing import Any

from resablate.errors import SpecError
from resablate.spec.catalog import trial_config
from resablate.spec.grid import Trial, canonical, cell_id, config_id, matches, set_path
from resablate.sweep.plan import Plan

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
