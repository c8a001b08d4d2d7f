"""Training recipes: named presets of ``train:`` fields (science.md §6).

A recipe is data: the fields a user writes in ``train:`` override it one by one, and
:func:`recipe_defaults` adds what a recipe prescribes for a given network (the deep nets'
warm-up). :mod:`resablate.spec.catalog` applies both when it resolves a config.
"""

from __future__ import annotations

from typing import Any

from resablate.registry import Registry

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
    try:
        depth = int(model.get("depth", 0))
    except (TypeError, ValueError):  # not a number: the schema names the field
        depth = 0
    return 2 * depth + 2 if model.get("family") == "mnist" else depth


# Two ways to say how long a run is: the one written in ``train:`` replaces the recipe's other.
LENGTH = ("epochs", "max_iterations")


def with_recipe(train: dict[str, Any]) -> dict[str, Any]:
    """``train`` on top of its recipe's preset (raises ValueError naming the recipes): each
    field written wins, a run length written (``epochs``) included, which drops the preset's
    other length (``max_iterations``, which would otherwise decide)."""
    recipe = train.get("recipe")
    if not isinstance(recipe, str):
        return train
    preset = RECIPES[recipe]
    if any(key in train for key in LENGTH):
        preset = {k: v for k, v in preset.items() if k not in LENGTH}
    return {**preset, **with_warmup(train, recipe)}


def with_warmup(train: dict[str, Any], recipe: str) -> dict[str, Any]:
    """``train`` with He et al.'s warm-up completed from the recipe's values when it writes one
    of its two fields (warmup_lr, warmup_until_error) and the recipe prescribes that warm-up."""
    written = [key for key in DEEP_WARMUP if key in train]
    # one written with a value, the other not written at all (`warmup_lr: null` means none)
    if recipe == "he_cifar" and len(written) == 1 and train[written[0]] is not None:
        return {**DEEP_WARMUP, **train}
    return train


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
