"""A study's claims (the sweep file's ``claims:``) tested on its recorded runs.

Each claim selects runs by grid values (``where``, and ``a`` / ``b`` for a comparison), reads one
metric per run (its last value, or step 0 for ``at: init``) and ends in one verdict:

- **holds**: the data show it (a significant test where the claim is statistical);
- **contradicted**: the data show the opposite, or a value claim fails;
- **inconclusive**: a test that is not significant, or too few seeds for one;
- **not measured**: no recorded run is what the claim speaks of (a ``cpu`` profile without the
  arm, a metric the runs did not record).

``compare`` uses :func:`resablate.analysis.comparisons.one` (paired t over common seeds, Welch's t
otherwise; the test's t-interval below 10 seeds, a bootstrap from 10; the probability that a
beats b over seed pairs) with Holm's correction over the file's compare claims;
``trend`` uses Spearman's rank correlation with a permutation p-value
(scipy.stats.permutation_test: every pairing, exact, for up to 7 runs; 9,999 seeded resamples
beyond), so a handful of depths is judged for what it is.
A trend or value claim is judged on each configuration its ``where`` leaves, and holds only when
it holds on every one. Statistics are scipy.stats'.

``compare.best_over`` puts each arm at its best value of a grid axis, chosen by
``compare.select_by`` (never by a test metric: :class:`resablate.spec.claims.CompareClaim`). An
optimum at the edge of the swept values is noted (widen the grid), and caps the verdict at
inconclusive when it is the *losing* arm's: a wider grid could only improve that arm, so it might
overturn the verdict; the winner's edge optimum could only make its win larger, so the verdict
stands. ``trained`` leaves out the runs that did not train (the claim says how many), and
``pool: seeds`` judges a signal-propagation law once per configuration, on the mean over its
seeds of each unit's series (fewer than 8 seeds: inconclusive).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resablate.analysis.comparisons import MIN_SEEDS, _same, holm, one
from resablate.analysis.figures import SEED, Report, group, label, number
from resablate.errors import UserError
from resablate.results import DIVERGED, FINISHED
from resablate.spec.claims import POOLED_AT_LEAST, SEARCH_KEY, ClaimSpec
from resablate.tracking.ledger import RunData, SweepRuns

HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "holds",
    "contradicted",
    "inconclusive",
    "not measured",
)
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)
ALPHA = 0.05
PERMUTATIONS = 9999  # resamples when the pairings are too many to enumerate
# a run and a probe's name -> the probe's recorded results by epoch (SweepRuns.probe)
Probes = Callable[[RunData, str], Mapping[int, Mapping[str, Any]]]


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
    notes: list[str] = field(default_factory=list)  # said after the numbers (excluded, edges)
    at_edge: tuple[str, ...] = ()  # compare: the arms whose best_over optimum is at an edge
    mutant: Verdict | None = None  # the claim judged on its mutant arm (claim.mutant)


def select(runs: Sequence[RunData], chosen: Mapping[str, Any]) -> list[RunData]:
    """The runs whose params have the ``chosen`` values (a list: any of its values); ``search:
    tuned`` / ``written`` picks a search's runs at its best values / the grid's own runs."""
    return [
        run
        for run in runs
        if all(
            any(
                _origin(run) == v if axis == SEARCH_KEY else _same(run.params.get(axis), v)
                for v in (want if isinstance(want, list) else [want])
            )
            for axis, want in chosen.items()
        )
    ]


def _origin(run: RunData) -> str:
    return "tuned" if "search_cell" in run.tags else "written"


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
    claims: Sequence[ClaimSpec],
    runs: Sequence[RunData],
    axes: Sequence[str],
    probes: Probes | None = None,
) -> list[Verdict]:
    """Every claim's verdict on ``runs`` (their grid ``axes``); Holm over the compare claims.
    ``probes`` reads a run's probe results, for the claims that pool seeds' series."""
    cells = [a for a in axes if a != SEED]
    out = []
    for claim in claims:
        chosen = select(runs, claim.where)
        untrained = _untrained(claim, chosen)
        if claim.compare is not None:
            out.append(_compare(claim, chosen, cells, untrained))
        elif claim.trend is not None:
            out.append(_trend(claim, chosen, cells, untrained))
        else:
            out.append(_value(claim, chosen, cells, untrained, probes))
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
    for found in out:
        _edge_cap(found)
        found.measured += "".join(f"; {note}" for note in found.notes)
    return out


def _edge_cap(found: Verdict) -> None:
    """A verdict that the losing arm's edge optimum could overturn is at most inconclusive."""
    if found.verdict not in (HOLDS, CONTRADICTED) or found.difference is None:
        return
    loser = "b" if _better(found.claim, found.difference) else "a"
    if loser in found.at_edge:
        found.verdict = INCONCLUSIVE
        found.notes.append(
            f"inconclusive: the losing arm {loser}'s optimum is at the edge of the grid"
        )


def _untrained(claim: ClaimSpec, runs: list[RunData]) -> set[str]:
    """The ids of the runs that fail the claim's ``trained`` precondition (none without one)."""
    if claim.trained is None:
        return set()
    return {r.run_id for r in runs if not claim.trained.holds(_final(r, claim.trained.metric))}


def _excluded(claim: ClaimSpec, runs: list[RunData], untrained: set[str]) -> str | None:
    """The note that says how many of ``runs`` the precondition left out, if any."""
    left = sum(r.run_id in untrained for r in runs)
    if not left:
        return None
    return f"{left} of {len(runs)} runs excluded as not trained ({claim.trained})"


def _final(run: RunData, metric: str) -> float | None:
    """A run's last value of ``metric``: NaN for a diverged run, None for one that did not
    finish or did not record it."""
    if run.status == DIVERGED:
        return math.nan
    if run.status != FINISHED:
        return None
    return run.metrics.get(metric)


def _not_measured(claim: ClaimSpec, why: str) -> Verdict:
    return Verdict(claim, NOT_MEASURED, why)


@dataclass
class _Arm:
    runs: list[RunData]
    at: str = ""  # " at best lr=0.01" where it is chosen over best_over
    edge: str | None = None  # the note when that best value is the smallest or largest swept
    missing: str | None = None  # why no best value could be chosen


def _configuration(claim: ClaimSpec, runs: list[RunData], cells: list[str], name: str) -> _Arm:
    """One arm's runs, at its best ``best_over`` value where the claim has one: the best seed
    mean of ``select_by`` at the last epoch (a diverged seed makes its value the worst), ties
    to the smaller value. An arm that matches several configurations is an error in the
    claim."""
    assert claim.compare is not None
    best_over, selection = claim.compare.best_over, claim.compare.selection(claim.metric)
    arm = _Arm(runs)
    if best_over is not None and selection is not None:
        metric, way = selection
        sign = 1.0 if way == "higher" else -1.0

        def score(at: list[RunData]) -> float | None:
            known = [v for v in (_final(r, metric) for r in at) if v is not None]
            if not known:
                return None
            if any(math.isnan(v) for v in known):
                return -math.inf
            return sign * statistics.fmean(known)

        by_value = group(runs, lambda r: r.params.get(best_over, "?"))
        scores = {v: score(members) for v, members in by_value.items()}
        scored = [v for v, found in scores.items() if found is not None]
        if not scored:
            return _Arm([], missing=f"{metric} (select_by) not recorded in arm {name}")
        top = max(scored, key=lambda v: (scores[v], -number(v)))
        arm.runs = by_value[top]
        by = "" if metric == claim.metric else f" by {metric}"
        arm.at = f" at best {_axis(best_over)}={top}{by}"
        swept = sorted(number(v) for v in by_value)
        if len(swept) == 1:
            arm.edge = f"{name}: {_axis(best_over)} {top} is the only value swept: widen the grid"
        elif number(top) in (swept[0], swept[-1]):
            side = "largest" if number(top) == swept[-1] else "smallest"
            arm.edge = f"{name}: best {_axis(best_over)} {top} is the {side} swept: widen the grid"
    others = [a for a in _varying(arm.runs, cells) if a != best_over]
    found = group(arm.runs, lambda r: label(r, others))
    if len(found) > 1:
        raise UserError(
            f"claim {claim.id}: arm {name} matches {len(found)} configurations"
            f" ({'; '.join(list(found)[:3])}...); name more grid axes in compare.{name}"
        )
    return arm


def _compare(
    claim: ClaimSpec, chosen: list[RunData], cells: list[str], untrained: set[str]
) -> Verdict:
    spec = claim.compare
    assert spec is not None
    every = {"a": select(chosen, spec.a), "b": select(chosen, spec.b)}
    missing = [n for n, r in every.items() if not r]
    if missing:
        return _not_measured(claim, f"no run of arm {' or '.join(missing)} in this sweep")
    kept = {n: [r for r in runs if r.run_id not in untrained] for n, runs in every.items()}
    excluded = _excluded(claim, every["a"] + every["b"], untrained)
    for name, runs in kept.items():
        if not runs:
            return _not_measured(claim, f"no run of arm {name} trained: {excluded}")
    arms = {n: _configuration(claim, runs, cells, n) for n, runs in kept.items()}
    for chosen_arm in arms.values():
        if chosen_arm.missing:
            return _not_measured(claim, chosen_arm.missing)
    a_arm, b_arm = arms["a"], arms["b"]
    apart = [x for x in _varying(a_arm.runs + b_arm.runs, cells) if x != spec.best_over]
    a_name = label(a_arm.runs[0], apart) + a_arm.at
    b_name = label(b_arm.runs[0], apart) + b_arm.at
    a, b = _finals(a_arm.runs, claim), _finals(b_arm.runs, claim)
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
    verdict = INCONCLUSIVE
    if found.p is None:
        if min(found.n, found.n_reference) >= MIN_SEEDS and found.difference != 0:
            # no spread: every seed's difference alike; the sign is then beyond doubt
            verdict = HOLDS if _better(claim, found.difference) else CONTRADICTED
        measured += shown + ")"
    else:
        measured += f", p = {found.p:.3g}{shown})"
    notes = [n for n in (excluded, a_arm.edge, b_arm.edge) if n]
    edges = tuple(n for n, arm in arms.items() if arm.edge)
    return Verdict(
        claim,
        verdict,
        measured,
        p=found.p,
        difference=found.difference,
        p_beats=beats,
        notes=notes,
        at_edge=edges,
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


def _trained_configurations(
    claim: ClaimSpec,
    chosen: list[RunData],
    keys: list[str],
    untrained: set[str],
    verdicts: list[str],
    parts: list[str],
) -> Iterator[tuple[str, list[RunData]]]:
    """Each configuration of ``chosen`` (told apart by ``keys``) with its runs that trained; one
    where none did is judged not measured here, into ``verdicts`` and ``parts``."""
    for name, every in group(chosen, lambda r: label(r, keys)).items():
        runs = [r for r in every if r.run_id not in untrained]
        if runs:
            yield name, runs
        else:
            verdicts.append(NOT_MEASURED)
            parts.append(f"{name}: no run trained ({claim.trained})")


def _trend(
    claim: ClaimSpec, chosen: list[RunData], cells: list[str], untrained: set[str]
) -> Verdict:
    spec = claim.trend
    assert spec is not None
    rest = [a for a in _varying(chosen, cells) if a != spec.over]
    verdicts: list[str] = []
    parts: list[str] = []
    for name, runs in _trained_configurations(claim, chosen, rest, untrained, verdicts, parts):
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
    notes = [n for n in [_excluded(claim, chosen, untrained)] if n]
    return Verdict(claim, _all(verdicts), text or "no run", parts=parts, notes=notes)


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


def _value(
    claim: ClaimSpec,
    chosen: list[RunData],
    cells: list[str],
    untrained: set[str],
    probes: Probes | None,
) -> Verdict:
    kind = claim.kind
    spec = getattr(claim, kind)
    verdicts: list[str] = []
    parts: list[str] = []
    shown = _varying(chosen, cells)
    for name, runs in _trained_configurations(claim, chosen, shown, untrained, verdicts, parts):
        if spec.pool == "seeds":
            verdict, part = _pooled(claim, runs, probes)
            verdicts.append(verdict)
            parts.append(f"{name}: {part}")
            continue
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
    notes = [n for n in [_excluded(claim, chosen, untrained)] if n]
    return Verdict(claim, _all(verdicts), f"{target}: {text}", parts=parts, notes=notes)


def _pooled(claim: ClaimSpec, runs: list[RunData], probes: Probes | None) -> tuple[str, str]:
    """The verdict and its text on one configuration of a claim that pools its seeds: its law
    (``spp.<law>``) computed once on the mean over ``runs`` of each unit's series at init.
    Fewer than :data:`POOLED_AT_LEAST` seeds is inconclusive, however the mean lands."""
    from resablate.probes.spp import laws

    spec = getattr(claim, claim.kind)
    probe, _, key = claim.metric.partition(".")
    found = [dict(probes(r, probe)).get(0) for r in runs] if probes is not None else []
    series = [f for f in found if f is not None and f.get("fwd_var")]
    if not series:
        return NOT_MEASURED, f"no {probe} series recorded at init"
    if len({len(f["fwd_var"]) for f in series}) > 1:
        return NOT_MEASURED, "its seeds' series differ in length: not one network"

    def mean(name: str) -> list[float]:
        return [
            statistics.fmean(values) for values in zip(*(f[name] for f in series), strict=True)
        ]

    first = series[0]
    law = laws(mean("fwd_var"), mean("chan_sq_mean"), first.get("nf_expected"), first.get("stage"))
    n = len(series)
    if key not in law:
        return NOT_MEASURED, f"{key} is not defined on the mean series of {n} seeds"
    text = f"{law[key]:.4g} pooled over {n} seeds"
    if n < POOLED_AT_LEAST:
        return INCONCLUSIVE, f"{text}, the law needs ≥ {POOLED_AT_LEAST}"
    holds = _satisfies(claim.kind, law[key], spec.value, spec.tolerance)
    return (HOLDS if holds else CONTRADICTED), text


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
    read: dict[tuple[str, str], Mapping[int, Mapping[str, Any]]] = {}

    def probes(run: RunData, probe: str) -> Mapping[int, Mapping[str, Any]]:
        """A run's probe results, downloaded once however many claims pool them."""
        if (run.run_id, probe) not in read:
            read[run.run_id, probe] = sweep.probe(run.run_id, probe)
        return read[run.run_id, probe]

    found = evaluate(claims, runs, grid, probes)
    # a mutant says something only beside a measured verdict: it is judged where the claim is
    with_mutant = [
        (v, m) for v in found if v.verdict != NOT_MEASURED and (m := v.claim.mutated()) is not None
    ]
    # the mutants are a family of their own: Holm over them, not over the claims
    for v, judged in zip(
        [v for v, _ in with_mutant],
        evaluate([m for _, m in with_mutant], runs, grid, probes),
        strict=True,
    ):
        v.mutant = judged
    counts = ", ".join(f"{sum(v.verdict == k for v in found)} {k}" for k in VERDICTS)
    lines = [
        f"# Claims: {counts}",  # the counts README's study table shows
        "",
        mutants(claims, found),
        "",
        "| claim | says | verdict | measured | mutant (fails_when) |",
        "|---|---|---|---|---|",
        *(
            f"| {v.claim.id} | {v.claim.says} | **{v.verdict}** | {v.measured} |"
            f" {_mutant_cell(v)} |"
            for v in found
        ),
    ]
    report.text("claims.md", lines)
    report.claims = lines[2:]
    header = ["claim", "kind", "metric", "at", "verdict", "p", "p_holm", "p_a_beats_b"]
    header += ["measured", "says", "fails_when", "mutant_verdict", "mutant_measured"]
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
            v.claim.fails_when or "",
            v.mutant.verdict if v.mutant else "",
            v.mutant.measured if v.mutant else "",
        ]
        for v in found
    ]
    report.table("claims.csv", header, rows)
    return found


def mutants(claims: Sequence[ClaimSpec], found: Sequence[Verdict] = ()) -> str:
    """How many claims name the broken variant that turns their verdict (``fails_when``); of
    those measured here whose mutant arm this sweep holds (``mutant``), how many hold, and of
    those how many the mutant turned (contradicted or inconclusive): science.md §7 asks it of
    every claim, and a claim without one has not shown it can fail."""
    named = sum(c.fails_when is not None for c in claims)
    line = f"claims: {len(claims)}, with a mutant: {named}"
    judged = [v for v in found if v.mutant is not None and v.mutant.verdict != NOT_MEASURED]
    if judged:
        holding = [v for v in judged if v.verdict == HOLDS]
        turned = sum(v.mutant.verdict in (CONTRADICTED, INCONCLUSIVE) for v in holding)  # type: ignore[union-attr]
        line += (
            f"; judged on their mutant arm here: {len(judged)}, holding: {len(holding)},"
            f" turned: {turned}"
        )
    return line


def _mutant_cell(found: Verdict) -> str:
    said = found.claim.fails_when or "none named"
    if found.mutant is None:
        return said
    return f"{said}: **{found.mutant.verdict}**"
