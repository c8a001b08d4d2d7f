"""The end-of-sweep summary: mean ± std over seeds of the final metrics, per grid cell."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.table import Table

from resablate.results import DIVERGED, FAILED, FINISHED, METRICS, PRUNED, TrialRecord


@dataclass
class CellStats:
    cell: str
    label: str  # the cell's grid values, seed left out
    trials: int = 0
    values_of: dict[str, Any] = field(default_factory=dict)  # its grid values, seed left out
    status: dict[str, int] = field(
        default_factory=lambda: {FINISHED: 0, DIVERGED: 0, PRUNED: 0, FAILED: 0}
    )
    values: dict[str, list[float]] = field(default_factory=dict)

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = self.values.get(metric, [])
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: list[TrialRecord], order: Sequence[str] = ()) -> list[CellStats]:
    """Group records by cell (config without seed), in the grid's order: that of the cell ids
    in ``order`` (the plan's trials), then the rest in the order they first appear (a search's
    candidates), the same before and after a ``--resume``.

    Mean ± std are over the seeds that finished; diverged, pruned (stopped early by the
    scheduler, their metrics are of fewer epochs) and failed trials are counted apart.
    """
    cells: dict[str, CellStats] = {}
    for record in records:
        trial = record.trial
        label = trial.label(skip=("seed",)) or "(all)"
        grid = {k: v for k, v in trial.assignment.items() if k != "seed"}
        stats = cells.setdefault(trial.cell, CellStats(trial.cell, label, values_of=grid))
        stats.trials += 1
        stats.status[record.status] = stats.status.get(record.status, 0) + 1
        if record.status == FINISHED:
            for metric in METRICS:
                if metric in record.metrics:
                    stats.values.setdefault(metric, []).append(record.metrics[metric])
    rank = {cell: i for i, cell in enumerate(dict.fromkeys(order))}
    found = list(cells.values())
    return sorted(found, key=lambda c: rank.get(c.cell, len(rank)))


def _cell(stats: CellStats, metric: str) -> str:
    found = stats.mean_std(metric)
    return "—" if found is None else pm(*found)


STATUSES = (FINISHED, DIVERGED, PRUNED, FAILED)


def _counts(stats: CellStats) -> str:
    return "/".join(str(stats.status.get(s, 0)) for s in STATUSES)


COUNTS = "/".join(STATUSES)


# the console's columns (the markdown, summary.md and the CSV keep every metric): what a
# researcher reads first, and the validation accuracy a search or scheduler chose on
CONSOLE = ("train_loss", "test_acc", "val_acc")


def short_labels(cells: list[CellStats]) -> list[str]:
    """Each cell named by the grid keys whose value differs between the cells only."""
    keys = list(dict.fromkeys(k for c in cells for k in c.values_of))
    varying = [k for k in keys if len({repr(c.values_of.get(k)) for c in cells}) > 1]
    return [
        " ".join(
            f"{k.rsplit('.', 1)[-1]}={_short(c.values_of[k])}" for k in varying if k in c.values_of
        )
        or "(all)"
        for c in cells
    ]


def _short(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return value if isinstance(value, str) else str(value)


def pm(mean: float, std: float) -> str:
    """``0.961 ± 0.016``: the std to two significant digits and the mean to the same decimal
    place, so neither rounds to 0.000 (beyond 6 decimals, powers of ten); a zero std leaves
    the mean 4 significant digits."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        return f"{mean:.4g} ± {std:.2g}"
    if std == 0:
        return f"{mean:.4g} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    if decimals > 6:
        return f"{mean:.3g} ± {std:.2g}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def table(cells: list[CellStats], title: str) -> Table:
    """The console's summary: short cell names that wrap, the metrics of :data:`CONSOLE` that
    some cell recorded, numbers to their significant digits; fits 80 columns."""
    shown = [m for m in CONSOLE if any(c.mean_std(m) for c in cells)]
    rest = [m for m in METRICS if m not in shown and any(c.mean_std(m) for c in cells)]
    caption = f"trials: {COUNTS}"
    if rest:
        caption += f"; also recorded ({', '.join(rest)}): summary.md, resablate report"
    out = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        expand=True,  # the cell names take what the numbers leave
    )
    out.add_column("cell", overflow="fold", ratio=1)
    out.add_column("trials", justify="right", no_wrap=True)
    for metric in shown:
        out.add_column(metric, justify="right", no_wrap=True)
    for c, name in zip(cells, short_labels(cells), strict=True):
        out.add_row(name, _counts(c), *(_cell(c, m) for m in shown))
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
