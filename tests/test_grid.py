"""Grid expansion: product order, zip groups, exclude rules, stable ids (golden file)."""

from __future__ import annotations

import json
from pathlib import Path

from resablate.spec.grid import cell_id, config_id
from resablate.sweep.plan import make_plan
from tests.conftest import write

GOLDEN = Path(__file__).parent / "golden" / "grid_ids.json"

SWEEP = """
name: grid-golden
model: {family: mlp, width: 8}
train: {epochs: 1}
grid:
  model.depth: [2, 4]
  model.shortcut: [identity, none]
  zip:
    - {train.lr: [0.1, 0.01], init.c: [1.0, 0.5]}
  seed: [0, 1]
  exclude:
    - {model.depth: 4, model.shortcut: none, train.lr: 0.01}
"""


def test_product_zip_and_exclude_in_deterministic_order(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "g.yaml", SWEEP))
    points = [t.assignment for t in plan.trials]
    # 2 depths x 2 shortcuts x 2 seeds x 2 zipped (lr, c) pairs = 16, minus the 2 excluded seeds
    assert len(points) == 14
    # plain axes in YAML order, first slowest; the zip group is one axis after them
    assert points[0] == {
        "model.depth": 2,
        "model.shortcut": "identity",
        "seed": 0,
        "train.lr": 0.1,
        "init.c": 1.0,
    }
    assert points[1] == {
        "model.depth": 2,
        "model.shortcut": "identity",
        "seed": 0,
        "train.lr": 0.01,
        "init.c": 0.5,
    }
    assert points[2]["seed"] == 1
    assert {(p["train.lr"], p["init.c"]) for p in points} == {(0.1, 1.0), (0.01, 0.5)}
    assert not any(
        p["model.depth"] == 4 and p["model.shortcut"] == "none" and p["train.lr"] == 0.01
        for p in points
    )
    for trial in plan.trials:
        for path, value in trial.assignment.items():
            section, _, leaf = path.partition(".")
            assert (trial.config[section][leaf] if leaf else trial.config[section]) == value
    assert len({t.id for t in plan.trials}) == 14


def test_ids_are_stable_golden(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "g.yaml", SWEEP))
    found = [{"id": t.id, "cell": t.cell, "grid": t.assignment} for t in plan.trials]
    assert found == json.loads(GOLDEN.read_text())


def test_same_config_same_id_whatever_the_sweep(tmp_path: Path) -> None:
    a = make_plan(write(tmp_path / "a.yaml", SWEEP)).trials[0]
    other = "name: other\nmodel: {width: 8, depth: 2}\ntrain: {epochs: 1}\ninit: {c: 1.0}\n"
    b = make_plan(write(tmp_path / "b.yaml", other)).trials[0]
    assert a.config == b.config and a.id == b.id
    assert config_id({"x": 1, "y": {"a": 2}}) == config_id({"y": {"a": 2}, "x": 1})


def test_cells_ignore_the_seed(tmp_path: Path) -> None:
    trials = make_plan(write(tmp_path / "g.yaml", SWEEP)).trials
    by_cell: dict[str, set[int]] = {}
    for t in trials:
        by_cell.setdefault(t.cell, set()).add(t.assignment["seed"])
    assert len(by_cell) == 7 and all(seeds == {0, 1} for seeds in by_cell.values())
    assert cell_id({"seed": 0, "m": 1}) == cell_id({"seed": 5, "m": 1})


def test_no_grid_is_one_trial(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "one.yaml", "name: one\n"))
    assert len(plan.trials) == 1 and plan.trials[0].assignment == {}


NARROWED = """
name: narrowed
model: {depth: 2, width: 8}
grid:
  model.depth: [2, 4]
  train.lr: [0.01, 0.1]
  exclude:
    - {model.depth: 4, train.lr: 0.1}
"""


def test_an_exclude_rule_a_narrowed_grid_leaves_unmatched_is_a_note(tmp_path: Path, cli) -> None:
    """Narrowing a grid from the command line is normal: the rule it leaves with nothing to
    match is a note on stderr; in the file itself such a rule stays an error."""
    sweep = write(tmp_path / "s.yaml", NARROWED)
    assert len(make_plan(sweep).trials) == 3
    narrowed = make_plan(sweep, ["grid.train.lr=[0.01]"])
    assert [t.assignment for t in narrowed.trials] == [
        {"model.depth": 2, "train.lr": 0.01},
        {"model.depth": 4, "train.lr": 0.01},
    ]
    [note] = narrowed.notes
    assert note.startswith("note: grid.exclude[0] (model.depth=4, train.lr=0.1) matches no")
    assert "--set grid.train.lr=[0.01]" in note
    ran = cli("plan", str(sweep), "--set", "grid.train.lr=[0.01]", "--json")
    assert ran.code == 0 and json.loads(ran.out)["n_trials"] == 2
    assert ran.err.strip() == f"resablate: {note}"
    # a rule that matches nothing in the file is an error, with or without overrides
    broken = write(tmp_path / "b.yaml", NARROWED.replace("train.lr: 0.1}", "train.lr: 0.5}"))
    for extra in ([], ["--set", "grid.model.depth=[2,4]"]):
        ran = cli("plan", str(broken), *extra)
        assert ran.code == 2
        assert ran.err.strip().endswith(
            "grid.exclude[0]: this rule matches no grid point; check its values"
        )
    # and a rule given on the command line that matches nothing is the user's own mistake
    ran = cli("plan", str(sweep), "--set", "grid.exclude=[{model.depth: 8}]")
    assert ran.code == 2 and "grid.exclude[0]: this rule matches no grid point" in ran.err
