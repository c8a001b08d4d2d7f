"""``resablate report``: a recorded sweep -> the papers' figures (PNG) and tables (CSV, markdown).

Reads the sweep back from MLflow (:func:`resablate.tracking.ledger.read_sweep`: the parent run, its
child runs' params, final metrics, per-epoch histories and probe JSON artifacts) and draws only
what the sweep recorded; every figure it cannot draw is named in ``report.md`` with the reason. A
*configuration* is a trial's grid values without its seed (mean ± std are over seeds), and without
its depth where depth is the x-axis.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from resablate.analysis import claims_table, comparisons, probe_figures
from resablate.analysis.figures import (
    DEPTH,
    SEED,
    ReportFolder,
    band,
    figure,
    finish,
    group,
    label,
    mean_std,
    number,
    panels,
    pm,
    save,
    suptitle,
)
from resablate.analysis.summary import STATUSES
from resablate.analysis.verdicts import Verdict
from resablate.errors import UserError
from resablate.results import DIVERGED, FINISHED, METRICS
from resablate.spec.claims import ClaimSpec
from resablate.tracking.ledger import RunData, SweepRuns

LR = "train.lr"
# the metrics whose per-epoch history a report reads (the rest: final values only)
HISTORIES = ("train_loss", "train_acc", "test_loss", "test_acc")
HISTORY_PREFIXES = ("weights.", "hessian.")


def axes(sweep: SweepRuns) -> list[str]:
    """The sweep's grid axes (from the parent run's plan), then the searched parameter."""
    found: list[str] = []
    plan = sweep.recorded("plan.json") or []
    for trial in plan:
        found += [a for a in trial.get("grid", {}) if a not in found]
    spec = sweep.recorded("sweep.resolved.json") or {}
    searched = (spec.get("search") or {}).get("param")
    if searched and searched not in found:
        found.append(searched)
    return found


def in_grid_order(sweep: SweepRuns) -> None:
    """Put the runs in the grid's order (the recorded plan's trials, by cell, then by trial), so
    that every table and figure lists its cells as the console and ``summary.md`` did, whatever
    order MLflow returns them in; runs of no planned cell (a search's candidates) keep theirs,
    after them."""
    plan = sweep.recorded("plan.json") or []
    cells = {c: i for i, c in enumerate(dict.fromkeys(t.get("cell") for t in plan))}
    trials = {t.get("id"): i for i, t in enumerate(plan)}
    sweep.runs.sort(
        key=lambda r: (
            cells.get(r.tags.get("cell"), len(cells)),
            trials.get(r.tags.get("trial_id"), len(trials)),
        )
    )


def make_report(
    sweep: SweepRuns,
    out: Path,
    claimed: list[ClaimSpec] | None = None,
    reference: dict[str, Any] | None = None,
    keep: bool = False,
) -> tuple[ReportFolder, list[Verdict]]:
    """Write every figure and table the sweep's data allows into ``out``, and test the claims.
    ``claimed`` and ``reference`` (the comparisons' reference configuration) are the sweep
    file's when it is given; by default those recorded with the sweep. ``keep``: the figures
    stay open in ``ReportFolder.figures`` (a test reads their artists)."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    report = ReportFolder(out, keep=keep)
    grid = axes(sweep)
    in_grid_order(sweep)
    if claimed is None:
        spec = sweep.recorded("sweep.resolved.json") or {}
        claimed = [ClaimSpec.model_validate(c) for c in spec.get("claims", [])]
    verdicts = claims_table.table(sweep, claimed, grid, report)
    finished = [r for r in sweep.runs if r.status == FINISHED]
    for draw in (
        _summary,
        _degradation,
        _best_over_lr,
        _learning_curves,
        probe_figures.signal_propagation,
        probe_figures.hessian,
        probe_figures.hessian_training,
        probe_figures.weight_norms,
        probe_figures.lesion,
        probe_figures.shattered,
        _search,
    ):
        draw(sweep, finished, grid, report)
    comparisons.table(sweep, grid, report, reference)
    (out / "report.md").write_text(report.markdown(sweep), encoding="utf-8")
    return report, verdicts


def _summary(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Mean ± std and median over seeds of the final metrics per cell (Identity Mappings
    reports the median of 5 runs), the status counts, the best c."""
    cell_axes = [a for a in grid if a != SEED]
    cells = group(sweep.runs, lambda r: label(r, cell_axes))
    header = ["cell", "trials", *STATUSES]
    for metric in METRICS:
        header += [f"{metric}_mean", f"{metric}_std", f"{metric}_median"]
    rows, lines = [], []
    for name, runs in cells.items():
        statuses = [r.status for r in runs]
        row: list[Any] = [name, len(runs)]
        row += [statuses.count(s) for s in STATUSES]
        shown = []
        for metric in METRICS:
            values = [
                r.metrics[metric] for r in runs if r.status == FINISHED and metric in r.metrics
            ]
            if values:
                mean, std = mean_std(values)
                median = statistics.median(values)
                row += [mean, std, median]
                shown.append(f"{mean:.4f} ± {std:.4f} (median {median:.4f})")
            else:
                row += ["", "", ""]
                shown.append("—")
        rows.append(row)
        counts = "/".join(str(c) for c in row[2:6])
        lines.append(f"| {name} | {counts} | " + " | ".join(shown) + " |")
    head = ["cell", "/".join(STATUSES), *METRICS]
    text = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines]
    best = sweep.recorded("search.json")
    if best:
        text += ["", "Best searched value per cell (seed mean ± std of the objective):", ""]
        text += [
            f"- {v['label']}: {v['best']} ({pm(v['mean'], v['std'])}, {v['complete']} candidates)"
            for v in best.values()
        ]
    report.text("summary.md", text)
    report.table("summary.csv", header, rows)


def _degradation(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Final train and test error against depth, one line per configuration that ran at two
    depths or more (Fig. 1, He 2015): a single depth shows no degradation."""
    rest = [a for a in grid if a not in (DEPTH, SEED)]
    configs = group(finished, lambda r: label(r, rest))
    deep = [
        r
        for runs in configs.values()
        if len({x.params.get(DEPTH) for x in runs}) > 1
        for r in runs
    ]
    if DEPTH not in grid or not deep:
        why = "no configuration finished at two depths or more"
        report.skipped.append(("degradation.png", why))
        return
    lines = panels(deep, rest)
    fig, grid_axes = figure(lines, 2)
    rows = []
    depths = sorted({int(r.params[DEPTH]) for r in deep})
    for (title, found), (train_ax, test_ax) in zip(lines.rows, grid_axes, strict=True):
        for name, runs in found.items():
            by_depth = group(runs, lambda r: r.params[DEPTH])
            xs = sorted(by_depth, key=int)
            train = [[1 - r.metrics["train_acc"] for r in by_depth[d]] for d in xs]
            test = [[1 - r.metrics["test_acc"] for r in by_depth[d]] for d in xs]
            style = lines.styles[name]
            band(train_ax, [int(d) for d in xs], train, name, **style)
            band(test_ax, [int(d) for d in xs], test, name, **style)
            where = f"{title} {name}".strip()
            for d, tr, te in zip(xs, train, test, strict=True):
                rows.append([where, int(d), len(tr), *mean_std(tr), *mean_std(te)])
        for ax, what in ((train_ax, "final train error"), (test_ax, "final test error")):
            ax.set_xlabel("depth")
            ax.set_ylabel(what)
            ax.set_xscale("log", base=2)
            ax.set_xticks(depths, [str(d) for d in depths])
            ax.minorticks_off()
    finish(fig, grid_axes)
    suptitle(fig, f"{sweep.experiment}: degradation (mean ± std over seeds)")
    save(fig, report, "degradation.png")
    header = ["configuration", "depth", "seeds", "train_error_mean", "train_error_std"]
    report.table("degradation.csv", [*header, "test_error_mean", "test_error_std"], rows)


def _best_over_lr(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Demystifying ResNet's Fig. 8: the learning rate is swept on a log scale and each
    configuration is represented by its best final training loss (the seed mean at its best lr).
    A diverged seed makes its lr's mean infinite: that lr cannot be the best."""

    lrs = {r.params.get(LR) for r in sweep.runs}
    if LR not in grid or len(lrs) < 2:
        report.skipped.append(("best_over_lr.md", "the sweep has fewer than two train.lr values"))
        return
    rest = [a for a in grid if a not in (LR, SEED)]
    rows, lines = [], []
    best: dict[str, tuple[float, list[float]]] = {}  # configuration -> (lr, final losses)
    for name, runs in group(sweep.runs, lambda r: label(r, rest)).items():
        tried = []
        for value, at_lr in group(runs, lambda r: r.params[LR]).items():
            losses = [
                r.metrics["train_loss"] if r.status == FINISHED else math.inf
                for r in at_lr
                if r.status in (FINISHED, DIVERGED) and "train_loss" in r.metrics
            ]
            if losses:
                tried.append((statistics.fmean(losses), number(value), losses))
        if not tried:
            continue
        mean, lr, losses = min(tried, key=lambda t: (t[0], t[1]))
        best[name] = (lr, losses)
        std = mean_std(losses)[1]
        rows.append([name, lr, len(losses), mean, std, len(tried)])
        lines.append(f"| {name} | {lr:g} | {pm(mean, std)} | {len(losses)} |")
    header = ["configuration", "best_lr", "seeds", "train_loss_mean", "train_loss_std", "lrs"]
    text = [
        "Best final training loss over the swept learning rates, per configuration"
        " (seed mean ± std at the best lr; Demystifying ResNet, Fig. 8)",
        "",
        "| configuration | best lr | final train loss | seeds |",
        "|---|---|---|---|",
        *lines,
    ]
    report.text("best_over_lr.md", text)
    report.table("best_over_lr.csv", header, rows)
    if DEPTH not in grid:
        return
    others = [a for a in rest if a != DEPTH]
    chosen = [r for r in finished if label(r, rest) in best]
    drawn = panels(chosen, others)
    fig, grid_axes = figure(drawn, 1, size=(6.0, 3.6))
    for (_, configs), (ax,) in zip(drawn.rows, grid_axes, strict=True):
        for name, runs in configs.items():
            by_depth = group(runs, lambda r: label(r, rest))
            points = sorted(
                (number(runs_[0].params[DEPTH]), best[key][1]) for key, runs_ in by_depth.items()
            )
            finite = [(d, v) for d, v in points if all(math.isfinite(x) for x in v)]
            if finite:
                xs, values = [d for d, _ in finite], [v for _, v in finite]
                band(ax, xs, values, name, **drawn.styles[name])
        ax.set_xlabel("depth")
        ax.set_ylabel("best final training loss over lr")
        ax.set_yscale("log")
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: best final loss over lr (mean ± std over seeds)")
    save(fig, report, "best_over_lr.png")


def _curves(runs: list[RunData], metric: str) -> tuple[list[float], list[list[float]]] | None:
    """Epochs and, per epoch, the values over seeds (epochs every seed reached)."""
    series = [dict(r.history.get(metric, [])) for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    steps = [s for s in steps if s > 0]
    if len(steps) < 2:
        return None
    return [float(s) for s in steps], [[s[k] for s in series] for k in steps]


def _learning_curves(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Train loss and test accuracy per epoch, mean ± std over seeds, per configuration."""
    axes = [a for a in grid if a != SEED]
    configs = group(finished, lambda r: label(r, axes))
    drawable = [r for runs in configs.values() if _curves(runs, "train_loss") for r in runs]
    if not drawable:
        report.skipped.append(("learning_curves.png", "no finished trial with two epochs"))
        return
    lines = panels(drawable, axes)
    fig, grid_axes = figure(lines, 2)
    for (_, found), (loss_ax, acc_ax) in zip(lines.rows, grid_axes, strict=True):
        for name, runs in found.items():
            for ax, metric in ((loss_ax, "train_loss"), (acc_ax, "test_acc")):
                curve = _curves(runs, metric)
                if curve:
                    band(ax, *curve, name, **lines.styles[name])
        loss_ax.set_yscale("log")
        for ax, metric in ((loss_ax, "train loss"), (acc_ax, "test accuracy")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: learning curves (mean ± std over seeds)")
    save(fig, report, "learning_curves.png")


def _search(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Each cell's candidates: the searched value against the seed mean of the objective."""

    spec = sweep.recorded("sweep.resolved.json") or {}
    search = spec.get("search")
    searched = [r for r in sweep.runs if "search_cell" in r.tags]
    if not search or not searched:
        report.skipped.append(("search.png", "the sweep has no search"))
        return
    param, metric = search["param"], search["objective"]["metric"]
    lines = panels(searched, [a for a in grid if a not in (SEED, param)])
    fig, grid_axes = figure(lines, 1, size=(6.0, 3.6))
    rows = []
    for (title, cells), (ax,) in zip(lines.rows, grid_axes, strict=True):
        for name, runs in cells.items():
            by_value = group(runs, lambda r: r.params[param])
            points = []
            for value, members in by_value.items():
                scores = [r.metrics[metric] for r in members if r.status == FINISHED]
                diverged = sum(r.status == DIVERGED for r in members)
                if scores:
                    points.append((number(value), statistics.fmean(scores)))
                where = f"{title} {name}".strip()
                rows.append([where, value, len(members), diverged, *_maybe(scores)])
            if points:
                xs, ys = zip(*sorted(points), strict=True)
                ax.scatter(xs, ys, label=name, s=18, color=lines.styles[name]["color"])
        if search.get("log_uniform"):
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{metric}, mean over finished seeds")
    finish(fig, grid_axes)
    suptitle(fig, f"{sweep.experiment}: search of {param} per cell")
    save(fig, report, "search.png")
    header = ["cell", param, "seeds", "diverged", f"{metric}_mean", f"{metric}_std"]
    report.table("search.csv", header, rows)


def _maybe(values: list[float]) -> list[Any]:
    return list(mean_std(values)) if values else ["", ""]


def report_sweep(
    sweep_file: str | None,
    experiment: str | None,
    run_id: str | None,
    out: str | None,
    tracking_uri: str | None,
    log: bool = True,
) -> tuple[SweepRuns, Path, ReportFolder, list[Verdict]]:
    """``resablate report``: read the sweep back, write its report into ``out`` (default
    reports/<experiment>) and, with ``log``, log the files and verdicts to its parent run. The
    claims and reference are the sweep file's when it is given, else those recorded."""
    from resablate.spec.loader import load_sweep
    from resablate.tracking.ledger import log_report, read_sweep
    from resablate.tracking.store import resolve_uri

    spec_uri, claimed, reference = None, None, None
    if sweep_file is not None:
        spec = load_sweep(sweep_file)
        experiment = experiment or spec.tracking.experiment or spec.name
        spec_uri, claimed = spec.tracking.uri, list(spec.claims)
        reference = dict(spec.report.reference)
    if experiment is None:
        raise UserError("name the sweep: resablate report SWEEP.yaml, or --experiment NAME")
    sweep = read_sweep(
        resolve_uri(tracking_uri, spec_uri), experiment, run_id, HISTORIES, HISTORY_PREFIXES
    )
    folder = Path(out) if out else Path("reports") / experiment
    done, verdicts = make_report(sweep, folder, claimed, reference)
    if log:
        log_report(sweep, folder, *claims_table.logged(verdicts))
    return sweep, folder, done, verdicts
