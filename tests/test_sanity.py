"""Checks of the code that science.md §7 names as such, not claims of a paper: statements no
mutant of an arm can turn, kept as tests so a broken build still fails."""

from __future__ import annotations

import pytest

from resablate.trial.train import run_trial


@pytest.mark.slow
def test_a_zero_init_plain_net_stays_at_chance() -> None:
    """Demystifying ResNet's zero point without shortcuts: a plain mid-ReLU net from Xavier
    times eps = 1e-3 outputs ~eps^depth and its gradients are as small, so full-batch gradient
    descent cannot leave it: its output stays 0 (the MSE loss of a zero output on one-hot
    targets is 1) and it classifies at chance. shortcut_depth.yaml compares n = 2 with the
    paper's baselines, the Xavier and orthogonal plain nets, instead."""
    config = {
        "model": {"depth": 12, "width": 10, "activation": "mid", "shortcut": "none"},
        "init": {"scheme": "zero", "eps": 1e-3},
        "data": {"whiten": 10, "target": "onehot"},
        "train": {"loss": "mse", "batch_size": "full", "epochs": 30, "lr": 0.3, "momentum": 0.0},
    }
    plain = run_trial(config)
    assert plain["train_loss"] == pytest.approx(1.0, abs=1e-6)
    assert plain["test_acc"] < 0.2  # ten classes: chance is 0.1
    xavier = run_trial({**config, "init": {"scheme": "xavier"}})
    assert xavier["train_loss"] < 0.95  # the same net and trainer leave 1 from Xavier init
