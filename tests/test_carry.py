"""``search.carry``: a value tuned at one value of a grid axis, kept at its other values (Taki's c
chosen at one depth and run at every depth), beside the grid's own untuned trials."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from resablate.errors import SpecError
from resablate.sweep.plan import make_plan
from resablate.sweep.search_grid import carried, search_cells, search_size, unsearched
from tests.conftest import run_terminal, trial_runs, write

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

SWEEP = """
name: carried
model: {width: 8, norm: none, shortcut_depth: 1, activation: relu_preact}
data: {validation: 0.2}
train: {epochs: 1, batch_size: 128, lr: 0.02}
search:
  param: init.c
  log_uniform: [0.1, 4.0]
  n_trials: 2
  objective: {metric: val_acc}
  where: {model.depth: 4, init.scheme: taki}
  carry: [model.depth]
grid:
  model.depth: [2, 4, 8]
  init.scheme: [he, taki]
  seed: [0, 1]
"""


def test_the_best_value_is_carried_to_the_other_depths_and_every_arm_runs_as_written(
    tmp_path: Path,
) -> None:
    plan = make_plan(write(tmp_path / "s.yaml", SWEEP))
    [cell] = search_cells(plan)  # taki at depth 4
    targets = carried(plan)[cell]
    assert sorted((t.assignment["model.depth"], t.assignment["seed"]) for t in targets) == [
        (2, 0),
        (2, 1),
        (8, 0),
        (8, 1),
    ]
    assert {t.assignment["init.scheme"] for t in targets} == {"taki"}
    assert len(unsearched(plan)) == len(plan.trials) == 12  # every grid point, untuned
    size = search_size(plan)
    assert size["carried_trials"] == 4
    assert size["total_trials"] == 12 + 1 * 2 * 2 + 4


@pytest.mark.parametrize(
    ("search", "problem"),
    [
        ("where: {model.depth: 4}\n  carry: [model.dept]", "'model.dept' is not a grid axis"),
        ("where: {init.scheme: taki}\n  carry: [model.depth]", "give search.where.model.depth"),
        ("where: {model.depth: [2, 4]}\n  carry: [model.depth]", "one of [2, 4, 8]"),
    ],
)
def test_a_carried_axis_must_be_tuned_at_one_of_its_values(
    tmp_path: Path, search: str, problem: str
) -> None:
    text = SWEEP.replace(
        "where: {model.depth: 4, init.scheme: taki}\n  carry: [model.depth]", search
    )
    with pytest.raises(SpecError) as caught:
        make_plan(write(tmp_path / "s.yaml", text))
    assert caught.value.field == "search.carry" and problem in str(caught.value)


@pytest.mark.slow
def test_a_carried_search_runs_the_best_value_at_every_depth_and_resumes_nothing(
    tmp_path: Path,
) -> None:
    sweep = write(tmp_path / "s.yaml", SWEEP)
    ran = run_terminal("sweep", str(sweep), "--inline", cwd=tmp_path)
    assert ran.code == 0, ran.out[-3000:]
    _, runs = trial_runs(tmp_path, "carried")
    assert len(runs) == 12 + 4 + 4
    tuned = [r for r in runs if "search_cell" in r.data.tags]
    at4 = [r for r in tuned if r.data.params["model.depth"] == "4"]
    best = max(
        {float(r.data.params["init.c"]) for r in at4},
        key=lambda c: sum(
            r.data.metrics["val_acc"] for r in at4 if float(r.data.params["init.c"]) == c
        ),
    )
    kept = [r for r in tuned if r.data.params["model.depth"] != "4"]
    assert len(kept) == 4
    assert all(math.isclose(float(r.data.params["init.c"]), best) for r in kept)
    assert all(r.data.params["init.scheme"] == "taki" for r in kept)
    written = [r for r in runs if "search_cell" not in r.data.tags]
    assert {float(r.data.params["init.c"]) for r in written} == {1.0}
    assert len(written) == 12
    again = run_terminal("sweep", str(sweep), "--inline", "--resume", cwd=tmp_path)
    assert again.code == 0, again.out[-3000:]
    assert len(trial_runs(tmp_path, "carried")[1]) == 20  # nothing ran twice
