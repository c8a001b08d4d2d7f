"""The ``claims:`` section of a sweep file: each a statement of the study's paper that
``resablate report`` tests on the recorded runs (:mod:`resablate.analysis.claims` judges them).

Types and ranges only, like :mod:`resablate.spec.options`; which grid axes a claim names is
checked by :mod:`resablate.spec.catalog`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from resablate.errors import ConfigError
from resablate.spec.options import SppProbe
from resablate.spec.section import Section

# metrics read on the test set: a best_over choice must not be made by one of them
TEST_SET = ("test_", "lesion.")
POOLED_AT_LEAST = 8  # seeds a pooled law needs (science.md §4: one seed lands in 2 ± 0.3)


def on_test_set(metric: str) -> bool:
    return metric.startswith(TEST_SET)


def direction(metric: str) -> Literal["higher", "lower"] | None:
    """Which way a metric is better, read from its name: lower for a loss or an error, higher
    for an accuracy; None when the name does not say."""
    leaf = metric.rsplit(".", 1)[-1]
    if "loss" in leaf or "error" in leaf:
        return "lower"
    return "higher" if "acc" in leaf else None


class CompareClaim(Section):
    """Arm ``a`` is better than arm ``b`` (each: grid axis -> value, with the claim's
    ``where``): a paired t-test over common seeds (Welch's otherwise) at α = 0.05 after Holm's
    correction over the file's compare claims.

    ``best_over`` (a grid axis, e.g. train.lr): each arm at its best value of that axis, as
    Demystifying ResNet's Fig. 8 reports the best final loss over the learning rates. The best
    value is *chosen* by ``select_by``'s seed mean at the last epoch and the claim's metric is
    then read there: a choice made on the numbers the claim is judged by would be a choice on
    the test set whenever the metric is a test metric. ``select_by`` defaults to the claim's
    own metric where that is not read on the test set (train_loss: the paper's own procedure,
    the best final loss per configuration); a claim on a test metric (test_*, lesion.*) must
    name a validation metric (val_*). Its direction is read from its name (lower for a loss or
    an error, higher for an accuracy), else the claim's ``better`` where it is the claim's own
    metric; any other name is refused."""

    better: Literal["higher", "lower"]
    a: dict[str, Any]
    b: dict[str, Any]
    best_over: str | None = None
    select_by: str | None = None

    def selection(self, metric: str) -> tuple[str, Literal["higher", "lower"]] | None:
        """(metric, direction) that chooses each arm's ``best_over`` value for a claim on
        ``metric``; None without ``best_over``. Validated with the claim."""
        if self.best_over is None:
            return None
        chosen = self.select_by or metric
        return chosen, direction(chosen) or self.better


class TrendClaim(Section):
    """The metric against a grid axis: ``increasing`` / ``decreasing`` (Spearman's rank
    correlation over the runs, significant at α = 0.05) or ``flat`` (the seed means' spread
    (max − min) within ``tolerance`` of their mean's magnitude)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True)

    over: str
    is_: Literal["increasing", "decreasing", "flat"] = Field(alias="is")
    tolerance: float = Field(0.01, ge=0.0)  # flat: relative spread allowed


class ValueClaim(Section):
    """The metric equals ``value`` within ``tolerance`` (absolute), or lies below / above it.
    ``of``: the seed mean of each configuration (``mean``), ``every`` run, or ``most`` runs
    (more than half).

    ``pool: seeds`` (a signal-propagation law at init, ``spp.<law>``): per configuration, the
    per-unit series of all its seeds are averaged and the law is computed once on the mean
    series (:func:`resablate.probes.spp.laws`). He's doubling is a law of the expectation: one
    finite-width seed lands anywhere in 2 ± 0.3, so judging each seed's own factor tests the
    width, not the law. Fewer than :data:`POOLED_AT_LEAST` seeds pooled is inconclusive."""

    value: float
    tolerance: float = Field(0.0, ge=0.0)  # equals only
    of: Literal["mean", "every", "most"] = "mean"
    pool: Literal["seeds"] | None = None


class TrainedSpec(Section):
    """A claim's precondition on each run: its final ``metric`` above (or below) a bound. A
    lesion claim counts only on a net that trained (science.md §4): a run that fails it is
    left out, and the claim says how many were."""

    metric: str
    above: float | None = None
    below: float | None = None

    def holds(self, value: float | None) -> bool:
        """Whether a run whose final ``metric`` is ``value`` (None: not recorded) trained."""
        if value is None or math.isnan(value):
            return False
        if self.above is not None:
            return value > self.above
        return self.below is not None and value < self.below

    def __str__(self) -> str:
        bound = f"above {self.above:g}" if self.above is not None else f"below {self.below:g}"
        return f"{self.metric} {bound}"


class MutantSpec(Section):
    """A claim's mutant as an arm this sweep holds: the claim again, its selections with these
    values in place (``where``, and ``a`` / ``b`` of a compare), e.g. the n = 2 arm where the
    claim speaks of n = 1. ``resablate report`` judges it beside the claim; a mutant that holds
    too shows the claim could not fail on these runs."""

    where: dict[str, Any] = {}
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}


# `search: tuned | written` in a claim's selections: the runs of a search's best values (its
# candidates at the best value, and what search.carry ran), or the grid's own runs
SEARCH_KEY, SEARCH_VALUES = "search", ("tuned", "written")


CLAIM_KINDS = ("compare", "trend", "equals", "below", "above")


class ClaimSpec(Section):
    """One statement of the study's paper, tested by ``resablate report`` on the recorded runs.

    ``where`` (grid axis -> value or list of values) selects the runs the claim speaks of;
    ``metric`` is a reported metric or a probe's number ``<probe>.<key>``, taken at the last
    epoch (``at: last``) or at initialization (``at: init``, step 0, a probe's). A trend or
    value claim is judged on every configuration ``where`` leaves (each must hold). A diverged
    run counts as ``diverged`` where that is given (0.1: chance accuracy on ten classes), and
    otherwise against the claim. A searched cell speaks through its best candidate's seeds.
    ``trained`` (:class:`TrainedSpec`) leaves out the runs that did not train. ``fails_when``
    names the broken variant of the arm (a mutant) that turns the verdict (science.md §7: a
    claim no mutant can break is a test of the code, not a claim); optional, and the report
    counts the claims that name one."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    says: str
    metric: str
    at: Literal["last", "init"] = "last"
    where: dict[str, Any] = {}
    diverged: float | None = None
    trained: TrainedSpec | None = None
    fails_when: str | None = Field(None, min_length=1)
    mutant: MutantSpec | None = None
    compare: CompareClaim | None = None
    trend: TrendClaim | None = None
    equals: ValueClaim | None = None
    below: ValueClaim | None = None
    above: ValueClaim | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ClaimSpec:
        given = [k for k in CLAIM_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(
                "claims",
                f"claim {self.id!r}: give exactly one of {', '.join(CLAIM_KINDS)}"
                f" (got {', '.join(given) or 'none'})",
            )
        return self

    @model_validator(mode="after")
    def _search_key(self) -> ClaimSpec:
        """``search:`` in a selection is ``tuned`` or ``written`` (a list of them)."""
        parts = {"where": self.where}
        if self.compare is not None:
            parts |= {"compare.a": self.compare.a, "compare.b": self.compare.b}
        if self.mutant is not None:
            parts |= {f"mutant.{k}": getattr(self.mutant, k) for k in ("where", "a", "b")}
        for name, chosen in parts.items():
            wanted = chosen.get(SEARCH_KEY)
            if wanted is None:
                continue
            if any(
                w not in SEARCH_VALUES for w in (wanted if isinstance(wanted, list) else [wanted])
            ):
                raise ConfigError(
                    f"claims.{self.id}.{name}.{SEARCH_KEY}",
                    f"{wanted!r}: give tuned (a search's runs at its best values) or written"
                    " (the grid's own runs)",
                )
        return self

    @model_validator(mode="after")
    def _trained(self) -> ClaimSpec:
        if self.trained is not None and (self.trained.above is None) == (
            self.trained.below is None
        ):
            raise ConfigError(
                f"claims.{self.id}.trained", "give exactly one bound: above: or below:"
            )
        return self

    @model_validator(mode="after")
    def _select_by(self) -> ClaimSpec:
        """A best_over value is never chosen on the test set (see :class:`CompareClaim`)."""
        spec = self.compare
        if spec is None:
            return self
        field = f"claims.{self.id}.compare.select_by"
        if spec.best_over is None:
            if spec.select_by is not None:
                raise ConfigError(field, "chooses a best_over value: give compare.best_over too")
            return self
        chosen = spec.select_by
        if chosen is None and on_test_set(self.metric):
            raise ConfigError(
                field,
                f"{self.metric!r} is read on the test set, so each arm's best"
                f" {spec.best_over} cannot be chosen by it; name a validation metric,"
                " e.g. select_by: val_acc (the trials need data.validation)",
            )
        if chosen is not None and on_test_set(self.metric) and not chosen.startswith("val_"):
            raise ConfigError(
                field,
                f"{chosen!r}: a claim on a test metric ({self.metric}) chooses its best"
                f" {spec.best_over} by a validation metric (val_*), e.g. select_by: val_acc",
            )
        if chosen is not None and on_test_set(chosen):
            raise ConfigError(field, f"{chosen!r} is read on the test set; use a val_* metric")
        if chosen is not None and chosen != self.metric and direction(chosen) is None:
            raise ConfigError(
                field,
                f"{chosen!r}: its name says neither loss, error nor acc, so which way is best"
                " is unknown; select by a *_loss, *_error or *_acc metric",
            )
        return self

    @model_validator(mode="after")
    def _pool(self) -> ClaimSpec:
        """``pool: seeds`` is for the signal-propagation laws at init only."""
        spec = getattr(self, self.kind, None)
        if not isinstance(spec, ValueClaim) or spec.pool is None:
            return self
        field = f"claims.{self.id}.{self.kind}.pool"
        probe, _, key = self.metric.partition(".")
        if probe != "spp" or key not in SppProbe.records:
            laws = ", ".join(f"spp.{k}" for k in SppProbe.records)
            raise ConfigError(field, f"pools a law of the spp probe ({laws}), not {self.metric}")
        if self.at != "init":
            raise ConfigError(field, "the pooled laws are laws of the net at init: add at: init")
        if spec.of != "mean":
            raise ConfigError(
                field, f"a pooled law is one value per configuration: drop of: {spec.of}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CLAIM_KINDS if getattr(self, k) is not None)

    def axes(self) -> dict[str, list[str]]:
        """Field path -> the grid axes it names (checked against the grid by the catalog)."""
        named = {f"claims.{self.id}.where": list(self.where)}
        if self.compare is not None:
            named[f"claims.{self.id}.compare.a"] = list(self.compare.a)
            named[f"claims.{self.id}.compare.b"] = list(self.compare.b)
            if self.compare.best_over is not None:
                named[f"claims.{self.id}.compare.best_over"] = [self.compare.best_over]
        if self.trend is not None:
            named[f"claims.{self.id}.trend.over"] = [self.trend.over]
        if self.mutant is not None:
            for part in ("where", "a", "b"):
                named[f"claims.{self.id}.mutant.{part}"] = list(getattr(self.mutant, part))
        return named

    def mutated(self) -> ClaimSpec | None:
        """The claim on its mutant arm (``mutant``), None without one."""
        if self.mutant is None:
            return None
        update: dict[str, Any] = {"where": {**self.where, **self.mutant.where}}
        if self.compare is not None:
            update["compare"] = self.compare.model_copy(
                update={
                    "a": {**self.compare.a, **self.mutant.a},
                    "b": {**self.compare.b, **self.mutant.b},
                }
            )
        return self.model_copy(update=update)
