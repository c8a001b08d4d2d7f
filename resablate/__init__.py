"""resablate: ablation studies of deep residual networks.

A folder per layer, in the order the data flows (README "How the code is laid out"):
YAML -> :mod:`resablate.spec` (read and checked, no torch) -> :mod:`resablate.sweep` (plan,
driver, runner; Ray only in :mod:`resablate.sweep.ray`, Optuna's searches) ->
:mod:`resablate.trial` (one loop over a stack of networks: data, :mod:`resablate.models`,
:mod:`resablate.probes`) -> :mod:`resablate.tracking` (MLflow, only there) ->
:mod:`resablate.analysis` (report, claims); :mod:`resablate.cli` calls them.

The Python API is the names below, imported on first use (PEP 562), so that ``import resablate``
loads no torch, Ray or MLflow::

    import resablate
    plan = resablate.make_plan("sweeps/smoke.yaml", ["train.epochs=2"])
    outcome = resablate.run_sweep(plan, resablate.Options(inline=True, quiet=True))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    # a sweep: read and checked, planned, run, read back, reported
    "load_sweep": "resablate.spec.loader",
    "make_plan": "resablate.sweep.plan",
    "Options": "resablate.sweep.driver",
    "run_sweep": "resablate.sweep.driver",
    "read_sweep": "resablate.tracking.ledger",
    "make_report": "resablate.analysis.report",
    # one trial, in this process
    "trial_config": "resablate.spec.catalog",
    "run_trial": "resablate.trial.train",
    "probe_trial": "resablate.trial.train",
    # the registries a YAML name is looked up in
    "FAMILIES": "resablate.models",
    "SHORTCUTS": "resablate.models.shortcuts",
    "PLACEMENTS": "resablate.models.placement",
    "Placement": "resablate.models.placement",
    "NORMS": "resablate.models.layers",
    "ACTS": "resablate.models.layers",
    "INITS": "resablate.models.init",
    "OPTIMIZERS": "resablate.trial.optim",
    "SCHEDULES": "resablate.trial.optim",
    "DATASETS": "resablate.trial.data",
    "PROBES": "resablate.probes.measure",
    "RECIPES": "resablate.spec.recipes",
    # what a user's mistake raises
    "UserError": "resablate.errors",
    "SpecError": "resablate.errors",
    "ConfigError": "resablate.errors",
    "StoreError": "resablate.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'resablate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
