"""What every figure and table of ``resablate report`` shares: the report's record of what it drew,
runs grouped into configurations, mean ± std over seeds, CSV files and saved figures."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resablate.ledger import RunData, SweepRuns

DEPTH, SEED = "model.depth", "seed"


@dataclass
class Report:
    out: Path
    drawn: list[str] = field(default_factory=list)  # file names
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (figure, why not)
    claims: list[str] = field(default_factory=list)  # the claims table (markdown lines)

    def markdown(self, sweep: SweepRuns) -> str:
        lines = [
            f"# Report: {sweep.experiment}",
            "",
            f"Parent run `{sweep.parent.run_id}` in `{sweep.uri}`: {len(sweep.runs)} trial runs.",
            "",
            *(["## Claims", "", *self.claims, ""] if self.claims else []),
            "## Drawn",
            "",
            *(f"- [{name}]({name})" for name in self.drawn),
            "",
            "## Not drawn (the sweep did not record their data)",
            "",
            *(f"- {name}: {why}" for name, why in self.skipped),
            "",
        ]
        return "\n".join(lines)

    def table(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        """Write the CSV file ``name`` into the report and record it as drawn."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        (self.out / name).write_text(buffer.getvalue(), encoding="utf-8")
        self.drawn.append(name)

    def text(self, name: str, lines: list[str]) -> None:
        """Write the markdown file ``name`` (one line each) and record it as drawn."""
        (self.out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.drawn.append(name)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), the summary's convention; an
    infinite value (a zero Hessian's condition number) makes the std undefined (nan)."""
    mean = statistics.fmean(values)
    if not all(math.isfinite(v) for v in values):
        return mean, math.nan
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def number(text: str | None) -> float:
    """An MLflow param (text) as a number; NaN for a name or a missing param."""
    try:
        return float(json.loads(text)) if text is not None else math.nan
    except (ValueError, TypeError):
        return math.nan


def label(run: RunData, paths: Iterable[str]) -> str:
    """``depth=4 shortcut=none``: the run's values of ``paths`` (the last name of each path)."""
    return " ".join(f"{p.rsplit('.', 1)[-1]}={run.params.get(p, '?')}" for p in paths) or "(all)"


def group(runs: Iterable[RunData], key: Callable[[RunData], str]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


def pm(mean: float | None, std: float | None) -> str:
    return "—" if mean is None or std is None else f"{mean:.4f} ± {std:.4f}"


def band(ax: Any, xs: list[float], series: list[list[float]], name: str) -> None:
    """A mean line with a ± std band over seeds."""
    means = [statistics.fmean(v) for v in series]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in series]
    (line,) = ax.plot(xs, means, marker="o", markersize=3, label=name)
    low = [m - s for m, s in zip(means, stds, strict=True)]
    high = [m + s for m, s in zip(means, stds, strict=True)]
    ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color())


def save(fig: Any, report: Report, name: str) -> None:
    fig.tight_layout()
    fig.savefig(report.out / name, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    report.drawn.append(name)


def legend(ax: Any, n: int) -> None:
    if n > 1 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
