"""Seeds of one configuration trained stacked (resources.seeds_per_trial) give the results of
separate runs, seed by seed and epoch by epoch, and are recorded as separate trials."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from resablate.batched import run_seeds, why_not
from resablate.plan import make_plan
from resablate.results import DIVERGED, FINISHED
from resablate.runner import Session, units
from resablate.spec import SpecError
from resablate.tracking import SweepTracker
from resablate.train import run_trial
from tests.conftest import write

BASE = {
    "model": {"depth": 4, "width": 32},
    "init": {"c": 0.5},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.02},
}
KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")


def separately(configs: list[dict]) -> list[list[dict]]:
    out = []
    for config in configs:
        reports: list[dict] = []
        run_trial(config, report=reports.append)
        out.append(reports)
    return out


def stacked(configs: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = [[] for _ in configs]
    run_seeds(configs, [r.append for r in out])
    return out


def assert_same(a: list[list[dict]], b: list[list[dict]], rel: float) -> None:
    assert [[r["epoch"] for r in s] for s in a] == [[r["epoch"] for r in s] for s in b]
    for one, other in zip(a, b, strict=True):
        for x, y in zip(one, other, strict=True):
            assert x["status"] == y["status"]
            for key in (*KEYS, "last_finite_loss"):
                assert (key in x) == (key in y)
                if key in x:
                    assert y[key] == pytest.approx(x[key], rel=rel, abs=1e-6), key


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"model": {"depth": 4, "width": 32, "shortcut": "scalar"}, "data": {"whiten": 32}},
        {
            "train": {
                **BASE["train"],
                "optimizer": "adam",
                "lr": 0.005,
                "loss": "mse",
                "schedule": "step",
                "milestones": [2],
                "weight_decay": 1e-4,
            },
            "data": {"target": "onehot"},
        },
    ],
    ids=["identity-sgd", "scalar-whitened", "adam-mse-step"],
)
def test_stacked_seeds_report_what_separate_runs_report(changes: dict) -> None:
    configs = [{**BASE, **changes, "seed": seed} for seed in (0, 1, 5)]
    a, b = separately(configs), stacked(configs)
    assert a[0][-1]["train_loss"] != a[1][-1]["train_loss"]  # the seeds really differ
    assert_same(a, b, rel=1e-3)


def test_a_seed_that_diverges_leaves_the_stack_and_the_others_train_on() -> None:
    train = {**BASE["train"], "epochs": 1, "lr": 0.16, "momentum": 0.9}
    configs = [{**BASE, "train": train, "seed": seed} for seed in (0, 4, 5)]
    a, b = separately(configs), stacked(configs)
    assert [s[-1]["status"] for s in b] == [DIVERGED, FINISHED, FINISHED]
    assert_same(a, b, rel=1e-2)  # at the edge of stability: rounding grows fastest here


def test_what_cannot_be_stacked_is_named() -> None:
    assert why_not(BASE) is None
    assert "norm" in str(why_not({**BASE, "model": {**BASE["model"], "norm": "batch"}}))
    assert "drop_path" in str(why_not({**BASE, "model": {**BASE["model"], "drop_path": 0.1}}))
    assert "probes" in str(why_not(BASE, probes=True))
    assert "precision" in str(why_not({**BASE, "train": {**BASE["train"], "precision": "bf16"}}))
    with pytest.raises(ValueError, match="configs differ"):
        run_seeds([BASE, {**BASE, "init": {"c": 0.3}}], [print, print])


SWEEP = """\
name: stacked
model: {family: mlp, width: 16}
init: {c: 0.5}
train: {epochs: 2, batch_size: 64, lr: 0.02}
grid:
  model.norm: [none, batch]
  seed: [0, 1, 2]
resources: {cpu: 1, seeds_per_trial: 2}
"""


def test_units_stack_seeds_of_a_stackable_cell_only(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "s.yaml", SWEEP))
    sizes = sorted(
        (len(u), u[0].config["model"]["norm"]) for u in units(plan)
    )  # norm none: 2 + 1 seeds stacked; norm batch: each alone
    assert sizes == [(1, "batch"), (1, "batch"), (1, "batch"), (1, "none"), (2, "none")]
    for unit in units(plan):
        assert len({t.cell for t in unit}) == 1


def test_seeds_per_trial_and_a_scheduler_are_refused_together(tmp_path: Path) -> None:
    text = SWEEP + "scheduler: {kind: asha}\n"
    with pytest.raises(SpecError, match=r"resources\.seeds_per_trial.*scheduler"):
        make_plan(write(tmp_path / "s.yaml", text))


@pytest.mark.parametrize("backend", ["ray", "inline"])
def test_a_stacked_sweep_records_one_run_per_trial_with_the_separate_metrics(
    tmp_path: Path, backend: str
) -> None:
    path = write(tmp_path / "s.yaml", SWEEP)
    plan = make_plan(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "stacked")
    tracker.start_sweep("stacked", {}, plan.spec.hash(), path, plan.trials)
    with Session(plan, backend, tmp_path / "runs") as session:
        records = session.run([tracker])
    tracker.end_sweep()
    assert sorted(r.trial.id for r in records) == sorted(t.id for t in plan.trials)
    assert {r.status for r in records} == {FINISHED}
    runs = mlflow.MlflowClient(uri).search_runs(
        [tracker.experiment_id], "tags.mlflow.parentRunId != ''"
    )
    assert len(runs) == len(plan.trials)  # one child run per trial, stacked or not
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    for trial in plan.trials:
        alone = run_trial(trial.config)
        logged = by_trial[trial.id].data.metrics
        assert by_trial[trial.id].info.status == "FINISHED"
        for key in ("train_loss", "test_acc"):
            assert logged[key] == pytest.approx(alone[key], rel=1e-3), (trial.assignment, key)
