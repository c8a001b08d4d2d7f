"""The ``cifar`` family: He et al. 2015's CIFAR ResNets (arXiv 1512.03385 §4.2).

conv3×3 with 16 channels -> three stages of k units (16, 32, 64 channels; stride 2 at the first
unit of stages 2 and 3) -> global average pool -> linear. ``block: basic`` units have n 3×3 layers
(depth 6k+2 for n = 2: 20, 32, 44, 56, 110, 1202); ``block: bottleneck`` units are 1×1, 3×3 ... 1×1
with 4× expansion (stage outputs 64, 128, 256: depth 9k+2 for n = 3: 164, 1001, pre-act ResNet).
In general depth = 3·n·k + 2, so a study may fix the weight layers while varying n. ``stages: 1``
keeps 16 channels throughout (depth = n·k + 2): Taki 2017's 100 one-layer units are depth 102.

Basic units default to option A (He 2015: ResNet-20 0.27M ... ResNet-110 1.7M). Bottleneck units
default to option B, a 1×1 projection with the unit's stride where dimensions grow (the first
unit of each stage, 16 -> 64 channels in the first), identity elsewhere, as He et al.'s pre-act
code builds ResNet-164 and -1001 (KaimingHe/resnet-1k-layers, resnet-pre-act.lua): 1.70M for
ResNet-164 (He et al. 2016 report 1.7M; option A gives 1.66M). Their code has no norm after that
projection, which reads the unit's "common BN, ReLU"; ours adds the norm option B has in every
family (896 parameters in ResNet-164). As in that code the stride sits on the bottleneck's first
1×1 convolution (the ``imagenet`` family follows torchvision instead: stride on the 3×3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from resablate.errors import ConfigError
from resablate.models.blocks import UnitPlan
from resablate.models.init import INITS, ScaledWS
from resablate.models.network import ResNet, build_units, head, stem_tail

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec
    from resablate.trial.data import DataShape


def defaults(model: dict[str, Any]) -> dict[str, Any]:
    bottleneck = model.get("block") == "bottleneck"
    return {
        "depth": 164 if bottleneck else 20,
        "channels": 16,
        "shortcut_depth": 3 if bottleneck else 2,
        "activation": "post",
        "norm": "batch",
        "downsample": "B" if bottleneck else "A",
    }


def check(spec: ModelSpec, init: InitSpec, shape: DataShape) -> None:
    n = spec.shortcut_depth
    if spec.block == "bottleneck" and n < 2:
        raise ConfigError("model.shortcut_depth", "a bottleneck unit has at least 2 layers")
    per_unit = spec.stages * n
    if (spec.depth - 2) % per_unit or spec.depth < per_unit + 2:
        near = max(1, round((spec.depth - 2) / per_unit))
        candidates = {per_unit * k + 2 for k in range(max(1, near - 2), near + 3)}
        nearest = sorted(candidates, key=lambda d: (abs(d - spec.depth), d))[:3]
        every = ", ".join(str(per_unit * k + 2) for k in range(1, 5))
        stages = "" if spec.stages == 3 else f" and {spec.stages} stage(s)"
        raise ConfigError(
            "model.depth",
            f"{spec.depth} does not fit family cifar with shortcut_depth {n}{stages}:"
            f" depth = {spec.stages}·n·k + 2; nearest legal depths"
            f" {', '.join(map(str, nearest))} (all: {every}, ...)",
        )
    if len(shape.input_shape) != 3:
        raise ConfigError(
            "model.family", f"the cifar family needs images, got {shape.input_shape}"
        )


def unit_plans(
    spec: ModelSpec,
    cin: int,
    base: int,
    per_stage: list[int],
    first_stride: int = 1,
    bottleneck_stride_at: int = 0,
) -> list[UnitPlan]:
    """Units of a staged ResNet: widths double per stage, stride 2 at each later stage's start,
    on a bottleneck's weight ``bottleneck_stride_at`` (0: the first 1×1, He et al.'s pre-act
    code; 1: the 3×3, torchvision's)."""
    n, plans = spec.shortcut_depth, []
    expansion = 4 if spec.block == "bottleneck" else 1
    for stage, count in enumerate(per_stage):
        width = base * 2**stage
        for j in range(count):
            stride = (2 if stage else first_stride) if j == 0 else 1
            if spec.block == "bottleneck":
                widths = (cin, *(width,) * (n - 1), width * expansion)
                kernels = (1, *(3,) * (n - 2), 1)
                at = bottleneck_stride_at if n > 2 else 0
                plans.append(UnitPlan(widths, kernels, stride, stride_at=at))
            else:
                plans.append(UnitPlan((cin, *(width,) * n), (3,) * n, stride))
            cin = width * expansion
    return plans


def build(spec: ModelSpec, init: InitSpec, shape: DataShape) -> ResNet:
    c = spec.channels or 16
    k = (spec.depth - 2) // (spec.stages * spec.shortcut_depth)
    conv = nn.Conv2d(shape.input_shape[0], c, 3, padding=1, bias=False)
    if INITS[init.scheme].normalizer_free:  # Brock et al. 2021: γ = 1, no σ precedes the stem
        ScaledWS.register(conv, 1.0)
    stem = nn.Sequential(conv, *stem_tail(spec, c, spatial=True))
    plans = unit_plans(spec, c, c, [k] * spec.stages)
    units = build_units(plans, spec, init)
    return ResNet(stem, units, head(spec, plans[-1].widths[-1], shape.classes, True, bias=True))
