"""Training recipes: lr schedules and warm-ups on a real optimizer, presets, their errors."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from resablate.errors import ConfigError, SpecError
from resablate.spec.catalog import trial_config
from resablate.spec.loader import load_sweep
from resablate.spec.recipes import RECIPES
from resablate.spec.schema import TrainSpec, TrialConfig
from resablate.trial.optim import OPTIMIZERS, SCHEDULES, Clock, lr_schedule
from tests.conftest import write

LR = 0.1


def lr_trace(train: TrainSpec, steps_per_epoch: int, errors: Sequence[float] = ()) -> list[float]:
    """The lr a real SGD optimizer uses at each iteration 0..total-1, then the lr after the run.

    ``errors[k]`` is the training error fed to He et al.'s warm-up after iteration k."""
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=train.lr)
    clock = Clock.of(train, steps_per_epoch)
    scheduler, error_warmup = lr_schedule(optimizer, train, clock)
    seen = []
    for k in range(clock.total):
        seen.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(1)
        optimizer.step()
        if error_warmup is not None:
            error_warmup.observe(errors[k])
        scheduler.step()
    return [*seen, optimizer.param_groups[0]["lr"]]


def test_every_registered_schedule_builds_and_starts_at_lr() -> None:
    for name in SCHEDULES:
        train = TrainSpec(schedule=name, milestones=[2], epochs=2)
        assert lr_trace(train, steps_per_epoch=3)[0] == pytest.approx(LR)


def test_constant_keeps_lr() -> None:
    assert lr_trace(TrainSpec(epochs=3), steps_per_epoch=4) == [LR] * 13


def test_step_in_iterations_decays_exactly_after_each_milestone() -> None:
    train = TrainSpec(
        schedule="step", milestones=[3, 7], milestone_unit="iteration", gamma=0.5, epochs=3
    )
    trace = lr_trace(train, steps_per_epoch=4)
    # iteration k (0-based) runs after k steps: lr x gamma^(milestones <= k)
    expected = [LR * 0.5 ** sum(m <= k for m in (3, 7)) for k in range(13)]
    assert trace == pytest.approx(expected, rel=1e-12)
    assert trace[2:4] == pytest.approx([0.1, 0.05]) and trace[6:8] == pytest.approx([0.05, 0.025])


def test_step_in_epochs_decays_at_epoch_boundaries() -> None:
    train = TrainSpec(schedule="step", milestones=[1, 2], gamma=0.1, epochs=3)
    trace = lr_trace(train, steps_per_epoch=5)
    assert trace[:15] == pytest.approx([LR] * 5 + [LR / 10] * 5 + [LR / 100] * 5, rel=1e-12)


def test_cosine_decays_to_zero_over_the_whole_run() -> None:
    train = TrainSpec(schedule="cosine", epochs=4)
    trace = lr_trace(train, steps_per_epoch=5)
    total = 20
    expected = [LR * (1 + math.cos(math.pi * k / total)) / 2 for k in range(total + 1)]
    assert trace == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert trace[10] == pytest.approx(LR / 2) and trace[-1] == 0.0


def test_cosine_over_max_iterations_when_set() -> None:
    trace = lr_trace(TrainSpec(schedule="cosine", max_iterations=7), steps_per_epoch=5)
    assert len(trace) == 8 and trace[-1] == 0.0


def test_linear_warmup_rises_from_near_zero_to_lr() -> None:
    trace = lr_trace(TrainSpec(warmup_iterations=4, epochs=2), steps_per_epoch=4)
    assert trace == pytest.approx([LR * min(1, (k + 1) / 5) for k in range(9)], rel=1e-12)
    assert trace[0] == pytest.approx(LR / 5) and trace[4] == pytest.approx(LR)


def test_linear_warmup_composes_with_step_and_cosine() -> None:
    def warm(k: int) -> float:
        return min(1, (k + 1) / 4)

    step = TrainSpec(
        warmup_iterations=3,
        schedule="step",
        milestones=[2, 6],
        milestone_unit="iteration",
        gamma=0.1,
        epochs=2,
    )
    expected = [LR * warm(k) * 0.1 ** sum(m <= k for m in (2, 6)) for k in range(8)]
    assert lr_trace(step, steps_per_epoch=4)[:8] == pytest.approx(expected, rel=1e-12)
    cosine = TrainSpec(warmup_iterations=3, schedule="cosine", epochs=2)
    expected = [LR * warm(k) * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(9)]
    assert lr_trace(cosine, steps_per_epoch=4) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_he_warmup_switches_to_lr_right_after_the_error_drops_below_the_threshold() -> None:
    train = TrainSpec(warmup_lr=0.01, warmup_until_error=0.8, epochs=2)
    errors = [0.9, 0.85, 0.81, 0.79, 0.95, 0.9, 0.9, 0.9]  # below 0.8 after iteration 3 only
    trace = lr_trace(train, steps_per_epoch=4, errors=errors)
    assert trace == pytest.approx([0.01] * 4 + [LR] * 5)  # no way back when the error rises


def test_he_warmup_that_never_gets_below_stays_at_warmup_lr() -> None:
    train = TrainSpec(warmup_lr=0.01, warmup_until_error=0.8, epochs=2)
    trace = lr_trace(train, steps_per_epoch=4, errors=[0.8] * 8)  # not *below* 0.8
    assert trace == pytest.approx([0.01] * 9)


def test_he_warmup_composes_with_step_and_cosine() -> None:
    errors = [0.9, 0.7] + [0.5] * 10
    step = TrainSpec(
        warmup_lr=0.01, warmup_until_error=0.8, schedule="step", milestones=[1], epochs=3
    )
    assert lr_trace(step, steps_per_epoch=4, errors=errors)[:12] == pytest.approx(
        [0.01, 0.01] + [LR] * 2 + [LR / 10] * 8
    )
    cosine = TrainSpec(warmup_lr=0.01, warmup_until_error=0.8, schedule="cosine", epochs=3)
    expected = [(0.01 if k < 2 else LR) * (1 + math.cos(math.pi * k / 12)) / 2 for k in range(13)]
    assert lr_trace(cosine, 4, errors) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_optimizers_get_nesterov_and_weight_decay() -> None:
    params = [torch.zeros(2, requires_grad=True)]
    sgd = OPTIMIZERS["sgd"](params, TrainSpec(nesterov=True, momentum=0.9, weight_decay=1e-4))
    assert sgd.defaults["nesterov"] is True and sgd.defaults["weight_decay"] == 1e-4
    assert OPTIMIZERS["sgd"](params, TrainSpec()).defaults["nesterov"] is False
    for name in ("adam", "adamw"):
        optimizer = OPTIMIZERS[name](params, TrainSpec(optimizer=name, weight_decay=0.05))
        assert optimizer.defaults["weight_decay"] == 0.05


def test_he_cifar_expands_to_the_papers_settings() -> None:
    train = trial_config({"train": {"recipe": "he_cifar"}}).train
    assert (train.optimizer, train.momentum, train.weight_decay) == ("sgd", 0.9, 1e-4)
    assert (train.batch_size, train.lr, train.gamma) == (128, 0.1, 0.1)
    assert (train.schedule, train.milestones, train.milestone_unit) == (
        "step",
        [32000, 48000],
        "iteration",
    )
    assert train.max_iterations == 64000
    assert RECIPES.names() == ["he_cifar"]


def test_fields_written_by_the_user_override_the_recipe_one_by_one(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "s.yaml",
        "name: x\ntrain: {recipe: he_cifar, lr: 0.05, warmup_lr: 0.01, warmup_until_error: 0.8}"
        "\ngrid: {train.weight_decay: [0.0, 0.001]}\n",
    )
    spec = load_sweep(sweep)
    assert spec.train.lr == 0.05 and spec.train.warmup_lr == 0.01
    assert spec.train.milestones == [32000, 48000] and spec.train.batch_size == 128
    # the resolved config validates back to itself, and a grid axis still overrides the recipe
    resolved = trial_config(spec.base_config())
    assert TrialConfig.model_validate(resolved.model_dump()) == resolved
    overridden = trial_config(
        {**spec.base_config(), "train": {**spec.base_config()["train"], "weight_decay": 0.001}}
    )
    assert overridden.train.weight_decay == 0.001 and overridden.train.momentum == 0.9
    assert load_sweep(sweep, ["train.momentum=0.5"]).train.momentum == 0.5


BAD_TRAIN = [
    ({"recipe": "he_cifr"}, "train.recipe", "unknown recipe 'he_cifr'; did you mean 'he_cifar'?"),
    ({"recipe": "he"}, "train.recipe", "(choices: he_cifar)"),
    ({"nesterov": True, "momentum": 0}, "train.nesterov", "needs train.momentum > 0"),
    ({"nesterov": True, "optimizer": "adam"}, "train.nesterov", "sgd only"),
    ({"schedule": "step", "milestones": [48, 32]}, "train.milestones", "strictly increasing"),
    ({"schedule": "step", "milestones": [3, 3]}, "train.milestones", "strictly increasing"),
    ({"schedule": "step"}, "train.milestones", "needs at least one milestone"),
    ({"milestones": [0, 2]}, "train.milestones", "counts ≥ 1"),
    ({"schedule": "cosin"}, "train.schedule", "did you mean 'cosine'?"),
    ({"milestone_unit": "epochs"}, "train.milestone_unit", "use 'epoch' or 'iteration'"),
    ({"warmup_lr": 0.01}, "train.warmup_lr", "together"),
    ({"warmup_until_error": 1.5}, "train.warmup_until_error", "less than or equal to 1"),
    (
        {"warmup_lr": 0.01, "warmup_until_error": 0.8, "warmup_iterations": 5},
        "train.warmup_iterations",
        "choose one warm-up",
    ),
    ({"max_iterations": 0}, "train.max_iterations", "greater than or equal to 1"),
]


@pytest.mark.parametrize("train,field,expected", BAD_TRAIN, ids=[e for _, _, e in BAD_TRAIN])
def test_bad_train_fields_give_one_line_naming_the_field(
    tmp_path: Path, train: dict, field: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        trial_config({"train": train})
    where, problem = caught.value.field, caught.value.problem
    assert where == field and expected in problem and "\n" not in problem
    with pytest.raises(SpecError) as error:
        load_sweep(write(tmp_path / "bad.yaml", f"name: x\ntrain: {train}\n".replace("'", "")))
    assert str(error.value).startswith(f"{tmp_path / 'bad.yaml'}: {field}: ")
    assert len(str(error.value).splitlines()) == 1


def test_a_written_run_length_wins_over_the_recipes(tmp_path: Path, cli) -> None:
    """--set train.epochs=1 under he_cifar runs 1 epoch, not the recipe's 64,000 iterations;
    so does an axis over epochs."""
    sweep = write(
        tmp_path / "s.yaml",
        "name: x\nmodel: {family: cifar, depth: 8}\ntrain: {recipe: he_cifar}\n",
    )

    def train(*sets: str) -> list[dict]:
        ran = cli("plan", str(sweep), "--json", *(a for s in sets for a in ("--set", s)))
        assert ran.code == 0, ran.err
        return [t["config"]["train"] for t in json.loads(ran.out)["trials"]]

    [preset] = train()
    assert (preset["max_iterations"], preset["milestones"]) == (64000, [32000, 48000])
    [short] = train("train.epochs=1")
    assert (short["epochs"], short["max_iterations"]) == (1, None)
    assert short["milestones"] == [32000, 48000] and short["lr"] == 0.1  # the rest stays
    [both] = train("train.epochs=1", "train.max_iterations=50")
    assert both["max_iterations"] == 50  # written too: it decides, as without a recipe
    assert [(t["epochs"], t["max_iterations"]) for t in train("grid.train.epochs=[1,2]")] == [
        (1, None),
        (2, None),
    ]


def test_one_warm_up_field_takes_the_other_from_the_recipe() -> None:
    lr_only = trial_config({"train": {"recipe": "he_cifar", "warmup_lr": 0.02}}).train
    assert (lr_only.warmup_lr, lr_only.warmup_until_error) == (0.02, 0.8)
    error_only = trial_config({"train": {"recipe": "he_cifar", "warmup_until_error": 0.7}}).train
    assert (error_only.warmup_lr, error_only.warmup_until_error) == (0.01, 0.7)
    with pytest.raises(ConfigError, match="together"):  # no recipe: nothing to take it from
        trial_config({"train": {"warmup_until_error": 0.7}})
    # a null says "no warm-up", as on a deep net whose recipe would add one
    deep = {"model": {"family": "cifar", "depth": 110}}
    off = trial_config({**deep, "train": {"recipe": "he_cifar", "warmup_lr": None}}).train
    assert (off.warmup_lr, off.warmup_until_error) == (None, None)
    on = trial_config({**deep, "train": {"recipe": "he_cifar"}}).train
    assert (on.warmup_lr, on.warmup_until_error) == (0.01, 0.8)
