"""Running the chosen probes on a network: the registry of probe name -> measurement.

Each entry takes the network (a copy: probes never change training), the trial's probe data, the
probe's options (its section of ``probes:`` as a dict) and a generator, and returns plain Python
values: floats become MLflow metrics ``<probe>.<key>``, the whole dict a JSON artifact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from resablate.probes.hessian import hessian_spectrum
from resablate.probes.lesion import lesion
from resablate.probes.shattered import shattered_gradients
from resablate.probes.spp import noise_batch, signal_propagation
from resablate.probes.weights import weight_norms
from resablate.registry import Registry

if TYPE_CHECKING:
    from resablate.trial.data import Tensors


@dataclass(frozen=True)
class ProbeData:
    """What probes read: a fixed, seeded probe batch of training data, the whole training set,
    the test set and the trial's loss."""

    x: Tensor
    y: Tensor
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    loss: Callable[[Tensor, Tensor], Tensor]
    classes: int

    @classmethod
    def of(cls, tensors: Tensors, loss: Callable[[Tensor, Tensor], Tensor]) -> ProbeData:
        """A data set's tensors, the probe batch being the training set in its own order."""
        x, y = tensors.x_train, tensors.y_train
        return cls(x, y, x, y, tensors.x_test, tensors.y_test, loss, tensors.shape.classes)


# probes that only read the network's weights (the cheap per-epoch one): no copy of it
READS_ONLY = frozenset({"weights"})
Measure = Callable[[nn.Module, ProbeData, dict[str, Any], torch.Generator], dict[str, Any]]
PROBES: Registry[Measure] = Registry("probe")


@PROBES.register("spp")
def _spp(net: nn.Module, data: ProbeData, options: dict[str, Any], g: torch.Generator) -> dict:
    n = min(options["batch"], len(data.x))
    x, y = data.x[:n], data.y[:n]
    if options["input"] == "noise":
        x = noise_batch(tuple(data.x.shape[1:]), n, g).to(x.device)
        y = torch.randint(0, data.classes, (n,), generator=g).to(x.device)
    return dict(signal_propagation(net, x, y, data.loss))


@PROBES.register("hessian")
def _hessian(net: nn.Module, data: ProbeData, options: dict[str, Any], g: torch.Generator) -> dict:
    full = options["batch"] == "full"
    x, y = (
        (data.x_train, data.y_train)
        if full
        else (data.x[: options["batch"]], data.y[: options["batch"]])
    )
    dtype = torch.float64 if options["dtype"] == "float64" else torch.float32
    return hessian_spectrum(
        net,
        data.loss,
        x,
        y,
        method=options["method"],
        max_exact=options["max_exact"],
        dtype=dtype,
        generator=g,
    )


@PROBES.register("weights")
def _weights(net: nn.Module, data: ProbeData, options: dict[str, Any], g: torch.Generator) -> dict:
    return dict(weight_norms(net))


@PROBES.register("shattered")
def _shattered(
    net: nn.Module, data: ProbeData, options: dict[str, Any], g: torch.Generator
) -> dict:
    return dict(shattered_gradients(net, tuple(data.x.shape[1:]), g, points=options["points"]))


@PROBES.register("lesion")
def _lesion(net: nn.Module, data: ProbeData, options: dict[str, Any], g: torch.Generator) -> dict:
    return lesion(net, data.x_test, data.y_test, g, draws=options["draws"], k=options["k"])


def measure(
    net: nn.Module, data: ProbeData, chosen: dict[str, dict[str, Any]], seed: int
) -> dict[str, dict[str, Any]]:
    """Run each chosen probe on a copy of ``net`` (one that only reads it, READS_ONLY, on
    ``net``); every probe draws from its own seeded generator, so results do not depend on
    which other probes ran."""
    out = {}
    for name, options in chosen.items():
        generator = torch.Generator().manual_seed(seed)
        own = net if name in READS_ONLY else copy.deepcopy(net)
        out[name] = PROBES[name](own, data, options, generator)
    return out


def scalars(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"hessian": {"cond": 3.0, ...}}`` -> ``{"hessian.cond": 3.0, ...}`` (numbers only)."""
    return {
        f"{name}.{key}": float(value)
        for name, found in results.items()
        for key, value in found.items()
        if isinstance(value, (int, float))
    }
