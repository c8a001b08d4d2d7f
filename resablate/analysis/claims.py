"""A study's claims (the sweep file's ``claims:``) tested on its recorded runs.

Each claim selects runs by grid values (``where``, and ``a`` / ``b`` for a comparison), reads one
metric per run (its last value, or step 0 for ``at: init``) and ends in one verdict
(:mod:`resablate.analysis.verdicts`): holds, contradicted, inconclusive or not measured.

``compare`` is judged on its two arms (:mod:`resablate.analysis.compare_claims`), with Holm's
correction over the file's compare claims; ``trend`` uses Spearman's rank correlation with a
permutation p-value (:mod:`resablate.analysis.rank_correlation`).
A trend or value claim is judged on each configuration its ``where`` leaves, and holds only when
it holds on every one. Statistics are scipy.stats'.

``trained`` leaves out the runs that did not train (the claim says how many), and
``pool: seeds`` judges a signal-propagation law once per configuration, on the mean over its
seeds of each unit's series (fewer than 8 seeds: inconclusive).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from resablate.analysis import compare_claims
from resablate.analysis.comparisons import holm
from resablate.analysis.figures import SEED, group, label, number, varying
from resablate.analysis.rank_correlation import spearman
from resablate.analysis.verdicts import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    Verdict,
    axis_name,
    excluded,
    not_measured,
    not_trained,
    select,
    value,
)
from resablate.spec.claims import POOLED_AT_LEAST, ClaimSpec
from resablate.tracking.ledger import RunData, SweepRuns

ALPHA = 0.05
# a run and a probe's name -> the probe's recorded results by epoch (SweepRuns.probe)
Probes = Callable[[RunData, str], Mapping[int, Mapping[str, Any]]]


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
        untrained = not_trained(claim, chosen)
        if claim.compare is not None:
            out.append(compare_claims.judge(claim, chosen, cells, untrained))
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
            better = compare_claims.better(found.claim, found.difference)
            found.verdict = HOLDS if better else CONTRADICTED
        else:
            found.verdict = INCONCLUSIVE
    for found in out:
        compare_claims.edge_cap(found)
        found.measured += "".join(f"; {note}" for note in found.notes)
    return out


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
    rest = [a for a in varying(chosen, cells) if a != spec.over]
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
                f" over {axis_name(spec.over)} {xs[0]:g}–{xs[-1]:g} (tolerance {spec.tolerance:g})"
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
    notes = [n for n in [excluded(claim, chosen, untrained)] if n]
    return Verdict(claim, _all(verdicts), text or "no run", parts=parts, notes=notes)


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
    shown = varying(chosen, cells)
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
        return not_measured(claim, f"no run of this sweep records {claim.metric} at {where}")
    target = f"{kind} {spec.value:g}" + (f" ± {spec.tolerance:g}" if kind == "equals" else "")
    text = "; ".join(p.removeprefix("(all): ") for p in parts)
    notes = [n for n in [excluded(claim, chosen, untrained)] if n]
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
