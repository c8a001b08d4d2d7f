"""The sweep's progress bar on a narrow terminal: the counts and times are never cut."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from resablate.results import DIVERGED, FAILED, PRUNED
from resablate.sweep.progress import SweepProgress


def rendered(name: str, total: int, width: int, **counts: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    progress = SweepProgress(name, total, console)
    progress.counts.update({FAILED: 0, DIVERGED: 0, PRUNED: 0, **counts})
    progress.bar.update(progress.task, completed=total, state=progress._state())
    console.print(progress.bar.get_renderable())
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return out.rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize(("name", "total"), [("signal_propagation", 177), ("smoke", 18)])
def test_the_count_and_times_stay_whole_at_any_width(name: str, total: int, width: int) -> None:
    bar, state = rendered(name, total, width, **{DIVERGED: 12, PRUNED: 3})
    assert f"{name} " in bar and f" {total}/{total} " in bar
    assert bar.endswith("0:00:00 ETA 0:00:00") or bar.endswith("0:00:00 ETA -:--:--"), bar
    assert state == "  running 0 · 12 diverged · 3 pruned"
    assert all(len(line) <= width for line in (bar, state))


def test_a_long_name_gives_way_first() -> None:
    bar, _ = rendered("a_study_whose_name_is_far_too_long", 1200, 80)
    assert bar.startswith("a_study_whose_name_is_f…") and " 1200/1200 " in bar


def test_the_state_names_only_the_outcomes_that_happened() -> None:
    assert rendered("smoke", 18, 80)[1] == "  running 0"
    assert rendered("smoke", 18, 80, **{FAILED: 1})[1] == "  running 0 · 1 failed"
