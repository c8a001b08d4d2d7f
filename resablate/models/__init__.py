"""Residual-network families, units and initializations; imports only torch.

``build(model, init, shape, generator)`` builds and initializes a trial's network;
``count_params`` builds it on the meta device (no memory, no init) for ``resablate plan``;
``check`` raises ConfigError for a config that does not fit its family or is undefined.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from resablate.errors import ConfigError
from resablate.models import cifar, imagenet, mlp, mnist
from resablate.models.init import INITS
from resablate.models.layers import ACTS, NORMS
from resablate.models.network import ResNet
from resablate.models.placement import ACT, POSITIONS, N, parse_placement
from resablate.models.shortcuts import SHORTCUTS, variance_law
from resablate.registry import Registry

if TYPE_CHECKING:
    from resablate.spec.schema import InitSpec, ModelSpec
    from resablate.trial.data import DataShape

__all__ = [
    "ACTS",
    "FAMILIES",
    "INITS",
    "NORMS",
    "POSITIONS",
    "SHORTCUTS",
    "build",
    "check",
    "count_params",
    "parse_placement",
]


@dataclass(frozen=True)
class Family:
    defaults: Callable[[dict[str, Any]], dict[str, Any]]  # model fields the family sets
    check: Callable[[ModelSpec, InitSpec, DataShape], None]  # raises ConfigError
    build: Callable[[ModelSpec, InitSpec, DataShape], ResNet]


FAMILIES: Registry[Family] = Registry("model family")
for _name, _module in (("mlp", mlp), ("mnist", mnist), ("cifar", cifar), ("imagenet", imagenet)):
    FAMILIES.add(_name, Family(_module.defaults, _module.check, _module.build))


def _check_combination(model: ModelSpec, init: InitSpec) -> None:
    """Combinations that are undefined, with the reason (science.md §1.6, §3).

    Schemes are tested by what they declare (``Scheme.normalizer_free``, ``zero_last_norm``),
    so a mutant registered under another name is refused where its original is."""
    placement = parse_placement(model.activation)
    if model.shortcut_depth == 1 and "mid" in model.activation.split("+"):
        raise ConfigError(
            "model.activation",
            f"{model.activation} puts σ between a branch's weights, and a one-layer branch"
            " (shortcut_depth 1) has none; use pre or post_branch, or shortcut_depth 2 or more",
        )
    if model.act == "crelu" and (placement.widens_output or placement.stem == "conv_norm_act"):
        raise ConfigError(
            "model.act",
            f"crelu doubles the width, so it cannot act on a unit's output or the stem as"
            f" placement {model.activation} needs; use full_preact or positions pre/mid",
        )
    if init.scheme == "looks_linear" and model.act != "crelu":
        raise ConfigError(
            "init.scheme", "looks_linear mirrors weights [W, −W] for a CReLU; set model.act: crelu"
        )
    scheme = INITS[init.scheme]
    if (init.scheme == "fixup" or scheme.normalizer_free) and model.norm != "none":
        raise ConfigError(
            "init.scheme", f"{init.scheme} replaces normalization; set model.norm: none"
        )
    if init.scheme == "fixup" and model.shortcut_depth < 2:
        raise ConfigError(
            "init.scheme", "fixup scales by L^(−1/(2m−2)), undefined for shortcut_depth 1"
        )
    if scheme.normalizer_free and model.activation != "full_preact":
        raise ConfigError(
            "model.activation",
            f"nf units are full pre-activation, x + α·F(x/β) after a bare stem conv, and β is"
            f" the std of that; {model.activation} is not (relu_preact's σ after the stem"
            " leaves the units at ~0.35× β²); use full_preact",
        )
    if scheme.normalizer_free and model.shortcut == "dropout":
        raise ConfigError(
            "model.shortcut",
            "nf's Scaled WS assumes each σ reads N(0, 1), and a dropout shortcut's Bernoulli"
            " mask makes x non-Gaussian: with β following (1 − p)·Var the branch's variance"
            " still drifts above β² unit after unit (1.5× at 16 units); use identity, conv,"
            " scale, scalar or none",
        )
    if scheme.normalizer_free and variance_law(model) is None:
        raise ConfigError(
            "model.shortcut",
            f"nf's β_l is the analytic std of unit l's input, and {model.shortcut}'s"
            " g = sigmoid(conv(x) + b) depends on x, so no β schedule follows it; use identity,"
            " conv, scale, scalar or none",
        )
    if scheme.zero_last_norm and model.norm == "none":
        raise ConfigError("init.scheme", "zero_last zeros the last norm's γ; it needs a norm")
    ops = placement.ops(model.shortcut_depth)
    if scheme.zero_last_norm and N not in ops:
        raise ConfigError(
            "init.scheme",
            f"zero_last zeros the γ of the branch's last norm, and a {model.shortcut_depth}-layer"
            f" {model.activation} branch has none; use shortcut_depth 2 or another placement",
        )
    after_last_norm = ops[len(ops) - ops[::-1].index(N) :] if N in ops else ()
    dead = model.act in ("relu", "crelu")  # σ'(0) = 0 in PyTorch
    if scheme.zero_last_norm and dead and after_last_norm[:1] == (ACT,):
        raise ConfigError(
            "init.scheme",
            f"zero_last zeros the γ of the branch's last norm, which in {model.activation} feeds"
            f" a {model.act} at 0 whose derivative is 0: the branch never trains; use post or"
            " relu_preact, whose last norm reaches the sum directly",
        )
    if init.scheme == "skipinit" and model.shortcut == "scalar":
        raise ConfigError(
            "init.scheme",
            "shortcut scalar already is SkipInit's α; use shortcut"
            " identity, or scalar with alpha_init: 0",
        )


def init_in_forward(init: InitSpec) -> dict[str, Any]:
    """What of ``init`` the network's forward pass reads, beyond the initial values of its
    weights: whether the scheme adds a branch gain (SkipInit's α) or Fixup's scalars, and a
    normalizer-free scheme's α and c. Networks of one model config that agree on it compute the
    same function of their weights, whatever their schemes' draws."""
    scheme = INITS[init.scheme]
    nf = {"c": init.c, "alpha": init.alpha} if scheme.normalizer_free else None
    return {"gain": scheme.branch_gain is not None, "fixup": scheme.fixup, "nf": nf}


@functools.lru_cache(maxsize=4096)  # a grid repeats each network over seeds and recipes
def check(model: ModelSpec, init: InitSpec, shape: DataShape) -> None:
    """Raise ConfigError if the config does not fit its family and the data, or is undefined."""
    _check_combination(model, init)
    FAMILIES[model.family].check(model, init, shape)
    try:  # built once per structure: c scales the initial weights, never the shapes
        count_params(model, init.model_copy(update={"c": 1.0}), shape)
    except (ValueError, RuntimeError) as exc:  # e.g. GroupNorm groups that do not divide
        field = "model.groups" if "group" in str(exc).lower() else "model"
        raise ConfigError(field, f"the network cannot be built: {exc}") from None


def build(
    model: ModelSpec, init: InitSpec, shape: DataShape, generator: torch.Generator
) -> ResNet:
    """The trial's network, initialized by ``init`` from ``generator``."""
    net = FAMILIES[model.family].build(model, init, shape)
    net.init_weights(init, generator)
    return net


@functools.lru_cache(maxsize=4096)
def count_params(model: ModelSpec, init: InitSpec, shape: DataShape) -> int:
    """Trainable parameters of the network, counted without allocating or initializing it."""
    with torch.device("meta"):
        net: nn.Module = FAMILIES[model.family].build(model, init, shape)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
