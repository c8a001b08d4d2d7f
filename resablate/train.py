"""One trial: data + model + optimizer -> per-epoch metrics through a report callback.

No ray, no mlflow: the runner passes ``report`` (Ray Tune's, or a plain function in-process).
A loss that becomes NaN/inf or exceeds ``train.diverge_above`` ends the trial as ``diverged``:
a result to analyse, not a crash (science.md §4).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resablate import data, models
from resablate.registry import Registry
from resablate.results import DIVERGED, FINISHED, RUNNING
from resablate.spec import TrainSpec, TrialConfig

Report = Callable[[dict[str, Any]], None]
OPTIMIZERS: Registry[Callable[[Iterable[Tensor], TrainSpec], torch.optim.Optimizer]] = Registry(
    "optimizer"
)
OPTIMIZERS.add(
    "sgd",
    lambda p, t: torch.optim.SGD(p, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay),
)
OPTIMIZERS.add("adam", lambda p, t: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay))
OPTIMIZERS.add("adamw", lambda p, t: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay))


def loss_fn(kind: str, classes: int) -> Callable[[Tensor, Tensor], Tensor]:
    """``ce``: cross-entropy on labels. ``mse``: mean over samples of ||f(x) - onehot(y)||²,
    the squared loss of Demystifying ResNet's whitened-MNIST experiments."""
    if kind == "ce":
        return F.cross_entropy

    def mse(out: Tensor, y: Tensor) -> Tensor:
        return (out - F.one_hot(y, classes).to(out.dtype)).pow(2).sum(dim=1).mean()

    return mse


@torch.no_grad()
def evaluate(
    net: nn.Module, x: Tensor, y: Tensor, loss: Callable[[Tensor, Tensor], Tensor], batch: int
) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole set, in eval mode."""
    net.eval()
    total, correct = 0.0, 0
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        out = net(xb)
        total += float(loss(out, yb)) * len(yb)
        correct += int((out.argmax(dim=1) == yb).sum())
    return total / len(y), correct / len(y)


def run_trial(
    config: TrialConfig | dict[str, Any],
    report: Report = lambda result: None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train one trial, calling ``report`` after every epoch; returns the last report.

    Each report holds ``epoch`` (1-based), ``status`` (``running``, then ``finished`` or
    ``diverged`` on the last one), ``train_loss``/``train_acc`` (mean over the epoch's batches),
    ``test_loss``/``test_acc`` and ``epoch_time``. A diverged report adds ``diverged_epoch`` and
    ``last_finite_loss``.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    torch.manual_seed(cfg.seed)  # for any draw not made from the explicit generators below
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    tensors = data.load(cfg.data).to(device)
    net = models.build(cfg.model, cfg.init, tensors.shape, generator).to(device)
    optimizer = OPTIMIZERS[cfg.train.optimizer](net.parameters(), cfg.train)
    loss = loss_fn(cfg.train.loss, tensors.shape.classes)
    n = len(tensors.y_train)
    batch = n if cfg.train.batch_size == "full" else min(cfg.train.batch_size, n)
    shuffle = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    last_finite = math.nan
    result: dict[str, Any] = {}
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        net.train()
        total, correct, diverged = 0.0, 0, False
        order = torch.randperm(n, generator=shuffle).to(device)
        # near-equal batches: never a last batch of one sample (BatchNorm cannot train on it)
        for idx in order.tensor_split(math.ceil(n / batch)):
            xb, yb = tensors.x_train[idx], tensors.y_train[idx]
            out = net(xb)
            value = loss(out, yb)
            current = float(value.detach())
            if not math.isfinite(current) or current > cfg.train.diverge_above:
                diverged = True
                break
            last_finite = current
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total += current * len(idx)
            correct += int((out.argmax(dim=1) == yb).sum())
        if diverged:
            result = {
                "epoch": epoch,
                "status": DIVERGED,
                "diverged_epoch": epoch,
                "last_finite_loss": last_finite,
                **{k: v for k, v in result.items() if k not in ("epoch", "status")},
            }
            report(result)
            return result
        test_loss, test_acc = evaluate(net, tensors.x_test, tensors.y_test, loss, max(batch, 1024))
        result = {
            "epoch": epoch,
            "status": FINISHED if epoch == cfg.train.epochs else RUNNING,
            "train_loss": total / n,
            "train_acc": correct / n,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "epoch_time": time.perf_counter() - start,
        }
        report(result)
    return result
