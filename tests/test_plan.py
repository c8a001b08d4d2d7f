"""sweep/plan.py: a sweep file becomes validated trials with stable ids before anything runs, and
every refusal names where the field came from (the file, a profile or a --set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resablate.errors import SpecError
from resablate.sweep.plan import make_plan
from resablate.sweep.search_grid import LIMIT, check_size
from tests.conftest import write

SWEEP = """\
name: planned
model: {family: mlp, width: 8, norm: none}
data: {name: digits}
train: {epochs: 1, batch_size: 64}
grid:
  model.depth: [4, 8]
  model.shortcut: [identity, none]
  seed: [0, 1]
  exclude:
    - {model.depth: 8, model.shortcut: none}
profiles:
  wide: {model.width: 16}
"""


def test_a_plan_expands_the_grid_in_order_with_ids_that_hash_the_config(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "s.yaml", SWEEP))
    points = [(t.assignment["model.depth"], t.assignment["model.shortcut"]) for t in plan.trials]
    assert points == [(4, "identity")] * 2 + [(4, "none")] * 2 + [(8, "identity")] * 2
    assert len({t.id for t in plan.trials}) == 6
    again = make_plan(write(tmp_path / "t.yaml", SWEEP.replace("name: planned", "name: other")))
    assert [t.id for t in again.trials] == [t.id for t in plan.trials]  # the config, not the name
    assert {t.cell for t in plan.trials[:2]} == {plan.trials[0].cell}  # seeds share a cell


def test_a_profile_and_a_set_change_the_trials_and_name_themselves_in_errors(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "s.yaml", SWEEP)
    wide = make_plan(path, profile="wide")
    assert {t.config["model"]["width"] for t in wide.trials} == {16}
    with pytest.raises(SpecError, match=r"^--set model\.width=0: model\.width: "):
        make_plan(path, ["model.width=0"])
    assert wide.error("model.width", "x").args[0].startswith(f"{path} (profile wide): model.width")


def test_an_exclude_that_a_set_made_stale_is_a_note_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", SWEEP)
    plan = make_plan(path, ["grid.model.depth=[4]"])
    assert len(plan.trials) == 4
    [note] = plan.notes
    assert "grid.exclude[0] (model.depth=8, model.shortcut=none) matches no grid point" in note
    broken = SWEEP.replace("model.depth: 8, model.shortcut: none", "model.depth: 16")
    with pytest.raises(SpecError, match=r"grid\.exclude"):  # stale in the file itself: an error
        make_plan(write(tmp_path / "b.yaml", broken))


def test_a_searched_parameter_may_not_also_be_a_grid_axis(tmp_path: Path) -> None:
    text = SWEEP.replace("  seed: [0, 1]\n", "  seed: [0, 1]\n  init.c: [0.5, 1]\n")
    text = text.replace("data: {name: digits}", "data: {name: digits, validation: 0.1}")
    text += "search: {param: init.c, log_uniform: [0.1, 2], n_trials: 2}\n"
    with pytest.raises(SpecError, match=r"grid\.init\.c: is searched by search\.param"):
        make_plan(write(tmp_path / "s.yaml", text))


def test_a_hessian_probe_on_a_network_whose_hessian_is_degenerate_names_the_point(
    tmp_path: Path,
) -> None:
    text = SWEEP.replace("model.shortcut: [identity, none]", "init.scheme: [he, zero]")
    text = text.replace("norm: none}", "norm: none, activation: mid, act: relu}")
    text = text.replace("{model.depth: 8, model.shortcut: none}", "{model.depth: 8}")
    text += "init: {eps: 0}\nprobes: {hessian: {at: [init]}}\n"  # the exact zero point
    with pytest.raises(SpecError, match=r"probes\.hessian: .*\(grid point .*init\.scheme=zero"):
        make_plan(write(tmp_path / "s.yaml", text))


def test_more_trials_than_the_limit_need_yes(tmp_path: Path) -> None:
    seeds = ", ".join(str(i) for i in range(LIMIT // 3 + 1))
    plan = make_plan(write(tmp_path / "s.yaml", SWEEP.replace("[0, 1]", f"[{seeds}]")))
    assert len(plan.trials) > LIMIT
    with pytest.raises(SpecError, match=rf"grid: {len(plan.trials)} trials is more than {LIMIT}"):
        check_size(plan, yes=False)
    check_size(plan, yes=True)
    check_size(plan, yes=False, limit=len(plan.trials))
