"""tracking/store.py against a real sqlite MLflow store: where a store is, experiments and runs
as plain Python, MLflow's per-call limits kept, and failures as one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from resablate.errors import StoreError, UserError
from resablate.tracking.store import (
    EXPERIMENT_KIND,
    MAX_BATCH,
    RUN_FINISHED,
    RUN_KILLED,
    RUN_RUNNING,
    Metric,
    Run,
    artifact_location,
    open_store,
    resolve_uri,
    sqlite_path,
)
from tests.conftest import write


def test_the_store_is_the_option_then_the_environment_then_the_sweeps_then_mlflow_db_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_uri(None, "http://spec:5000") == "http://spec:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri(None, "http://spec:5000") == "http://env:5000"
    assert resolve_uri("sqlite:///cli.db", "http://spec:5000") == "sqlite:///cli.db"


def test_a_sqlite_stores_artifacts_live_beside_it_and_a_server_chooses_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:////data/m.db") == Path("/data/m.db")
    assert sqlite_path("http://host:5000") is None
    assert artifact_location("sqlite:////data/m.db", "smoke") == "file:///data/mlruns/smoke"
    # a relative store: beside it, wherever the sweep was started from
    beside = (tmp_path.resolve() / "sub" / "mlruns" / "e").as_uri()
    assert artifact_location("sqlite:///sub/m.db", "e") == beside
    assert artifact_location("http://host:5000", "smoke") is None


def test_an_experiment_is_created_once_beside_its_store_and_a_deleted_one_is_refused(
    store_uri: str, tmp_path: Path
) -> None:
    store = open_store(store_uri)
    first = store.experiment("ablate")
    assert store.experiment("ablate") == first  # found, not created again
    found = store.client.get_experiment(first)
    assert found.artifact_location == (tmp_path.resolve() / "mlruns" / "ablate").as_uri()
    assert EXPERIMENT_KIND.items() <= found.tags.items()
    assert [e.name for e in store.search_experiments()].count("ablate") == 1
    store.client.delete_experiment(store.experiment("gone"))
    with pytest.raises(UserError) as error:
        store.experiment("gone")
    assert str(error.value) == (
        f"MLflow experiment 'gone' is deleted in {store_uri}; restore it in the UI, or set"
        " tracking.experiment to another name"
    )


def test_a_batch_over_mlflows_1000_metrics_a_call_lands_once_each_with_its_tags(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    run = store.create_run(store.experiment("batch"), {"trial_id": "a"})
    now = int(time.time() * 1000)
    metrics = [Metric("loss", float(step), now, step) for step in range(2 * MAX_BATCH + 1)]
    store.log_batch(run, metrics, params={"train.lr": "0.1"}, tags={"reached": "all"})
    history = store.get_metric_history(run, "loss")
    assert sorted(step for step, _ in history) == list(range(2 * MAX_BATCH + 1))
    found = store.get_run(run)
    assert found.tags["reached"] == "all" and found.params == {"train.lr": "0.1"}
    assert found.metrics == {"loss": 2.0 * MAX_BATCH}  # the last step's value
    store.log_batch(run, tags={"alone": "yes"})  # tags without metrics are still written
    assert store.get_run(run).tags["alone"] == "yes"


def test_runs_come_back_as_plain_python_page_by_page_in_the_state_last_set(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    experiment = store.experiment("pages")
    ids = [store.create_run(experiment, {"trial_id": str(i)}) for i in range(3)]
    first, token = store.search_runs(experiment, "tags.trial_id != ''", max_results=2)
    rest, last = store.search_runs(experiment, "tags.trial_id != ''", page_token=token)
    assert len(first) == 2 and token and last is None
    assert sorted(r.run_id for r in first + rest) == sorted(ids)
    assert all(isinstance(r, Run) and type(r.tags) is dict for r in first + rest)
    assert {r.status for r in first + rest} == {RUN_RUNNING}
    store.set_terminated(ids[0], RUN_KILLED)
    assert store.get_run(ids[0]).status == RUN_KILLED
    store.update_run(ids[0], RUN_RUNNING)  # --resume reopens a run
    assert store.get_run(ids[0]).status == RUN_RUNNING
    store.set_terminated(ids[0], RUN_FINISHED)
    assert store.get_run(ids[0]).status == RUN_FINISHED


def test_a_missing_artifact_is_an_answer_and_the_others_read_back(
    store_uri: str, tmp_path: Path
) -> None:
    store = open_store(store_uri)
    run = store.create_run(store.experiment("files"), {})
    assert store.read_artifact(run, "probes/spp/epoch_0001.json") is None
    assert store.list_artifacts(run, "probes/spp") == []
    assert store.broken is None  # and the store goes on
    store.log_dict(run, {"epoch": 1, "lag1": [0.5]}, "probes/spp/epoch_0001.json")
    store.log_text(run, "| a |\n", "summary.md")
    folder = tmp_path / "report"
    folder.mkdir()
    write(folder / "report.md", "# r\n")
    store.log_artifacts(run, folder, "report")
    assert store.list_artifacts(run, "probes/spp") == ["probes/spp/epoch_0001.json"]
    assert '"lag1"' in (store.read_artifact(run, "probes/spp/epoch_0001.json") or "")
    assert store.read_artifact(run, "summary.md") == "| a |\n"
    assert store.read_artifact(run, "report/report.md") == "# r\n"


def test_a_write_mlflow_refuses_is_one_line_in_its_words_and_breaks_the_store(
    store_uri: str,
) -> None:
    store = open_store(store_uri)
    run = store.create_run(store.experiment("refused"), {})
    store.log_batch(run, params={"train.lr": "0.1"})
    with pytest.raises(StoreError) as error:
        store.log_batch(run, params={"train.lr": "0.2"})  # MLflow keeps a param's first value
    assert error.value.reason.startswith("Changing param values is not allowed.")
    assert str(error.value).startswith(f"tracking store {store_uri} failed: Changing param")
    assert "\n" not in str(error.value) and str(error.value).endswith("continue with --resume")
    with pytest.raises(StoreError) as again:
        store.get_run(run)  # refused: the first failure is the one the user sees
    assert again.value is error.value


def test_a_file_that_is_not_a_database_is_refused_in_one_line_when_opened(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "mlflow.db", "notes, not a database\n" * 100)
    uri = f"sqlite:///{path}"
    with pytest.raises(UserError) as error:
        open_store(uri)
    message = str(error.value)
    assert message.startswith(f"tracking store {uri}: ") and "file is not a database" in message
    assert "\n" not in message and not isinstance(error.value, StoreError)
