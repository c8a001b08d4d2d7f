"""One trial, in-process: learning, seeding, divergence as a result."""

from __future__ import annotations

import math

from resablate.results import DIVERGED, FINISHED, RUNNING
from resablate.train import run_trial

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
