"""The runner on a real local Ray (and in-process): events, failures, resources."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from resablate.errors import SpecError
from resablate.results import FAILED, FINISHED, TrialRecord
from resablate.spec.grid import Trial
from resablate.sweep import capacity
from resablate.sweep.capacity import runs_of
from resablate.sweep.driver import Options, run_sweep
from resablate.sweep.plan import make_plan
from resablate.sweep.runner import Session
from resablate.tracking.runlog import RunLog
from tests.conftest import trial_runs, write

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

SWEEP = "name: runner\nmodel: {depth: 2, width: 8}\ntrain: {epochs: 2}\ngrid: {seed: [0, 1]}\n"


@pytest.mark.parametrize("backend", [pytest.param("ray", marks=pytest.mark.slow), "inline"])
def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path: Path, backend: str) -> None:
    path = write(tmp_path / "runner.yaml", SWEEP)
    plan = make_plan(path)
    good, bad = plan.trials
    # a trial that raises inside the worker (its config no longer fits the family)
    broken_config = {**bad.config, "model": {**bad.config["model"], "depth": 3}}
    plan = dataclasses.replace(plan, trials=[good, dataclasses.replace(bad, config=broken_config)])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunLog.open(uri, "runner")
    tracker.start_sweep("runner", {}, plan.spec.hash(), path, plan.trials)
    with Session(plan, backend, tmp_path / "runs") as session:
        if backend == "ray":
            import ray

            assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
            # the single-machine switch went to our Ray only: a cluster this process starts
            # later (ray start, tests/test_cluster.py) must be able to take more nodes
            assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
        before = signal.getsignal(signal.SIGINT)
        records = {r.trial.id: r for r in session.run([tracker])}
        # Ray Tune's Ctrl-C handler went with its run: a Ctrl-C after it is not swallowed
        assert signal.getsignal(signal.SIGINT) is before
    tracker.end_sweep()

    assert records[good.id].status == FINISHED and records[good.id].epoch == 2
    assert records[bad.id].status == FAILED
    assert "does not fit family mlp" in (records[bad.id].error or "")
    client = MlflowClient(tracking_uri=uri)
    [failed] = client.search_runs([tracker.experiment_id], f"tags.trial_id = '{bad.id}'")
    assert failed.info.status == "FAILED" and failed.data.tags["resablate.status"] == "failed"
    error = Path(client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path)))
    assert "does not fit family mlp" in error.read_text()
    [ok] = client.search_runs([tracker.experiment_id], f"tags.trial_id = '{good.id}'")
    assert ok.info.status == "FINISHED"
    assert len(client.get_metric_history(ok.info.run_id, "test_acc")) == 2
    assert client.get_run(tracker.parent_id).info.status == "FAILED"
    if backend == "ray":
        assert (tmp_path / "runs" / "runner" / good.id).is_dir()  # Tune's trial folders


def test_a_gpu_request_on_a_machine_without_gpus_fails_before_anything_runs(
    tmp_path: Path,
) -> None:
    plan = make_plan(write(tmp_path / "g.yaml", SWEEP), ["resources.gpu=0.25"])
    with (
        pytest.raises(SpecError, match=r"resources\.gpu: each trial asks for 0\.25 GPU"),
        Session(plan, "inline"),
    ):
        pass


@pytest.mark.slow
def test_ray_tune_keeps_statistics_of_the_epoch_only_and_mlflow_gets_every_metric(
    tmp_path: Path,
) -> None:
    """Tune's per-trial running statistics of every numeric result key grow the driver with
    every trial: our report travels wrapped, beside the keys Tune reads itself."""
    import json

    plan = make_plan(write(tmp_path / "runner.yaml", SWEEP))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunLog.open(uri, "runner")
    tracker.start_sweep("runner", {}, plan.spec.hash(), tmp_path / "runner.yaml", plan.trials)
    with Session(plan, "ray", tmp_path / "runs") as session:
        records = session.run([tracker])
    tracker.end_sweep()
    assert {r.status for r in records} == {FINISHED}
    assert all(r.history == [] for r in records)  # no per-epoch history unless asked for
    [state] = (tmp_path / "runs" / "runner").glob("experiment_state-*.json")
    tracked = set()
    for _, metadata in json.loads(state.read_text())["trial_data"]:
        tracked |= set(json.loads(metadata)["metric_analysis"])
    assert "epoch" in tracked and not tracked & {"train_loss", "test_acc", "lr"}, tracked
    client = MlflowClient(tracking_uri=uri)
    for record in records:
        [run] = client.search_runs([tracker.experiment_id], f"tags.trial_id = '{record.trial.id}'")
        assert run.data.metrics["test_acc"] == pytest.approx(record.metrics["test_acc"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == [1, 2]


def test_stacks_are_split_into_near_equal_tune_runs_in_order(monkeypatch) -> None:
    monkeypatch.setattr(capacity, "STACKS_PER_RUN", 4)
    monkeypatch.setattr(capacity, "STACKS_PER_SLOT", 2)
    nine = [[Trial(str(i), {}, {}, "cell")] for i in range(9)]

    def sizes(chosen: list, slots: int, scheduled: bool = False) -> list[int]:
        return [len(run) for run in runs_of(chosen, slots, scheduled)]

    assert sizes(nine, 1) == [3, 3, 3]  # at most 4 a run: 3 runs, evenly
    assert sizes(nine[:8], 1) == [4, 4]
    assert sizes(nine, 3) == [4, 5]  # 3 at once: at most 6 a run
    assert sizes(nine, 5) == [9]
    assert sizes(nine, 1, scheduled=True) == [9]  # a scheduler compares the trials of its run
    assert runs_of([], 1, False) == []
    assert [unit for run in runs_of(nine, 1, False) for unit in run] == nine


CHUNKED = """
name: chunked
model: {depth: 2, width: 8}
train: {epochs: 2}
resources: {max_concurrent_trials: 1, trials_per_stack: 1}
grid: {seed: [0, 1, 2, 3, 4]}
"""


def in_process(tmp_path: Path, plan: Any, listeners: Any = (), resume: bool = False) -> Any:
    """``resablate sweep`` in this process, results in ``tmp_path``."""
    options = Options(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        results_dir=tmp_path / "runs",
        quiet=True,
        resume=resume,
        listeners=list(listeners),
    )
    return run_sweep(plan, options, say=lambda line: None)


class AtTrialEnd:
    """A listener that acts as the ``after``-th trial ends."""

    def __init__(self, after: int = 1) -> None:
        self.left = after

    def trial_started(self, trial: Trial) -> None: ...

    def trial_result(self, trial: Trial, result: dict) -> None: ...

    def trial_retried(self, trial: Trial, error: str | None) -> None: ...

    def trial_finished(self, record: TrialRecord) -> None:
        self.left -= 1
        if self.left == 0:
            self.act()

    def act(self) -> None:
        raise NotImplementedError


class CtrlC(AtTrialEnd):
    """Presses Ctrl-C as the ``after``-th trial ends (the last trial of a Tune run)."""

    def act(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_a_grid_runs_as_several_tune_runs_and_ctrl_c_stops_before_the_next(
    tmp_path: Path, monkeypatch
) -> None:
    """Ray Tune's bookkeeping of a run's trials is released only when the run returns: a grid
    runs as several runs in turn. A Ctrl-C that Tune takes as its run ends starts no other."""
    monkeypatch.setattr(capacity, "STACKS_PER_RUN", 2)
    monkeypatch.setattr(capacity, "STACKS_PER_SLOT", 1)
    plan = make_plan(write(tmp_path / "chunked.yaml", CHUNKED))
    ids = [t.id for t in plan.trials]

    def sweep(*listeners: CtrlC, resume: bool = False) -> Any:
        return in_process(tmp_path, plan, listeners, resume)

    before = signal.getsignal(signal.SIGINT)
    first = sweep(CtrlC())  # 5 trials in runs of 1, 2, 2: stopped after the first
    assert signal.getsignal(signal.SIGINT) is before
    assert first.interrupted and [r.trial.id for r in first.records] == ids[:1]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["chunked"]

    second = sweep(resume=True)  # the 4 left, in runs of 2 and 2
    assert not second.interrupted and second.ended == 5
    tune_runs = {  # Tune's experiments and their trials' folders (named for our trials)
        run.name: sorted(trial.name for trial in run.iterdir() if trial.is_dir())
        for run in (tmp_path / "runs").iterdir()
    }
    # a resumed invocation's Tune runs have folders of their own (no old checkpoint in them)
    assert tune_runs == {
        "chunked": sorted(ids[:1]),
        "chunked-resume1": sorted(ids[1:3]),
        "chunked-resume1-part002": sorted(ids[3:]),
    }
    _, runs = trial_runs(tmp_path, "chunked")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in finished) == sorted(ids)


SEARCHED = """
name: stopsearch
model: {depth: 2, width: 8}
data: {validation: 0.2}
train: {epochs: 2}
search: {param: init.c, log_uniform: [0.1, 2.0], n_trials: 4, seed: 3}
resources: {max_concurrent_trials: 1, trials_per_stack: 1}
"""


@pytest.mark.slow
def test_a_ctrl_c_in_a_search_starts_no_other_candidate(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "stopsearch.yaml", SEARCHED))
    outcome = in_process(tmp_path, plan, [CtrlC(after=2)])  # 2 candidates in flight
    assert outcome.interrupted and len(outcome.records) == 2
    _, runs = trial_runs(tmp_path, "stopsearch")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 2


@pytest.mark.slow
def test_a_large_search_runs_as_several_tune_runs(tmp_path: Path, monkeypatch) -> None:
    """One searcher hands out every candidate; after STACKS_PER_RUN stacks its Tune run ends
    and the next continues the same studies, so the driver's memory stays flat."""
    monkeypatch.setattr(capacity, "STACKS_PER_RUN", 3)
    monkeypatch.setattr(capacity, "STACKS_PER_SLOT", 0)
    sweep = SEARCHED.replace("name: stopsearch", "name: parts") + "grid: {seed: [0, 1]}\n"
    plan = make_plan(write(tmp_path / "parts.yaml", sweep))
    outcome = in_process(tmp_path, plan)
    assert not outcome.interrupted and outcome.ended == 8  # 4 candidates x 2 seeds
    [cell] = outcome.search.values()
    assert cell["complete"] == 4
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("parts-"))
    assert len(runs) == 3 and all("-search-" in name for name in runs)  # 3 + 3 + 2 stacks
    assert [name.rpartition("-")[2] for name in runs[1:]] == ["part002", "part003"]
    _, children = trial_runs(tmp_path, "parts")
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 8


class Crash(AtTrialEnd):
    """A listener with a bug: raises as the ``after``-th trial ends."""

    def act(self) -> None:
        raise RuntimeError("a bug in the driver")


@pytest.mark.slow
def test_a_driver_that_crashes_leaves_its_parent_run_failed_and_resumable(
    tmp_path: Path,
) -> None:
    """Never FINISHED with only part of its trials: FAILED, the error on the parent run, and
    --resume runs only what is left."""
    plan = make_plan(write(tmp_path / "chunked.yaml", CHUNKED.replace("chunked", "crashed")))
    options = Options(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        results_dir=tmp_path / "runs",
        inline=True,
        quiet=True,
        listeners=[Crash(after=2)],
    )
    with pytest.raises(RuntimeError, match="a bug in the driver"):
        run_sweep(plan, options, say=lambda line: None)
    client, runs = trial_runs(tmp_path, "crashed")
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    ended = client.get_run(parent)
    assert ended.info.status == "FAILED"
    assert ended.data.tags["resablate.crash"] == "RuntimeError: a bug in the driver"
    assert len([r for r in runs if r.info.status == "FINISHED"]) == 2
    again = run_sweep(plan, dataclasses.replace(options, listeners=[], resume=True), say=print)
    assert not again.interrupted and again.ended == 5
    _, runs = trial_runs(tmp_path, "crashed")
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(t.id for t in plan.trials)
    assert client.get_run(parent).info.status == "FINISHED"
