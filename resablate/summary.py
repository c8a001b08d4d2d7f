"""The end-of-sweep summary: mean ± std over seeds of the final metrics, per grid cell."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field

from rich.table import Table

from resablate.results import DIVERGED, FAILED, FINISHED, METRICS, PRUNED, TrialRecord


@dataclass
class CellStats:
    cell: str
    label: str  # the cell's grid values, seed left out
    trials: int = 0
    status: dict[str, int] = field(
        default_factory=lambda: {FINISHED: 0, DIVERGED: 0, PRUNED: 0, FAILED: 0}
    )
    values: dict[str, list[float]] = field(default_factory=dict)

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = self.values.get(metric, [])
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: list[TrialRecord]) -> list[CellStats]:
    """Group records by cell (config without seed), in the order the cells first appear.

    Mean ± std are over the seeds that finished; diverged, pruned (stopped early by the
    scheduler, their metrics are of fewer epochs) and failed trials are counted apart.
    """
    cells: dict[str, CellStats] = {}
    for record in records:
        trial = record.trial
        label = trial.label(skip=("seed",)) or "(all)"
        stats = cells.setdefault(trial.cell, CellStats(trial.cell, label))
        stats.trials += 1
        stats.status[record.status] = stats.status.get(record.status, 0) + 1
        if record.status == FINISHED:
            for metric in METRICS:
                if metric in record.metrics:
                    stats.values.setdefault(metric, []).append(record.metrics[metric])
    return list(cells.values())


def _cell(stats: CellStats, metric: str, digits: int = 4) -> str:
    found = stats.mean_std(metric)
    return "—" if found is None else f"{found[0]:.{digits}f} ± {found[1]:.{digits}f}"


STATUSES = (FINISHED, DIVERGED, PRUNED, FAILED)


def _counts(stats: CellStats) -> str:
    return "/".join(str(stats.status.get(s, 0)) for s in STATUSES)


COUNTS = "/".join(STATUSES)


def table(cells: list[CellStats], title: str) -> Table:
    out = Table(
        title=title, title_justify="left", caption=f"trials: {COUNTS}", caption_justify="left"
    )
    out.add_column("cell", no_wrap=True)
    out.add_column("trials", justify="right", no_wrap=True)
    for metric in METRICS:
        out.add_column(metric, justify="right", no_wrap=True)
    for c in cells:
        out.add_row(c.label, _counts(c), *(_cell(c, m, 3) for m in METRICS))
    return out


def markdown(cells: list[CellStats]) -> str:
    header = ["cell", f"trials ({COUNTS})", *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join([c.label, _counts(c), *(_cell(c, m) for m in METRICS)]) + " |"
        for c in cells
    ]
    return "\n".join(lines) + "\n"


def to_csv(cells: list[CellStats]) -> str:
    head = ["cell", "label", "trials", *STATUSES]
    for m in METRICS:
        head += [f"{m}_mean", f"{m}_std"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(head)
    for c in cells:
        row: list[object] = [c.cell, c.label, c.trials, *(c.status.get(s, 0) for s in STATUSES)]
        for m in METRICS:
            found = c.mean_std(m)
            row += ["", ""] if found is None else list(found)
        writer.writerow(row)
    return buffer.getvalue()
