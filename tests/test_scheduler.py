"""Early stopping by Ray Tune's schedulers (ASHA, median stopping): a stopped trial is a result,
recorded as pruned in MLflow and, inside a search, in its cell's Optuna study."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from resablate.sweep.plan import make_plan
from tests.conftest import run_process, trial_runs, write

GRID = """
name: stopped
model: {depth: 4, width: 32}
init: {c: 0.25}
data: {validation: 0.2}
train: {epochs: 6, batch_size: 64}
scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}
resources: {max_concurrent_trials: 1}
grid:
  train.lr: [0.05, 0.00001]
  seed: [0, 1]
"""


def test_scheduler_defaults_follow_the_objective() -> None:
    from resablate.spec.schema import SchedulerSpec, SearchSpec

    assert SchedulerSpec().kind == "none"
    assert SchedulerSpec(kind="asha").resolved(None) == ("val_acc", "max")
    assert SchedulerSpec(kind="asha", metric="train_loss").resolved(None) == ("train_loss", "min")
    search = SearchSpec.model_validate(
        {"uniform": [0, 1], "objective": {"metric": "val_loss", "direction": "min"}}
    )
    assert SchedulerSpec(kind="median").resolved(search) == ("val_loss", "min")


@pytest.mark.parametrize(
    "text,args,expected",
    [
        ("scheduler: {kind: hyperband}", [], "scheduler.kind: 'hyperband' is not allowed"),
        ("scheduler: {kind: asha, metric: acc}", [], "scheduler.metric: 'acc' is not a per-epoch"),
        ("scheduler: {kind: asha, reduction_factor: 1}", [], "scheduler.reduction_factor: 1"),
        ("scheduler: {kind: asha, grace_period: 0}", [], "scheduler.grace_period: 0"),
        ("scheduler: {kind: asha}", ["--inline"], "does not use; drop --inline"),
        ("", ["--set", "scheduler.kind=median", "--inline"], "scheduler.kind: median stops"),
    ],
)
def test_bad_schedulers_are_one_line(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, text: str, args: list, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write(tmp_path / "b.yaml", f"name: bad\ndata: {{validation: 0.2}}\n{text}\n")
    ran = cli("sweep", "b.yaml", *args)
    assert ran.code == 2, ran.err
    assert ran.err.count("\n") == 1 and expected in ran.err, ran.err
    assert os.listdir(tmp_path) == ["b.yaml"]


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_asha_prunes_the_hopeless_trials_and_records_them_as_results(tmp_path: Path) -> None:
    sweep = write(tmp_path / "a.yaml", GRID)
    ran = run_process("sweep", str(sweep), "-q", cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]
    client, runs = trial_runs(tmp_path, "stopped")
    assert len(runs) == len(make_plan(sweep).trials) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}  # pruned is a result
    pruned = [r for r in runs if r.data.tags["resablate.status"] == "pruned"]
    hopeless = [r for r in runs if r.data.params["train.lr"] == "1e-05"]
    assert {r.info.run_id for r in hopeless} <= {r.info.run_id for r in pruned}
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
        if run in pruned:
            assert 1 <= len(steps) < 6 and steps == list(range(1, len(steps) + 1))
        else:
            assert run.data.tags["resablate.status"] == "finished" and steps == list(range(1, 7))
    assert len(pruned) < 4  # the first trial always runs to the end
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).data.tags["resablate.pruned"] == str(len(pruned))


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_median_stopping_prunes_a_trial_worse_than_the_median(tmp_path: Path) -> None:
    text = GRID.replace(
        "{kind: asha, grace_period: 1, reduction_factor: 2}",
        "{kind: median, grace_period: 1, min_samples_required: 2}",
    )
    sweep = write(tmp_path / "m.yaml", text)
    ran = run_process("sweep", str(sweep), "-q", cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]
    _, runs = trial_runs(tmp_path, "stopped")
    status = {
        (r.data.params["train.lr"], r.data.params["seed"]): r.data.tags["resablate.status"]
        for r in runs
    }
    assert status[("0.05", "0")] == status[("0.05", "1")] == "finished"
    assert "pruned" in (status[("1e-05", "0")], status[("1e-05", "1")])


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_a_pruned_candidate_is_pruned_in_its_optuna_study(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "s.yaml",
        """
name: prunedsearch
model: {depth: 4, width: 32}
init: {c: 0.25}
data: {validation: 0.2}
train: {epochs: 4, batch_size: 64}
search: {param: train.lr, log_uniform: [0.000001, 0.1], n_trials: 6, sampler: random, seed: 0}
scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}
resources: {max_concurrent_trials: 1}
grid: {seed: [0]}
""",
    )
    ran = run_process("sweep", str(sweep), "-q", cwd=tmp_path)
    assert ran.code == 0, ran.err[-3000:]
    _, runs = trial_runs(tmp_path, "prunedsearch")
    [journal] = (tmp_path / "resablate-runs" / "prunedsearch" / "optuna").glob("*.journal")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    [summary] = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    by_lr = {float(r.data.params["train.lr"]): r for r in runs}
    states = [t.state for t in study.trials]
    assert len(states) == 6 and optuna.trial.TrialState.PRUNED in states
    for trial in study.trials:
        run = by_lr[trial.params["train.lr"]]
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert run.data.tags["resablate.status"] == "pruned"
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == run.data.metrics["val_acc"]  # one seed: its value
