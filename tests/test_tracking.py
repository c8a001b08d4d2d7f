"""Tracking against real stores (sqlite, an mlflow server on 127.0.0.1): the run log's writes,
the ledger's reading back, locks from other processes waited out, failures as one line."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from resablate.errors import StoreError
from resablate.results import FINISHED, KILLED, RUNNING, TrialRecord
from resablate.spec.grid import Trial
from resablate.tracking import runlog
from resablate.tracking.ledger import Ledger
from resablate.tracking.runlog import RunLog, flatten
from resablate.tracking.store import RUN_FINISHED, RUN_KILLED, RUN_RUNNING, Store

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

TRIAL = Trial("abc", {"seed": 0, "model": {"depth": 2}}, {"seed": 0}, "cell")


def started(tmp_path: Path, name: str, trials: list[Trial], uri: str | None = None) -> RunLog:
    log = RunLog.open(uri or f"sqlite:///{tmp_path / 'mlflow.db'}", name)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: {name}\n")
    log.start_sweep(name, {"name": name}, "hash", sweep, trials)
    return log


@pytest.mark.slow
def test_a_locked_sqlite_store_is_waited_out_not_an_error(tmp_path: Path) -> None:
    log = started(tmp_path, "locks", [TRIAL])
    other = sqlite3.connect(
        tmp_path / "mlflow.db", timeout=30, isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock ...
    release = threading.Timer(7.0, lambda: other.execute("COMMIT"))  # ... beyond the busy timeout
    release.start()
    began = time.monotonic()
    try:
        log.trial_started(TRIAL)
        log.trial_result(TRIAL, {"epoch": 1, "status": RUNNING, "train_loss": 0.5})
        log.trial_finished(TrialRecord(TRIAL, FINISHED, 1, {"train_loss": 0.5}))
        log.end_sweep({"summary.md": "| x |\n"})
    finally:
        release.join()
        other.close()
    assert time.monotonic() - began > 5.0  # it really waited for the lock

    client = MlflowClient(tracking_uri=log.uri)
    [child] = client.search_runs([log.experiment_id], "tags.trial_id = 'abc'")
    assert child.info.status == RUN_FINISHED
    assert child.data.tags["mlflow.parentRunId"] == log.parent_id
    assert child.data.params == {"seed": "0", "model.depth": "2"}
    assert [m.value for m in client.get_metric_history(child.info.run_id, "train_loss")] == [0.5]
    assert client.get_run(log.parent_id).info.status == RUN_FINISHED


def test_epoch_metrics_are_buffered_and_written_every_flush_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = started(tmp_path, "flush", [TRIAL])
    log.trial_started(TRIAL)
    batches: list[int] = []
    write = log.store.log_batch

    def counted(run_id: str, metrics=(), params=None) -> None:
        batches.append(len(metrics))
        write(run_id, metrics, params)

    monkeypatch.setattr(log.store, "log_batch", counted)
    for epoch in range(1, 6):  # faster than FLUSH_EVERY_S: the first report, then the rest
        log.trial_result(TRIAL, {"epoch": epoch, "train_loss": 1.0 / epoch, "test_acc": 0.5})
    assert batches == [2] and len(log.attempts[TRIAL.id].pending) == 8
    monkeypatch.setattr(runlog, "FLUSH_EVERY_S", 0.0)
    log.trial_result(TRIAL, {"epoch": 6, "train_loss": 1.0 / 6})
    assert batches == [2, 9] and log.attempts[TRIAL.id].pending == []
    log.trial_finished(TrialRecord(TRIAL, FINISHED, 6))
    assert log.attempts == {}  # nothing kept per ended trial
    [child], _ = log.store.search_runs(log.experiment_id, "tags.trial_id = 'abc'")
    steps = [step for step, _ in log.store.get_metric_history(child.run_id, "train_loss")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_ledger_finds_what_a_killed_invocation_finished_and_resume_closes_the_rest(
    tmp_path: Path,
) -> None:
    lost = Trial("def", {"seed": 1}, {"seed": 1}, "cell")
    log = started(tmp_path, "ledger", [TRIAL, lost])
    log.trial_started(TRIAL)
    for epoch in (1, 2):
        log.trial_result(TRIAL, {"epoch": epoch, "test_acc": 0.25 * epoch})
    log.trial_finished(TrialRecord(TRIAL, FINISHED, 2, {"test_acc": 0.5}))
    log.trial_started(lost)  # the driver is killed here: no end_sweep
    stale_id = log.attempts[lost.id].run_id

    again = RunLog.open(log.uri, "ledger")
    ledger = Ledger(again.store, again.experiment_id)
    previous = ledger.find_previous("ledger")
    assert previous is not None and previous.run_id == log.parent_id
    assert previous.status == RUN_RUNNING and previous.unfinished
    assert list(previous.done) == [TRIAL.id] and previous.stale == [stale_id]
    [record] = ledger.records(previous, [TRIAL, lost], ("test_acc",))
    assert (record.status, record.epoch, record.metrics) == (FINISHED, 2, {"test_acc": 0.5})
    assert record.history == [{"test_acc": 0.25}, {"test_acc": 0.5}]
    assert ledger.records(None, [TRIAL, lost]) == []

    again.resume_sweep(previous, "hash", tmp_path / "s.yaml", [TRIAL, lost])
    assert again.counts[FINISHED] == 1
    stale = again.store.get_run(stale_id)
    assert (stale.status, stale.tags["resablate.status"]) == (RUN_KILLED, KILLED)
    parent = again.store.get_run(log.parent_id)
    assert parent.status == RUN_RUNNING and parent.tags["resablate.resumes"] == "1"
    again.end_sweep(interrupted=True)
    assert again.store.get_run(log.parent_id).status == RUN_KILLED


class Failing:
    """A client whose writes fail as SQLAlchemy reports a full disk."""

    calls = 0

    def set_tag(self, *args: object) -> None:
        self.calls += 1
        raise RuntimeError(
            "(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO tags ...]"
        )

    def list_artifacts(self, *args: object) -> None:
        raise OSError("no such folder")


def test_a_store_failure_is_one_line_and_breaks_the_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = Store(uri)
    store.client = failing = Failing()
    assert store.list_artifacts("run", "probes/x") == []  # a missing artifact is an answer
    assert store.broken is None
    with pytest.raises(StoreError) as caught:
        store.set_tag("run", "k", "v")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        f"tracking store {uri} failed: database or disk is full;"
    )
    assert "--resume" in message and caught.value.reason == "database or disk is full"
    assert store.broken is caught.value
    with pytest.raises(StoreError) as again:  # later calls are refused, not made
        store.set_tag("run", "k", "v")
    assert again.value is caught.value and failing.calls == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_tracking_server_that_goes_away_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries: minutes
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(
        [sys.executable, "-m", *command, "--backend-store-uri", f"sqlite:///{tmp_path / 's.db'}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None and time.monotonic() < deadline
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        log = started(tmp_path, "server", [TRIAL], uri)
        log.trial_started(TRIAL)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.raises(StoreError) as caught:
        log.trial_result(TRIAL, {"epoch": 1, "train_loss": 0.5})
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"tracking store {uri} failed: ")
    assert log.store.broken is caught.value


def test_params_are_flattened_yaml_paths() -> None:
    assert flatten(
        {"seed": 1, "model": {"depth": 4, "shortcut": "none"}, "data": {"whiten": None}}
    ) == {"seed": "1", "model.depth": "4", "model.shortcut": "none", "data.whiten": "null"}
