"""Issue 21, stacks by shape: trials with one network shape and one data stream train as one
stack whatever their seed, init scheme and c, optimizer, learning rate, momentum, weight decay and
lr schedule, each member as its own run would (per field that may differ); a member that
diverges leaves the stack without changing the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from resablate.batched import stack_key
from resablate.optim import Clock
from resablate.plan import make_plan
from resablate.results import DIVERGED, FINISHED
from resablate.spec import TrainSpec
from resablate.stack_optim import Steps, order
from resablate.stacking import stacks
from resablate.train import run_stack
from tests.conftest import write
from tests.test_batched import BASE, assert_alike, separately, stacked


def member(seed: int, train: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """BASE with ``train`` fields changed and other sections (init, ...) replaced."""
    return {**BASE, **sections, "train": {**BASE["train"], **(train or {})}, "seed": seed}


# each: three trials that differ in one field (and their seeds)
FIELDS: dict[str, list[dict[str, Any]]] = {
    "lr": [member(0, {"lr": 0.01}), member(1, {"lr": 0.02}), member(2, {"lr": 0.05})],
    "momentum": [member(0, {"momentum": m}) for m in (0.0, 0.5, 0.9)],
    "weight_decay": [member(s, {"weight_decay": w}) for s, w in enumerate((0.0, 1e-3, 1e-2))],
    "nesterov": [member(0, {"nesterov": False}), member(1, {"nesterov": True})],
    "optimizer": [
        member(0, {"optimizer": "sgd"}),
        member(1, {"optimizer": "adam", "lr": 0.003, "weight_decay": 1e-3}),
        member(2, {"optimizer": "adamw", "lr": 0.003, "weight_decay": 1e-2}),
    ],
    "schedule": [
        member(0, {"schedule": "constant"}),
        member(1, {"schedule": "step", "milestones": [2], "gamma": 0.5}),
        member(2, {"schedule": "cosine", "warmup_iterations": 10}),
    ],
    "init scheme and c": [
        member(0, init={"scheme": "he", "c": 0.5}),
        member(0, init={"scheme": "xavier", "c": 2.0}),
        member(0, init={"scheme": "orthogonal"}),
        member(0, init={"scheme": "taki", "c": 0.5}),
    ],
}


@pytest.mark.parametrize("field", list(FIELDS), ids=list(FIELDS))
def test_members_that_differ_in_a_field_train_like_separate_runs(field: str) -> None:
    configs = FIELDS[field]
    assert len({stack_key(c) for c in configs}) == 1
    apart, together = separately(configs), stacked(configs)
    assert_alike(apart, together)
    finals = [run[-1]["test_loss"] for run in apart]  # the field matters: a member trained
    assert len(set(finals)) == len(finals)  # with another's recipe would fail assert_alike


def test_a_stack_of_interleaved_recipes_reports_each_trial_as_its_own_run() -> None:
    # one recipe's members are not next to each other in the given order; the stack puts them
    # together (one optimizer) and hands every report to the trial it belongs to
    adam = {"optimizer": "adam", "lr": 0.003}
    configs = [
        member(0, adam),
        member(1, {"lr": 0.05, "schedule": "cosine"}),
        member(2, adam),
        member(3, init={"scheme": "xavier"}),
        member(4, {"lr": 0.05, "schedule": "cosine"}),
    ]
    assert order([TrainSpec.model_validate(c["train"]) for c in configs]) == [0, 2, 1, 4, 3]
    assert_alike(separately(configs), stacked(configs))


def test_a_diverging_member_leaves_the_stack_and_the_others_are_unchanged() -> None:
    # lr 0.1 with momentum 0.9: seed 1 passes 1e6 in epoch 2 (test_batched); a member whose
    # limit is below the first loss (ce ~2.3) ends in epoch 1; adam and sgd at 0.02 train on
    configs = [
        member(1, {"lr": 0.1, "momentum": 0.9}),
        member(4, {"optimizer": "adam", "lr": 0.003}),
        member(5, {"diverge_above": 1.0}),
        member(6, {"lr": 0.02}),
    ]
    apart, together = separately(configs), stacked(configs)
    assert [s[-1]["status"] for s in together] == [DIVERGED, FINISHED, DIVERGED, FINISHED]
    assert [s[-1].get("diverged_epoch") for s in together] == [2, None, 1, None]
    assert_alike(apart, together)


def test_what_a_stack_shares_and_what_its_members_may_differ_in() -> None:
    key = stack_key(BASE)
    same = [
        member(3, {"optimizer": "adamw", "lr": 0.5, "weight_decay": 0.1, "diverge_above": 9.0}),
        member(0, {"schedule": "step", "milestones": [1], "warmup_iterations": 3}),
        member(0, init={"scheme": "zero", "eps": 0.01, "c": 3.0}),
        member(0, init={"scheme": "fixup"}) | {"model": {**BASE["model"], "shortcut_depth": 2}},
    ]
    assert [stack_key(c) == key for c in same] == [True, True, True, False]
    other = [
        member(0, {"batch_size": 32}),  # another data stream
        member(0, {"epochs": 4}),
        member(0, {"loss": "mse"}) | {"data": {"target": "onehot"}},
        member(0, data={"name": "synthetic"}),
        member(0, model={**BASE["model"], "width": 16}),  # other shapes
        member(0, model={**BASE["model"], "activation": "post"}),  # another forward pass
        member(0, init={"scheme": "skipinit"}),  # adds a gain α to every unit
        member(0, {"compile": True}),
    ]
    assert [stack_key(c) == key for c in other] == [False] * len(other)
    nf = {**BASE["model"], "activation": "full_preact"}  # nf reads c in its forward pass
    assert stack_key(member(0, model=nf, init={"scheme": "nf", "c": 0.5})) != stack_key(
        member(0, model=nf, init={"scheme": "nf", "c": 1.0})
    )
    with pytest.raises(ValueError, match="configs differ"):
        run_stack([BASE, member(0, {"batch_size": 32})], [print, print])


def test_each_recipe_is_one_optimizer_over_its_slice_of_the_stacked_weights() -> None:
    weights = [torch.zeros(4, 3, requires_grad=True)]
    sgd, adam = TrainSpec(lr=0.1), TrainSpec(optimizer="adam", lr=0.01)
    with pytest.raises(ValueError, match="next to each other"):
        Steps(weights, True, [sgd, adam, sgd], Clock(1, 1))
    steps = Steps(weights, True, [sgd, sgd, adam, TrainSpec(lr=0.2)], Clock(1, 1))
    assert [(p.start, p.stop) for p in steps.parts] == [(0, 2), (2, 3), (3, 4)]
    weights[0].grad = torch.ones(4, 3)
    steps.step()
    # sgd (momentum 0.9, first step: the gradient) moves its rows by lr; adam by its lr
    moved = -weights[0].detach()[:, 0]
    assert moved.tolist() == pytest.approx([0.1, 0.1, 0.01, 0.2])
    assert [steps.lr(i) for i in range(4)] == [0.1, 0.1, 0.01, 0.2]
    whole = Steps([torch.zeros(2, requires_grad=True)], True, [sgd, sgd], Clock(1, 1))
    assert len(whole.parts) == 1 and whole.parts[0].slices == []  # the weights themselves


GRID = """\
name: shapes
model: {family: mlp, width: 16}
train: {epochs: 2, batch_size: 64}
grid:
  init.scheme: [he, xavier]
  train.optimizer: [sgd, adam]
  train.lr: [0.01, 0.03]
  train.batch_size: [32, 64]
  seed: [0, 1]
resources: {cpu: 1, seeds_per_trial: 8}
"""


def test_a_grid_stacks_by_shape_and_data_stream(tmp_path: Path) -> None:
    plan = make_plan(write(tmp_path / "g.yaml", GRID))
    found = stacks(plan)
    # per batch size: 2 schemes x 2 optimizers x 2 lrs x 2 seeds = 16 trials, two stacks of 8
    assert sorted(len(s) for s in found) == [8, 8, 8, 8]
    for stack in found:
        assert len({t.config["train"]["batch_size"] for t in stack}) == 1
    mixed = {(t.config["init"]["scheme"], t.config["train"]["optimizer"]) for t in found[0]}
    assert len(mixed) > 1  # not only seeds
