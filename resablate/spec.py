"""The sweep file: YAML -> frozen, validated spec.

A sweep file has the sections of one trial's config (``seed``, ``model``, ``init``, ``data``,
``train``: the base every trial starts from), a ``grid`` of dotted paths into that config, and the
sections that belong to the whole sweep (``name``, ``description``, ``resources``, ``tracking``).
Field names are the YAML names of ../shared/science.md.

Every mistake becomes a :class:`~resablate.errors.SpecError`: one line naming the file, the field,
the bad value and the fix. Names of variants are checked against the registries of the modules that
build them (imported lazily, so that this module and grid.py stay free of torch).
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from resablate.errors import ConfigError, SpecError
from resablate.registry import Registry, did_you_mean

# Sections later issues add; naming them here turns "unknown field" into "not yet, see issue N".
RESERVED_SECTIONS: dict[str, int] = {}


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Grown(Section):
    """A section with fields added after sweeps were run (``LATER``). A trial's id hashes its
    resolved config, so these appear in it only when set: every earlier trial keeps its id (and
    its sweep resumes) whatever the version that runs it."""

    LATER: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        for name in self.LATER:
            if name in out and out[name] == type(self).model_fields[name].default:
                del out[name]
        return out


def registries() -> dict[str, Any]:
    """The registry that names the legal values of each field that picks a variant."""
    from resablate import data, models, train

    return {
        "model.family": models.FAMILIES,
        "model.shortcut": models.SHORTCUTS,
        "model.norm": models.NORMS,
        "model.act": models.ACTS,
        "init.scheme": models.INITS,
        "data.name": data.DATASETS,
        "train.optimizer": train.OPTIMIZERS,
        "train.schedule": train.SCHEDULES,
        "train.recipe": RECIPES,
    }


def _registry_name(path: str, value: str) -> str:
    """Check ``value`` against the registry of field ``path`` (torch-side modules load here)."""
    return registries()[path].check(value)


class ModelSpec(Grown):
    """The network (science.md §1, §2). Fields a family sets itself (its depth convention,
    placement, norm, ...) take the family's defaults in a trial's config when left out."""

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

    @field_validator("family", "shortcut", "norm", "act")
    @classmethod
    def _known(cls, value: str, info: Any) -> str:
        return _registry_name(f"model.{info.field_name}", value)

    @field_validator("activation")
    @classmethod
    def _placement(cls, value: str) -> str:
        from resablate.models import parse_placement

        parse_placement(value)
        return value


class InitSpec(Section):
    scheme: str = "he"
    c: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    eps: float = Field(1e-3, ge=0.0, allow_inf_nan=False)  # zero: the perturbation
    alpha: float = Field(0.2, gt=0.0)  # nf: α (c multiplies α²)

    @field_validator("scheme")
    @classmethod
    def _known(cls, value: str) -> str:
        return _registry_name("init.scheme", value)


class DataSpec(Grown):
    LATER = ("image",)

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

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        return _registry_name("data.name", value)


# Presets of train fields (science.md §6); the fields a user writes in `train:` override them.
RECIPES: Registry[dict[str, Any]] = Registry("recipe")
RECIPES.add(
    "he_cifar",  # He et al. 2015, §4.2: CIFAR-10 ResNets (110+ layers add DEEP_WARMUP)
    {
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "batch_size": 128,
        "lr": 0.1,
        "schedule": "step",
        "milestones": (32000, 48000),
        "milestone_unit": "iteration",
        "gamma": 0.1,
        "max_iterations": 64000,
    },
)


# He et al. 2015, §4.2: "In this case [110 layers], we find that the initial learning rate of
# 0.1 is slightly too large to start converging. So we use 0.01 to warm up the training until the
# training error is below 80% (about 400 iterations)"; Identity Mappings uses it for 110, 164 and
# 1001 layers. The he_cifar recipe adds it by itself from this many weight layers on.
DEEP_WARMUP = {"warmup_lr": 0.01, "warmup_until_error": 0.8}
DEEP_LAYERS = 110


def weight_layers(model: dict[str, Any]) -> int:
    """A network's weight layers, counted as its paper counts its depth (stem and classifier
    included): ``depth`` in the cifar and imagenet families, 2 per unit + 2 in mnist's."""
    depth = int(model.get("depth", 0))
    return 2 * depth + 2 if model.get("family") == "mnist" else depth


def recipe_defaults(train: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """``train`` with what its recipe adds for this network: the warm-up of He et al.'s deep
    nets, unless ``train`` chooses a warm-up itself."""
    chosen = ("warmup_lr", "warmup_until_error", "warmup_iterations")
    if (
        train.get("recipe") == "he_cifar"
        and weight_layers(model) >= DEEP_LAYERS
        and not any(key in train for key in chosen)
    ):
        return {**DEEP_WARMUP, **train}
    return train


# How a trial's arithmetic runs (train.Compute); added after sweeps were run
COMPUTE_FIELDS = ("precision", "channels_last", "compile", "deterministic")


class TrainSpec(Grown):
    LATER = COMPUTE_FIELDS

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
    # The lr schedule, stepped once per optimizer iteration (train.SCHEDULES). Milestones count
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
    recipe: str | None = None  # a preset from RECIPES; the fields written here override it
    # A training loss above this (or NaN/inf) ends the trial as `diverged` (science.md §4).
    diverge_above: float = Field(1e6, gt=0.0)
    # How the arithmetic runs (train.Compute): bf16 autocast of forward passes (the loss,
    # the optimizer and the weights stay fp32), channels-last memory for image models,
    # torch.compile of the training forward pass, deterministic kernels (and no cuDNN autotuning).
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False

    @model_validator(mode="before")
    @classmethod
    def _expand_recipe(cls, data: Any) -> Any:
        recipe = data.get("recipe") if isinstance(data, dict) else None
        if not isinstance(recipe, str):
            return data
        try:
            preset = RECIPES[recipe]
        except ValueError as exc:
            raise ConfigError("train.recipe", f"{_short(recipe)}: {exc}") from None
        return {**preset, **data}

    @field_validator("optimizer")
    @classmethod
    def _known(cls, value: str) -> str:
        return _registry_name("train.optimizer", value)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        from resablate.train import SCHEDULES

        return SCHEDULES.check(value)

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
    """Everything one trial needs; the resolved form of this is what the trial id hashes."""

    seed: int = 0
    model: ModelSpec = ModelSpec()
    init: InitSpec = InitSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Fields of ``model`` the user left out take the family's defaults; a recipe adds what
        it needs for this network (the deep nets' warm-up)."""
        from resablate.models import FAMILIES

        if not isinstance(data, dict) or not isinstance(data.get("model", {}), dict):
            return data
        model = data.get("model", {})
        family = model.get("family", "mlp")
        if family not in FAMILIES:
            return data  # the field validator names the choices
        model = {**FAMILIES[family].defaults(model), **model}
        train = data.get("train", {})
        if isinstance(train, dict):
            data = {**data, "train": recipe_defaults(train, {**model, "family": family})}
        return {**data, "model": model}

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        from resablate import data, models

        if self.train.loss == "mse" and self.data.target != "onehot":
            raise ConfigError(
                "data.target", "loss mse needs one-hot targets; set data.target: onehot"
            )
        if self.model.norm == "batch" and self.train.batch_size == 1:
            raise ConfigError(
                "train.batch_size", "batch norm needs 2 or more samples per batch; use 2 or more"
            )
        shape = data.DATASETS[self.data.name].shape(self.data)  # raises ConfigError
        models.check(self.model, self.init, shape)  # raises ConfigError
        return self


class ResourcesSpec(Grown):
    LATER = ("seeds_per_trial",)  # spec hashes of earlier sweeps stand (--resume)

    cpu: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    # retries of a failed trial (an exception, a lost worker or node); each attempt starts over
    max_failures: int = Field(0, ge=0)
    # seeds of one configuration trained together as one stacked computation in one worker
    # (resablate.batched; configurations it cannot stack run alone): fewer, fuller workers.
    # auto: on a local Ray, as many as leave every trial slot of the machine busy (at most
    # AUTO_STACK_MAX); inline, on a cluster or under a scheduler, 1 (runner.stack_size)
    seeds_per_trial: int | Literal["auto"] = "auto"

    @field_validator("seeds_per_trial", mode="before")
    @classmethod
    def _stack(cls, value: Any) -> Any:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value == "auto" or (whole and value >= 1):
            return value
        raise ValueError(
            "expected auto (stack seeds where it keeps every trial slot busy) or a whole number"
            " of seeds per trial, 1 or more (1: each seed its own trial)"
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


class GridSpec(Section):
    """Axes (path -> values) multiplied out, ``zip`` groups walked in step, ``exclude`` rules."""

    axes: dict[str, list[Any]] = {}
    zip: list[dict[str, list[Any]]] = []
    exclude: list[dict[str, Any]] = []

    def paths(self) -> list[str]:
        return list(self.axes) + [p for group in self.zip for p in group]


When = Literal["init", "end"]


class Probe(Section):
    """When a probe runs: at ``init`` (before training, step 0), at the ``end``, and every
    ``every`` epochs. Probes measure a copy of the network: they never change training."""

    at: list[When] = ["init", "end"]
    every: int | None = Field(None, ge=1)

    def due(self, epoch: int, last: int) -> bool:
        if epoch == 0:
            return "init" in self.at
        return (epoch == last and "end" in self.at) or bool(self.every and epoch % self.every == 0)


class SppProbe(Probe):
    """Signal propagation per unit: forward, branch and backward variance, channel squared mean."""

    input: Literal["data", "noise"] = "data"  # noise: a white-noise batch (Brock et al. 2021)
    batch: int = Field(256, ge=2)


class HessianProbe(Probe):
    """The training loss's Hessian spectrum: max |λ|, P10 |λ|, condition number, index."""

    method: Literal["auto", "exact", "lanczos"] = "auto"
    max_exact: int = Field(3000, ge=1)  # parameters up to which auto computes the full matrix
    batch: int | Literal["full"] = 512
    dtype: Literal["float64", "float32"] = "float64"


class WeightsProbe(Probe):
    """Mean Frobenius norm of the weights per layer kind (Demystifying ResNet Figs. 2-3)."""

    every: int | None = Field(1, ge=1)


class ShatteredProbe(Probe):
    """Autocorrelation of input gradients along a line of inputs (Balduzzi et al. 2017)."""

    at: list[When] = ["init"]
    points: int = Field(256, ge=16)


class LesionProbe(Probe):
    """Test error against the number of units removed at random, 1 … ``k``, and accuracy with
    each single unit removed (Veit et al. 2016)."""

    at: list[When] = ["end"]
    k: int | None = Field(None, ge=1)  # the most units removed at once; default half the units
    draws: int = Field(10, ge=1)  # random sets of units per k


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

    metric: str = "test_acc"
    direction: Literal["max", "min"] = "max"
    at: Literal["last", "best"] = "last"  # the last epoch's value or the best epoch's
    diverged: Literal["worst"] | float = "worst"  # a diverged run's score, or a stated penalty


class SearchSpec(Grown):
    """Optuna over one continuous parameter inside every grid cell (a grid point without this
    parameter and without its seed); each candidate is scored by the mean over the seeds.

    ``where`` (grid axis -> value or list of values) limits the search to the cells that match;
    the other grid points run once, with the parameter as the sweep sets it (Taki's study
    searches c for its taki arm only, against He init at c = 1)."""

    LATER = ("where",)  # spec hashes of earlier sweeps stand (--resume)
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True
    )

    param: str = "init.c"
    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    sampler: Literal["tpe", "gp", "cmaes", "random"] = "tpe"
    seed: int = 0
    n_trials: int = Field(20, ge=1)  # candidates per cell
    objective: ObjectiveSpec = ObjectiveSpec()
    where: dict[str, Any] = {}

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
        from resablate.results import METRICS

        metric = self.objective.metric
        if metric not in METRICS and "." not in metric:  # or a probe's number, hessian.cond
            raise ConfigError(
                "search.objective.metric",
                f"{metric!r} is not a reported metric"
                f"{did_you_mean(metric, list(METRICS))} (choices: {', '.join(METRICS)},"
                " or a probe's <probe>.<key>)",
            )
        numeric = [
            p
            for p, default, _ in describe()
            if isinstance(default, (int, float)) and not isinstance(default, bool) and p != "seed"
        ]
        if self.param not in numeric:
            raise ConfigError(
                "search.param",
                f"{self.param!r} is not a numeric field of the"
                f" trial config{did_you_mean(self.param, numeric)}",
            )
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
    metric: str | None = None  # default: the search objective's metric, else test_acc
    mode: Literal["max", "min"] | None = None  # default: max for accuracies, min otherwise
    grace_period: int = Field(1, ge=1)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(3.0, gt=1.0)  # asha: 1 / fraction kept at each rung
    min_samples_required: int = Field(3, ge=1)  # median: trials to compare with

    @model_validator(mode="after")
    def _metric(self) -> SchedulerSpec:
        if self.metric is None:
            return self
        from resablate.results import METRICS

        if self.metric not in METRICS:
            raise ConfigError(
                "scheduler.metric",
                f"{self.metric!r} is not a per-epoch metric"
                f"{did_you_mean(self.metric, list(METRICS))} (choices: {', '.join(METRICS)})",
            )
        return self

    def resolved(self, search: SearchSpec | None) -> tuple[str, str]:
        """(metric, mode) with the defaults filled in."""
        objective = search.objective if search else None
        metric = self.metric or (objective.metric if objective else "test_acc")
        if self.mode is not None:
            return metric, self.mode
        if objective is not None and objective.metric == metric:
            return metric, objective.direction
        return metric, "max" if "acc" in metric else "min"


class SweepSpec(Section):
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

    @model_validator(mode="after")
    def _stackable(self) -> SweepSpec:
        stack = self.resources.seeds_per_trial
        if stack != "auto" and stack > 1 and self.scheduler.kind != "none":
            raise ConfigError(
                "resources.seeds_per_trial",
                f"{self.resources.seeds_per_trial} seeds stacked in one Ray Tune trial cannot be"
                f" stopped one by one by scheduler {self.scheduler.kind}; set"
                " resources.seeds_per_trial: 1 or scheduler.kind: none",
            )
        return self

    def base_config(self) -> dict[str, Any]:
        """The trial config every grid point starts from, as plain nested dicts."""
        return self.model_dump(
            mode="json", include=set(TrialConfig.model_fields), exclude_unset=True
        )

    def hash(self) -> str:
        """Stable hash of the resolved spec (what ran, whatever the YAML's formatting)."""
        dumped = self.model_dump(mode="json")
        # how seeds are grouped into workers changes no result: 1 (the default before auto) and
        # auto hash alike, so that sweeps recorded before auto resume
        if dumped.get("resources", {}).get("seeds_per_trial") == 1:
            del dumped["resources"]["seeds_per_trial"]
        text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Field paths


def _section_of(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def trial_paths() -> list[str]:
    """Every dotted path a grid axis may name: ``seed``, ``model.depth``, ..."""
    paths = []
    for name in TrialConfig.model_fields:
        section = _section_of(TrialConfig, name)
        paths += [f"{name}.{f}" for f in _names(section)] if section else [name]
    return paths


def describe() -> list[tuple[str, Any, str]]:
    """(dotted path, default, legal values) of every trial-config field (``resablate fields``)."""
    from resablate.models.placement import NAMED, POSITIONS

    names = {path: ", ".join(r.names()) for path, r in registries().items()}
    names["model.activation"] = (
        f"{', '.join(NAMED)}; or {', '.join(POSITIONS)}, combined with '+', or linear"
    )
    out = []
    for path in trial_paths():
        section, _, leaf = path.partition(".")
        model = _section_of(TrialConfig, section) if leaf else None
        by_name = {f.alias or n: f for n, f in model.model_fields.items()} if model else {}
        field = by_name[leaf] if model else TrialConfig.model_fields[section]
        bounds = [_bound(m) for m in field.metadata]
        legal = names.get(path) or " ".join([_type_name(field.annotation), *filter(None, bounds)])
        out.append((path, field.default, legal))
    return out


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in args)
    if typing.get_origin(annotation) is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _bound(constraint: Any) -> str:
    for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if hasattr(constraint, attr):
            return f"{sign} {getattr(constraint, attr)}"
    return ""


def _names(model: type[BaseModel]) -> list[str]:
    """The YAML names of a section's fields (``lambda`` for ``lambda_``)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields of the section at ``loc`` (for did-you-mean), or []."""
    model: type[BaseModel] = SweepSpec
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            return []
        section = _section_of(model, part)
        if section is None:
            return []
        model = section
    return _names(model)


# --------------------------------------------------------------------------------------------
# Errors


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(error: ValidationError, prefix: tuple[Any, ...] = ()) -> tuple[str, str]:
    """The first pydantic error as (dotted field, one-line problem with the value and the fix)."""
    first = error.errors()[0]
    loc = tuple(p for p in first["loc"] if p not in ("int", "constrained-str"))
    # Union branches add their type name to the location; keep only real field names.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("literal[")))
    kind, value = first["type"], first.get("input")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause.field, cause.problem
    field = _dotted(prefix + loc)
    if kind == "extra_forbidden":
        name = str(loc[-1])
        if not loc[:-1] and name in RESERVED_SECTIONS:
            issue = RESERVED_SECTIONS[name]
            return field, f"the '{name}' section is not supported yet (planned in issue {issue})"
        legal = _fields_at(prefix + loc[:-1])
        hint = did_you_mean(name, legal)
        return field, f"unknown field '{name}'{hint} (fields here: {', '.join(legal)})"
    if kind == "missing":
        return field, "this field is required"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return field, f"{_short(value)} is not allowed; use {expected}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return field, f"expected a mapping of fields, got {_short(value)}"
    if kind == "string_pattern_mismatch":
        return field, (
            f"{_short(value)} is not a valid name; use letters, digits, '_', '.', '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    if cause is not None:
        return field, f"{_short(value)}: {cause}"
    return field, f"{_short(value)}: {first['msg'][:1].lower()}{first['msg'][1:]}"


# --------------------------------------------------------------------------------------------
# Loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a sweep file with ``yaml.safe_load``; every failure is a one-line SpecError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            source, "", "no such file; check the path (ready sweeps are in sweeps/)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            source, "", f"cannot read the file ({exc.__class__.__name__}: {exc})"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            source, "", f"{where}invalid YAML ({problem}); fix the syntax there"
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(
            source, "", f"a sweep file is a YAML mapping with at least 'name', got {_short(raw)}"
        )
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise SpecError(source, _short(bad[0]), "field names must be strings")
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """``'model.depth=8'`` -> ``('model.depth', 8)``; the value is read as YAML."""
    source = f"--set {text}"
    path, sep, value_text = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError(source, "", "expected FIELD=VALUE, e.g. --set model.depth=8")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        raise SpecError(source, path, f"cannot read {value_text!r} as a YAML value") from None
    if value is None:
        raise SpecError(source, path, "empty value; write e.g. --set model.depth=8")
    check_path(source, path)
    return path, value


def check_path(source: str, path: str) -> None:
    """A field an override (or a profile) may set: a grid axis, a nested section's field, or a
    known field of the sweep; else a one-line error naming ``source``."""
    top = path.split(".")[0]
    if top in RESERVED_SECTIONS:
        issue = RESERVED_SECTIONS[top]
        raise SpecError(source, path, f"the '{top}' section is not supported yet (issue {issue})")
    if top == "grid":
        if path == "grid" or path.count(".") == 0:
            raise SpecError(source, path, "name a grid axis, e.g. --set grid.model.depth=[2,4]")
        return
    if top in ("probes", "search", "scheduler"):  # nested: checked by the schema like the file
        return
    known = (
        [f for f in SweepSpec.model_fields]
        + trial_paths()
        + [f"{s}.{f}" for s in ("resources", "tracking") for f in _fields_at((s,))]
    )
    if path not in known:
        raise SpecError(source, path, f"unknown field{did_you_mean(path, known)}")


Override = tuple[str, str, Any]  # (where it came from, for errors; dotted path; value)


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], before: list[Override] | None = None
) -> dict[str, Any]:
    """Apply ``--set`` overrides (after the already parsed ``before``, a profile's entries) to
    the raw YAML mapping, before validation.

    ``--set grid.<axis>=[...]`` replaces (or adds) a grid axis; setting a field that is a plain
    grid axis removes the axis, so the trial config takes the one value given.
    """
    items = [*(before or []), *((f"--set {t}", *parse_override(t)) for t in overrides)]
    out = json.loads(json.dumps(raw, default=str)) if items else raw
    for where, path, value in items:
        grid = out.get("grid")
        if grid is None:
            grid = out["grid"] = {}
        if not isinstance(grid, dict):
            raise SpecError(where, "grid", "the sweep's grid is not a mapping")
        if path.startswith("grid."):
            grid[path[len("grid.") :]] = value
            continue
        for group in grid.get("zip") or []:
            if isinstance(group, dict) and path in group:
                raise SpecError(
                    where,
                    path,
                    "is part of a zip group; override it with --set grid.zip=...",
                )
        grid.pop(path, None)
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(where, part, "is not a section in the sweep file")
            node = child
        node[parts[-1]] = value
    if out.get("grid") == {} and "grid" not in raw:
        del out["grid"]
    return out


def _parse_values(source: str, field: str, values: Any, unique: bool = True) -> list[Any]:
    if not isinstance(values, list):
        raise SpecError(source, field, f"{_short(values)} is not a list; write e.g. [2, 4, 8]")
    if not values:
        raise SpecError(source, field, "an empty list gives no trial; give at least one value")
    seen: list[str] = []
    for value in values if unique else []:
        key = json.dumps(value, sort_keys=True, default=str)
        if key in seen:
            raise SpecError(source, field, f"value {_short(value)} is listed twice")
        seen.append(key)
    return values


def _check_axis(source: str, path: str) -> None:
    legal = trial_paths()
    if path not in legal:
        raise SpecError(
            source,
            f"grid.{path}",
            f"not a field of the trial config{did_you_mean(path, legal)}"
            " (grid axes are dotted paths such as model.depth, init.c, seed)",
        )


def _mappings(
    grid: dict[str, Any], key: str, source: str, shape: str
) -> list[tuple[str, dict[str, Any]]]:
    """``grid[key]`` as (field path, non-empty mapping) pairs: zip groups, exclude rules."""
    items = grid.get(key) or []
    if not isinstance(items, list):
        raise SpecError(source, f"grid.{key}", f"must be a list of mappings {shape}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item:
            raise SpecError(source, f"grid.{key}[{i}]", f"must be a non-empty mapping {shape}")
    return [(f"grid.{key}[{i}]", item) for i, item in enumerate(items)]


def parse_grid(raw: Any, source: str) -> GridSpec:
    """The ``grid`` mapping -> GridSpec, checking every path, list and rule."""
    if raw is None:
        return GridSpec()
    if not isinstance(raw, dict):
        raise SpecError(source, "grid", "must be a mapping of axis -> list of values")
    axes: dict[str, list[Any]] = {}
    zips: list[dict[str, list[Any]]] = []
    taken: set[str] = set()
    for path, values in raw.items():
        if path in ("zip", "exclude"):
            continue
        _check_axis(source, str(path))
        axes[path] = _parse_values(source, f"grid.{path}", values)
        taken.add(path)
    for where, group in _mappings(raw, "zip", source, "axis -> list of values"):
        lengths = set()
        parsed: dict[str, list[Any]] = {}
        for path, values in group.items():
            _check_axis(source, str(path))
            if path in taken:
                raise SpecError(source, f"{where}.{path}", "this axis is already in the grid")
            # a zipped list may repeat a value; the zipped tuples may not
            parsed[path] = _parse_values(source, f"{where}.{path}", values, unique=False)
            lengths.add(len(values))
            taken.add(path)
        if len(lengths) > 1:
            sizes = ", ".join(f"{p}: {len(v)}" for p, v in parsed.items())
            raise SpecError(source, where, f"zipped lists must have one length, got {sizes}")
        rows = [json.dumps(row, default=str) for row in zip(*parsed.values(), strict=True)]
        for i, row in enumerate(rows):
            if row in rows[:i]:
                raise SpecError(source, where, f"entry {i} repeats entry {rows.index(row)}")
        zips.append(parsed)
    rules = _mappings(raw, "exclude", source, "axis -> value or list of values")
    for where, rule in rules:
        for path in rule:
            if path not in taken:
                raise SpecError(
                    source,
                    f"{where}.{path}",
                    f"not a grid axis{did_you_mean(str(path), sorted(taken))}"
                    f" (axes: {', '.join(sorted(taken)) or 'none'})",
                )
    return GridSpec(axes=axes, zip=zips, exclude=[rule for _, rule in rules])


def parse_sweep(raw: dict[str, Any], source: str) -> SweepSpec:
    """A raw mapping (YAML after overrides) -> SweepSpec, or one SpecError."""
    grid = parse_grid(raw.get("grid"), source)
    try:
        return SweepSpec.model_validate({**raw, "grid": grid})
    except ValidationError as exc:
        field, problem = explain(exc)
        raise SpecError(source, field, problem) from None


def blame(source: str, overrides: list[str] | tuple[str, ...], field: str) -> str:
    """The override that set ``field`` (``--set model.depth=7``), else the file ``source``."""
    for text in reversed(list(overrides)):
        path = text.partition("=")[0].strip()
        if field == path or field.startswith(path + ".") or field.startswith(path + "["):
            return f"--set {text}"
    return source


def profile_overrides(raw: dict[str, Any], source: str, profile: str | None) -> list[Override]:
    """Take the ``profiles:`` section out of a raw sweep file; the chosen profile's entries
    (dotted field -> value, as ``--set`` takes them) become overrides applied before ``--set``."""
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise SpecError(
            source,
            "profiles",
            "must map each profile name to fields, e.g. {cpu: {train.epochs: 2}}",
        )
    if profile is None:
        return []
    if profile not in profiles:
        choices = ", ".join(profiles) or "none: the file has no profiles: section"
        raise SpecError(source, "--profile", f"no profile {profile!r}; choose from {choices}")
    raw["profile"] = profile
    where = f"{source} (profile {profile})"
    for field in profiles[profile]:
        check_path(where, str(field))
    return [(where, str(field), value) for field, value in profiles[profile].items()]


def load_sweep(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), profile: str | None = None
) -> SweepSpec:
    """Read, override and validate a sweep file (the grid is expanded by grid.py / plan.py).

    The file's ``profiles.<profile>`` entries apply first, then ``overrides`` (``--set``). An
    error in a field that an override set names the override instead of the file, and one that
    a profile set names the profile.
    """
    source = str(path)
    raw = read_yaml(path)
    chosen = profile_overrides(raw, source, profile)
    try:
        return parse_sweep(apply_overrides(raw, list(overrides), chosen), source)
    except SpecError as exc:
        blamed = blame(source, overrides, exc.field)
        if blamed == source:  # not a --set: perhaps the profile set it
            blamed = blame(source, [f"{path}=" for _, path, _ in chosen], exc.field)
            blamed = source if blamed == source else chosen[0][0]
        if exc.source != source or blamed == source:
            raise
        raise SpecError(blamed, exc.field, exc.problem) from None
