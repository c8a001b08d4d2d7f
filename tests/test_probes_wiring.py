"""Probes from sweeps: scheduled in training, recorded in MLflow, and `resablate probe`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resablate.spec.schema import ProbesSpec
from resablate.trial.train import run_trial
from tests.conftest import run_terminal, trial_runs, write

SWEEP = """
name: probed
model: {family: mlp, depth: 4, width: 12, shortcut_depth: 2}
train: {epochs: 3, batch_size: 64, lr: 0.02}
probes:
  spp: {at: [init]}
  weights: {}
  hessian: {at: [end], max_exact: 3000, batch: 128}
  lesion: {}
grid:
  model.shortcut: [identity, none]
"""

CONFIG = {"model": {"depth": 4, "width": 12}, "train": {"epochs": 3, "batch_size": 64, "lr": 0.02}}


@pytest.mark.slow
def test_probes_never_change_training() -> None:
    probes = ProbesSpec.model_validate(
        {
            "spp": {"every": 1},
            "hessian": {"every": 1},
            "weights": {},
            "shattered": {},
            "lesion": {"every": 1},
        }
    )
    plain, probed = [], []
    run_trial(CONFIG, report=plain.append)
    run_trial(CONFIG, report=probed.append, probes=probes)
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [[r[k] for k in keys] for r in plain] == [[r[k] for k in keys] for r in probed[1:]]
    assert probed[0]["epoch"] == 0 and set(probed[0]["probes"]) == {
        "spp",
        "hessian",
        "weights",
        "shattered",
    }
    assert set(probed[-1]["probes"]) == {"spp", "hessian", "weights", "lesion"}


def test_probe_schedule_follows_at_and_every() -> None:
    probes = ProbesSpec.model_validate(
        {"weights": {"at": ["init"], "every": 2}, "hessian": {"at": ["end"]}}
    )
    reports: list[dict] = []
    run_trial({**CONFIG, "train": {**CONFIG["train"], "epochs": 4}}, reports.append, probes=probes)
    ran = {r["epoch"]: sorted(r.get("probes", {})) for r in reports}
    assert ran == {0: ["weights"], 1: [], 2: ["weights"], 3: [], 4: ["hessian", "weights"]}


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_sweep_records_probe_metrics_and_curves_in_mlflow(tmp_path: Path) -> None:
    sweep = write(tmp_path / "probed.yaml", SWEEP)
    ran = run_terminal("sweep", str(sweep), cwd=tmp_path)  # on Ray, the progress bar on
    assert ran.code == 0, ran.out[-3000:]
    client, runs = trial_runs(tmp_path, "probed")
    assert len(runs) == 2
    for run in runs:
        rid = run.info.run_id
        steps = [m.step for m in client.get_metric_history(rid, "weights.branch")]
        assert sorted(steps) == [0, 1, 2, 3]  # weights: every epoch, and at init
        assert [m.step for m in client.get_metric_history(rid, "hessian.max_abs")] == [3]
        assert run.data.metrics["hessian.n_params"] == 4 * 12 * 12 + 64 * 12 + 12 * 10
        spp = json.loads(
            Path(
                client.download_artifacts(rid, "probes/spp/epoch_0000.json", str(tmp_path))
            ).read_text()
        )
        assert spp["epoch"] == 0 and len(spp["fwd_var"]) == 2  # two units
        lesion = json.loads(
            Path(
                client.download_artifacts(rid, "probes/lesion/epoch_0003.json", str(tmp_path))
            ).read_text()
        )
        assert len(lesion["single"]) == 2 and 0.0 <= lesion["whole"] <= 1.0


def test_probe_command_prints_the_json_contract(tmp_path: Path, cli) -> None:
    sweep = write(tmp_path / "probed.yaml", SWEEP)
    ran = cli("probe", str(sweep), "--json", "--set", "probes.hessian.at=[init]")
    assert ran.code == 0, ran.err
    found = json.loads(ran.out)
    assert found["sweep"] == "probed" and len(found["trials"]) == 2
    first = found["trials"][0]
    assert {"id", "config", "params", "spp", "hessian", "weights", "lesion"} <= set(first)
    assert set(first["spp"]) >= {"fwd_var", "branch_var", "bwd_var", "chan_sq_mean"}
    assert set(first["hessian"]) >= {"max_abs", "p10_abs", "cond", "index", "n_params", "method"}
    assert first["hessian"]["method"] == "exact"
    one = json.loads(
        cli("probe", str(sweep), "--json", "--trial", first["id"], "--epochs", "1").out
    )
    assert [t["id"] for t in one["trials"]] == [first["id"]]
    assert one["trials"][0]["weights"] != first["weights"]  # trained for an epoch first
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow, no Ray


def test_probe_command_errors_are_one_line(tmp_path: Path, cli) -> None:
    sweep = write(tmp_path / "bare.yaml", "name: bare\n")
    ran = cli("probe", str(sweep))
    assert ran.code == 2 and "no probe chosen" in ran.err and len(ran.err.splitlines()) == 1
    sweep = write(tmp_path / "probed.yaml", SWEEP)
    ran = cli("probe", str(sweep), "--trial", "nope")
    assert ran.code == 2 and "--trial nope: no such trial" in ran.err
