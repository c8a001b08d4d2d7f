"""How a trial's arithmetic runs: ``train.precision``, ``channels_last``, ``compile``,
``deterministic``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from resablate.spec.schema import TrainSpec


def choose_device(choice: str, gpu_share: float, cuda: int) -> str:
    """The torch device an in-process command (``resablate probe``) computes on: ``choice``
    ``auto`` follows the sweep's ``resources.gpu`` (a GPU when trials ask for one and this
    machine has ``cuda`` > 0 of them), else ``cpu``, ``cuda`` or ``cuda:N`` as written."""
    from resablate.errors import UserError

    if choice == "auto":
        return "cuda" if gpu_share > 0 and cuda > 0 else "cpu"
    if choice == "cpu":
        return "cpu"
    kind, _, index = choice.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UserError(f"--device {choice}: use auto, cpu, cuda or cuda:N")
    if int(index or 0) >= cuda:
        found = f"{cuda} GPU(s)" if cuda else "no GPU"
        raise UserError(f"--device {choice}: this machine has {found}; use --device cpu")
    return choice


class Compute:
    """How a trial's arithmetic runs (``train.precision``, ``channels_last``, ``compile``,
    ``deterministic``): set up once per trial, since a reused worker keeps torch's global flags.

    bf16 autocasts the forward passes only; the loss is taken in fp32 and the weights, gradients
    and optimizer state stay fp32 (mixed precision, no loss scaling needed for bf16).
    """

    def __init__(self, train: TrainSpec, device: torch.device) -> None:
        self.device, self.train = device, train
        if device.type == "cuda":
            # cuBLAS reads this at its first use in the process; needed for deterministic GEMMs
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = not train.deterministic
            torch.backends.cudnn.deterministic = train.deterministic
        torch.use_deterministic_algorithms(train.deterministic)
        self.dtype = torch.bfloat16 if train.precision == "bf16" else None

    def autocast(self) -> Any:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.dtype is not None
        )

    def model(self, net: nn.Module) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
        """The network in its memory format, and the forward pass that training calls."""
        if self.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        forward: Callable[[Tensor], Tensor] = net
        if self.train.compile:
            forward = torch.compile(net)  # type: ignore[assignment]
        return net, forward

    def batch(self, x: Tensor) -> Tensor:
        if self.train.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
