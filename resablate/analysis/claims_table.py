"""A study's verdicts written out: ``claims.md`` and ``claims.csv`` in the report, the line on
mutants it prints first, and the tags and metrics logged to the sweep's parent run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from resablate.analysis.claims import evaluate, searched_best
from resablate.analysis.figures import ReportFolder
from resablate.analysis.verdicts import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    VERDICTS,
    Verdict,
)
from resablate.spec.claims import ClaimSpec
from resablate.tracking.ledger import RunData, SweepRuns


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
    sweep: SweepRuns, claims: Sequence[ClaimSpec], grid: Sequence[str], report: ReportFolder
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
