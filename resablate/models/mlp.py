"""The ``mlp`` family: Demystifying ResNet's n-shortcut dense network of width d.

``depth`` counts the weight layers inside the units (depth = n × units). Square, bias-free layers
keep input and output d-dimensional; where the data's input or output size differs from d, a linear
stem (in -> d) and head (d -> out) are added outside the units. With d whitened inputs and d
one-hot outputs there are none, which is exactly the paper's network.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from resablate.errors import ConfigError
from resablate.models.blocks import DenseUnit
from resablate.models.init import InitContext, he_

if TYPE_CHECKING:
    from resablate.data import DataShape
    from resablate.spec import InitSpec, ModelSpec


class MLPNet(nn.Module):
    def __init__(self, spec: ModelSpec, shape: DataShape) -> None:
        super().__init__()
        d, n = spec.width, spec.shortcut_depth
        inputs = math.prod(shape.input_shape)
        self.stem = nn.Linear(inputs, d, bias=False) if inputs != d else nn.Identity()
        self.units = nn.ModuleList(
            DenseUnit(d, n, spec.activation, spec.norm, spec.act, spec.shortcut)
            for _ in range(spec.depth // n)
        )
        self.head = (
            nn.Linear(d, shape.classes, bias=False) if shape.classes != d else nn.Identity()
        )
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x.flatten(1))  # (batch, d)
        for unit in self.units:
            x = unit(x)
        return self.head(x)

    def init_weights(self, init: InitSpec, generator: torch.Generator) -> None:
        ctx = InitContext(units=len(self.units), layers_per_branch=self.n)
        for unit in self.units:
            cast(DenseUnit, unit).init_branch(init.scheme, init.c, init.eps, generator, ctx)
        for layer in (self.stem, self.head):
            if isinstance(layer, nn.Linear):
                he_(layer.weight, generator)


def check(spec: ModelSpec, shape: DataShape) -> None:
    """Raise ConfigError where the config does not fit the family."""
    n = spec.shortcut_depth
    if spec.depth % n:
        legal = ", ".join(str(n * k) for k in range(1, 6))
        raise ConfigError(
            "model.depth",
            f"{spec.depth} does not fit family mlp with shortcut_depth {n}: depth = n × units,"
            f" legal depths are {legal}, ...",
        )
    if spec.downsample != "A":
        raise ConfigError("model.downsample", "the mlp family never downsamples; leave it at A")


def build(spec: ModelSpec, shape: DataShape) -> nn.Module:
    return MLPNet(spec, shape)
