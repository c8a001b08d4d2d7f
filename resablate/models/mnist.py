"""The ``mnist`` family (the lecture network of science.md §2, after Veit et al. 2016).

``conv0`` 1×1 (C_in -> C, bias) -> σ -> ``depth`` units of [conv k×k (bias) -> N -> σ -> conv k×k
(bias) -> N -> +x -> σ] (the ``post`` placement, the default) -> average pool over the whole map
-> σ -> linear C -> classes. ``depth`` counts units; ``channels`` (16) and ``kernel`` (3) as given.
The σ after conv0 is the placement's stem σ: placements whose stem has none (``full_preact``, the
branch positions ``pre``/``mid``/...) feed conv0's output to the units as it is; ``full_preact``
units end the net with N, σ before the pooling, as He et al. 2016's pre-activation nets do.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from torch import nn

from resablate.errors import ConfigError
from resablate.models.blocks import UnitPlan
from resablate.models.layers import ACTS, NORMS
from resablate.models.network import ResNet, build_units
from resablate.models.placement import parse_placement

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec
    from resablate.trial.data import DataShape


def defaults(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "depth": 25,
        "channels": 16,
        "kernel": 3,
        "shortcut_depth": 2,
        "activation": "post",
        "norm": "batch",
    }


def check(spec: ModelSpec, init: InitSpec, shape: DataShape) -> None:
    if len(shape.input_shape) != 3:
        raise ConfigError(
            "model.family",
            f"the mnist family convolves images (C×H×W) but the data gives {shape.input_shape};"
            " use image data without data.whiten, or family mlp",
        )


def build(spec: ModelSpec, init: InitSpec, shape: DataShape) -> ResNet:
    c, n, k = spec.channels or 16, spec.shortcut_depth, spec.kernel
    act = ACTS[spec.act]
    stem = nn.Sequential(OrderedDict(conv0=nn.Conv2d(shape.input_shape[0], c, 1, bias=True)))
    # σ after conv0 where the placement activates the stem (post, ...); full pre-activation
    # units start with σ(N(x)) themselves (He et al. 2016), so their stem is conv0 alone.
    if parse_placement(spec.activation).stem == "conv_norm_act":
        stem.add_module("act", act.make())
    plan = UnitPlan((c,) * (n + 1), (k,) * n, bias=True)
    units = build_units([plan] * spec.depth, spec, init)
    # pool -> σ -> linear; full pre-activation units leave their sum unnormalized, so the net
    # ends with N, σ before pooling (He et al. 2016), which the σ after pooling would repeat
    if parse_placement(spec.activation).final == "norm_act":
        ending = [NORMS[spec.norm](c, True, spec.groups), act.make(), *pooled()]
    else:
        ending = [*pooled(), act.make()]
    head = nn.Sequential(*ending, nn.Linear(c * act.widen, shape.classes, bias=True))
    return ResNet(stem, units, head)


def pooled() -> list[nn.Module]:
    """Average pooling over the whole map, to one vector per sample."""
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
