"""What the console shows when a sweep ends: the cells' final metrics, each searched cell's best
value, where the results are (MLflow, Optuna's studies, checkpoints kept)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click
from rich.console import Console

from resablate.analysis.summary import markdown, table
from resablate.results import FAILED
from resablate.spec.schema import SweepSpec
from resablate.tracking.runlog import killed_text

if TYPE_CHECKING:
    from resablate.sweep.driver import Outcome


def show_outcome(outcome: Outcome, spec: SweepSpec, steps: Sequence[str] = ()) -> None:
    """On a terminal a table; in a batch log (SLURM, a Ray Job, a pipe) markdown, every number
    whole; then where the results are and the ``steps`` to take next."""
    tracker = outcome.tracker
    title = f"{spec.name}: final metrics, mean ± std over seeds"
    if sys.stdout.isatty():
        out = Console()
        out.print(table(outcome.cells, title))
    else:  # a batch log (SLURM, a Ray Job, a pipe): every number whole, as markdown
        out = Console(width=100_000, no_color=True, highlight=False, soft_wrap=True)
        click.echo(f"{title}\n\n{markdown(outcome.cells)}")
    for cell in outcome.search.values():
        mean = "—" if cell["mean"] is None else f"{cell['mean']:.4f} ± {cell['std']:.4f}"
        out.print(
            f"best {spec.search.param if spec.search else ''} in {cell['label']}:"
            f" {cell['best']} ({spec.search.objective.metric if spec.search else ''}"
            f" {mean}, {cell['complete']} candidates)"
        )
    if outcome.interrupted and tracker.killed:
        out.print(killed_text(tracker.killed), highlight=False, markup=False)
    if outcome.journal:
        out.print(f"Optuna studies (one per cell): {outcome.journal}")
    out.print(
        f"MLflow: experiment '{spec.tracking.experiment or spec.name}' "
        f"(id {tracker.experiment_id}), parent run {tracker.parent_id} in {tracker.uri}"
    )
    if steps:
        out.print("Next:", highlight=False)
        for step in steps:
            out.print(f"  {step}", highlight=False, markup=False)
    if tracker.saved["checkpoints"]:
        out.print(tracker.saved_text(outcome.interrupted))


def exit_code(outcome: Outcome) -> int:
    """0 when every trial ended with a result, 1 when one failed, 130 when the sweep was
    interrupted; the last two say so in one line on stderr, with what to do next."""
    failed = outcome.tracker.counts[FAILED]
    if outcome.interrupted:
        click.echo(
            f"resablate: sweep interrupted; {outcome.ended} of {outcome.total} trials ended and"
            " are recorded, the runs still going were marked killed; continue with --resume",
            err=True,
        )
        return 130
    if failed:
        click.echo(
            f"resablate: {failed} trial(s) failed; their tracebacks are the error.txt"
            " artifacts of the child runs tagged resablate.status=failed; --resume runs them"
            " again",
            err=True,
        )
        return 1
    return 0
