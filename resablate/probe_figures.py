"""The figures and tables ``resablate report`` draws from the probes' JSON results (science.md §4):
signal propagation, the Hessian at initialization and during training, weight norms, lesions,
shattered gradients."""

from __future__ import annotations

import math
import statistics
from typing import Any

from resablate.figures import (
    DEPTH,
    SEED,
    Report,
    band,
    group,
    label,
    legend,
    mean_std,
    save,
)
from resablate.ledger import RunData, SweepRuns


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


def signal_propagation(
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
        legend(ax, len(found))
    fig.suptitle(f"{sweep.experiment}: signal propagation at initialization (mean over seeds)")
    save(fig, report, "signal_propagation.png")
    report.table("signal_propagation.csv", ["configuration", "unit", "fwd_var", "bwd_var"], rows)


HESSIAN_COLUMNS = ["configuration", "depth", "seeds", "cond_mean", "cond_std", "index_mean"]
HESSIAN_COLUMNS += ["index_std", "zero_hessian"]


def hessian(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
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
        legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: Hessian at initialization")
    save(fig, report, "hessian.png")
    report.table("hessian.csv", HESSIAN_COLUMNS, rows)


def hessian_training(
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
        legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: Hessian during training (mean over seeds)")
    save(fig, report, "hessian_training.png")
    header = ["configuration", "epoch", "seeds", "index_mean", "index_std"]
    report.table("hessian_training.csv", [*header, "max_abs_mean", "max_abs_std"], rows)


def weight_norms(
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
        band(ax, [float(s) for s in steps], [[s[k] for s in series] for k in steps], name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean Frobenius norm of the weights")
    legend(ax, len(configs))
    fig.suptitle(f"{sweep.experiment}: weight norms")
    save(fig, report, "weight_norms.png")


def lesion(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
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
    legend(by_k, len(found))
    fig.suptitle(f"{sweep.experiment}: lesions")
    save(fig, report, "lesion.png")
    if rows:
        report.table("lesion.csv", ["configuration", "k", "test_error", "seeds"], rows)


def shattered(sweep: SweepRuns, finished: list[RunData], grid: list[str], report: Report) -> None:
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
    save(fig, report, "shattered.png")
