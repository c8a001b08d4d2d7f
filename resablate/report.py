"""``resablate report``: a recorded sweep -> the papers' figures (PNG) and tables (CSV, markdown).

Reads the sweep back from MLflow (:func:`resablate.tracking.read_sweep`: the parent run, its child
runs' params, final metrics, per-epoch histories and probe JSON artifacts) and draws only what the
sweep recorded; every figure it cannot draw is named in ``report.md`` with the reason. A
*configuration* is a trial's grid values without its seed (mean ± std are over seeds), and without
its depth where depth is the x-axis.
"""

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

from resablate.results import DIVERGED, FINISHED, METRICS
from resablate.summary import STATUSES
from resablate.tracking import RunData, SweepRuns

DEPTH, SEED, SHORTCUT_DEPTH, LR = "model.depth", "seed", "model.shortcut_depth", "train.lr"
# the metrics whose per-epoch history a report reads (the rest: final values only)
HISTORIES = ("train_loss", "train_acc", "test_loss", "test_acc")
HISTORY_PREFIXES = ("weights.", "hessian.")


@dataclass
class Report:
    out: Path
    drawn: list[str] = field(default_factory=list)  # file names
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (figure, why not)

    def markdown(self, sweep: SweepRuns) -> str:
        lines = [
            f"# Report: {sweep.experiment}",
            "",
            f"Parent run `{sweep.parent.run_id}` in `{sweep.uri}`: {len(sweep.runs)} trial runs.",
            "",
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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), the summary's convention; an
    infinite value (a zero Hessian's condition number) makes the std undefined (nan)."""
    mean = statistics.fmean(values)
    if not all(math.isfinite(v) for v in values):
        return mean, math.nan
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def axes(sweep: SweepRuns) -> list[str]:
    """The sweep's grid axes (from the parent run's plan), then the searched parameter."""
    found: list[str] = []
    plan = sweep.artifact(sweep.parent.run_id, "plan.json") or []
    for trial in plan:
        found += [a for a in trial.get("grid", {}) if a not in found]
    spec = sweep.artifact(sweep.parent.run_id, "sweep.resolved.json") or {}
    searched = (spec.get("search") or {}).get("param")
    if searched and searched not in found:
        found.append(searched)
    return found


def label(run: RunData, paths: Iterable[str]) -> str:
    """``depth=4 shortcut=none``: the run's values of ``paths`` (the last name of each path)."""
    return " ".join(f"{p.rsplit('.', 1)[-1]}={run.params.get(p, '?')}" for p in paths) or "(all)"


def group(runs: Iterable[RunData], key: Callable[[RunData], str]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


def _number(text: str) -> float:
    try:
        return float(json.loads(text))
    except (ValueError, TypeError):
        return math.nan


def make_report(sweep: SweepRuns, out: Path) -> Report:
    """Write every figure and table the sweep's data allows into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    grid = axes(sweep)
    finished = [r for r in sweep.runs if r.status == FINISHED]
    for draw in (
        _summary,
        _degradation,
        _best_over_lr,
        _learning_curves,
        _signal_propagation,
        _hessian,
        _hessian_training,
        _weight_norms,
        _lesion,
        _shattered,
        _search,
    ):
        draw(sweep, finished, grid, report)
    (out / "report.md").write_text(report.markdown(sweep), encoding="utf-8")
    return report


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _summary(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
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
    _write_csv(report.out / "summary.csv", header, rows)
    head = ["cell", "/".join(STATUSES), *METRICS]
    text = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines]
    best = sweep.artifact(sweep.parent.run_id, "search.json")
    if best:
        text += ["", "Best searched value per cell (seed mean ± std of the objective):", ""]
        text += [
            f"- {v['label']}: {v['best']} ({_pm(v['mean'], v['std'])}, {v['complete']} candidates)"
            for v in best.values()
        ]
    (report.out / "summary.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    report.drawn += ["summary.md", "summary.csv"]


def _pm(mean: float | None, std: float | None) -> str:
    return "—" if mean is None or std is None else f"{mean:.4f} ± {std:.4f}"


def _band(ax: Any, xs: list[float], series: list[list[float]], name: str) -> None:
    """A mean line with a ± std band over seeds."""
    means = [statistics.fmean(v) for v in series]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in series]
    (line,) = ax.plot(xs, means, marker="o", markersize=3, label=name)
    low = [m - s for m, s in zip(means, stds, strict=True)]
    high = [m + s for m, s in zip(means, stds, strict=True)]
    ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color())


def _save(fig: Any, report: Report, name: str) -> None:
    fig.tight_layout()
    fig.savefig(report.out / name, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    report.drawn.append(name)


def _legend(ax: Any, n: int) -> None:
    if n > 1 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _degradation(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report
) -> None:
    """Final train and test error against depth, one line per configuration (Fig. 1, He 2015)."""
    import matplotlib.pyplot as plt

    depths = {r.params.get(DEPTH) for r in finished}
    if DEPTH not in grid or len(depths) < 2:
        report.skipped.append(("degradation.png", "the sweep has fewer than two depths"))
        return
    rest = [a for a in grid if a not in (DEPTH, SEED)]
    configs = group(finished, lambda r: label(r, rest))
    fig, (train_ax, test_ax) = plt.subplots(1, 2, figsize=(10, 4))
    rows = []
    for name, runs in configs.items():
        by_depth = group(runs, lambda r: r.params[DEPTH])
        xs = sorted(by_depth, key=int)
        train = [[1 - r.metrics["train_acc"] for r in by_depth[d]] for d in xs]
        test = [[1 - r.metrics["test_acc"] for r in by_depth[d]] for d in xs]
        _band(train_ax, [int(d) for d in xs], train, name)
        _band(test_ax, [int(d) for d in xs], test, name)
        for d, tr, te in zip(xs, train, test, strict=True):
            rows.append([name, int(d), len(tr), *mean_std(tr), *mean_std(te)])
    for ax, what in ((train_ax, "final train error"), (test_ax, "final test error")):
        ax.set_xlabel("depth")
        ax.set_ylabel(what)
        ax.set_xscale("log", base=2)
        _legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: degradation (mean ± std over seeds)")
    _save(fig, report, "degradation.png")
    header = ["configuration", "depth", "seeds", "train_error_mean", "train_error_std"]
    _write_csv(
        report.out / "degradation.csv", [*header, "test_error_mean", "test_error_std"], rows
    )
    report.drawn.append("degradation.csv")


def _best_over_lr(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report
) -> None:
    """Demystifying ResNet's Fig. 8: the learning rate is swept on a log scale and each
    configuration is represented by its best final training loss (the seed mean at its best lr).
    A diverged seed makes its lr's mean infinite: that lr cannot be the best."""
    import matplotlib.pyplot as plt

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
                tried.append((statistics.fmean(losses), _number(value), losses))
        if not tried:
            continue
        mean, lr, losses = min(tried, key=lambda t: (t[0], t[1]))
        best[name] = (lr, losses)
        std = mean_std(losses)[1]
        rows.append([name, lr, len(losses), mean, std, len(tried)])
        lines.append(f"| {name} | {lr:g} | {_pm(mean, std)} | {len(losses)} |")
    header = ["configuration", "best_lr", "seeds", "train_loss_mean", "train_loss_std", "lrs"]
    _write_csv(report.out / "best_over_lr.csv", header, rows)
    text = [
        "Best final training loss over the swept learning rates, per configuration"
        " (seed mean ± std at the best lr; Demystifying ResNet, Fig. 8)",
        "",
        "| configuration | best lr | final train loss | seeds |",
        "|---|---|---|---|",
        *lines,
    ]
    (report.out / "best_over_lr.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    report.drawn += ["best_over_lr.md", "best_over_lr.csv"]
    if DEPTH not in grid:
        return
    others = [a for a in rest if a != DEPTH]
    fig, ax = plt.subplots(figsize=(6, 4))
    configs = group([r for r in finished if label(r, rest) in best], lambda r: label(r, others))
    for name, runs in configs.items():
        by_depth = group(runs, lambda r: label(r, rest))
        points = sorted(
            (_number(runs_[0].params[DEPTH]), best[key][1]) for key, runs_ in by_depth.items()
        )
        finite = [(d, v) for d, v in points if all(math.isfinite(x) for x in v)]
        if finite:
            _band(ax, [d for d, _ in finite], [v for _, v in finite], name)
    ax.set_xlabel("depth")
    ax.set_ylabel("best final training loss over lr")
    ax.set_yscale("log")
    _legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: best final loss over lr (mean ± std over seeds)")
    _save(fig, report, "best_over_lr.png")


def _curves(runs: list[RunData], metric: str) -> tuple[list[float], list[list[float]]] | None:
    """Epochs and, per epoch, the values over seeds (epochs every seed reached)."""
    series = [dict(r.history.get(metric, [])) for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    steps = [s for s in steps if s > 0]
    if len(steps) < 2:
        return None
    return [float(s) for s in steps], [[s[k] for s in series] for k in steps]


def _learning_curves(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report
) -> None:
    """Train loss and test accuracy per epoch, mean ± std over seeds, per configuration."""
    import matplotlib.pyplot as plt

    configs = group(finished, lambda r: label(r, [a for a in grid if a != SEED]))
    drawable = {n: runs for n, runs in configs.items() if _curves(runs, "train_loss")}
    if not drawable:
        report.skipped.append(("learning_curves.png", "no finished trial with two epochs"))
        return
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, runs in drawable.items():
        for ax, metric in ((loss_ax, "train_loss"), (acc_ax, "test_acc")):
            found = _curves(runs, metric)
            if found:
                _band(ax, *found, name)
    loss_ax.set_yscale("log")
    for ax, metric in ((loss_ax, "train loss"), (acc_ax, "test accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        _legend(ax, len(drawable))
    fig.suptitle(f"{sweep.experiment}: learning curves (mean ± std over seeds)")
    _save(fig, report, "learning_curves.png")


def _probe_curves(
    sweep: SweepRuns, runs: list[RunData], probe: str, epoch: str = "first"
) -> list[dict[str, Any]]:
    """Each run's result of ``probe`` at its first (init) or last recorded epoch."""
    out = []
    for run in runs:
        found = sweep.probe(run.run_id, probe)
        if found:
            out.append(found[min(found) if epoch == "first" else max(found)])
    return out


def _probe_groups(
    sweep: SweepRuns, runs: list[RunData], grid: list[str], probe: str, epoch: str = "first"
) -> dict[str, list[dict[str, Any]]]:
    """Each configuration (grid values but the seed) with its runs' results of ``probe``."""
    configs = group(runs, lambda r: label(r, [a for a in grid if a != SEED]))
    found = {n: _probe_curves(sweep, members, probe, epoch) for n, members in configs.items()}
    return {n: f for n, f in found.items() if f}


def _mean_curve(curves: list[list[float]]) -> list[float]:
    n = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(n)]


def _signal_propagation(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report
) -> None:
    """Forward and backward variance per unit at initialization, log scale (mean over seeds)."""
    import matplotlib.pyplot as plt

    found = _probe_groups(sweep, sweep.runs, grid, "spp")
    if not found:
        report.skipped.append(("signal_propagation.png", "no spp probe recorded"))
        return
    fig, (fwd_ax, bwd_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = []
    for name, results in found.items():
        fwd = _mean_curve([r["fwd_var"] for r in results])
        bwd = _mean_curve([r["bwd_var"] for r in results])
        fwd_ax.plot(range(1, len(fwd) + 1), fwd, marker=".", label=name)
        bwd_ax.plot(range(1, len(bwd) + 1), bwd, marker=".", label=name)
        rows += [[name, i + 1, f, b] for i, (f, b) in enumerate(zip(fwd, bwd, strict=False))]
    for ax, what in ((fwd_ax, "forward variance"), (bwd_ax, "backward variance (dL/dx)")):
        ax.set_yscale("log")
        ax.set_xlabel("unit")
        ax.set_ylabel(what)
        _legend(ax, len(found))
    fig.suptitle(f"{sweep.experiment}: signal propagation at initialization (mean over seeds)")
    _save(fig, report, "signal_propagation.png")
    _write_csv(
        report.out / "signal_propagation.csv",
        ["configuration", "unit", "fwd_var", "bwd_var"],
        rows,
    )
    report.drawn.append("signal_propagation.csv")


HESSIAN_COLUMNS = ["configuration", "depth", "seeds", "cond_mean", "cond_std", "index_mean"]
HESSIAN_COLUMNS += ["index_std", "zero_hessian"]


def _hessian(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
    """Condition number and index at initialization against depth, per shortcut depth n."""
    import matplotlib.pyplot as plt

    at_init = {r.run_id: _probe_curves(sweep, [r], "hessian") for r in sweep.runs}
    runs = [r for r in sweep.runs if at_init[r.run_id]]
    if not runs:
        report.skipped.append(("hessian.png", "no hessian probe recorded"))
        return
    rest = [a for a in grid if a not in (DEPTH, SEED)]
    configs = group(runs, lambda r: label(r, rest))
    fig, (cond_ax, index_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = []
    for name, members in configs.items():
        by_depth = group(members, lambda r: r.params.get(DEPTH, "?"))
        xs = sorted(by_depth, key=lambda d: int(d) if d.isdigit() else 0)
        conds, indices = [], []
        for d in xs:
            results = [at_init[r.run_id][0] for r in by_depth[d]]
            cond = [float(h["cond"]) for h in results]
            index = [float(h["index"]) for h in results]
            zero = all(h.get("zero") for h in results)
            rows.append([name, d, len(results), *mean_std(cond), *mean_std(index), zero])
            conds.append(statistics.fmean(cond))
            indices.append(statistics.fmean(index))
        x = [int(d) if d.isdigit() else i for i, d in enumerate(xs)]
        finite = [(a, c) for a, c in zip(x, conds, strict=True) if math.isfinite(c)]
        if finite:
            cond_ax.plot(*zip(*finite, strict=True), marker="o", label=name)
        index_ax.plot(x, indices, marker="o", label=name)
    cond_ax.set_yscale("log")
    cond_ax.set_ylabel("condition number max|λ| / P10 (∞ not drawn: zero Hessian)")
    index_ax.set_ylabel("index (fraction of λ < 0)")
    for ax in (cond_ax, index_ax):
        ax.set_xlabel("depth")
        _legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: Hessian at initialization")
    _save(fig, report, "hessian.png")
    _write_csv(
        report.out / "hessian.csv",
        HESSIAN_COLUMNS,
        rows,
    )
    report.drawn.append("hessian.csv")


def _hessian_training(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report
) -> None:
    """The Hessian's index and largest |λ| against the epoch, per configuration (Demystifying
    ResNet, Figs. 5-6), from the probes a sweep ran during training (``hessian: {every: k}``)."""
    import matplotlib.pyplot as plt

    series = {r.run_id: sweep.probe(r.run_id, "hessian") or {} for r in finished}
    runs = [r for r in finished if len(series[r.run_id]) > 1]
    if not runs:
        report.skipped.append(
            ("hessian_training.png", "no hessian probe recorded during training (every: k)")
        )
        return
    configs = group(runs, lambda r: label(r, [a for a in grid if a != SEED]))
    fig, (index_ax, max_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = []
    for name, members in configs.items():
        epochs = sorted(set.intersection(*(set(series[r.run_id]) for r in members)))
        index = [[float(series[r.run_id][e]["index"]) for r in members] for e in epochs]
        largest = [[float(series[r.run_id][e]["max_abs"]) for r in members] for e in epochs]
        index_ax.plot(epochs, [statistics.fmean(v) for v in index], marker=".", label=name)
        max_ax.plot(epochs, [statistics.fmean(v) for v in largest], marker=".", label=name)
        for e, i, m in zip(epochs, index, largest, strict=True):
            rows.append([name, e, len(members), *mean_std(i), *mean_std(m)])
    index_ax.set_ylabel("index (fraction of λ < 0)")
    max_ax.set_ylabel("max |λ|")
    max_ax.set_yscale("symlog")
    for ax in (index_ax, max_ax):
        ax.set_xlabel("epoch (0: initialization)")
        _legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: Hessian during training (mean over seeds)")
    _save(fig, report, "hessian_training.png")
    header = ["configuration", "epoch", "seeds", "index_mean", "index_std"]
    _write_csv(report.out / "hessian_training.csv", [*header, "max_abs_mean", "max_abs_std"], rows)
    report.drawn.append("hessian_training.csv")


def _weight_norms(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report
) -> None:
    """The mean Frobenius norm of the weights over epochs (Demystifying ResNet Figs. 2-3)."""
    import matplotlib.pyplot as plt

    runs = [r for r in sweep.runs if len(r.history.get("weights.all", [])) > 1]
    if not runs:
        report.skipped.append(("weight_norms.png", "no weights probe recorded over epochs"))
        return
    configs = group(runs, lambda r: label(r, [a for a in grid if a != SEED]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, members in configs.items():
        series = [dict(r.history["weights.all"]) for r in members]
        steps = sorted(set.intersection(*(set(s) for s in series)))
        _band(ax, [float(s) for s in steps], [[s[k] for s in series] for k in steps], name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean Frobenius norm of the weights")
    _legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: weight norms")
    _save(fig, report, "weight_norms.png")


def _lesion(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
    """Veit et al.'s lesion study after training: test error against the number k of units
    removed at random (a ResNet degrades smoothly, a plain net collapses at k = 1), and test
    accuracy with each single unit's branch removed."""
    import matplotlib.pyplot as plt

    found = _probe_groups(sweep, finished, grid, "lesion", "last")
    if not found:
        report.skipped.append(("lesion.png", "no lesion probe recorded"))
        return
    fig, (by_k, single_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = []
    for name, results in found.items():
        curves = [r["error_by_k"] for r in results if "error_by_k" in r]
        if curves:
            errors = _mean_curve(curves)
            ks = list(range(1, len(errors) + 1))
            by_k.plot(ks, errors, marker=".", label=name)
            rows += [[name, k, e, len(curves)] for k, e in zip(ks, errors, strict=True)]
        single = _mean_curve([r["single"] for r in results])
        whole = statistics.fmean(r["whole"] for r in results)
        (line,) = single_ax.plot(range(1, len(single) + 1), single, marker=".", label=name)
        single_ax.axhline(whole, color=line.get_color(), linestyle=":", linewidth=1)
    by_k.set_xlabel("units removed at random (k)")
    by_k.set_ylabel("test error (mean over draws and seeds)")
    single_ax.set_xlabel("unit removed")
    single_ax.set_ylabel("test accuracy (dotted: nothing removed)")
    _legend(by_k, len(found))
    fig.suptitle(f"{sweep.experiment}: lesions")
    _save(fig, report, "lesion.png")
    if rows:
        _write_csv(report.out / "lesion.csv", ["configuration", "k", "test_error", "seeds"], rows)
        report.drawn.append("lesion.csv")


def _shattered(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
    """Autocorrelation of input gradients by lag, against white and brown noise."""
    import matplotlib.pyplot as plt

    found = _probe_groups(sweep, sweep.runs, grid, "shattered")
    if not found:
        report.skipped.append(("shattered.png", "no shattered probe recorded"))
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    first = next(iter(found.values()))[0]
    ax.plot(first["white"], color="gray", linestyle="--", label="white noise")
    ax.plot(first["brown"], color="saddlebrown", linestyle="--", label="brown noise")
    for name, results in found.items():
        ax.plot(_mean_curve([r["autocorr"] for r in results]), marker=".", label=name)
    ax.set_xlabel("lag")
    ax.set_ylabel("autocorrelation of dOutput/dInput")
    ax.legend(fontsize=7)
    fig.suptitle(f"{sweep.experiment}: shattered gradients at initialization")
    _save(fig, report, "shattered.png")


def _search(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
    """Each cell's candidates: the searched value against the seed mean of the objective."""
    import matplotlib.pyplot as plt

    spec = sweep.artifact(sweep.parent.run_id, "sweep.resolved.json") or {}
    search = spec.get("search")
    searched = [r for r in sweep.runs if "search_cell" in r.tags]
    if not search or not searched:
        report.skipped.append(("search.png", "the sweep has no search"))
        return
    param, metric = search["param"], search["objective"]["metric"]
    cells = group(searched, lambda r: label(r, [a for a in grid if a not in (SEED, param)]))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    rows = []
    for name, runs in cells.items():
        by_value = group(runs, lambda r: r.params[param])
        points = []
        for value, members in by_value.items():
            scores = [r.metrics[metric] for r in members if r.status == FINISHED]
            diverged = sum(r.status == DIVERGED for r in members)
            if scores:
                points.append((_number(value), statistics.fmean(scores)))
            rows.append([name, value, len(members), diverged, *_maybe(scores)])
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            ax.scatter(xs, ys, label=name, s=18)
    if search.get("log_uniform"):
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(f"{metric}, mean over finished seeds")
    _legend(ax, len(cells))
    fig.suptitle(f"{sweep.experiment}: search of {param} per cell")
    _save(fig, report, "search.png")
    _write_csv(
        report.out / "search.csv",
        ["cell", param, "seeds", "diverged", f"{metric}_mean", f"{metric}_std"],
        rows,
    )
    report.drawn.append("search.csv")


def _maybe(values: list[float]) -> list[Any]:
    return list(mean_std(values)) if values else ["", ""]
