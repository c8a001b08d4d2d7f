"""End to end: real `resablate sweep` processes, a real local Ray, a real sqlite MLflow store."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from resablate.sweep.plan import make_plan
from tests.conftest import SWEEPS, run_process, write

SMOKE = SWEEPS / "smoke.yaml"


def children(client: MlflowClient, experiment_id: str, parent_id: str) -> list:
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=1000
    )


def parents(client: MlflowClient, experiment_id: str) -> list:
    return client.search_runs([experiment_id], filter_string="tags.`resablate.kind` = 'sweep'")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory):
    """`resablate sweep sweeps/smoke.yaml` once, on Ray, in an empty working directory."""
    cwd = tmp_path_factory.mktemp("smoke")
    ran = run_process("sweep", str(SMOKE), cwd=cwd)
    assert ran.code == 0, ran.err[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    return cwd, ran, client


@pytest.mark.slow
def test_smoke_sweep_records_one_parent_and_one_finished_child_per_trial(smoke) -> None:
    cwd, _ran, client = smoke
    plan = make_plan(SMOKE)
    experiment = client.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    [parent] = parents(client, experiment.experiment_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["resablate.spec_hash"] == plan.spec.hash()
    assert parent.data.tags["resablate.n_trials"] == str(len(plan.trials)) == "18"
    assert "resablate.version.torch" in parent.data.tags
    assert "resablate.version.ray" in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "sweep.yaml",
        "sweep.resolved.json",
        "plan.json",
        "summary.md",
        "summary.csv",
    } <= artifacts
    yaml_text = Path(client.download_artifacts(parent.info.run_id, "sweep.yaml", str(cwd)))
    assert yaml_text.read_text() == SMOKE.read_text()

    runs = children(client, experiment.experiment_id, parent.info.run_id)
    assert len(runs) == len(plan.trials)
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(t.id for t in plan.trials)
    by_id = {t.id: t for t in plan.trials}
    for run in runs:
        trial = by_id[run.data.tags["trial_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["resablate.status"] == "finished"
        assert run.data.tags["cell"] == trial.cell
        assert run.data.params["model.depth"] == str(trial.config["model"]["depth"])
        assert run.data.params["model.shortcut"] == trial.config["model"]["shortcut"]
        assert run.data.params["seed"] == str(trial.config["seed"])
        epochs = trial.config["train"]["epochs"]
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), metric
    # the only store and results are where the user ran the command
    assert (cwd / "mlflow.db").is_file() and (cwd / "resablate-runs" / "smoke").is_dir()


@pytest.mark.slow
def test_smoke_sweep_shows_the_science(smoke) -> None:
    _cwd, _, client = smoke
    experiment = client.get_experiment_by_name("smoke")
    [parent] = parents(client, experiment.experiment_id)
    acc: dict[tuple[str, str], list[float]] = {}
    for run in children(client, experiment.experiment_id, parent.info.run_id):
        key = (run.data.params["model.shortcut"], run.data.params["model.depth"])
        acc.setdefault(key, []).append(run.data.metrics["test_acc"])
    # identity shortcuts train at every depth, far above chance (0.1)
    for depth in ("4", "16", "32"):
        assert min(acc[("identity", depth)]) > 0.85, acc
    # the plain network of the same layers degrades with depth
    assert statistics.mean(acc[("none", "32")]) < statistics.mean(acc[("identity", "32")]) - 0.3


@pytest.mark.slow
def test_smoke_sweep_prints_progress_and_the_cell_table(smoke) -> None:
    _, ran, _ = smoke
    assert "18/18" in ran.err  # the progress bar's last state
    assert "Traceback" not in ran.err
    table = ran.out
    assert "mean ± std over seeds" in table
    for cell in ("depth=4 shortcut=identity", "depth=32 shortcut=none"):
        assert cell in table
    assert table.count("3/0/0/0") == 6  # 6 cells, 3 seeds each, all finished
    # stdout is not a terminal (a batch log): the summary is markdown, every number whole
    rows = [line for line in table.splitlines() if line.startswith("| depth=")]
    assert len(rows) == 6 and "…" not in table
    for row in rows:
        # each mean ± std to the std's two significant digits (summary.pm): no 0.0000 ± 0.0000
        found = re.findall(r"\d[\d.e+-]* ± (\d[\d.e+-]*)", row)
        assert len(found) == 4 and all(s == "0" or set(s) & set("123456789") for s in found), row
    # then what to run next: the report first, then the UI
    steps = table.split("Next:")[1].splitlines()
    assert steps[1].strip().startswith("resablate report ") and "smoke.yaml" in steps[1]
    assert steps[2].strip().startswith("resablate ui")


@pytest.mark.slow
def test_quiet_inline_sweep_records_divergence_as_a_result(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "div.yaml",
        """
name: div
model: {depth: 8, width: 16}
init: {c: 0.25}
train: {epochs: 3, batch_size: 64}
grid:
  train.lr: [0.01, 50.0]
""",
    )
    store = tmp_path / "elsewhere" / "store.db"
    store.parent.mkdir()
    ran = run_process(
        "sweep",
        str(sweep),
        "--inline",
        "--quiet",
        "--tracking-uri",
        f"sqlite:///{store}",
        cwd=tmp_path,
    )
    assert ran.code == 0, ran.err[-3000:]
    assert ran.out == "" and ran.err == ""
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert (store.parent / "mlruns" / "div").is_dir()  # artifacts live beside the store
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("div")
    [parent] = parents(client, experiment.experiment_id)
    runs = {
        r.data.params["train.lr"]: r
        for r in children(client, experiment.experiment_id, parent.info.run_id)
    }
    assert runs["0.01"].data.tags["resablate.status"] == "finished"
    diverged = runs["50.0"]
    assert diverged.data.tags["resablate.status"] == "diverged"
    assert diverged.info.status == "FINISHED"  # a result, not a crash
    assert diverged.data.metrics["diverged_epoch"] >= 1
    assert parent.data.tags["resablate.diverged"] == "1"
    summary = json.loads(json.dumps(client.get_run(parent.info.run_id).data.tags))
    assert summary["resablate.finished"] == "1"


def test_unreachable_tracking_server_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    ran = run_process("sweep", str(SMOKE), "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path)
    assert ran.code == 2
    [line] = ran.err.strip().splitlines()
    assert line.startswith("resablate: error: tracking server http://127.0.0.1:9 is unreachable")
    assert os.listdir(tmp_path) == []


def test_every_ready_sweep_validates_and_plans(cli) -> None:
    files = sorted(SWEEPS.glob("*.yaml"))
    assert files
    for path in files:
        ran = cli("plan", str(path), "--json", "--no-data-check")  # CIFAR-10 is not here
        assert ran.code == 0, (path, ran.err)
        found = json.loads(ran.out)
        assert found["n_trials"] == len(found["trials"]) > 0
        for trial in found["trials"]:
            assert set(trial) >= {"id", "config", "params"}
            assert trial["params"] > 0
            assert trial["config"]["model"]["family"]
