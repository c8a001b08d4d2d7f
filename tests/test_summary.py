"""The console summary a sweep ends with shows its numbers: short cell names that wrap, no elided
cell, every line within 80 columns for the shipped sweeps, numbers to their significant digits,
the cells in the grid's order whatever order the trials ended in."""

from __future__ import annotations

import pytest
from rich.console import Console

from resablate.analysis.summary import pm, summarize, table
from resablate.results import FINISHED, TrialRecord
from resablate.sweep.plan import make_plan
from tests.conftest import SWEEPS


def ended(plan_trials: list, seed_shift: float = 0.0) -> list[TrialRecord]:
    """Every trial finished, with metrics that differ from trial to trial."""
    out = []
    for i, trial in enumerate(plan_trials):
        v = 0.5 + (i % 7) / 17 + seed_shift
        metrics = {"train_loss": 10 * v, "train_acc": v, "test_loss": 2 * v, "test_acc": v}
        metrics |= {"val_loss": 2.1 * v, "val_acc": 0.99 * v}
        out.append(TrialRecord(trial, FINISHED, 3, metrics))
    return out


def rendered(cells: list, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(table(cells, "study: final metrics, mean ± std over seeds"))
    return console.export_text()


@pytest.mark.parametrize(
    "study",
    ["shortcut_depth", "identity_mappings", "init_scale", "signal_propagation", "mnist_lecture"],
)
def test_the_summary_of_every_shipped_sweep_fits_80_columns_and_shows_its_numbers(
    study: str,
) -> None:
    plan = make_plan(SWEEPS / f"{study}.yaml", profile="cpu")
    cells = summarize(ended(plan.trials), [t.cell for t in plan.trials])
    text = rendered(cells, 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text  # nothing elided: a long cell name wraps
    body = [line for line in lines if "/" in line and "±" in line]  # the rows' first lines
    assert len(body) == len(cells)
    assert all(line.count("±") == 3 for line in body)  # train_loss, test_acc, val_acc
    assert "also recorded (train_acc, test_loss, val_loss)" in " ".join(text.split())
    # the names say only what varies between the cells: no key every cell shares
    names = " ".join(lines)
    shared = [
        k.rsplit(".", 1)[-1]
        for k in cells[0].values_of
        if len({repr(c.values_of.get(k)) for c in cells}) == 1
    ]
    assert all(f"{k}=" not in names for k in shared), shared


def test_cells_come_in_the_grids_order_whatever_order_the_trials_ended_in() -> None:
    plan = make_plan(SWEEPS / "identity_mappings.yaml", profile="cpu")
    order = [t.cell for t in plan.trials]
    forward = summarize(ended(plan.trials), order)
    backward = summarize(list(reversed(ended(plan.trials))), order)
    assert [c.cell for c in forward] == [c.cell for c in backward]
    assert [c.cell for c in forward] == list(dict.fromkeys(order))
    # without the plan's order, the order the records came in
    assert [c.cell for c in summarize(list(reversed(ended(plan.trials))))] == list(
        dict.fromkeys(reversed(order))
    )


@pytest.mark.parametrize(
    "mean,std,text",
    [
        (0.96123, 0.01623, "0.961 ± 0.016"),
        (0.9612, 0.0, "0.9612 ± 0"),
        (10.8836, 0.0, "10.88 ± 0"),
        (0.00012, 0.00003, "0.000120 ± 0.000030"),  # not 0.000 ± 0.000
        (1.5e-7, 2e-8, "1.5e-07 ± 2e-08"),
        (152.3, 12.7, "152 ± 13"),
    ],
)
def test_numbers_keep_their_significant_digits(mean: float, std: float, text: str) -> None:
    assert pm(mean, std) == text


def test_the_killed_trials_are_named_the_first_ten_of_them() -> None:
    from resablate.tracking.runlog import killed_text

    assert killed_text(["seed=0", "seed=1"]) == (
        "killed, --resume continues them: 2 trial(s): seed=0; seed=1"
    )
    many = killed_text([f"seed={i}" for i in range(12)])
    assert many.endswith("seed=8; seed=9 and 2 more") and ": 12 trial(s): seed=0;" in many
