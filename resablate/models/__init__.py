"""Residual-network families, blocks and initializations; imports only torch.

``build(config, shape, generator)`` builds and initializes a trial's network; ``count_params``
builds it on the meta device (no memory, no init) for ``resablate plan``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from resablate.models import mlp
from resablate.models.init import INITS
from resablate.models.layers import ACTS, NORMS, SHORTCUTS
from resablate.models.placement import parse_placement
from resablate.registry import Registry

if TYPE_CHECKING:
    from resablate.data import DataShape
    from resablate.spec import InitSpec, ModelSpec

__all__ = [
    "ACTS",
    "FAMILIES",
    "INITS",
    "NORMS",
    "SHORTCUTS",
    "build",
    "check",
    "count_params",
    "parse_placement",
]


@dataclass(frozen=True)
class Family:
    build: Callable[[ModelSpec, DataShape], nn.Module]  # returns a module with init_weights()
    check: Callable[[ModelSpec, DataShape], None]  # raises ConfigError


FAMILIES: Registry[Family] = Registry("model family")
FAMILIES.add("mlp", Family(build=mlp.build, check=mlp.check))


def check(model: ModelSpec, init: InitSpec, shape: DataShape) -> None:
    """Raise ConfigError if the model config does not fit its family and the data."""
    FAMILIES[model.family].check(model, shape)


def build(
    model: ModelSpec, init: InitSpec, shape: DataShape, generator: torch.Generator
) -> nn.Module:
    """The trial's network, initialized by ``init`` from ``generator``."""
    net = FAMILIES[model.family].build(model, shape)
    net.init_weights(init, generator)  # type: ignore[operator]
    return net


def count_params(model: ModelSpec, shape: DataShape) -> int:
    """Trainable parameters of the network, counted without allocating or initializing it."""
    with torch.device("meta"):
        net = FAMILIES[model.family].build(model, shape)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
