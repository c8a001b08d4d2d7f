"""What a plan needs before it runs, as ``resablate plan`` shows it: each trial's network size,
the data sets its trials read (checked, or fetched before a sweep starts), and the ``plan
--json`` contract."""

from __future__ import annotations

import json
from typing import Any

from resablate.spec.grid import Trial, canonical
from resablate.spec.schema import DataSpec, TrialConfig
from resablate.sweep.capacity import checkpoint_disk
from resablate.sweep.plan import Plan
from resablate.sweep.search_grid import search_size


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
