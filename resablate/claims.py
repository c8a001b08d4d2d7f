"""A study's claims (the sweep file's ``claims:``) tested on its recorded runs.

Each claim selects runs by grid values (``where``, and ``a`` / ``b`` for a comparison), reads one
metric per run (its last value, or step 0 for ``at: init``) and ends in one verdict:

- **holds**: the data show it (a significant test where the claim is statistical);
- **contradicted**: the data show the opposite, or a value claim fails;
- **inconclusive**: a test that is not significant, or too few seeds for one;
- **not measured**: no recorded run is what the claim speaks of (a ``cpu`` profile without the
  arm, a metric the runs did not record).

``compare`` uses :func:`resablate.comparisons.one` (paired t over common seeds, Welch's t
otherwise; the test's t-interval below 10 seeds, a bootstrap from 10; the probability that a
beats b over seed pairs) with Holm's correction over the file's compare claims;
``trend`` uses Spearman's rank correlation with a permutation p-value
(scipy.stats.permutation_test: every pairing, exact, for up to 7 runs; 9,999 seeded resamples
beyond), so a handful of depths is judged for what it is.
A trend or value claim is judged on each configuration its ``where`` leaves, and holds only when
it holds on every one. Statistics are scipy.stats'.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resablate.comparisons import MIN_SEEDS, _same, holm, one
from resablate.errors import UserError
from resablate.figures import SEED, Report, group, label, number
from resablate.ledger import RunData, SweepRuns
from resablate.options import ClaimSpec
from resablate.results import DIVERGED, FINISHED

HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "holds",
    "contradicted",
    "inconclusive",
    "not measured",
)
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)
ALPHA = 0.05
PERMUTATIONS = 9999  # resamples when the pairings are too many to enumerate


@dataclass
class Verdict:
    claim: ClaimSpec
    verdict: str
    measured: str  # the number(s) the verdict rests on, as text
    p: float | None = None
    p_holm: float | None = None
    difference: float | None = None  # compare: mean(a) − mean(b)
    p_beats: float | None = None  # compare: P(a beats b) over seed pairs, ties half
    parts: list[str] = field(default_factory=list)  # per configuration, for a trend or value


def select(runs: Sequence[RunData], chosen: Mapping[str, Any]) -> list[RunData]:
    """The runs whose params have the ``chosen`` values (a list: any of its values)."""
    return [
        run
        for run in runs
        if all(
            any(
                _same(run.params.get(axis), v)
                for v in (want if isinstance(want, list) else [want])
            )
            for axis, want in chosen.items()
        )
    ]


def value(run: RunData, claim: ClaimSpec) -> float | None:
    """The run's value of the claim's metric: at init its step-0 value (whatever happened
    later); at the last epoch its final value, ``claim.diverged`` (else NaN: against the claim)
    for a diverged run; None when the run did not record it or ended otherwise."""
    if claim.at == "init":
        return next((v for step, v in run.history.get(claim.metric, []) if step == 0), None)
    if run.status == DIVERGED:
        return math.nan if claim.diverged is None else claim.diverged
    if run.status != FINISHED:
        return None
    return run.metrics.get(claim.metric)


def searched_best(sweep: SweepRuns, runs: list[RunData]) -> list[RunData]:
    """A search's candidates out, each searched cell's best candidate's seeds in."""
    spec = sweep.recorded("sweep.resolved.json") or {}
    best = sweep.recorded("search.json") or {}
    param = (spec.get("search") or {}).get("param")
    kept = []
    for run in runs:
        cell = run.tags.get("search_cell")
        if cell is None:
            kept.append(run)
        elif param and cell in best and best[cell]["best"] is not None:
            mine = number(run.params.get(param))
            if math.isclose(mine, float(best[cell]["best"]), rel_tol=1e-9):
                kept.append(run)
    return kept


def evaluate(
    claims: Sequence[ClaimSpec], runs: Sequence[RunData], axes: Sequence[str]
) -> list[Verdict]:
    """Every claim's verdict on ``runs`` (their grid ``axes``); Holm over the compare claims."""
    cells = [a for a in axes if a != SEED]
    out = []
    for claim in claims:
        chosen = select(runs, claim.where)
        if claim.compare is not None:
            out.append(_compare(claim, chosen, cells))
        elif claim.trend is not None:
            out.append(_trend(claim, chosen, cells))
        else:
            out.append(_value(claim, chosen, cells))
    tested = [v for v in out if v.claim.compare is not None and v.p is not None]
    for found, adjusted in zip(
        tested, holm([v.p for v in tested if v.p is not None]), strict=True
    ):
        found.p_holm = adjusted
        found.measured += f", Holm p = {adjusted:.3g}"
        if adjusted < ALPHA and found.difference is not None:
            better = _better(found.claim, found.difference)
            found.verdict = HOLDS if better else CONTRADICTED
        else:
            found.verdict = INCONCLUSIVE
    return out


def _not_measured(claim: ClaimSpec, why: str) -> Verdict:
    return Verdict(claim, NOT_MEASURED, why)


def _configuration(
    claim: ClaimSpec, runs: list[RunData], cells: list[str], name: str, best_over: str | None
) -> tuple[list[RunData], str]:
    """One arm's runs (at its best ``best_over`` value, which the text returned names); an arm
    that matches several configurations is an error in the claim."""
    assert claim.compare is not None
    if best_over is not None:
        sign = 1.0 if claim.compare.better == "higher" else -1.0

        def score(at: list[RunData]) -> float:
            found = [value(r, claim) for r in at]
            known = [v for v in found if v is not None]
            if not known or any(math.isnan(v) for v in known):
                return -math.inf  # a diverged seed makes this value the worst
            return sign * statistics.fmean(known)

        by_value = group(runs, lambda r: r.params.get(best_over, "?"))
        top = max(by_value, key=lambda v: (score(by_value[v]), -number(v)))
        runs = by_value[top]
    others = [a for a in _varying(runs, cells) if a != best_over]
    found = group(runs, lambda r: label(r, others))
    if len(found) > 1:
        raise UserError(
            f"claim {claim.id}: arm {name} matches {len(found)} configurations"
            f" ({'; '.join(list(found)[:3])}...); name more grid axes in compare.{name}"
        )
    at = f" at best {_axis(best_over)}={runs[0].params.get(best_over)}" if best_over else ""
    return runs, at


def _compare(claim: ClaimSpec, chosen: list[RunData], cells: list[str]) -> Verdict:
    spec = claim.compare
    assert spec is not None
    a_runs, b_runs = select(chosen, spec.a), select(chosen, spec.b)
    missing = [n for n, r in (("a", a_runs), ("b", b_runs)) if not r]
    if missing:
        return _not_measured(claim, f"no run of arm {' or '.join(missing)} in this sweep")
    a_runs, a_at = _configuration(claim, a_runs, cells, "a", spec.best_over)
    b_runs, b_at = _configuration(claim, b_runs, cells, "b", spec.best_over)
    apart = [x for x in _varying(a_runs + b_runs, cells) if x != spec.best_over]
    a_name, b_name = label(a_runs[0], apart) + a_at, label(b_runs[0], apart) + b_at
    a, b = _finals(a_runs, claim), _finals(b_runs, claim)
    if not a or not b:
        return _not_measured(claim, f"{claim.metric} not recorded in arm {'a' if not a else 'b'}")
    if any(math.isnan(v) for v in [*a.values(), *b.values()]):
        return Verdict(claim, INCONCLUSIVE, "a diverged run and no `diverged:` value to count it")
    found = one(a_name, claim.metric, a, b)
    beats = _beats(claim, found.p_greater)
    measured = f"a − b = {found.difference:.4g}"
    if found.low is not None:
        measured += f" {found.shown_interval}"
    measured += f" ({a_name} vs {b_name}; {found.test}"
    shown = "" if beats is None else f", P(a beats b) = {beats:.2g}"
    if found.p is None:
        verdict = INCONCLUSIVE
        if min(found.n, found.n_reference) >= MIN_SEEDS and found.difference != 0:
            # no spread: every seed's difference alike; the sign is then beyond doubt
            verdict = HOLDS if _better(claim, found.difference) else CONTRADICTED
        return Verdict(
            claim, verdict, measured + shown + ")", difference=found.difference, p_beats=beats
        )
    measured += f", p = {found.p:.3g}{shown})"
    return Verdict(
        claim, INCONCLUSIVE, measured, p=found.p, difference=found.difference, p_beats=beats
    )


def _beats(claim: ClaimSpec, p_greater: float | None) -> float | None:
    """P(a beats b) in the claim's better direction from P(a > b), ties half: for "lower",
    P(a < b) = 1 − P(a > b), the ties' half staying with each side."""
    assert claim.compare is not None
    if p_greater is None:
        return None
    return p_greater if claim.compare.better == "higher" else 1.0 - p_greater


def _better(claim: ClaimSpec, difference: float) -> bool:
    """Whether the measured difference a − b points the way the claim says."""
    assert claim.compare is not None
    return difference > 0 if claim.compare.better == "higher" else difference < 0


def _finals(runs: list[RunData], claim: ClaimSpec) -> dict[str, float]:
    out = {}
    for i, run in enumerate(runs):
        found = value(run, claim)
        if found is not None:
            out[run.params.get(SEED, str(i))] = found
    return out


def _varying(runs: list[RunData], cells: list[str]) -> list[str]:
    """The grid axes whose values differ among ``runs``: what tells their configurations apart
    (the rest is the claim's selection)."""
    return [a for a in cells if len({r.params.get(a) for r in runs}) > 1]


def _shown(values: list[float]) -> str:
    if len(values) <= 5:
        return ", ".join(f"{v:.4g}" for v in values)
    return f"{min(values):.4g} to {max(values):.4g}"


def _trend(claim: ClaimSpec, chosen: list[RunData], cells: list[str]) -> Verdict:
    spec = claim.trend
    assert spec is not None
    rest = [a for a in _varying(chosen, cells) if a != spec.over]
    verdicts, parts = [], []
    for name, runs in group(chosen, lambda r: label(r, rest)).items():
        points = [(number(r.params.get(spec.over)), value(r, claim)) for r in runs]
        known = [(x, v) for x, v in points if v is not None and math.isfinite(v)]
        xs = sorted({x for x, _ in known})
        if len(xs) < 2:
            verdicts.append(NOT_MEASURED)
            parts.append(f"{name}: fewer than two values of {spec.over}")
            continue
        if spec.is_ == "flat":
            means = [statistics.fmean(v for x, v in known if x == at) for at in xs]
            scale = abs(statistics.fmean(means))
            spread = (max(means) - min(means)) / scale if scale else 0.0
            verdicts.append(HOLDS if spread <= spec.tolerance else CONTRADICTED)
            parts.append(
                f"{name}: spread {spread:.3g} of mean {statistics.fmean(means):.4g}"
                f" over {_axis(spec.over)} {xs[0]:g}–{xs[-1]:g} (tolerance {spec.tolerance:g})"
            )
            continue
        rho, p = spearman([x for x, _ in known], [v for _, v in known])
        sign = 1.0 if spec.is_ == "increasing" else -1.0
        if math.isnan(rho):  # every value alike: no trend at all
            verdicts.append(CONTRADICTED)
        elif p < ALPHA:
            verdicts.append(HOLDS if sign * rho > 0 else CONTRADICTED)
        else:
            verdicts.append(INCONCLUSIVE)
        parts.append(f"{name}: ρ = {rho:.3g}, p = {p:.3g} ({len(known)} runs)")
    text = "; ".join(p.removeprefix("(all): ") for p in parts)
    return Verdict(claim, _all(verdicts), text or "no run", parts=parts)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's ρ and its two-sided permutation p-value (exact up to 7 points, whose 5,040
    pairings are all counted; seeded resamples beyond)."""
    import numpy as np
    from scipy import stats

    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan, 1.0

    def rho(a: Any, axis: int = -1) -> Any:
        a = a - a.mean(axis=axis, keepdims=True)
        b = ry - ry.mean()
        return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum())

    found = stats.permutation_test(
        (rx,),
        rho,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=PERMUTATIONS,
        alternative="two-sided",
        rng=0,
    )
    return float(found.statistic), float(found.pvalue)


def _value(claim: ClaimSpec, chosen: list[RunData], cells: list[str]) -> Verdict:
    kind = claim.kind
    spec = getattr(claim, kind)
    verdicts, parts = [], []
    shown = _varying(chosen, cells)
    for name, runs in group(chosen, lambda r: label(r, shown)).items():
        values = [v for v in (value(r, claim) for r in runs) if v is not None]
        if not values:
            continue
        if spec.of == "mean":
            mean = statistics.fmean(values)
            holds = _satisfies(kind, mean, spec.value, spec.tolerance)
            parts.append(f"{name}: mean {mean:.4g} of {len(values)} ({_shown(values)})")
        else:
            ok = [_satisfies(kind, v, spec.value, spec.tolerance) for v in values]
            needed = len(values) if spec.of == "every" else len(values) // 2 + 1
            holds = sum(ok) >= needed
            parts.append(f"{name}: {sum(ok)} of {len(values)} runs ({_shown(values)})")
        verdicts.append(HOLDS if holds else CONTRADICTED)
    if not verdicts:
        where = ", ".join(f"{k}={v}" for k, v in claim.where.items()) or "any run"
        return _not_measured(claim, f"no run of this sweep records {claim.metric} at {where}")
    target = f"{kind} {spec.value:g}" + (f" ± {spec.tolerance:g}" if kind == "equals" else "")
    text = "; ".join(p.removeprefix("(all): ") for p in parts)
    return Verdict(claim, _all(verdicts), f"{target}: {text}", parts=parts)


def _satisfies(kind: str, v: float, target: float, tolerance: float) -> bool:
    if math.isnan(v):
        return False
    if kind == "equals":
        return abs(v - target) <= tolerance
    return v < target if kind == "below" else v > target


def _all(verdicts: list[str]) -> str:
    """One claim over several configurations: contradicted by any, holds only on all; some
    holding and some not measured is inconclusive."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if INCONCLUSIVE in verdicts or (NOT_MEASURED in verdicts and HOLDS in verdicts):
        return INCONCLUSIVE
    return HOLDS if HOLDS in verdicts else NOT_MEASURED


def _axis(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def logged(verdicts: Sequence[Verdict]) -> tuple[dict[str, str], dict[str, float]]:
    """The parent run's tags ``claim.<id>`` (the verdict) and metrics ``claim.<id>`` (1 where
    the claim holds, 0 where it is contradicted; none for the other verdicts)."""
    tags = {f"claim.{v.claim.id}": v.verdict for v in verdicts}
    metrics = {
        f"claim.{v.claim.id}": float(v.verdict == HOLDS)
        for v in verdicts
        if v.verdict in (HOLDS, CONTRADICTED)
    }
    return tags, metrics


def table(
    sweep: SweepRuns, claims: Sequence[ClaimSpec], grid: Sequence[str], report: Report
) -> list[Verdict]:
    """``claims.md`` and ``claims.csv``: each claim, what was measured and its verdict."""
    if not claims:
        report.skipped.append(("claims.md", "the sweep states no claims"))
        return []
    runs = searched_best(sweep, list(sweep.runs))
    for metric in {c.metric for c in claims if c.at == "init"}:
        for run in runs:  # step 0 of a metric whose history the report did not read
            if metric not in run.history and metric in run.metrics:
                run.history[metric] = sweep.store.get_metric_history(run.run_id, metric)
    found = evaluate(claims, runs, grid)
    counts = ", ".join(f"{sum(v.verdict == k for v in found)} {k}" for k in VERDICTS)
    lines = [
        f"# Claims: {counts}",  # the counts README's study table shows
        "",
        "| claim | says | verdict | measured |",
        "|---|---|---|---|",
        *(f"| {v.claim.id} | {v.claim.says} | **{v.verdict}** | {v.measured} |" for v in found),
    ]
    report.text("claims.md", lines)
    report.claims = lines[2:]
    header = ["claim", "kind", "metric", "at", "verdict", "p", "p_holm", "p_a_beats_b"]
    header += ["measured", "says"]
    rows = [
        [
            v.claim.id,
            v.claim.kind,
            v.claim.metric,
            v.claim.at,
            v.verdict,
            "" if v.p is None else v.p,
            "" if v.p_holm is None else v.p_holm,
            "" if v.p_beats is None else v.p_beats,
            v.measured,
            v.claim.says,
        ]
        for v in found
    ]
    report.table("claims.csv", header, rows)
    return found
