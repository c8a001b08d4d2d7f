"""The ``imagenet`` family: ResNet-18/34/50/101/152 exactly as torchvision builds them.

Stem conv7×7/2 (64) -> N -> σ -> max-pool 3×3/2, or with ``stem: cifar`` a conv3×3/1 and no pool
for 32×32 inputs; four stages (64, 128, 256, 512 channels) of basic (18, 34) or bottleneck units
(50, 101, 152; stride on the 3×3, as torchvision's v1.5); global average pool; linear. With the
defaults (downsample B, norm batch, placement post) the parameter count equals torchvision's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from resablate.errors import ConfigError
from resablate.models.cifar import unit_plans
from resablate.models.init import INITS, ScaledWS
from resablate.models.network import ResNet, build_units, head, stem_tail

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec
    from resablate.trial.data import DataShape

DEPTHS = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


def _bottleneck(depth: int) -> bool:
    return depth >= 50


def defaults(model: dict[str, Any]) -> dict[str, Any]:
    depth = model.get("depth", 18)
    deep = isinstance(depth, int) and _bottleneck(depth)
    return {
        "depth": 18,
        "channels": 64,
        "shortcut_depth": 3 if deep else 2,
        "block": "bottleneck" if deep else "basic",
        "activation": "post",
        "norm": "batch",
        "downsample": "B",
    }


def check(spec: ModelSpec, init: InitSpec, shape: DataShape) -> None:
    if spec.depth not in DEPTHS:
        raise ConfigError(
            "model.depth",
            f"{spec.depth} is not a depth of family imagenet; legal depths are"
            f" {', '.join(map(str, DEPTHS))}",
        )
    block, n = ("bottleneck", 3) if _bottleneck(spec.depth) else ("basic", 2)
    if spec.block != block or spec.shortcut_depth != n:
        raise ConfigError(
            "model.block" if spec.block != block else "model.shortcut_depth",
            f"ResNet-{spec.depth} has {block} units of {n} layers; set model.block: {block} and"
            f" model.shortcut_depth: {n}, or leave both out",
        )
    if len(shape.input_shape) != 3:
        raise ConfigError(
            "model.family", f"the imagenet family needs images, got {shape.input_shape}"
        )


def build(spec: ModelSpec, init: InitSpec, shape: DataShape) -> ResNet:
    c = spec.channels or 64
    if spec.stem == "cifar":
        conv: list[nn.Module] = [nn.Conv2d(shape.input_shape[0], c, 3, padding=1, bias=False)]
        pool: list[nn.Module] = []
    else:
        conv = [nn.Conv2d(shape.input_shape[0], c, 7, stride=2, padding=3, bias=False)]
        pool = [nn.MaxPool2d(3, stride=2, padding=1)]
    if INITS[init.scheme].normalizer_free:  # Brock et al. 2021: γ = 1, no σ precedes the stem
        ScaledWS.register(conv[0], 1.0)
    stem = nn.Sequential(*conv, *stem_tail(spec, c, spatial=True), *pool)
    plans = unit_plans(spec, c, c, DEPTHS[spec.depth], bottleneck_stride_at=1)
    units = build_units(plans, spec, init)
    return ResNet(stem, units, head(spec, plans[-1].widths[-1], shape.classes, True, bias=True))
