"""The five studies of science.md §7 ship as sweeps: each validates and plans at full scale and
with --profile cpu, and its CPU profile (further reduced) runs end to end into MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SWEEPS, run_process, trial_runs

# study -> (trials at full scale, trials with --profile cpu; a search counts all its trials)
SIZES = {
    "shortcut_depth": (351, 104),
    "identity_mappings": (100, 20),
    "init_scale": (198, 12),
    "signal_propagation": (81, 18),
    "mnist_lecture": (18, 9),
}
# a further-reduced CPU profile for CI, and the metrics and probe artifacts each run must hold
REDUCED = {
    "shortcut_depth": (
        [
            "train.epochs=3",
            "grid.model.depth=[6]",
            "grid.seed=[0]",
            "grid.init.scheme=[zero]",
        ],
        ["hessian.max_abs", "weights.all"],
        ["hessian", "weights"],
    ),
    "identity_mappings": (["train.epochs=1"], ["test_acc"], []),
    "init_scale": (
        ["search.n_trials=2", "model.depth=8", "train.epochs=1"],
        ["test_acc"],
        [],
    ),
    "signal_propagation": (
        ["train.epochs=1", "grid.model.depth=[8]", "grid.model.shortcut=[identity,scalar]"],
        ["test_acc"],
        ["spp"],
    ),
    "mnist_lecture": (
        ["train.epochs=1"],
        ["lesion.whole", "lesion.error_k1", "lesion.error_kmax"],
        ["lesion", "shattered"],
    ),
}


def planned(study: str, *args: str) -> dict:
    ran = run_process("plan", str(SWEEPS / f"{study}.yaml"), "--json", *args, cwd=SWEEPS)
    assert ran.code == 0, ran.err
    return json.loads(ran.out)


@pytest.mark.parametrize("study", list(SIZES))
def test_every_study_plans_at_full_and_cpu_scale(study: str) -> None:
    full, cpu = SIZES[study]
    for args, expected in (([], full), (["--profile", "cpu"], cpu)):
        found = planned(study, *args)
        total = found["search"]["total_trials"] if "search" in found else found["n_trials"]
        assert total == expected, (study, args)
    text = (SWEEPS / f"{study}.yaml").read_text()
    assert f"resablate sweep sweeps/{study}.yaml --profile cpu" in text  # documented


@pytest.mark.slow
@pytest.mark.parametrize("study", list(REDUCED))
def test_each_study_runs_its_cpu_profile_end_to_end(tmp_path: Path, study: str) -> None:
    sets, metrics, probes = REDUCED[study]
    args = ["--profile", "cpu", *(a for s in sets for a in ("--set", s))]
    found = planned(study, *args)
    expected = found["search"]["total_trials"] if "search" in found else found["n_trials"]
    sweep = SWEEPS / f"{study}.yaml"
    # a slower machine than this 2-core one may take twice as long: pytest's own limit is 600 s
    ran = run_process("sweep", str(sweep), *args, "--inline", "-q", cwd=tmp_path, timeout=540)
    assert ran.code == 0, ran.err[-3000:]
    client, runs = trial_runs(tmp_path, study)
    assert len(runs) == expected
    assert {r.data.tags["resablate.status"] for r in runs} <= {"finished", "diverged"}
    finished = [r for r in runs if r.data.tags["resablate.status"] == "finished"]
    assert finished
    for run in finished:  # a diverged run (He init without norm, Taki's point) has no metrics
        for metric in metrics:
            assert metric in run.data.metrics, (metric, run.data.metrics)
        for probe in probes:
            assert client.list_artifacts(run.info.run_id, f"probes/{probe}"), probe
    if study == "init_scale":
        [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
        assert any(k.startswith("best.") for k in client.get_run(parent).data.metrics)
