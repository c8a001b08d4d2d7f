"""The sweep file's schema: the sections of a sweep and of one trial's config, as frozen
pydantic models with their types and ranges.

A sweep file has the sections of one trial's config (``seed``, ``model``, ``init``, ``data``,
``train``: the base every trial starts from), a ``grid`` of dotted paths into that config, the
sections of :mod:`resablate.spec.options` that belong to the whole sweep (``probes``,
``search``, ``scheduler``, ``report``, ``resources``, ``tracking``), its ``claims``
(:mod:`resablate.spec.claims`), ``name`` and ``description``.
Field names are the YAML names of ../shared/science.md.

This module is data only: it imports no torch and none of the modules that build variants.
Which names a variant field takes, the defaults a model family sets, and whether a config fits
its family and data are the business of :mod:`resablate.spec.catalog`; :mod:`resablate.spec.loader`
reads the YAML.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from resablate.errors import ConfigError
from resablate.spec.claims import ClaimSpec
from resablate.spec.options import (
    NAME_PATTERN,
    ProbesSpec,
    ReportSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearchSpec,
    TrackingSpec,
)
from resablate.spec.section import Grown, Section

__all__ = [
    "COMPUTE_FIELDS",
    "NAME_PATTERN",
    "DataSpec",
    "GridSpec",
    "Grown",
    "InitSpec",
    "ModelSpec",
    "ProbesSpec",
    "ResourcesSpec",
    "SchedulerSpec",
    "SearchSpec",
    "Section",
    "SweepSpec",
    "TrackingSpec",
    "TrainSpec",
    "TrialConfig",
]


class ModelSpec(Grown):
    """The network (science.md §1, §2). Fields a family sets itself (its depth convention,
    placement, norm, ...) take the family's defaults in a trial's config when left out
    (catalog.trial_config). ``family``, ``shortcut``, ``norm``, ``act`` name registered variants
    and ``activation`` a placement (models.parse_placement)."""

    LATER = ("stages",)  # trial ids of earlier sweeps stand (--resume)

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True
    )

    family: str = "mlp"
    depth: int = Field(4, ge=1)
    width: int = Field(10, ge=1)  # mlp: d
    channels: int | None = Field(None, ge=1)  # conv families: base width (mnist 16, cifar 16, ...)
    kernel: int = Field(3, ge=1)  # mnist family
    block: Literal["basic", "bottleneck"] = "basic"
    # cifar family: He 2015's three stages (16, 32, 64 channels); 1 keeps the first stage's width
    # throughout, e.g. Taki's 100 one-layer units (depth = stages·n·k + 2)
    stages: int = Field(3, ge=1)
    stem: Literal["imagenet", "cifar"] = "imagenet"  # imagenet family: cifar = 3×3, no max-pool
    shortcut: str = "identity"
    shortcut_depth: int = Field(2, ge=1)
    activation: str = "mid"
    norm: str = "none"
    groups: int = Field(8, ge=1)  # GroupNorm
    act: str = "relu"
    downsample: Literal["A", "B"] = "A"
    # shortcut parameters (science.md §1.2)
    lambda_: float = Field(0.5, alias="lambda")  # scale: λ
    branch_scale: float = 1.0  # scale: β
    gate_bias: float = -6.0  # gate, shortcut_gate: b
    p: float = Field(0.5, ge=0.0, lt=1.0)  # dropout
    alpha_init: float = 1.0  # scalar
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)  # stochastic depth: 1 − p_L, linear decay


class InitSpec(Section):
    scheme: str = "he"
    c: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    eps: float = Field(1e-3, ge=0.0, allow_inf_nan=False)  # zero: the perturbation
    alpha: float = Field(0.2, gt=0.0)  # nf: α (c multiplies α²)


class DataSpec(Grown):
    LATER = ("image", "validation")  # trial ids of earlier sweeps stand (--resume)

    name: str = "digits"
    whiten: int | None = Field(None, ge=1)
    target: Literal["label", "onehot"] = "label"
    # `digits`, `synthetic`: share of the examples held out; torchvision sets keep their own split.
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = 0
    # Folder of the torchvision sets' files; null: $RESABLATE_DATA, else ./data.
    root: str | None = Field(None, min_length=1)
    # Keep this many training examples (seeded by split_seed): CPU-scale runs of big sets.
    subset: int | None = Field(None, ge=10)
    # Share of the training set held out as the validation set (seeded by split_seed, never by
    # a trial's seed; held out before data.subset picks its examples from the rest): what
    # searches, schedulers and best-over-lr read, so that nothing is chosen on the test set.
    validation: float | None = Field(None, gt=0.0, lt=1.0)
    # Pad-crop-flip the training batches; null: the data set's standard (on for cifar10/100).
    augment: bool | None = None
    # `synthetic` only: Gaussian inputs labelled by a fixed random teacher; `image` shapes them
    # as [C, H, W] images for the conv families (e.g. [3, 32, 32]: CIFAR-sized, no download)
    samples: int = Field(2000, ge=10)
    features: int = Field(20, ge=1)
    classes: int = Field(10, ge=2)
    image: tuple[int, int, int] | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("give [channels, height, width], each at least 1")
        return value

    @model_validator(mode="after")
    def _image_is_synthetic(self) -> DataSpec:
        if self.image is not None and self.name != "synthetic":
            raise ConfigError(
                "data.image",
                f"shapes the synthetic data set only; {self.name} has its own shape: remove it",
            )
        return self


# How a trial's arithmetic runs (compute.Compute): LATER fields, so earlier trial ids stand
COMPUTE_FIELDS = ("precision", "channels_last", "compile", "deterministic")


class TrainSpec(Grown):
    LATER = COMPUTE_FIELDS
    UNHASHED = ("checkpoint_every", "keep_checkpoint")

    loss: Literal["ce", "mse"] = "ce"
    optimizer: str = "sgd"
    lr: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False  # sgd only
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(10, ge=1)
    # When set, the run is this many optimizer steps (the last epoch may be partial); `epochs`
    # is then not used.
    max_iterations: int | None = Field(None, ge=1)
    batch_size: int | Literal["full"] = "full"
    # The lr schedule, stepped once per optimizer iteration (optim.SCHEDULES). Milestones count
    # from the start of training, warm-up included.
    schedule: str = "constant"
    milestones: list[int] = []
    milestone_unit: Literal["epoch", "iteration"] = "epoch"
    gamma: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    # Linear warm-up: lr x (k+1)/(warmup_iterations+1) at iteration k, then lr x schedule.
    warmup_iterations: int = Field(0, ge=0)
    # He et al.'s ResNet-110 warm-up: warmup_lr until the running training error of the epoch
    # falls below warmup_until_error, then lr x schedule.
    warmup_lr: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    warmup_until_error: float | None = Field(None, gt=0.0, le=1.0)
    recipe: str | None = None  # a preset of recipes.RECIPES; the fields written here override it
    # A training loss above this (or NaN/inf) ends the trial as `diverged` (science.md §4).
    diverge_above: float = Field(1e6, gt=0.0)
    # How the arithmetic runs (train.Compute): bf16 autocast of forward passes (the loss,
    # the optimizer and the weights stay fp32), channels-last memory for image models,
    # torch.compile of the training forward pass, deterministic kernels (and no cuDNN autotuning).
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    # Epochs between checkpoints of a trial's whole training state (resablate.checkpoint);
    # null: a tenth of its epochs, but not within a minute of the last one. Always within 10
    # minutes, and at the epoch a stop is requested in. A retried or resumed trial continues from
    # its last checkpoint.
    checkpoint_every: int | None = Field(None, ge=1)
    # Keep each finished trial's final checkpoint as an MLflow artifact (checkpoint/epoch_<k>.pt,
    # to reload the trained network); otherwise a finished trial's checkpoints are deleted.
    keep_checkpoint: bool = False

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> int | str:
        if value == "full" or (
            isinstance(value, int) and not isinstance(value, bool) and value > 0
        ):
            return value
        raise ValueError("use a positive integer or 'full' (the whole training set per step)")

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        if self.nesterov and self.optimizer != "sgd":
            raise ConfigError(
                "train.nesterov", f"applies to optimizer sgd only, not {self.optimizer}"
            )
        if self.nesterov and self.momentum == 0:
            raise ConfigError(
                "train.nesterov",
                "Nesterov momentum needs train.momentum > 0, got 0; set momentum (e.g. 0.9)"
                " or nesterov: false",
            )
        if self.milestones != sorted(set(self.milestones)) or min(self.milestones, default=1) < 1:
            raise ConfigError(
                "train.milestones",
                f"{self.milestones} must be strictly increasing counts ≥ 1, e.g. [32000, 48000]",
            )
        if self.schedule == "step" and not self.milestones:
            raise ConfigError(
                "train.milestones", "schedule step needs at least one milestone, e.g. [30, 60]"
            )
        if (self.warmup_lr is None) != (self.warmup_until_error is None):
            raise ConfigError(
                "train.warmup_lr",
                "set warmup_lr and warmup_until_error together (e.g. 0.01 and 0.8), or neither",
            )
        if self.warmup_lr is not None and self.warmup_iterations:
            raise ConfigError(
                "train.warmup_iterations",
                "choose one warm-up: warmup_iterations (linear) or warmup_lr with"
                " warmup_until_error (He et al.); set warmup_iterations: 0",
            )
        return self


class TrialConfig(Section):
    """Everything one trial needs; the resolved form of this is what the trial id hashes.

    A raw config (a grid point, a test's dict) becomes one through catalog.trial_config, which
    fills in the family's and the recipe's defaults and checks names and fit; validating a
    resolved config (a trial's ``config``) with this class gives it back unchanged."""

    seed: int = 0
    model: ModelSpec = ModelSpec()
    init: InitSpec = InitSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        if self.train.loss == "mse" and self.data.target != "onehot":
            raise ConfigError(
                "data.target", "loss mse needs one-hot targets; set data.target: onehot"
            )
        if self.model.norm == "batch" and self.train.batch_size == 1:
            raise ConfigError(
                "train.batch_size", "batch norm needs 2 or more samples per batch; use 2 or more"
            )
        return self


class GridSpec(Section):
    """Axes (path -> values) multiplied out, ``zip`` groups walked in step, ``exclude`` rules."""

    axes: dict[str, list[Any]] = {}
    zip: list[dict[str, list[Any]]] = []
    exclude: list[dict[str, Any]] = []

    def paths(self) -> list[str]:
        return list(self.axes) + [p for group in self.zip for p in group]


class SweepSpec(Grown):
    LATER = ("plugins",)  # spec hashes of earlier sweeps stand (--resume)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = 0
    model: ModelSpec = ModelSpec()
    init: InitSpec = InitSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    grid: GridSpec = GridSpec()
    probes: ProbesSpec = ProbesSpec()  # measurements, not part of a trial's config or id
    search: SearchSpec | None = None
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    profile: str | None = Field(None, pattern=NAME_PATTERN)  # the profiles: entry applied
    report: ReportSpec = ReportSpec()
    claims: list[ClaimSpec] = []  # what the study expects; `resablate report` tests them
    plugins: list[str] = []  # modules that register the sweep's own variants (spec/plugins.py)

    @model_validator(mode="after")
    def _stackable(self) -> SweepSpec:
        stack = self.resources.trials_per_stack
        if stack != "auto" and stack > 1 and self.scheduler.kind != "none":
            raise ConfigError(
                "resources.trials_per_stack",
                f"{stack} trials stacked in one Ray Tune trial cannot be stopped one by one by"
                f" scheduler {self.scheduler.kind}; set resources.trials_per_stack: 1 or"
                " scheduler.kind: none",
            )
        return self

    @model_validator(mode="after")
    def _chosen_on_validation(self) -> SweepSpec:
        """What a search or a scheduler chooses by is a validation metric (science.md §5): a
        choice made on the test set would leave the test result a biased estimate. A test_*
        metric is refused, and so is a val_* metric where some trial holds no validation set
        out (data.validation unset, in the base config or at a value of its grid axis)."""
        chosen = []
        if self.search is not None:
            objective = self.search.objective
            written = "metric" in objective.model_fields_set
            chosen.append(("search.objective.metric", objective.metric, written))
        if self.scheduler.kind != "none":
            metric = self.scheduler.resolved(self.search)[0]
            chosen.append(("scheduler.metric", metric, self.scheduler.metric is not None))
        axis = "data.validation"
        grid = [z[axis] for z in [self.grid.axes, *self.grid.zip] if axis in z]
        unset = None in (grid[0] if grid else [self.data.validation])
        for field, metric, written in chosen:
            named = metric if written else f"{metric} (the default)"
            if metric.startswith("test_"):
                then = "set data.validation (e.g. 0.1) and use" if unset else "use"
                val = f"val_{metric[len('test_') :]}"
                raise ConfigError(
                    field, f"{named} chooses on the test set; {then} {val} ({field}: {val})"
                )
            if metric.startswith("val_") and unset:
                where = "a value of grid axis data.validation" if grid else "data.validation"
                raise ConfigError(
                    field,
                    f"{named} reads the validation set, but {where} is null; set"
                    " data.validation (e.g. 0.1: a tenth of the training set held out)",
                )
        return self

    @model_validator(mode="after")
    def _reference(self) -> SweepSpec:
        axes = [a for a in self.grid.paths() if a != "seed"]
        for axis in self.report.reference:
            if axis not in axes:
                raise ConfigError(
                    f"report.reference.{axis}",
                    f"not a grid axis of this sweep (axes: {', '.join(axes) or 'none'});"
                    " the reference names one value of some grid axes",
                )
        return self

    def base_config(self) -> dict[str, Any]:
        """The trial config every grid point starts from, as plain nested dicts."""
        return self.model_dump(
            mode="json", include=set(TrialConfig.model_fields), exclude_unset=True
        )

    def hash(self) -> str:
        """Stable hash of the resolved spec (what ran, whatever the YAML's formatting)."""
        # what to compare and what to expect change no result
        dumped = self.model_dump(mode="json", exclude={"report", "claims"})
        text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
