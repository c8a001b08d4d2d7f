"""What the commands print: notes on stderr, the next steps after a sweep, ``plan``'s table and
``report``'s list of files."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from resablate.analysis.figures import ReportFolder
    from resablate.tracking.ledger import SweepRuns

SHOWN = 200  # trials a plan's table lists; --json lists all


def tell(notes: Sequence[str]) -> None:
    """What the user should know that stops nothing, one line each on stderr."""
    for note in notes:
        click.echo(f"resablate: {note}", err=True)


def next_steps(
    sweep_file: str, tracking_uri: str | None, resume: list[str] | None = None
) -> list[str]:
    """What a researcher runs after a sweep: the report first, then the MLflow UI; after an
    interrupted one, first the --resume with the sweep's own ``resume`` options."""
    where = f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else ""
    file = shlex.quote(sweep_file)
    if resume is not None:
        options = "".join(f" {shlex.quote(a)}" for a in resume)
        first = f"resablate sweep {file}{options}{where} --resume   # the trials left"
        return [first, *next_steps(sweep_file, tracking_uri)]
    return [
        f"resablate report {shlex.quote(sweep_file)}{where}   # figures, tables, the claims",
        f"resablate ui{where}   # the runs in MLflow's UI",
    ]


def show_plan(found: dict[str, Any], disk: str, stacks: str) -> None:
    """The first trials of ``plan --json``'s object as a table, the search's size, then the
    ``disk`` checkpoints take and how the trials ``stacks``."""
    shown = Table(title=f"{found['sweep']}: {found['n_trials']} trials", title_justify="left")
    for column in ("#", "id", "grid", "params"):
        shown.add_column(column, justify="right" if column in ("#", "params") else "left")
    for i, trial in enumerate(found["trials"][:SHOWN]):
        values = " ".join(f"{k}={v}" for k, v in trial["grid"].items()) or "(no grid)"
        shown.add_row(str(i), trial["id"], values, f"{trial['params']:,}")
    console = Console()
    console.print(shown)
    if found["n_trials"] > SHOWN:
        console.print(f"... and {found['n_trials'] - SHOWN} more (use --json for all)")
    if "search" in found:
        size = found["search"]
        outside = size["unsearched_trials"]
        console.print(
            f"search over {size['param']}: {size['cells']} cells ×"
            f" {size['candidates_per_cell']} candidates × {size['seeds']} seeds"
            + (f" + {outside} grid trials outside search.where" if outside else "")
            + f" = {size['total_trials']} trials"
        )
    click.echo(disk)
    click.echo(stacks)


def show_report(sweep: SweepRuns, folder: Path, done: ReportFolder, logged: bool) -> None:
    """The claims' verdicts, the files drawn (stdout), what was not drawn and where it all is
    (stderr)."""
    for line in done.claims:
        click.echo(line)
    for name in done.drawn:
        click.echo(str(folder / name))
    for name, why in done.skipped:
        click.echo(f"not drawn: {name} ({why})", err=True)
    where = f"; logged to parent run {sweep.parent.run_id} (artifacts report/)" if logged else ""
    click.echo(f"report of {len(sweep.runs)} runs in {folder / 'report.md'}{where}", err=True)
