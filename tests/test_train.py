"""One trial, in-process: learning, seeding, divergence as a result."""

from __future__ import annotations

import math

import pytest

from resablate.results import DIVERGED, FINISHED, RUNNING
from resablate.spec.catalog import trial_config
from resablate.spec.schema import TrialConfig
from resablate.trial.train import run_trial

BASE = {
    "model": {"depth": 4, "width": 32},
    "init": {"c": 0.5},
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.02},
}


def test_identity_mlp_learns_digits_and_reports_every_epoch() -> None:
    reports: list[dict] = []
    last = run_trial(BASE, report=reports.append)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert [r["status"] for r in reports] == [RUNNING] * 3 + [FINISHED]
    assert last == reports[-1]
    assert last["test_acc"] > 0.9  # chance is 0.1
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]
    assert all(k in last for k in ("train_loss", "train_acc", "test_loss", "test_acc"))


def test_same_config_and_seed_give_identical_results() -> None:
    a, b = run_trial({**BASE, "seed": 7}), run_trial({**BASE, "seed": 7})
    c = run_trial({**BASE, "seed": 8})
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert a["train_loss"] != c["train_loss"]


def test_exploding_loss_ends_as_diverged_not_a_crash() -> None:
    reports: list[dict] = []
    config = {
        "model": {"depth": 16, "width": 32},
        "init": {"c": 2.0},
        "train": {"epochs": 5, "lr": 1.0, "batch_size": 64},
    }
    last = run_trial(config, report=reports.append)
    assert last["status"] == DIVERGED
    assert reports[-1] is last and last["diverged_epoch"] == len(reports)
    assert math.isfinite(last["last_finite_loss"]) or math.isnan(last["last_finite_loss"])


def test_full_batch_mse_from_the_zero_point_depends_on_shortcut_depth() -> None:
    """Demystifying ResNet: from the (near-)zero point, n = 1 has a gradient and learns at once;
    for n = 2 every gradient is O(eps), so full-batch GD barely moves in 30 steps."""
    last: dict[int, list[dict]] = {}
    for n in (1, 2):
        config = {
            "model": {"depth": 4, "width": 10, "activation": "linear", "shortcut_depth": n},
            "init": {"scheme": "zero", "eps": 1e-3},
            "data": {"whiten": 10, "target": "onehot"},
            "train": {
                "loss": "mse",
                "batch_size": "full",
                "epochs": 30,
                "lr": 0.05,
                "momentum": 0.0,
            },
        }
        last[n] = []
        run_trial(config, report=last[n].append)
        # at the zero point the identity network outputs its whitened input: loss ≈ 10 + 1
        assert 9 < last[n][0]["train_loss"] < 13
    assert last[1][-1]["train_loss"] < 0.2 * last[1][0]["train_loss"]
    assert last[1][-1]["test_acc"] > 0.5
    assert last[2][-1]["train_loss"] > 0.99 * last[2][0]["train_loss"]


def test_each_report_records_the_lr_at_the_end_of_its_epoch() -> None:
    step = {**BASE["train"], "epochs": 3, "schedule": "step", "milestones": [1, 2]}
    reports: list[dict] = []
    run_trial({**BASE, "train": step}, report=reports.append)
    assert [r["lr"] for r in reports] == pytest.approx([0.002, 0.0002, 0.0002])
    cosine = {**BASE["train"], "schedule": "cosine"}  # digits: 1347 samples, 22 batches of 64
    reports = []
    run_trial({**BASE, "train": cosine}, report=reports.append)
    expected = [0.01 * (1 + math.cos(math.pi * e / 4)) for e in (1, 2, 3)]
    assert [r["lr"] for r in reports] == pytest.approx([*expected, 0.0])


def test_max_iterations_stops_after_exactly_that_many_steps() -> None:
    # ÷2 after 29, 30 and 31 steps: an lr of lr/4 at the end means exactly 30 steps were taken
    train = {
        **BASE["train"],
        "epochs": 1,  # not used once max_iterations is set
        "max_iterations": 30,
        "schedule": "step",
        "milestones": [29, 30, 31],
        "milestone_unit": "iteration",
        "gamma": 0.5,
    }
    reports: list[dict] = []
    last = run_trial({**BASE, "train": train}, report=reports.append)
    assert [(r["epoch"], r["status"]) for r in reports] == [(1, RUNNING), (2, FINISHED)]
    assert last["lr"] == pytest.approx(0.02 / 4)
    assert 0.0 <= last["train_acc"] <= 1.0 and math.isfinite(last["train_loss"])
    at_boundary = run_trial({**BASE, "train": {**BASE["train"], "max_iterations": 44}})
    assert (at_boundary["epoch"], at_boundary["status"]) == (2, FINISHED)


def test_he_warmup_switches_to_lr_at_the_first_step_with_error_below_threshold() -> None:
    """Full batch: one step per epoch, and the epoch's train_acc is the running accuracy the
    warm-up saw, so the reports show exactly when it had to switch."""
    train = {"epochs": 12, "batch_size": "full", "lr": 0.1, "warmup_lr": 0.01}
    reports: list[dict] = []
    run_trial({**BASE, "train": {**train, "warmup_until_error": 0.5}}, report=reports.append)
    below = [1 - r["train_acc"] < 0.5 for r in reports]
    switch = below.index(True)
    assert 2 < switch < len(reports) - 2  # a real warm-up, then training at lr
    assert [r["lr"] for r in reports] == [0.01] * switch + [0.1] * (len(reports) - switch)
    reports = []
    run_trial({**BASE, "train": {**train, "warmup_until_error": 0.01}}, report=reports.append)
    assert all(1 - r["train_acc"] >= 0.01 for r in reports)
    assert [r["lr"] for r in reports] == [0.01] * 12


def test_nesterov_sgd_learns() -> None:
    last = run_trial({**BASE, "train": {**BASE["train"], "nesterov": True}})
    assert last["status"] == FINISHED and last["test_acc"] > 0.9


def test_mnist_family_learns_digits_as_8x8_images() -> None:
    config = {
        "model": {"family": "mnist", "depth": 3, "channels": 16},
        "train": {"optimizer": "adam", "lr": 0.01, "epochs": 5, "batch_size": 64},
    }
    reports: list[dict] = []
    run_trial(trial_config(config), report=reports.append)
    assert reports[-1]["test_acc"] > 0.8  # chance is 0.1
    assert reports[-1]["train_loss"] < 0.5 * reports[0]["train_loss"]


def test_cifar_family_trains_with_on_device_augmentation() -> None:
    def config(augment: bool) -> TrialConfig:
        return trial_config(
            {
                "model": {"family": "cifar", "depth": 8, "channels": 8},
                "data": {"augment": augment},  # pad 4, random crop, flip: hard on 8×8 digits
                "train": {"lr": 0.05, "epochs": 3, "batch_size": 64},
            }
        )

    plain, augmented = run_trial(config(False)), run_trial(config(True))
    assert plain["test_acc"] > 0.85
    assert augmented["status"] == "finished" and augmented["test_acc"] > 0.2  # chance: 0.1
    assert augmented["train_acc"] < plain["train_acc"]  # the batches really were transformed
    assert run_trial(config(True))["train_loss"] == augmented["train_loss"]  # seeded


@pytest.mark.parametrize("lr", [0.02, 0.16], ids=["finishes", "diverges"])
def test_reading_losses_in_groups_changes_no_result(lr: float) -> None:
    config = {**BASE, "train": {**BASE["train"], "lr": lr, "epochs": 2}}
    every_step: list[dict] = []
    grouped: list[dict] = []
    run_trial(config, report=every_step.append, sync_every=1)
    run_trial(config, report=grouped.append, sync_every=7)  # 7 does not divide the epoch's steps
    timeless = [
        [{k: v for k, v in r.items() if k != "epoch_time"} for r in x]
        for x in (every_step, grouped)
    ]
    assert timeless[0] == timeless[1]
    assert every_step[-1]["status"] == ("diverged" if lr > 0.1 else "finished")


@pytest.mark.parametrize("kind", ["ce", "mse"])
def test_a_stacks_losses_are_each_members_own_loss(kind: str) -> None:
    """One computation for the stack (optim.stack_loss), member by member what loss_fn gives on
    its own batch; a stack of one bit for bit (a trial alone computes what it did unstacked)."""
    import torch

    from resablate.trial.optim import loss_fn, stack_loss

    generator = torch.Generator().manual_seed(0)
    out = torch.randn(5, 64, 10, generator=generator)
    y = torch.randint(0, 10, (5, 64), generator=generator)
    alone, stacked = loss_fn(kind, 10), stack_loss(kind, 10)
    found = stacked(out, y)
    assert found.shape == (5,)
    for i in range(5):
        assert float(found[i]) == pytest.approx(float(alone(out[i], y[i])), rel=1e-6)
    assert torch.equal(stacked(out[:1], y[:1]), alone(out[0], y[0])[None])
    swapped = stacked(out, y.roll(1, dims=0))  # another member's labels: another loss
    assert not torch.allclose(swapped, found, rtol=1e-3)
