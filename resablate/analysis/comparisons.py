"""Every configuration against a reference configuration, on the final value of each metric.

A *configuration* is a trial's grid values without its seed; its seeds are the samples. For each
configuration and metric: the difference of means (configuration − reference), its 95%
confidence interval, a two-sided p-value, and the probability of improvement. The test is
Student's paired t-test when both arms ran the same seeds (each seed's difference is one sample),
Welch's t otherwise. The interval is that test's own t-interval below :data:`BOOTSTRAP_FROM`
seeds: a bootstrap of three seeds resamples three numbers, and its percentile interval is little
more than their range, far narrower than the uncertainty; from :data:`BOOTSTRAP_FROM` seeds on, a
seeded percentile bootstrap, which assumes no normality. The probability of improvement
P(A > B) (Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks") is
the share of seed pairs in which the configuration's value exceeds the reference's, ties
counting half: each common seed once where the seeds are paired, every pair across the arms
otherwise (the Mann-Whitney U over n·m). Holm's step-down adjustment then controls the
family-wise error over the whole table. Fewer than :data:`MIN_SEEDS` finished seeds in either arm
is said in the table instead of a test. The tests, intervals and U are scipy.stats'.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resablate.analysis.figures import SEED, ReportFolder, label
from resablate.results import FINISHED, METRICS
from resablate.tracking.ledger import RunData, SweepRuns

MIN_SEEDS = 3  # per arm, for a test
BOOTSTRAP_FROM = 10  # seeds per arm from which the interval is a bootstrap, a t-interval below
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
# last values that describe how a run ended rather than what it measured
NOT_COMPARED = ("lr", "epoch_time", "last_finite_loss", "diverged_epoch")


@dataclass
class Comparison:
    configuration: str
    metric: str
    n: int  # finished seeds with the metric, this configuration
    n_reference: int
    difference: float  # mean(configuration) − mean(reference)
    test: str  # "paired t", "Welch t", or why there is none
    low: float | None = None  # the 95% interval of the difference
    high: float | None = None
    interval: str = ""  # how the interval was taken: "t" or "bootstrap" ("" when none)
    p: float | None = None
    p_holm: float | None = None
    p_greater: float | None = None  # P(configuration > reference), ties half

    @property
    def shown_interval(self) -> str:
        """The interval as text, with how it was taken: "[0.1, 0.2] (95% t)"."""
        if self.low is None or self.high is None:
            return "—"
        return f"[{self.low:.4g}, {self.high:.4g}] ({CONFIDENCE:.0%} {self.interval})"


def finals(runs: Sequence[RunData], metric: str) -> dict[str, float]:
    """Seed -> the final value of ``metric`` of each finished run that recorded it."""
    return {
        r.params.get(SEED, str(i)): r.metrics[metric]
        for i, r in enumerate(runs)
        if r.status == FINISHED and metric in r.metrics and math.isfinite(r.metrics[metric])
    }


def compare(configurations: Mapping[str, Sequence[RunData]], reference: str) -> list[Comparison]:
    """Each configuration but ``reference`` against it, on every metric both recorded."""
    base = configurations[reference]
    recorded = {m for r in base for m in r.metrics if m not in NOT_COMPARED}
    metrics = [m for m in METRICS if m in recorded] + sorted(recorded - set(METRICS))
    ref = {metric: finals(base, metric) for metric in metrics}
    out = []
    for name, runs in configurations.items():
        for metric in metrics if name != reference else ():
            arm = finals(runs, metric)
            if arm and ref[metric]:
                out.append(one(name, metric, arm, ref[metric]))
    tested = [(c, c.p) for c in out if c.p is not None]
    for (found, _), adjusted in zip(tested, holm([p for _, p in tested]), strict=True):
        found.p_holm = adjusted
    return out


def one(name: str, metric: str, arm: dict[str, float], ref: dict[str, float]) -> Comparison:
    """One cell of the table: ``arm`` against ``ref`` (seed -> final value)."""
    from scipy import stats

    x, y = list(arm.values()), list(ref.values())
    found = Comparison(
        name, metric, len(x), len(y), statistics.fmean(x) - statistics.fmean(y), "Welch t"
    )
    found.p_greater = p_greater(arm, ref)
    if min(len(x), len(y)) < MIN_SEEDS:
        found.test = f"too few seeds ({min(len(x), len(y))} < {MIN_SEEDS})"
        return found
    paired = set(arm) == set(ref)
    seeds = sorted(arm)
    samples: tuple[list[float], ...] = ([arm[s] - ref[s] for s in seeds],) if paired else (x, y)
    found.test = "paired t" if paired else found.test
    if all(_alike(sample) for sample in samples):  # no spread beyond float rounding
        found.test += ", no variance"
        return found
    if paired:
        tested = stats.ttest_rel([arm[s] for s in seeds], [ref[s] for s in seeds])
    else:
        tested = stats.ttest_ind(x, y, equal_var=False)
    if math.isnan(tested.pvalue):  # no spread at all: every sample alike
        found.test += ", no variance"
        return found
    found.p = float(tested.pvalue)
    if min(len(x), len(y)) < BOOTSTRAP_FROM:
        found.interval = "t"  # the test's own: paired differences' or Welch's degrees of freedom
        interval = tested.confidence_interval(CONFIDENCE)
    else:
        found.interval = "bootstrap"
        interval = stats.bootstrap(
            samples,
            _mean if paired else _difference,
            confidence_level=CONFIDENCE,
            method="percentile",  # BCa's acceleration is unstable with few seeds
            rng=BOOTSTRAP_SEED,
            vectorized=True,
        ).confidence_interval
    found.low, found.high = float(interval.low), float(interval.high)
    return found


def _alike(values: list[float]) -> bool:
    """Equal up to float rounding (a plain net at chance on every seed, 1.0 ± 1e-16): a t-test
    on them divides rounding noise by rounding noise."""
    scale = max(1.0, *(abs(v) for v in values))
    return max(values) - min(values) <= 1e-12 * scale


def p_greater(arm: dict[str, float], ref: dict[str, float]) -> float:
    """P(arm > ref) over seed pairs, ties half (the probability of improvement, Bouthillier et
    al. 2021): over the common seeds where both arms ran the same ones, as the paired test
    pairs them, else over every pair across the arms (Mann-Whitney's U over n·m)."""
    from scipy import stats

    if set(arm) == set(ref):
        wins = [1.0 if arm[s] > ref[s] else 0.5 if arm[s] == ref[s] else 0.0 for s in arm]
        return statistics.fmean(wins)
    u = stats.mannwhitneyu(list(arm.values()), list(ref.values())).statistic
    return float(u) / (len(arm) * len(ref))


def _mean(x: Any, axis: int = -1) -> Any:
    return x.mean(axis=axis)


def _difference(x: Any, y: Any, axis: int = -1) -> Any:
    return x.mean(axis=axis) - y.mean(axis=axis)


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given: the k-th smallest
    p times (m − k + 1), made non-decreasing in that order and capped at 1."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted = [0.0] * len(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def reference_of(
    configurations: Mapping[str, Sequence[RunData]],
    axes: Sequence[str],
    first: Mapping[str, Any],
    chosen: Mapping[str, Any] | None = None,
) -> str | None:
    """The reference configuration: the one whose runs have the ``chosen`` values (grid axis ->
    value, the sweep's ``report.reference``), else the first value of every grid axis
    (``first``: the plan's first trial's grid values); None when no configuration matches."""
    wanted = {**first, **(chosen or {})}
    for name, runs in configurations.items():
        params = runs[0].params
        if all(_same(params.get(a), wanted[a]) for a in axes if a != SEED and a in wanted):
            return name
    return None


def _same(param: str | None, value: Any) -> bool:
    """An MLflow param (text) against a YAML value."""
    import json

    if param is None:
        return False
    try:
        parsed = json.loads(param)  # numbers, booleans, lists; -6.0 == -6
    except ValueError:
        parsed = param  # a name
    return bool(parsed == value)


def configurations(runs: Sequence[RunData], axes: Sequence[str]) -> dict[str, list[RunData]]:
    """The runs grouped by their grid values without the seed."""
    cell_axes = [a for a in axes if a != SEED]
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(label(run, cell_axes), []).append(run)
    return out


def table(
    sweep: SweepRuns,
    grid: Sequence[str],
    report: ReportFolder,
    chosen: Mapping[str, Any] | None = None,
) -> None:
    """``comparisons.md`` and ``comparisons.csv``: every configuration against the reference
    (``chosen``: the sweep file's ``report.reference``, default the one recorded with the
    sweep). A search's candidates are not configurations of the grid: its trials are left out."""
    runs = [r for r in sweep.runs if "search_cell" not in r.tags]
    grid = [a for a in grid if a != SEED]
    groups = configurations(runs, grid)
    if len(groups) < 2:
        report.skipped.append(("comparisons.md", "fewer than two configurations to compare"))
        return
    spec = sweep.recorded("sweep.resolved.json") or {}
    plan = sweep.recorded("plan.json") or [{}]
    if chosen is None:
        chosen = (spec.get("report") or {}).get("reference") or {}
    reference = reference_of(groups, grid, plan[0].get("grid", {}), chosen)
    if reference is None:
        why = f"no configuration has the reference values {chosen}"
        report.skipped.append(("comparisons.md", why))
        return
    found = compare(groups, reference)
    header = ["configuration", "metric", "seeds", "reference_seeds", "difference"]
    header += ["ci_low", "ci_high", "interval", "test", "p", "p_holm", "p_greater"]
    rows = [
        [
            c.configuration,
            c.metric,
            c.n,
            c.n_reference,
            c.difference,
            *_blank(c.low, c.high),
            c.interval,
            c.test,
            *_blank(c.p, c.p_holm, c.p_greater),
        ]
        for c in found
    ]
    lines = [
        f"# Comparisons against `{reference}`",
        "",
        f"Difference of means over finished seeds (configuration − reference), its"
        f" {CONFIDENCE:.0%} interval (the test's t-interval below {BOOTSTRAP_FROM} seeds, a"
        f" bootstrap from {BOOTSTRAP_FROM}), the test's p, Holm's adjusted p over the"
        f" {sum(c.p is not None for c in found)} tests of this table, and P(>): the share of"
        " seed pairs in which the configuration's value exceeds the reference's (ties half).",
        "",
        "| configuration | metric | seeds | difference | 95% CI | test | p | p (Holm) | P(>) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in found:
        lines.append(
            f"| {c.configuration} | {c.metric} | {c.n} vs {c.n_reference} | {c.difference:.4g}"
            f" | {c.shown_interval} | {c.test} | {_g(c.p)} | {_g(c.p_holm)} | {_g(c.p_greater)} |"
        )
    report.text("comparisons.md", lines)
    report.table("comparisons.csv", header, rows)


def _blank(*values: float | None) -> list[Any]:
    return ["" if v is None else v for v in values]


def _g(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
