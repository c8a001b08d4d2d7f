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

from resablate.tracking.ledger import RunData, SweepRuns

DEPTH, SEED = "model.depth", "seed"


@dataclass
class ReportFolder:
    """What `resablate report` writes into its folder: the figures drawn, those skipped and why,
    the claims table, and report.md listing them."""

    out: Path
    drawn: list[str] = field(default_factory=list)  # file names
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (figure, why not)
    claims: list[str] = field(default_factory=list)  # the claims table (markdown lines)
    keep: bool = False  # keep each saved figure open in ``figures`` (a test reads its artists)
    figures: dict[str, Any] = field(default_factory=dict)

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


def label(run: RunData, paths: Iterable[str], short: bool = False) -> str:
    """``depth=4 shortcut=none``: the run's values of ``paths`` (the last name of each path);
    ``short``: a searched float to 4 significant digits (a figure's legend)."""
    return (
        " ".join(f"{p.rsplit('.', 1)[-1]}={_value(run.params.get(p, '?'), short)}" for p in paths)
        or "(all)"
    )


def _value(text: str, short: bool) -> str:
    if not short or "." not in text:
        return text
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def varying(runs: Iterable[RunData], paths: Iterable[str]) -> list[str]:
    """The ``paths`` whose value differs between ``runs``: the only keys a line's label needs."""
    runs = list(runs)
    return [p for p in paths if len({r.params.get(p) for r in runs}) > 1]


def at_init(grid: Sequence[str]) -> list[str]:
    """The grid axes that can change a network at initialization: a ``train.`` field (the lr,
    the epochs) cannot, so a probe at init draws one line where only those differ."""
    return [a for a in grid if not a.startswith("train.")]


def one_per_net(runs: Iterable[RunData], axes: Sequence[str]) -> list[RunData]:
    """The first run of each network (its values of ``axes`` and its seed): runs that differ
    only in how they train are the same net at init, and count once."""
    seen: dict[str, RunData] = {}
    for run in runs:
        seen.setdefault(label(run, [*axes, SEED]), run)
    return list(seen.values())


MOST_LINES = 10  # past this many lines a figure splits into a row of panels per value of an axis
# with matplotlib's 10 colours, a line style and a marker per ten lines: 40 lines stay distinct
STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "x")


@dataclass
class Panels:
    """The lines of a figure: each row of panels (its title, ``""`` for a single row) with its
    configurations (label -> runs), and one style per label, the same in every row."""

    rows: list[tuple[str, dict[str, list[RunData]]]]
    styles: dict[str, dict[str, Any]]

    @property
    def lines(self) -> int:
        return len(self.styles)


def panels(runs: Iterable[RunData], paths: Sequence[str], most: int = MOST_LINES) -> Panels:
    """Group ``runs`` into configurations by ``paths``, labelled by the keys that vary between
    them only; more than ``most`` of them split into small multiples: a row per value of the
    axis that leaves the fewest lines in a row (of those with at most 6 values)."""
    runs = list(runs)
    keys = varying(runs, paths)
    whole = group(runs, lambda r: label(r, keys, short=True))
    split = None
    if len(whole) > most:

        def cost(axis: str) -> tuple[int, int]:
            parts = group(runs, lambda r: r.params.get(axis, "?"))
            rest = [k for k in keys if k != axis]
            widest = max(len(group(m, lambda r: label(r, rest, True))) for m in parts.values())
            return widest, len(parts)

        candidates = [k for k in keys if len({r.params.get(k) for r in runs}) <= 6]
        split = min(candidates, key=cost) if candidates else None
    if split is None:
        rows = [("", whole)]
    else:
        rest = [k for k in keys if k != split]
        name = split.rsplit(".", 1)[-1]
        rows = [
            (f"{name}={_value(value, True)}", group(members, lambda r: label(r, rest, True)))
            for value, members in group(runs, lambda r: r.params.get(split, "?")).items()
        ]
    names = list(dict.fromkeys(n for _, configs in rows for n in configs))
    styles = {
        n: {
            "color": f"C{i % 10}",
            "linestyle": STYLES[(i // 10) % len(STYLES)],
            "marker": MARKERS[(i // 10) % len(MARKERS)],
            "markersize": 3,
        }
        for i, n in enumerate(names)
    }
    return Panels(rows, styles)


def figure(lines: Panels, columns: int, size: tuple[float, float] = (5.0, 3.6)) -> Any:
    """A figure of a row of ``columns`` panels per row of ``lines``, room on the right for
    one shared legend outside the axes; returns (figure, axes[row][column])."""
    import matplotlib.pyplot as plt

    names = list(lines.styles)
    longest = max((len(n) for n in names), default=0) if len(names) > 1 else 0
    width = size[0] * columns + (0.06 * longest + 0.6 if longest else 0)
    height = max(size[1] * len(lines.rows), 0.16 * len(names) + 0.8)
    fig, axes = plt.subplots(
        len(lines.rows), columns, figsize=(width, height), layout="constrained", squeeze=False
    )
    for (title, _), row in zip(lines.rows, axes, strict=True):
        for ax in row if title else ():
            ax.set_title(title, fontsize=9, loc="left")
    return fig, axes


def suptitle(fig: Any, text: str) -> None:
    """The figure's title, on the left: the legend takes the right-hand side."""
    fig.suptitle(text, x=0.01, ha="left")


def finish(fig: Any, axes: Any, integer_x: bool = False) -> None:
    """One legend for the whole figure, outside the axes (each label once, in drawing order),
    where there is more than one line; integer ticks on x for epochs, units and k."""
    from matplotlib.ticker import MaxNLocator

    found: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(name, handle)
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(found) > 1:
        fig.legend(list(found.values()), list(found), loc="outside right upper", fontsize=7)


def group(runs: Iterable[RunData], key: Callable[[RunData], str]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


def pm(mean: float | None, std: float | None) -> str:
    return "—" if mean is None or std is None else f"{mean:.4f} ± {std:.4f}"


def band(ax: Any, xs: list[float], series: list[list[float]], name: str, **style: Any) -> None:
    """A mean line with a ± std band over seeds."""
    means = [statistics.fmean(v) for v in series]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in series]
    (line,) = ax.plot(xs, means, label=name, **style)
    low = [m - s for m, s in zip(means, stds, strict=True)]
    high = [m + s for m, s in zip(means, stds, strict=True)]
    ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color())


def save(fig: Any, report: ReportFolder, name: str) -> None:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(report.out / name, dpi=110)
    report.drawn.append(name)
    if report.keep:
        report.figures[name] = fig
        return
    import matplotlib.pyplot as plt

    plt.close(fig)
