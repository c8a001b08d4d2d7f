"""The sections of a sweep file that are not part of a trial's config: what the probes measure,
the search over one parameter, the scheduler that stops trials early, the report's reference,
what each trial takes of a machine and where the sweep is recorded. The claims, the sweep's
statements that ``resablate report`` tests, are :mod:`resablate.spec.claims`.

Types and ranges only, like :mod:`resablate.spec.schema`; which metric names and which fields of
the trial config they may name is checked by :mod:`resablate.spec.catalog`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from resablate.errors import ConfigError
from resablate.spec.section import Grown, Section

When = Literal["init", "end"]


class Probe(Section):
    """When a probe runs: at ``init`` (before training, step 0), at the ``end``, and every
    ``every`` epochs. Probes measure a copy of the network: they never change training."""

    at: list[When] = ["init", "end"]
    every: int | None = Field(None, ge=1)
    # the numbers it records, each an MLflow metric <probe>.<key> (tested against the probe)
    records: ClassVar[tuple[str, ...]] = ()

    def due(self, epoch: int, last: int) -> bool:
        if epoch == 0:
            return "init" in self.at
        return (epoch == last and "end" in self.at) or bool(self.every and epoch % self.every == 0)


class SppProbe(Probe):
    """Signal propagation per unit: forward, branch and backward variance, channel squared mean."""

    input: Literal["data", "noise"] = "data"  # noise: a white-noise batch (Brock et al. 2021)
    records = (
        "moment_growth",
        "var_growth",
        "var_linearity",
        "var_linearity_all",
        "var_slope",
        "fwd_last",
        "nf_ratio",
    )
    batch: int = Field(256, ge=2)


class HessianProbe(Probe):
    """The training loss's Hessian spectrum: max |λ|, P10 |λ|, condition number, index."""

    method: Literal["auto", "exact", "lanczos"] = "auto"
    max_exact: int = Field(3000, ge=1)  # parameters up to which auto computes the full matrix
    batch: int | Literal["full"] = 512
    dtype: Literal["float64", "float32"] = "float64"
    records = ("max_abs", "p10_abs", "cond", "index", "n_params", "zero")


class WeightsProbe(Probe):
    """Mean Frobenius norm of the weights per layer kind (Demystifying ResNet Figs. 2-3)."""

    every: int | None = Field(1, ge=1)
    records = ("branch", "shortcut", "stem", "head", "all")


class ShatteredProbe(Probe):
    """Autocorrelation of input gradients along a line of inputs (Balduzzi et al. 2017)."""

    at: list[When] = ["init"]
    points: int = Field(256, ge=16)
    records = ("lag1", "white_lag1", "brown_lag1")


class LesionProbe(Probe):
    """Test error against the number of units removed at random, 1 … ``k``, and accuracy with
    each single unit removed (Veit et al. 2016)."""

    at: list[When] = ["end"]
    k: int | None = Field(None, ge=1)  # the most units removed at once; default half the units
    draws: int = Field(10, ge=1)  # random sets of units per k
    records = (
        "whole",
        "error_k1",
        "error_kmax",
        "error_increase_k1",
        "error_increase_kmax",
        "kmax",
    )


class ProbesSpec(Section):
    """``probes:`` maps a probe's name to its options (``{}`` takes the defaults)."""

    spp: SppProbe | None = None
    hessian: HessianProbe | None = None
    weights: WeightsProbe | None = None
    shattered: ShatteredProbe | None = None
    lesion: LesionProbe | None = None

    def chosen(self) -> dict[str, Probe]:
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if getattr(self, name) is not None
        }


class ObjectiveSpec(Section):
    """What a candidate is scored by: a final metric, averaged over the grid's seeds."""

    metric: str = "val_acc"  # a reported metric (results.METRICS) or a probe's <probe>.<key>
    direction: Literal["max", "min"] = "max"
    at: Literal["last", "best"] = "last"  # the last epoch's value or the best epoch's
    diverged: Literal["worst"] | float = "worst"  # a diverged run's score, or a stated penalty


class SearchSpec(Grown):
    """Optuna over one continuous parameter inside every grid cell (a grid point without this
    parameter and without its seed); each candidate is scored by the mean over the seeds.

    ``where`` (grid axis -> value or list of values) limits the search to the cells that match;
    the other grid points run once, with the parameter as the sweep sets it (Taki's study
    searches c for its taki arm only, against He init at c = 1).

    ``carry`` (grid axes, each named in ``where`` with one value) tunes once and carries the
    best value: each searched cell's best value then runs, seeds and all, at every other value
    of those axes, and every grid point also runs once as the sweep sets it, the untuned arm
    the tuned one is compared with (Taki's c chosen at one depth and kept at every depth)."""

    LATER = ("where", "carry")  # spec hashes of earlier sweeps stand (--resume)
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True
    )

    param: str = "init.c"  # a numeric field of the trial config
    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    sampler: Literal["tpe", "gp", "cmaes", "random"] = "tpe"
    seed: int = 0
    n_trials: int = Field(20, ge=1)  # candidates per cell
    objective: ObjectiveSpec = ObjectiveSpec()
    where: dict[str, Any] = {}
    carry: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _distribution(self) -> SearchSpec:
        given = {
            k: v
            for k, v in (
                ("log_uniform", self.log_uniform),
                ("uniform", self.uniform),
                ("int", self.int_),
            )
            if v is not None
        }
        if len(given) != 1:
            raise ConfigError(
                "search",
                "give exactly one distribution: log_uniform: [low, high],"
                f" uniform: [low, high] or int: [low, high] (got {len(given)})",
            )
        kind, (low, high) = next(iter(given.items()))
        if not low <= high:
            raise ConfigError(
                f"search.{kind}", f"`low <= high` must hold, but got (low={low}, high={high})"
            )
        if kind == "log_uniform" and low <= 0:
            raise ConfigError(f"search.{kind}", f"a log scale needs low > 0, but got low={low}")
        return self

    def distribution(self) -> tuple[str, float, float]:
        for kind, bounds in (
            ("log_uniform", self.log_uniform),
            ("uniform", self.uniform),
            ("int", self.int_),
        ):
            if bounds is not None:
                return kind, bounds[0], bounds[1]
        raise AssertionError("validated: exactly one distribution")


class SchedulerSpec(Section):
    """Early stopping by Ray Tune's scheduler: ASHA or the median stopping rule, on a reported
    metric per epoch. A trial it stops is a result with status ``pruned``."""

    kind: Literal["none", "asha", "median"] = "none"
    metric: str | None = (
        None  # default: the search objective's metric, else val_acc (both need data.validation)
    )
    mode: Literal["max", "min"] | None = None  # default: max for accuracies, min otherwise
    grace_period: int = Field(1, ge=1)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(3.0, gt=1.0)  # asha: 1 / fraction kept at each rung
    min_samples_required: int = Field(3, ge=1)  # median: trials to compare with

    def resolved(self, search: SearchSpec | None) -> tuple[str, str]:
        """(metric, mode) with the defaults filled in."""
        objective = search.objective if search else None
        metric = self.metric or (objective.metric if objective else "val_acc")
        if self.mode is not None:
            return metric, self.mode
        if objective is not None and objective.metric == metric:
            return metric, objective.direction
        return metric, "max" if "acc" in metric else "min"


class ReportSpec(Section):
    """What ``resablate report`` compares against: ``reference`` (grid axis -> value) picks the
    reference configuration of its comparison table (default: the first value of every axis).
    Not part of the spec's hash: it changes no result."""

    reference: dict[str, Any] = {}


class ResourcesSpec(Grown):
    # how trials are grouped into workers changes no result: never in the spec's hash (a sweep
    # resumes whatever its grouping) nor in a trial's config
    UNHASHED = ("trials_per_stack",)
    FORMER_NAMES: ClassVar[dict[str, str]] = {"seeds_per_trial": "trials_per_stack"}  # still read

    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    # retries of a failed trial (an exception, a lost worker or node); each attempt goes on from
    # the trial's last checkpoint (train.checkpoint_every), in the same MLflow run
    max_failures: int = Field(0, ge=0)
    # trials trained together as one stacked computation in one worker: the seeds of a
    # configuration and the arms that differ only in init or training recipe (trial/batched.py;
    # configurations it cannot stack run alone): fewer, fuller workers.
    # auto: on a local Ray, as many as leave every trial slot of the machine busy (at most
    # AUTO_STACK_MAX); inline, on a cluster or under a scheduler, 1 (stacking.stack_size).
    # seeds_per_trial, its first name (from when only seeds stacked), is read too.
    trials_per_stack: int | Literal["auto"] = Field(
        "auto", validation_alias=AliasChoices("trials_per_stack", *FORMER_NAMES)
    )

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and {"trials_per_stack", "seeds_per_trial"} <= set(raw):
            raise ValueError(
                "trials_per_stack and seeds_per_trial (its former name) are both set; keep"
                " trials_per_stack"
            )
        return raw

    @field_validator("trials_per_stack", mode="before")
    @classmethod
    def _stack(cls, value: Any) -> Any:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value == "auto" or (whole and value >= 1):
            return value
        raise ValueError(
            "expected auto (stack trials where it keeps every trial slot busy) or a whole number"
            " of trials per stack, 1 or more (1: each trial its own worker)"
        )

    @field_validator("gpu")
    @classmethod
    def _shareable(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(
                "GPUs per trial: trials share one GPU with a fraction below 1"
                " (0.25: four trials per GPU) or take a whole number of them (1, 2, ...)"
            )
        return value


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # safe as a folder name and in a URL


class TrackingSpec(Section):
    uri: str | None = None
    experiment: str | None = Field(None, pattern=NAME_PATTERN)
