"""Optuna inside grid cells, on a real local Ray, recorded in a real MLflow store."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from resablate.sweep.search import best_trial
from tests.conftest import run_terminal, trial_runs, write

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

# searches choose on the validation set (data.validation), never on the test set
SWEEP = """
name: searched
model: {depth: 4, width: 16}
data: {validation: 0.2}
train: {epochs: 2, batch_size: 128, lr: 0.05}
search: {param: init.c, log_uniform: [0.1, 2.0], n_trials: 4, objective: {metric: val_acc},
         seed: 3}
grid:
  model.shortcut: [identity, none]
  seed: [0, 1]
"""


def studies(folder: Path) -> dict[str, optuna.Study]:
    """The studies of the one invocation of the sweep whose results are in ``folder``."""
    [journal] = (folder / "optuna").glob("*.journal")  # named by the parent run's id
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
        for s in optuna.get_all_study_summaries(storage)
    }


@pytest.mark.slow
def test_each_cell_study_holds_its_candidates_scored_by_the_seed_mean(tmp_path: Path) -> None:
    sweep = write(tmp_path / "s.yaml", SWEEP)
    # on Ray, with the progress bar on a terminal as users run it (Tune pickles the searcher,
    # which must not reach the bar's locks)
    ran = run_terminal("sweep", str(sweep), cwd=tmp_path)
    assert ran.code == 0, ran.out[-3000:]
    assert "16/16" in ran.out and "Traceback" not in ran.out
    client, runs = trial_runs(tmp_path, "searched")
    experiment = client.get_experiment_by_name("searched")
    assert len(runs) == 2 * 4 * 2  # cells × candidates × seeds
    found = studies(tmp_path / "resablate-runs" / "searched")
    assert len(found) == 2
    for cell, study in found.items():
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(study.trials) == len(complete) == 4
        for trial in complete:
            c = trial.params["init.c"]
            assert 0.1 <= c <= 2.0
            seeds = [
                r
                for r in runs
                if r.data.tags["search_cell"] == cell and float(r.data.tags["c"]) == c
            ]
            assert sorted(r.data.tags["seed"] for r in seeds) == ["0", "1"]
            assert all(float(r.data.params["init.c"]) == c for r in seeds)
            mean = statistics.fmean(r.data.metrics["val_acc"] for r in seeds)
            assert trial.value == mean
    [parent] = client.search_runs([experiment.experiment_id], "tags.`resablate.kind` = 'sweep'")
    best = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "search.json", str(tmp_path))
        ).read_text()
    )
    for cell, study in found.items():
        assert best[cell]["best"] == study.best_trial.params["init.c"]
        assert best[cell]["mean"] == study.best_value and best[cell]["complete"] == 4
        assert parent.data.metrics[f"best.{cell}"] == pytest.approx(best[cell]["best"])
        assert parent.data.metrics[f"mean.{cell}"] == pytest.approx(study.best_value)
        assert f"std.{cell}" in parent.data.metrics


@pytest.mark.slow
def test_diverging_candidates_score_as_the_worst_and_the_best_c_is_finite(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "d.yaml",
        """
name: diverging
model: {depth: 16, width: 16}
data: {validation: 0.2}
train: {epochs: 2, batch_size: 64, lr: 0.05}
search: {param: init.c, log_uniform: [0.01, 100.0], n_trials: 6, sampler: random, seed: 0,
         objective: {metric: val_acc}}
""",
    )
    ran = run_terminal("sweep", str(sweep), "--inline", cwd=tmp_path)
    assert ran.code == 0, ran.out[-3000:]
    [study] = studies(tmp_path / "resablate-runs" / "diverging").values()
    _, runs = trial_runs(tmp_path, "diverging")
    status = {float(r.data.tags["c"]): r.data.tags["resablate.status"] for r in runs}
    assert "diverged" in status.values() and "finished" in status.values()
    finished = [t.value for t in study.trials if status[t.params["init.c"]] == "finished"]
    scored = 0
    for trial in study.trials:
        if status[trial.params["init.c"]] == "diverged" and trial.value is not None:
            # the worst value the cell had seen when it was told
            assert trial.value in finished and trial.value >= min(finished)
            scored += 1
        elif status[trial.params["init.c"]] == "diverged":  # nothing seen yet: told FAIL
            assert trial.state == optuna.trial.TrialState.FAIL
    assert scored >= 1
    assert math.isfinite(study.best_value)
    # the best c is a finished one, even where a diverged candidate ties with it (scored the
    # worst value seen while only one had finished)
    assert status[best_trial(study).params["init.c"]] == "finished"
    assert best_trial(study).value == study.best_value


@pytest.mark.slow
def test_search_where_searches_the_matching_cells_and_runs_the_others_once(
    tmp_path: Path, cli
) -> None:
    """Taki's study: c searched in the taki arm only; He init stays at the sweep's c."""
    sweep = write(
        tmp_path / "w.yaml",
        SWEEP.replace("seed: 3}", "seed: 3, where: {model.shortcut: none}}").replace(
            "train:", "init: {c: 0.7}\ntrain:"
        ),
    )
    planned = cli("plan", str(sweep))
    assert planned.code == 0, planned.err
    assert "1 cells × 4 candidates × 2 seeds + 2 grid trials outside search.where = 10" in (
        " ".join(planned.out.split())
    )
    ran = run_terminal("sweep", str(sweep), "--inline", cwd=tmp_path)
    assert ran.code == 0, ran.out[-3000:]
    _, runs = trial_runs(tmp_path, "searched")
    assert len(runs) == 4 * 2 + 2
    fixed = [r for r in runs if r.data.params["model.shortcut"] == "identity"]
    assert sorted(r.data.params["seed"] for r in fixed) == ["0", "1"]
    assert all(float(r.data.params["init.c"]) == 0.7 for r in fixed)  # not searched
    assert all("search_cell" not in r.data.tags for r in fixed)
    [study] = studies(tmp_path / "resablate-runs" / "searched").values()
    assert len(study.trials) == 4  # the one searched cell: shortcut none
    searched = [r for r in runs if r.data.params["model.shortcut"] == "none"]
    assert {float(r.data.params["init.c"]) for r in searched} == {
        t.params["init.c"] for t in study.trials
    }
    again = run_terminal("sweep", str(sweep), "--inline", "--resume", cwd=tmp_path)
    assert again.code == 0, again.out[-3000:]
    assert len(trial_runs(tmp_path, "searched")[1]) == 10  # nothing ran twice


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "{model.shortcutt: none}",
            r"search\.where\.model\.shortcutt: 'model\.shortcutt' is not a grid axis",
        ),
        ("{seed: 0}", r"search\.where\.seed: 'seed' is not a grid axis"),
        ("{model.shortcut: gate}", r"'gate' is not a value of grid axis model\.shortcut"),
    ],
)
def test_a_bad_search_where_is_refused_naming_the_field(
    tmp_path: Path, cli, where: str, message: str
) -> None:
    sweep = write(tmp_path / "w.yaml", SWEEP.replace("seed: 3}", f"seed: 3, where: {where}}}"))
    ran = cli("plan", str(sweep))
    assert ran.code == 2 and len(ran.err.strip().splitlines()) == 1
    assert re.search(message, ran.err), ran.err


def test_a_cells_candidates_and_seeds_are_handed_out_as_one_stack(tmp_path: Path) -> None:
    """Issue 21 (search candidates stack): the candidates a cell asks at once differ only in
    init.c; with their seeds they train as one stack (on a local Ray that runs one at a time)."""
    from resablate.sweep.plan import make_plan
    from resablate.sweep.search import CellSearch
    from resablate.sweep.search_queue import CandidateQueue

    sweep = write(
        tmp_path / "s.yaml",
        """
name: stackedsearch
model: {depth: 4, width: 16}
data: {validation: 0.2}
train: {epochs: 1, batch_size: 128}
search: {param: init.c, log_uniform: [0.1, 1.0], n_trials: 4, sampler: random, seed: 0,
         objective: {metric: val_acc}}
grid: {seed: [0, 1]}
""",
    )
    plan = make_plan(sweep)
    search = CellSearch(plan, tmp_path / "s.journal")
    queue = CandidateQueue(plan, search, lambda trials: [], per_cell=2, slots=1)
    queue.settle({})  # the cell asks its first two candidates
    stack = queue.next({})
    assert stack is not None and queue.next({}) is None
    assert sorted(t.config["seed"] for t in stack) == [0, 0, 1, 1]
    assert len({t.config["init"]["c"] for t in stack}) == 2
    assert {t.tags["resablate.stack_size"] for t in stack} == {"4"}


def test_each_cell_keeps_enough_candidates_out_to_fill_the_slots_and_two_at_least() -> None:
    from resablate.sweep.capacity import in_flight

    assert in_flight(16, 3, 1) == 5  # 16 trial slots, 3 seeds a candidate, one cell
    assert in_flight(4, 3, 1) == 2  # (16 cores at cpu: 4 per trial: before, 5 as for 16 slots)
    assert in_flight(64, 2, 4) == 8 and in_flight(1, 3, 2) == 2


@pytest.mark.slow
def test_a_search_sizes_its_candidates_from_the_trials_share_of_the_cpus(tmp_path: Path) -> None:
    """resources.cpu counts: on Ray, trials run at once = CPUs // cpu per trial (the search read
    os.cpu_count() and asked for as many candidates as if each trial had one core)."""
    from resablate.sweep.plan import make_plan
    from resablate.sweep.ray.cluster import cluster_resources, ray_slots
    from resablate.sweep.runner import Session

    text = "name: s\nmodel: {depth: 2, width: 8}\nresources: {cpu: %d}\n"
    one, two = (make_plan(write(tmp_path / f"{n}.yaml", text % n)) for n in (1, 2))
    assert Session(two, "inline", tmp_path / "r").running_at_once() == 1
    with Session(two, "ray", tmp_path / "r") as session:
        cores = int(cluster_resources()["CPU"])
        assert session.running_at_once() == max(1, cores // 2)
        assert ray_slots(one) == cores
