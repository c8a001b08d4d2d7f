"""tracking/ledger.py against a real sqlite MLflow store: what a sweep's last invocation finished
(what --resume trusts), and a recorded sweep read back for the report."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

from resablate.errors import UserError
from resablate.results import DIVERGED, FAILED, FINISHED, KILLED, PRUNED, RETRIED
from resablate.spec.grid import Trial
from resablate.tracking.ledger import Ledger, log_report, read_sweep
from resablate.tracking.store import (
    RUN_FAILED,
    RUN_FINISHED,
    RUN_KILLED,
    RUN_RUNNING,
    Metric,
    Store,
    open_store,
)
from tests.conftest import write


def parent(store: Store, experiment: str, sweep: str, start: int, **tags: str) -> str:
    """A sweep's parent run as runlog.start_sweep tags it, started at ``start`` (ms)."""
    found = store.client.create_run(
        experiment,
        start_time=start,
        tags={"resablate.kind": "sweep", "resablate.sweep": sweep, **tags},
    )
    return str(found.info.run_id)


def child(store: Store, experiment: str, of: str, state: str, **tags: str) -> str:
    """A child run in MLflow state ``state`` with ``tags`` (trial_id, resablate.status, ...)."""
    run = store.create_run(experiment, {"mlflow.parentRunId": of, **tags})
    if state != RUN_RUNNING:
        store.set_terminated(run, state)
    return run


def history(store: Store, run: str, key: str, values: list[float]) -> None:
    now = int(time.time() * 1000)
    store.log_batch(run, [Metric(key, v, now, step) for step, v in enumerate(values, 1)])


def test_the_latest_invocation_of_the_named_sweep_is_found_with_what_it_recorded(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("found")
    parent(store, experiment, "a", 1000, **{"resablate.spec_hash": "old"})
    latest = parent(
        store,
        experiment,
        "a",
        2000,
        **{"resablate.spec_hash": "new", "resablate.n_trials": "6", "resablate.resumes": "2"},
    )
    parent(store, experiment, "b", 3000)  # another sweep in the same experiment
    ledger = Ledger(store, experiment)
    previous = ledger.find_previous("a")
    assert previous is not None and previous.run_id == latest
    assert (previous.spec_hash, previous.n_trials, previous.resumes) == ("new", 6, 2)
    assert previous.status == RUN_RUNNING and previous.unfinished
    store.set_terminated(latest, RUN_FINISHED)
    finished = ledger.find_previous("a")
    assert finished is not None and not finished.unfinished
    assert ledger.find_previous("c") is None


def test_a_trial_is_done_only_when_its_run_finished_with_a_result(store_uri: str) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("done")
    sweep = parent(store, experiment, "s", 1000)
    for status in (FINISHED, DIVERGED, PRUNED):
        child(
            store, experiment, sweep, RUN_FINISHED, trial_id=status, **{"resablate.status": status}
        )
    child(store, experiment, sweep, RUN_FAILED, trial_id="f", **{"resablate.status": FAILED})
    running = child(
        store, experiment, sweep, RUN_RUNNING, trial_id="r", **{"resablate.status": "running"}
    )
    child(store, experiment, sweep, RUN_FINISHED, **{"resablate.status": FINISHED})  # no trial id
    other = parent(store, experiment, "other", 500)
    child(store, experiment, other, RUN_FINISHED, trial_id="o", **{"resablate.status": FINISHED})
    previous = Ledger(store, experiment).find_previous("s")
    assert previous is not None
    assert sorted(previous.done) == sorted([FINISHED, DIVERGED, PRUNED])
    assert previous.stale == [running] and previous.resumable == {}


def test_resume_takes_each_unfinished_trials_latest_checkpoint_and_never_a_finished_trials(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("checkpoints")
    sweep = parent(store, experiment, "s", 1000)

    def attempt(trial: str, state: str, status: str, epoch: str | None) -> str:
        point = {"resablate.checkpoint": f"file:///c/{trial}", "resablate.checkpoint_epoch": epoch}
        tags = {"resablate.status": status, **(point if epoch else {})}
        return child(store, experiment, sweep, state, trial_id=trial, **tags)

    attempt("x", RUN_KILLED, KILLED, "10")
    attempt("x", RUN_RUNNING, "running", "9")  # an older checkpoint, though still running
    attempt("y", RUN_KILLED, KILLED, "3")
    attempt("y", RUN_FINISHED, FINISHED, "5")  # finished after all: done, not resumed
    attempt("z", RUN_FAILED, FAILED, "4")  # a failed trial reruns from the start
    bare = attempt("w", RUN_RUNNING, "running", None)  # nothing to continue from
    previous = Ledger(store, experiment).find_previous("s")
    assert previous is not None
    assert {t: r.tags["resablate.checkpoint_epoch"] for t, r in previous.resumable.items()} == {
        "x": "10"  # compared as numbers: "9" > "10" as text
    }
    assert list(previous.done) == ["y"] and bare in previous.stale


def test_what_was_finished_is_read_once_into_a_table_that_hands_out_fresh_records(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("earlier")
    sweep = parent(store, experiment, "s", 1000)
    trials = [Trial(i, {"seed": n}, {"seed": n}, "cell") for n, i in enumerate(("a", "b", "c"))]
    for each, status in zip(trials[:2], (FINISHED, DIVERGED), strict=True):
        run = child(
            store,
            experiment,
            sweep,
            RUN_FINISHED,
            trial_id=each.id,
            **{"resablate.status": status},
        )
        history(store, run, "test_acc", [0.5, 0.75])
        history(store, run, "train_loss", [1.0, 0.5])
    ledger = Ledger(store, experiment)
    earlier = ledger.earlier(ledger.find_previous("s"), ("test_acc",), ids=["a", "c"])
    earlier = pickle.loads(pickle.dumps(earlier))  # Ray Tune pickles the searcher holding it
    [record] = earlier(trials)
    assert (record.trial.id, record.status, record.epoch) == ("a", FINISHED, 2)
    assert record.metrics == {"test_acc": 0.75, "train_loss": 0.5}
    assert record.history == [{"test_acc": 0.5}, {"test_acc": 0.75}]
    record.metrics["test_acc"] = 0.0
    record.history.clear()
    [again] = earlier(trials)
    assert again is not record and again.metrics["test_acc"] == 0.75 and len(again.history) == 2
    assert [r.status for r in ledger.records(ledger.find_previous("s"), trials)] == [
        FINISHED,
        DIVERGED,
    ]


def test_a_report_of_no_store_or_no_sweep_is_refused_in_one_line_creating_nothing(
    tmp_path: Path, store_uri: str
) -> None:
    missing = tmp_path / "elsewhere.db"
    with pytest.raises(UserError) as error:
        read_sweep(f"sqlite:///{missing}", "smoke")
    assert str(error.value) == (
        f"no MLflow store at {missing}; run the sweep first, or pass --tracking-uri"
    )
    assert not missing.exists()
    store = open_store(store_uri)
    store.create_run(store.experiment("empty"), {"trial_id": "a"})  # a run, but no sweep
    with pytest.raises(UserError) as error:
        read_sweep(store_uri, "empty")
    assert str(error.value) == f"experiment 'empty' in {store_uri} holds no sweep run"
    elsewhere = parent(store, store.experiment("other"), "s", 1000)
    with pytest.raises(UserError) as error:
        read_sweep(store_uri, "empty", elsewhere)
    assert str(error.value) == f"--run {elsewhere}: not a run of experiment 'empty'"


def test_a_report_reads_the_chosen_sweeps_ended_trials_with_the_histories_asked(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("report")
    first = parent(store, experiment, "s", 1000)
    child(store, experiment, first, RUN_FINISHED, trial_id="old", **{"resablate.status": FINISHED})
    latest = parent(store, experiment, "s", 2000)
    kept = child(
        store, experiment, latest, RUN_FINISHED, trial_id="a", **{"resablate.status": FINISHED}
    )
    history(store, kept, "test_acc", [0.5, 0.75])
    history(store, kept, "spp.lag1", [0.1, 0.2])
    history(store, kept, "train_loss", [1.0, 0.5])
    failed = child(
        store, experiment, latest, RUN_FAILED, trial_id="f", **{"resablate.status": FAILED}
    )
    child(store, experiment, latest, RUN_RUNNING, trial_id="r")
    child(store, experiment, latest, RUN_KILLED, trial_id="k", **{"resablate.status": KILLED})
    child(store, experiment, latest, RUN_FINISHED, trial_id="t", **{"resablate.status": RETRIED})
    child(store, experiment, latest, RUN_FINISHED, **{"resablate.status": FINISHED})  # no trial
    sweep = read_sweep(store_uri, "report", histories=("test_acc",), history_prefixes=("spp.",))
    assert sweep.parent.run_id == latest and sweep.experiment_id == experiment
    by_id = {run.run_id: run for run in sweep.runs}
    assert sorted(by_id) == sorted([kept, failed])
    assert (by_id[kept].status, by_id[failed].status) == (FINISHED, FAILED)
    assert by_id[kept].history == {
        "test_acc": [(1, 0.5), (2, 0.75)],
        "spp.lag1": [(1, 0.1), (2, 0.2)],
    }
    assert by_id[kept].metrics["train_loss"] == 0.5  # its last value, without its history
    chosen = read_sweep(store_uri, "report", first)
    assert chosen.parent.run_id == first and [r.tags["trial_id"] for r in chosen.runs] == ["old"]


def test_a_sweeps_parent_artifacts_are_read_once_and_probe_results_come_by_epoch(
    store_uri: str, tmp_path: Path
) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("artifacts")
    sweep_id = parent(store, experiment, "s", 1000)
    store.log_dict(sweep_id, [{"id": "a"}], "plan.json")
    run = child(
        store, experiment, sweep_id, RUN_FINISHED, trial_id="a", **{"resablate.status": FINISHED}
    )
    for epoch in (10, 2):
        store.log_dict(
            run, {"epoch": epoch, "lag1": epoch / 10}, f"probes/spp/epoch_{epoch:04d}.json"
        )
    sweep = read_sweep(store_uri, "artifacts")
    assert sweep.recorded("plan.json") == [{"id": "a"}]
    next((tmp_path / "mlruns").rglob("plan.json")).unlink()
    assert sweep.recorded("plan.json") == [{"id": "a"}]  # read once, whatever reads it next
    assert sweep.artifact(sweep_id, "plan.json") is None and sweep.recorded("search.json") is None
    probes = sweep.probe(run, "spp")
    assert list(probes) == [2, 10] and probes[10] == {"epoch": 10, "lag1": 1.0}
    assert sweep.probe(run, "hessian") == {}

    folder = tmp_path / "out"
    folder.mkdir()
    write(folder / "report.md", "# verdicts\n")
    log_report(sweep, folder, {"resablate.claims.deep": "holds"}, {"claims.holding": 1.0})
    found = store.get_run(sweep_id)
    assert found.tags["resablate.claims.deep"] == "holds"
    assert found.metrics == {"claims.holding": 1.0}
    assert store.read_artifact(sweep_id, "report/report.md") == "# verdicts\n"
