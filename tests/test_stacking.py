"""sweep/stacking.py: which trials train together in one worker, what `resablate plan` says of it,
and where a stack resumes from (how stacked trials train: test_batched.py, test_stack_optim.py)."""

from __future__ import annotations

from pathlib import Path

from resablate.sweep.plan import make_plan
from resablate.sweep.stacking import (
    describe,
    keyed,
    resume_point,
    stack_id,
    stacking,
    stacks,
    stacks_text,
)
from tests.conftest import write

SWEEP = """\
name: stacks
model: {family: mlp, width: 8}
data: {name: digits}
train: {epochs: 1, batch_size: 64}
grid:
  model.norm: [none, batch]
  train.lr: [0.1, 0.01]
  seed: [0, 1]
resources: {cpu: 1, trials_per_stack: auto}
"""


def plan_of(tmp_path: Path, *overrides: str):
    return make_plan(write(tmp_path / "s.yaml", SWEEP), overrides)


def test_arms_that_differ_in_recipe_and_seed_share_a_key_other_networks_do_not(
    tmp_path: Path,
) -> None:
    plan = plan_of(tmp_path)
    groups = list(keyed(plan.trials).values())
    none = [g for g in groups if g[0].config["model"]["norm"] == "none"]
    assert len(none) == 1 and len(none[0]) == 4  # two lrs x two seeds: one network, one stream
    batch = [g for g in groups if g[0].config["model"]["norm"] == "batch"]
    assert sorted(len(g) for g in batch) == [1, 1, 1, 1]  # batch norm trains alone


def test_stacking_happens_only_where_auto_knows_the_slots_and_no_scheduler_prunes(
    tmp_path: Path,
) -> None:
    plan = plan_of(tmp_path)
    assert not stacking(plan, None) and stacking(plan, 2)
    assert stacking(plan_of(tmp_path, "resources.trials_per_stack=2"), None)  # a fixed size
    assert not stacking(plan_of(tmp_path, "resources.trials_per_stack=1"), 2)


def test_a_stack_of_one_seed_and_init_keeps_them_next_to_each_other(tmp_path: Path) -> None:
    [stack] = [s for s in stacks(plan_of(tmp_path), slots=1) if len(s) > 1]
    assert [t.config["seed"] for t in stack] == [0, 0, 1, 1]  # init probes measured once a seed
    assert stack_id(stack) == "_".join(t.id for t in stack)


def test_plan_says_how_many_tune_trials_and_why_the_others_train_alone(tmp_path: Path) -> None:
    found = describe(plan_of(tmp_path), slots=1, budget=None)
    assert found["tune_trials"] == 5 and found["stacks"] == {"4": 1}
    [(reason, count)] = found["alone"].items()
    assert count == 4 and "batch" in reason
    line = stacks_text(found)
    assert line.startswith("on this machine's Ray (1 trial slots): 5 Ray Tune trials (1 stacks")
    assert line.endswith(f"alone because 4: {reason}")
    one = describe(plan_of(tmp_path, "resources.trials_per_stack=1"), slots=1, budget=None)
    assert one["alone"] == {"resources.trials_per_stack is 1": 8}


def test_a_stack_resumes_only_from_one_checkpoint_that_all_its_trials_name(
    tmp_path: Path,
) -> None:
    [stack] = [s for s in stacks(plan_of(tmp_path), slots=1) if len(s) > 1]
    point = ("/ckpt/a", 3)
    assert resume_point(stack, {t.id: point for t in stack}) == point
    assert resume_point(stack, {t.id: point for t in stack[:-1]}) is None  # one has none
    mixed = {t.id: (point if i else ("/ckpt/b", 2)) for i, t in enumerate(stack)}
    assert resume_point(stack, mixed) is None
    assert resume_point(stack, {}) is None
