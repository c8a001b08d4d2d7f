"""sweep/capacity.py: the machine's trial slots, a stack's memory budget, a search's candidates in
flight, the stacks of one Tune run and the checkpoints' disk, each counted once."""

from __future__ import annotations

from pathlib import Path

import pytest

from resablate.sweep import capacity
from resablate.sweep.capacity import (
    checkpoint_bytes,
    checkpoint_disk,
    disk_text,
    fits,
    runs_of,
    size_text,
    slots_in,
    stack_budget,
)
from resablate.sweep.inventory import params
from resablate.sweep.plan import make_plan
from resablate.trial.checkpoint import KEEP, Checkpoints
from resablate.trial.train import run_stack
from tests.conftest import write

SWEEP = """\
name: cap
model: {family: mlp, width: 128, norm: none}
init: {c: 0.25}
data: {name: digits}
train: {epochs: 1, batch_size: 64, lr: 0.02, optimizer: sgd, momentum: 0.9}
grid:
  model.depth: [4, 16]
  seed: [0, 1, 2]
resources: {cpu: 1}
"""


def plan_of(tmp_path: Path, text: str = SWEEP, *overrides: str):
    return make_plan(write(tmp_path / "cap.yaml", text), overrides)


def test_slots_are_the_tightest_of_cpus_gpus_and_max_concurrent_trials(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    assert slots_in(plan, {"CPU": 16.0, "GPU": 0.0}) == 16
    four = plan_of(tmp_path, SWEEP, "resources.cpu=4")
    assert slots_in(four, {"CPU": 16.0}) == 4  # not 16: a trial takes 4 of them
    assert slots_in(four, {"CPU": 2.0}) == 1  # at least one, whatever the machine
    capped = plan_of(tmp_path, SWEEP, "resources.max_concurrent_trials=3")
    assert slots_in(capped, {"CPU": 16.0}) == 3


def test_a_checkpoints_estimate_is_near_the_file_a_trial_writes(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, SWEEP, "train.epochs=2")
    trial = max(plan.trials, key=lambda t: t.config["model"]["depth"])
    estimate = checkpoint_bytes(trial, params(trial))
    folder = tmp_path / "ck"
    run_stack([trial.config], [lambda r: None], checkpoints=Checkpoints(folder, every=1))
    written = folder / "epoch_1.pt"  # the last epoch's is not kept: the trial has ended
    # weights and SGD's momentum in float32; the generators and the reports add a little
    ratio = estimate / written.stat().st_size
    assert 0.85 < ratio < 1.05, (estimate, written.stat().st_size)
    adam = plan_of(tmp_path, SWEEP.replace("optimizer: sgd", "optimizer: adam"))
    twice = checkpoint_bytes(adam.trials[-1], params(adam.trials[-1]))
    assert twice == pytest.approx(estimate * 3 / 2)  # Adam keeps two moments, SGD one


def test_the_disk_at_once_is_the_largest_trials_that_run_together(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    counts = [params(t) for t in plan.trials]
    disk = checkpoint_disk(plan, counts)
    sizes = sorted(
        (checkpoint_bytes(t, n) for t, n in zip(plan.trials, counts, strict=True)), reverse=True
    )
    slots = disk["trials_at_once"]
    assert disk["bytes_per_trial"] == sizes[0]
    assert disk["peak_bytes"] == KEEP * sum(sizes[:slots])
    assert disk["artifact_bytes"] == 0  # keep_checkpoint off: nothing logged to MLflow
    kept = plan_of(tmp_path, SWEEP, "train.keep_checkpoint=true")
    assert checkpoint_disk(kept, counts)["artifact_bytes"] == sum(sizes)
    line = disk_text(disk)
    assert f"each running trial keeps its last {KEEP}" in line and "MLflow" not in line


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (13_500_000, "13.5 MB"), (2.1e9, "2.1 GB"), (5e15, "5000.0 TB")],
)
def test_sizes_read_as_short_human_numbers(n: float, text: str) -> None:
    assert size_text(n) == text


def test_a_stack_budget_without_a_gpu_shares_free_memory_over_the_slots(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    one, four = stack_budget(plan, 1), stack_budget(plan, 4)
    assert one is not None and four is not None
    assert four == pytest.approx(one / 4, rel=0.05)  # free memory moves a little between calls
    group = [t for t in plan.trials if t.config["model"]["depth"] == 4]
    assert fits(group, 10**12) > len(group)  # plenty: the stack size decides, not memory
    assert fits(group, 1) == 1  # never none


def test_runs_of_splits_stacks_into_near_equal_tune_runs_in_order(monkeypatch) -> None:
    monkeypatch.setattr(capacity, "STACKS_PER_RUN", 4)
    monkeypatch.setattr(capacity, "STACKS_PER_SLOT", 1)
    stacks = [[i] for i in range(10)]
    runs = runs_of(stacks, 2, scheduled=False)  # type: ignore[arg-type]
    assert [len(r) for r in runs] == [3, 3, 4] and [s for r in runs for s in r] == stacks
    assert runs_of(stacks, 2, scheduled=True) == [stacks]  # a scheduler compares within a run
    assert [len(r) for r in runs_of(stacks, 10, scheduled=False)] == [10]  # 10 slots x 1
    assert runs_of([], 2, scheduled=False) == []
