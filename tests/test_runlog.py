"""tracking/runlog.py against a real sqlite MLflow store: the parent run records what ran, each
trial has one run however many attempts it takes, and every run ends in the state that says how
its trial ended."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from resablate.results import DIVERGED, FAILED, FINISHED, KILLED, PRUNED, TrialRecord
from resablate.spec.grid import Trial
from resablate.tracking.ledger import Ledger
from resablate.tracking.runlog import EPOCH_TAG, RunLog, killed_text
from resablate.tracking.store import RUN_FAILED, RUN_FINISHED, RUN_KILLED, RUN_RUNNING
from tests.conftest import ROOT, write


def trial(seed: int) -> Trial:
    return Trial(f"t{seed}", {"seed": seed, "model": {"depth": 4}}, {"seed": seed}, "cell")


def started(uri: str, folder: Path, trials: list[Trial], spec_hash: str = "h1") -> RunLog:
    log = RunLog.open(uri, "logged")
    log.start_sweep("logged", {"name": "logged"}, spec_hash, write(folder / "s.yaml", "x"), trials)
    return log


def steps(log: RunLog, run_id: str, metric: str = "train_loss") -> list[int]:
    return sorted(step for step, _ in log.store.get_metric_history(run_id, metric))


def test_the_parent_run_records_the_spec_its_plan_the_commit_and_the_versions(
    store_uri: str,
) -> None:
    log = RunLog.open(store_uri, "recorded")
    source = ROOT / "sweeps" / "smoke.yaml"
    trials = [trial(0), trial(1)]
    parent = log.start_sweep("smoke", {"name": "smoke", "seed": 0}, "abcd", source, trials)
    tags = log.store.get_run(parent).tags
    assert (tags["resablate.kind"], tags["resablate.sweep"]) == ("sweep", "smoke")
    assert (tags["resablate.spec_hash"], tags["resablate.n_trials"]) == ("abcd", "2")
    assert tags["resablate.version.python"] == platform.python_version()
    assert tags["resablate.version.torch"] == metadata.version("torch")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert log.store.read_artifact(parent, "sweep.yaml") == source.read_text()
    assert json.loads(log.store.read_artifact(parent, "sweep.resolved.json") or "") == {
        "name": "smoke",
        "seed": 0,
    }
    assert json.loads(log.store.read_artifact(parent, "plan.json") or "") == [
        {"id": "t0", "cell": "cell", "grid": {"seed": 0}},
        {"id": "t1", "cell": "cell", "grid": {"seed": 1}},
    ]


def test_a_sweep_outside_a_git_repository_has_no_commit_tag(
    store_uri: str, tmp_path: Path
) -> None:
    log = started(store_uri, tmp_path, [trial(0)])
    assert log.parent_id is not None
    assert "mlflow.source.git.commit" not in log.store.get_run(log.parent_id).tags


def test_the_killed_line_names_the_first_ten_and_counts_the_rest() -> None:
    assert killed_text(["a", "b"]) == "killed, --resume continues them: 2 trial(s): a; b"
    names = [f"seed={i}" for i in range(12)]
    assert killed_text(names) == (
        "killed, --resume continues them: 12 trial(s): " + "; ".join(names[:10]) + " and 2 more"
    )


def test_each_trials_run_ends_in_the_mlflow_state_of_how_it_ended(
    store_uri: str, tmp_path: Path
) -> None:
    trials = [trial(i) for i in range(4)]
    log = started(store_uri, tmp_path, trials)
    ended = dict(zip((FINISHED, DIVERGED, PRUNED, FAILED), trials, strict=True))
    for status, each in ended.items():
        log.trial_started(each)
        log.trial_result(each, {"epoch": 1, "train_loss": 0.5})
        error = "Traceback: boom" if status == FAILED else None
        log.trial_finished(TrialRecord(each, status, 1, {"train_loss": 0.5}, error))
    assert log.attempts == {}
    runs, _ = log.store.search_runs(log.experiment_id, "tags.trial_id != ''")
    by_trial = {run.tags["trial_id"]: run for run in runs}
    for status, each in ended.items():
        run = by_trial[each.id]
        assert run.tags["resablate.status"] == status
        assert run.status == (RUN_FAILED if status == FAILED else RUN_FINISHED), status
        assert run.params == {"seed": str(each.config["seed"]), "model.depth": "4"}
        assert run.tags["mlflow.runName"] == f"seed={each.config['seed']}"
    assert log.store.read_artifact(by_trial["t3"].run_id, "error.txt") == "Traceback: boom"
    log.end_sweep()
    assert log.parent_id is not None
    parent = log.store.get_run(log.parent_id)
    assert parent.status == RUN_FAILED  # one trial failed
    assert {k: parent.tags[f"resablate.{k}"] for k in ended} == dict.fromkeys(ended, "1")


def test_an_interrupted_sweep_closes_its_open_runs_as_killed_and_names_them_in_the_summary(
    store_uri: str, tmp_path: Path
) -> None:
    log = started(store_uri, tmp_path, [trial(0)])
    log.trial_started(trial(0))
    for epoch in (1, 2):  # the second report waits in the buffer (FLUSH_EVERY_S)
        log.trial_result(trial(0), {"epoch": epoch, "train_loss": 1.0 / epoch})
    run_id = log.attempts["t0"].run_id
    log.end_sweep({"summary.md": "| table |\n"}, interrupted=True)
    run = log.store.get_run(run_id)
    assert (run.status, run.tags["resablate.status"]) == (RUN_KILLED, KILLED)
    assert steps(log, run_id) == [1, 2]  # what it reported last is kept
    assert log.parent_id is not None
    summary = log.store.read_artifact(log.parent_id, "summary.md")
    assert summary == "| table |\n\nkilled, --resume continues them: 1 trial(s): seed=0\n"
    assert log.store.get_run(log.parent_id).status == RUN_KILLED


def test_a_crashed_sweep_ends_failed_with_the_drivers_error_on_its_parent(
    store_uri: str, tmp_path: Path
) -> None:
    log = started(store_uri, tmp_path, [trial(0)])
    log.end_sweep(crashed="RuntimeError: " + "x" * 9000)
    assert log.parent_id is not None
    parent = log.store.get_run(log.parent_id)
    assert parent.status == RUN_FAILED
    assert parent.tags["resablate.crash"] == ("RuntimeError: " + "x" * 9000)[:5000]


def test_a_retried_attempt_goes_on_in_its_run_keeping_each_error_and_each_epoch_once(
    store_uri: str, tmp_path: Path
) -> None:
    log = started(store_uri, tmp_path, [trial(0)])
    log.trial_started(trial(0))
    run_id = log.attempts["t0"].run_id
    log.trial_result(trial(0), {"epoch": 1, "train_loss": 1.0, "ray_node_id": "node-a"})
    log.trial_result(trial(0), {"epoch": 2, "train_loss": 0.5})
    log.trial_retried(trial(0), "OSError: node lost")
    log.trial_started(trial(0))  # the next attempt, from the checkpoint of epoch 1
    log.trial_resumed(trial(0), 1)
    assert log.attempts["t0"].run_id == run_id
    for epoch in (2, 3):  # epoch 2 again: already logged
        report = {"epoch": epoch, "train_loss": 0.1 * epoch, "ray_node_id": "node-b"}
        report["probes"] = {"spp": {"lag1": 0.25}}
        log.trial_result(trial(0), report)
    log.trial_finished(TrialRecord(trial(0), FINISHED, 3))
    runs, _ = log.store.search_runs(log.experiment_id, "tags.trial_id = 't0'")
    assert [run.run_id for run in runs] == [run_id]  # one run for both attempts
    run = runs[0]
    assert steps(log, run_id) == [1, 2, 3]
    assert dict(log.store.get_metric_history(run_id, "train_loss"))[2] == 0.5  # the first's
    assert log.store.read_artifact(run_id, "errors/attempt_1.txt") == "OSError: node lost"
    assert run.tags["resablate.attempts"] == "2"
    assert run.tags["resablate.resumed_from_epoch"] == "1"
    assert run.tags["ray.node_id"] == "node-b"  # where the attempt that ended it ran
    assert log.store.list_artifacts(run_id, "probes/spp") == ["probes/spp/epoch_0003.json"]
    probe = json.loads(log.store.read_artifact(run_id, "probes/spp/epoch_0003.json") or "")
    assert probe == {"epoch": 3, "lag1": 0.25}


def test_a_checkpoints_tags_are_written_with_the_metrics_up_to_its_epoch(
    store_uri: str, tmp_path: Path
) -> None:
    log = started(store_uri, tmp_path, [trial(0)])
    log.trial_started(trial(0))
    run_id = log.attempts["t0"].run_id
    for epoch in (1, 2, 3):
        log.trial_result(trial(0), {"epoch": epoch, "train_loss": 1.0 / epoch})
    assert steps(log, run_id) == [1]  # 2 and 3 buffered
    log.trial_checkpointed(trial(0), "file:///ckpt/t0", 3, 2048)
    tags = log.store.get_run(run_id).tags
    assert (tags["resablate.checkpoint"], tags[EPOCH_TAG]) == ("file:///ckpt/t0", "3")
    assert steps(log, run_id) == [1, 2, 3] and log.attempts["t0"].pending == []
    log.trial_checkpointed(trial(0), "file:///ckpt/t0", 4, 1024)
    assert log.saved == {"checkpoints": 2, "largest": 2048}


def test_resume_continues_an_unfinished_trial_in_its_run_and_records_the_changed_spec(
    store_uri: str, tmp_path: Path
) -> None:
    def report(epoch: int) -> dict[str, float]:  # a trial's report, as train.py makes it
        return {"epoch": epoch, "train_loss": 1.0 / epoch, "epoch_time": 0.01}

    trials = [trial(0), trial(1), trial(2)]
    first = started(store_uri, tmp_path, trials, "h1")
    for each, epochs in ((trial(0), 2), (trial(1), 1)):
        first.trial_started(each)
        for epoch in range(1, epochs + 1):
            first.trial_result(each, report(epoch))
        first.trial_checkpointed(each, f"file:///ckpt/{each.id}", epochs, 100)
    first.trial_started(trial(2))  # no checkpoint yet; the driver is killed here
    runs = {t: open_run.run_id for t, open_run in first.attempts.items()}

    again = RunLog.open(store_uri, "logged")
    previous = Ledger(again.store, again.experiment_id).find_previous("logged")
    assert previous is not None
    again.resume_sweep(previous, "h2", write(tmp_path / "s.yaml", "changed"), trials[:2])
    assert again.resume_points() == {"t0": ("file:///ckpt/t0", 2), "t1": ("file:///ckpt/t1", 1)}
    assert again.store.get_run(runs["t2"]).status == RUN_KILLED and again.closed == 1
    assert again.store.get_run(runs["t0"]).status == RUN_RUNNING  # to be continued
    parent = again.store.get_run(previous.run_id).tags
    assert parent["resablate.spec_hash"] == "h2"
    assert parent["resablate.spec_hash.before_resume_1"] == "h1"
    assert (parent["resablate.resumes"], parent["resablate.n_trials"]) == ("1", "2")
    assert again.store.read_artifact(previous.run_id, "sweep.resume_1.yaml") == "changed"

    again.trial_started(trial(0))
    assert again.attempts["t0"].run_id == runs["t0"]
    for epoch in (2, 3):  # the epoch of the checkpoint comes again: logged once
        again.trial_result(trial(0), report(epoch))
    again.trial_finished(TrialRecord(trial(0), FINISHED, 3))
    assert steps(again, runs["t0"]) == [1, 2, 3]
    again.end_sweep(interrupted=True)  # t1 was not continued this time: closed as killed
    t1 = again.store.get_run(runs["t1"])
    assert (t1.status, t1.tags["resablate.status"]) == (RUN_KILLED, KILLED)
    assert again.store.get_run(runs["t0"]).status == RUN_FINISHED
