"""Checkpoints (issue 20, the trial's side): a trial resumed from the checkpoint of epoch k ends
with the same reports and weights, bit for bit on the CPU, as the trial that was never stopped;
checkpoints are written atomically, read with weights_only, and a corrupt one is skipped."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from resablate.trial import checkpoint
from resablate.trial.checkpoint import Checkpoints
from resablate.trial.train import run_stack

BASE: dict[str, Any] = {
    "data": {"name": "digits"},
    "model": {"family": "mlp", "width": 16, "depth": 4, "norm": "none"},
    "train": {"epochs": 4, "batch_size": 256, "lr": 0.05, "schedule": "cosine"},
    "seed": 0,
}
CASES: dict[str, dict[str, Any]] = {
    "sgd momentum, weight decay, cosine": {"train": {"weight_decay": 1e-3}},
    "batch norm conv net": {
        "model": {"family": "cifar", "depth": 8, "channels": 4, "norm": "batch", "stages": 1}
    },
    "adam, step schedule, linear warm-up": {
        "train": {
            "optimizer": "adam",
            "lr": 0.003,
            "schedule": "step",
            "milestones": [2],
            "warmup_iterations": 5,
        }
    },
    "dropout shortcut and stochastic depth (global generator)": {
        "model": {"shortcut": "dropout", "drop_path": 0.5}
    },
    "warm-up until a training error": {"train": {"warmup_lr": 0.01, "warmup_until_error": 0.8}},
}


def config(case: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for section, fields in case.items():
        out[section] = {**out[section], **fields}
    return {**out, "seed": seed}


def train(
    configs: list[dict[str, Any]], folder: Path, resume: dict[str, Any] | None = None
) -> list[list[dict[str, Any]]]:
    """Every member's reports; checkpoints every 2 epochs (and at the last) into ``folder``."""
    seen: list[list[dict[str, Any]]] = [[] for _ in configs]
    reports = [seen[i].append for i in range(len(configs))]
    run_stack(configs, reports, checkpoints=Checkpoints(folder, every=2), resume=resume)
    return seen


def measured(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports without the wall time of their epochs."""
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in reports]


def same_weights(a: Path, b: Path) -> None:
    left, right = checkpoint.read(a)["stack"], checkpoint.read(b)["stack"]
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_trial_resumed_from_epoch_2_ends_bit_for_bit_as_the_uninterrupted_one(
    tmp_path: Path, case: str
) -> None:
    configs = [config(CASES[case])]
    whole = train(configs, tmp_path / "whole")
    saved = Checkpoints(tmp_path / "whole")
    assert [p.name for p in saved.files()] == ["epoch_4.pt", "epoch_2.pt"]
    torch.manual_seed(12345)  # a fresh process: the global generator is anywhere
    resumed = train(configs, tmp_path / "resumed", checkpoint.read(tmp_path / "whole/epoch_2.pt"))
    assert [r["epoch"] for r in resumed[0]] == [3, 4]  # epochs 1-2 are neither trained nor told
    assert measured(resumed[0]) == measured(whole[0][-2:])  # every number, exactly
    same_weights(tmp_path / "whole/epoch_4.pt", tmp_path / "resumed/epoch_4.pt")


def test_a_stack_of_seeds_resumes_as_a_stack(tmp_path: Path) -> None:
    configs = [config({}, seed) for seed in (0, 1, 2)]
    whole = train(configs, tmp_path / "whole")
    resumed = train(configs, tmp_path / "resumed", checkpoint.read(tmp_path / "whole/epoch_2.pt"))
    for member in range(3):
        assert measured(resumed[member]) == measured(whole[member][-2:])
    same_weights(tmp_path / "whole/epoch_4.pt", tmp_path / "resumed/epoch_4.pt")
    members = checkpoint.read(tmp_path / "whole/epoch_4.pt")["members"]
    assert [m["result"]["epoch"] for m in members] == [4, 4, 4] and all(m["live"] for m in members)


def test_a_stack_of_mixed_recipes_resumes_as_a_stack(tmp_path: Path) -> None:
    """Issue 21: members with other optimizers, lrs and schedules (one optimizer per recipe, in
    an order the stack chooses) resume bit for bit too."""
    adam = {"train": {"optimizer": "adam", "lr": 0.003, "schedule": "step", "milestones": [3]}}
    configs = [config(adam, 0), config({"train": {"lr": 0.02}}, 1), config(adam, 2)]
    whole = train(configs, tmp_path / "whole")
    resumed = train(configs, tmp_path / "resumed", checkpoint.read(tmp_path / "whole/epoch_2.pt"))
    for member in range(3):
        assert measured(resumed[member]) == measured(whole[member][-2:])
    assert len(checkpoint.read(tmp_path / "whole/epoch_4.pt")["steps"]) == 2  # two recipes
    same_weights(tmp_path / "whole/epoch_4.pt", tmp_path / "resumed/epoch_4.pt")


def test_a_diverged_member_stays_out_of_the_stack_after_a_resume(tmp_path: Path) -> None:
    # seed 3's loss crosses the bound in epoch 1, seed 0's never (found by running them)
    configs = [config({"train": {"diverge_above": 10.0}}, seed) for seed in (0, 3)]
    whole = train(configs, tmp_path / "whole")
    assert [r[-1]["status"] for r in whole] == ["finished", "diverged"]
    assert whole[1][-1]["diverged_epoch"] == 1
    resumed = train(configs, tmp_path / "resumed", checkpoint.read(tmp_path / "whole/epoch_2.pt"))
    assert resumed[1] == []  # it ended before the checkpoint: nothing more to train or report
    assert measured(resumed[0]) == measured(whole[0][-2:])
    members = checkpoint.read(tmp_path / "resumed/epoch_4.pt")["members"]
    assert [m["live"] for m in members] == [True, False]
    assert members[1]["result"]["status"] == "diverged"


def test_only_the_newest_two_are_kept_and_a_corrupt_one_falls_back(tmp_path: Path) -> None:
    configs = [config({"train": {"epochs": 6}})]
    folder = tmp_path / "c"
    run_stack(configs, [lambda r: None], checkpoints=Checkpoints(folder, every=1))
    saved = Checkpoints(folder)
    assert [p.name for p in saved.files()] == ["epoch_6.pt", "epoch_5.pt"]
    assert not list(folder.glob(".*partial"))  # written whole, then renamed
    assert saved.latest()["epoch"] == 6
    newest = folder / "epoch_6.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: a node lost mid-write
    with pytest.warns(UserWarning, match="epoch_6.pt: unreadable checkpoint"):
        assert saved.latest()["epoch"] == 5
    (folder / "epoch_5.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning):
        assert saved.latest() is None  # the trial starts from epoch 0
    saved.clear()
    assert saved.files() == []


def test_checkpoints_are_due_every_k_epochs_at_the_last_and_on_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = Checkpoints(tmp_path, every=3)
    assert [e for e in range(1, 11) if every.due(e, 10)] == [3, 6, 9, 10]
    assert [e for e in range(1, 11) if Checkpoints(tmp_path, every=3, final=False).due(e, 10)] == [
        3,
        6,
        9,
    ]  # the last epoch only when the finished trial keeps its checkpoint

    def default(epochs: int) -> list[int]:  # a tenth of the epochs since the last one
        cadence = Checkpoints(tmp_path, final=False)
        out = []
        for epoch in range(1, epochs + 1):
            if cadence.due(epoch, epochs):
                cadence.saved(epoch)
                out.append(epoch)
        return out

    monkeypatch.setattr(checkpoint, "MIN_SECONDS", 0.0)  # each tenth took a minute or more
    assert default(40) == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert default(5) == [1, 2, 3, 4]
    monkeypatch.setattr(checkpoint, "MIN_SECONDS", 1e9)  # a trial of seconds: none needed
    assert default(40) == []
    stopping = Checkpoints(tmp_path, every=100, stopping=lambda: True, final=False)
    assert stopping.due(1, 200) and stopping.due(200, 200)
    late = Checkpoints(tmp_path, every=100, saved_at=-1e9)  # ten minutes ago and more
    assert late.due(1, 200)


def test_a_checkpoint_holds_only_what_weights_only_loads(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    checkpoint.write(path, {"format": checkpoint.FORMAT, "epoch": 1, "where": Path("/")})
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        checkpoint.read(path)  # any other pickled object is refused, never unpickled
