"""The figures and tables ``resablate report`` draws from the probes' JSON results (science.md §4):
signal propagation, the Hessian at initialization and during training, weight norms, lesions,
shattered gradients."""

from __future__ import annotations

import math
import statistics
from typing import Any

from resablate.analysis.figures import (
    DEPTH,
    SEED,
    Panels,
    ReportFolder,
    at_init,
    band,
    figure,
    finish,
    group,
    mean_std,
    one_per_net,
    panels,
    save,
    suptitle,
)
from resablate.tracking.ledger import RunData, SweepRuns


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


def _probe_panels(
    sweep: SweepRuns,
    runs: list[RunData],
    axes: list[str],
    probe: str,
    epoch: str = "first",
) -> tuple[Panels, dict[str, list[dict[str, Any]]]]:
    """The configurations (``axes``' values) of the runs that recorded ``probe``, as a figure's
    panels, and each run's result by run id."""
    results = {r.run_id: _probe_curves(sweep, [r], probe, epoch) for r in runs}
    kept = [r for r in runs if results[r.run_id]]
    return panels(kept, axes), {r.run_id: results[r.run_id] for r in kept}


def _results(runs: list[RunData], found: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [result for r in runs for result in found[r.run_id]]


def _mean_curve(curves: list[list[float]]) -> list[float]:
    n = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(n)]


def signal_propagation(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Forward and backward variance per unit at initialization, log scale (mean over seeds);
    runs that differ only in how they train are one net at init, drawn once."""
    axes = [a for a in at_init(grid) if a != SEED]
    lines, found = _probe_panels(sweep, one_per_net(sweep.runs, axes), axes, "spp")
    if not lines.lines:
        report.skipped.append(("signal_propagation.png", "no spp probe recorded"))
        return
    fig, grid_axes = figure(lines, 2)
    rows = []
    for (title, configs), (fwd_ax, bwd_ax) in zip(lines.rows, grid_axes, strict=True):
        for name, members in configs.items():
            results = _results(members, found)
            fwd = _mean_curve([r["fwd_var"] for r in results])
            bwd = _mean_curve([r["bwd_var"] for r in results])
            style = lines.styles[name]
            fwd_ax.plot(range(1, len(fwd) + 1), fwd, label=name, **style)
            bwd_ax.plot(range(1, len(bwd) + 1), bwd, label=name, **style)
            where = f"{title} {name}".strip()
            rows += [[where, i + 1, f, b] for i, (f, b) in enumerate(zip(fwd, bwd, strict=False))]
        for ax, what in ((fwd_ax, "forward variance"), (bwd_ax, "backward variance (dL/dx)")):
            ax.set_yscale("log")
            ax.set_xlabel("unit")
            ax.set_ylabel(what)
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: signal propagation at initialization (mean over seeds)")
    save(fig, report, "signal_propagation.png")
    report.table("signal_propagation.csv", ["configuration", "unit", "fwd_var", "bwd_var"], rows)


HESSIAN_COLUMNS = ["configuration", "depth", "seeds", "cond_mean", "cond_std", "index_mean"]
HESSIAN_COLUMNS += ["index_std", "zero_hessian"]


def hessian(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Condition number and index at initialization against depth, per shortcut depth n; runs
    that differ only in how they train (the lr) are one net at init, counted once."""
    axes = [a for a in at_init(grid) if a != SEED]
    nets = one_per_net(sweep.runs, axes)
    at_init_ = {r.run_id: _probe_curves(sweep, [r], "hessian") for r in nets}
    runs = [r for r in nets if at_init_[r.run_id]]
    if not runs:
        report.skipped.append(("hessian.png", "no hessian probe recorded"))
        return
    lines = panels(runs, [a for a in axes if a != DEPTH])
    fig, grid_axes = figure(lines, 2)
    rows = []
    for (title, configs), (cond_ax, index_ax) in zip(lines.rows, grid_axes, strict=True):
        for name, members in configs.items():
            by_depth = group(members, lambda r: r.params.get(DEPTH, "?"))
            xs = sorted(by_depth, key=lambda d: int(d) if d.isdigit() else 0)
            conds, indices = [], []
            for d in xs:
                results = [at_init_[r.run_id][0] for r in by_depth[d]]
                cond = [float(h["cond"]) for h in results]
                index = [float(h["index"]) for h in results]
                zero = all(h.get("zero") for h in results)
                where = f"{title} {name}".strip()
                rows.append([where, d, len(results), *mean_std(cond), *mean_std(index), zero])
                conds.append(statistics.fmean(cond))
                indices.append(statistics.fmean(index))
            x = [int(d) if d.isdigit() else i for i, d in enumerate(xs)]
            finite = [(a, c) for a, c in zip(x, conds, strict=True) if math.isfinite(c)]
            style = lines.styles[name]
            if finite:
                cond_ax.plot(*zip(*finite, strict=True), label=name, **style)
            index_ax.plot(x, indices, label=name, **style)
        cond_ax.set_yscale("log")
        cond_ax.set_ylabel("condition number max|λ| / P10\n(∞ not drawn: zero Hessian)")
        index_ax.set_ylabel("index (fraction of λ < 0)")
        for ax in (cond_ax, index_ax):
            ax.set_xlabel("depth")
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: Hessian at initialization")
    save(fig, report, "hessian.png")
    report.table("hessian.csv", HESSIAN_COLUMNS, rows)


def hessian_training(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """The Hessian's index and largest |λ| against the epoch, per configuration (Demystifying
    ResNet, Figs. 5-6), from the probes a sweep ran during training (``hessian: {every: k}``)."""
    series = {r.run_id: sweep.probe(r.run_id, "hessian") or {} for r in finished}
    runs = [r for r in finished if len(series[r.run_id]) > 1]
    if not runs:
        report.skipped.append(
            ("hessian_training.png", "no hessian probe recorded during training (every: k)")
        )
        return
    lines = panels(runs, [a for a in grid if a != SEED])
    fig, grid_axes = figure(lines, 2)
    rows = []
    for (title, configs), (index_ax, max_ax) in zip(lines.rows, grid_axes, strict=True):
        for name, members in configs.items():
            epochs = sorted(set.intersection(*(set(series[r.run_id]) for r in members)))
            index = [[float(series[r.run_id][e]["index"]) for r in members] for e in epochs]
            largest = [[float(series[r.run_id][e]["max_abs"]) for r in members] for e in epochs]
            style = lines.styles[name]
            mean_index = [statistics.fmean(v) for v in index]
            index_ax.plot(epochs, mean_index, label=name, **style)
            mean_max = [statistics.fmean(v) for v in largest]
            max_ax.plot(epochs, mean_max, label=name, **style)
            for e, i, m in zip(epochs, index, largest, strict=True):
                where = f"{title} {name}".strip()
                rows.append([where, e, len(members), *mean_std(i), *mean_std(m)])
        index_ax.set_ylabel("index (fraction of λ < 0)")
        max_ax.set_ylabel("max |λ|")
        max_ax.set_yscale("symlog")
        for ax in (index_ax, max_ax):
            ax.set_xlabel("epoch (0: initialization)")
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: Hessian during training (mean over seeds)")
    save(fig, report, "hessian_training.png")
    header = ["configuration", "epoch", "seeds", "index_mean", "index_std"]
    report.table("hessian_training.csv", [*header, "max_abs_mean", "max_abs_std"], rows)


def weight_norms(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """The mean Frobenius norm of the weights over epochs (Demystifying ResNet Figs. 2-3)."""
    runs = [r for r in sweep.runs if len(r.history.get("weights.all", [])) > 1]
    if not runs:
        report.skipped.append(("weight_norms.png", "no weights probe recorded over epochs"))
        return
    lines = panels(runs, [a for a in grid if a != SEED])
    fig, grid_axes = figure(lines, 1, size=(6.0, 3.6))
    for (_, configs), (ax,) in zip(lines.rows, grid_axes, strict=True):
        for name, members in configs.items():
            series = [dict(r.history["weights.all"]) for r in members]
            steps = sorted(set.intersection(*(set(s) for s in series)))
            values = [[s[k] for s in series] for k in steps]
            band(ax, [float(s) for s in steps], values, name, **lines.styles[name])
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean Frobenius norm of the weights")
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: weight norms")
    save(fig, report, "weight_norms.png")


def lesion(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Veit et al.'s lesion study after training: test error against the number k of units
    removed at random (a ResNet degrades smoothly, a plain net collapses at k = 1), and test
    accuracy with each single unit's branch removed."""
    lines, found = _probe_panels(sweep, finished, [a for a in grid if a != SEED], "lesion", "last")
    if not lines.lines:
        report.skipped.append(("lesion.png", "no lesion probe recorded"))
        return
    fig, grid_axes = figure(lines, 2)
    rows = []
    for (title, configs), (by_k, single_ax) in zip(lines.rows, grid_axes, strict=True):
        for name, members in configs.items():
            results = _results(members, found)
            style = lines.styles[name]
            curves = [r["error_by_k"] for r in results if "error_by_k" in r]
            if curves:
                errors = _mean_curve(curves)
                ks = list(range(1, len(errors) + 1))
                by_k.plot(ks, errors, label=name, **style)
                where = f"{title} {name}".strip()
                rows += [[where, k, e, len(curves)] for k, e in zip(ks, errors, strict=True)]
            single = _mean_curve([r["single"] for r in results])
            whole = statistics.fmean(r["whole"] for r in results)
            single_ax.plot(range(1, len(single) + 1), single, label=name, **style)
            single_ax.axhline(whole, color=style["color"], linestyle=":", linewidth=1)
        by_k.set_xlabel("units removed at random (k)")
        by_k.set_ylabel("test error\n(mean over draws and seeds)")
        single_ax.set_xlabel("unit removed")
        single_ax.set_ylabel("test accuracy\n(dotted: nothing removed)")
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: lesions")
    save(fig, report, "lesion.png")
    if rows:
        report.table("lesion.csv", ["configuration", "k", "test_error", "seeds"], rows)


def shattered(
    sweep: SweepRuns, finished: list[RunData], grid: list[str], report: ReportFolder
) -> None:
    """Autocorrelation of input gradients by lag at init, against white and brown noise."""
    axes = [a for a in at_init(grid) if a != SEED]
    lines, found = _probe_panels(sweep, one_per_net(sweep.runs, axes), axes, "shattered")
    if not lines.lines:
        report.skipped.append(("shattered.png", "no shattered probe recorded"))
        return
    fig, grid_axes = figure(lines, 1, size=(6.0, 3.6))
    first = next(iter(found.values()))[0]
    for (_, configs), (ax,) in zip(lines.rows, grid_axes, strict=True):
        ax.plot(first["white"], color="gray", linestyle="--", label="white noise")
        ax.plot(first["brown"], color="saddlebrown", linestyle="--", label="brown noise")
        for name, members in configs.items():
            curve = _mean_curve([r["autocorr"] for r in _results(members, found)])
            ax.plot(curve, label=name, **lines.styles[name])
        ax.set_xlabel("lag")
        ax.set_ylabel("autocorrelation of dOutput/dInput")
    finish(fig, grid_axes, integer_x=True)
    suptitle(fig, f"{sweep.experiment}: shattered gradients at initialization")
    save(fig, report, "shattered.png")
