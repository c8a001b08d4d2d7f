"""The ``mlp`` family: Demystifying ResNet's n-shortcut dense network of width d.

``depth`` counts the weight layers inside the units (depth = n × units). Square, bias-free layers
keep input and output d-dimensional; where the data's input or output size differs from d, a linear
stem (in -> d) and head (d -> out) are added outside the units. With d whitened inputs and d
one-hot outputs there are none, which is exactly the paper's network.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from torch import nn

from resablate.errors import ConfigError
from resablate.models.blocks import UnitPlan
from resablate.models.init import INITS, ScaledWS
from resablate.models.network import ResNet, build_units

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec
    from resablate.trial.data import DataShape


def defaults(model: dict[str, Any]) -> dict[str, Any]:
    return {"depth": 4, "width": 10, "shortcut_depth": 2, "activation": "mid", "norm": "none"}


def check(spec: ModelSpec, init: InitSpec, shape: DataShape) -> None:
    n = spec.shortcut_depth
    if spec.depth % n:
        legal = ", ".join(str(n * k) for k in range(1, 6))
        raise ConfigError(
            "model.depth",
            f"{spec.depth} does not fit family mlp with shortcut_depth {n}: depth = n × units,"
            f" legal depths are {legal}, ...",
        )


def build(spec: ModelSpec, init: InitSpec, shape: DataShape) -> ResNet:
    d, n = spec.width, spec.shortcut_depth
    inputs = math.prod(shape.input_shape)
    linear = nn.Linear(inputs, d, bias=False) if inputs != d else nn.Identity()
    if INITS[init.scheme].normalizer_free and inputs not in (1, d):
        ScaledWS.register(linear, 1.0)  # as the conv families' stems: γ = 1, no σ precedes it
    stem = nn.Sequential(nn.Flatten(), linear)
    plan = UnitPlan((d,) * (n + 1), (1,) * n, spatial=False)
    units = build_units([plan] * (spec.depth // n), spec, init)
    head = nn.Linear(d, shape.classes, bias=False) if shape.classes != d else nn.Identity()
    return ResNet(stem, units, head)
