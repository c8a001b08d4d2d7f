"""What a ``train:`` section names: the optimizer, the lr schedule and its warm-ups, the loss.

The lr schedule steps once per optimizer iteration, on a clock that starts at iteration 0, so
milestones are exact and count the warm-up in (He et al.'s "÷10 at 32k and 48k iterations").
A warm-up multiplies the schedule rather than delaying it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
)

from resablate.registry import Registry
from resablate.spec.schema import TrainSpec

OPTIMIZERS: Registry[Callable[[Iterable[Tensor], TrainSpec], Optimizer]] = Registry("optimizer")
OPTIMIZERS.add(
    "sgd",
    lambda p, t: torch.optim.SGD(
        p, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    ),
)
OPTIMIZERS.add("adam", lambda p, t: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay))
OPTIMIZERS.add("adamw", lambda p, t: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay))


# tensors of optimizer state per weight (float32): momentum's buffer, Adam's two moments; an
# optimizer not named here is counted as Adam
STATE_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2}


def state_slots(optimizer: str, momentum: float) -> int:
    """How many tensors of its own state ``optimizer`` keeps per weight (SGD without momentum:
    none)."""
    if optimizer == "sgd" and not momentum:
        return 0
    return STATE_SLOTS.get(optimizer, 2)


@dataclass(frozen=True)
class Clock:
    """The length of a run in optimizer iterations: the unit every lr schedule steps in."""

    steps_per_epoch: int
    total: int

    @classmethod
    def of(cls, train: TrainSpec, steps_per_epoch: int) -> Clock:
        """``train.max_iterations`` steps when set, else ``train.epochs`` whole epochs."""
        return cls(steps_per_epoch, train.max_iterations or train.epochs * steps_per_epoch)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total / self.steps_per_epoch)

    def steps_in(self, epoch: int) -> int:
        """Iterations in (1-based) ``epoch``: all of its batches but in a last, partial one."""
        return min(self.steps_per_epoch, self.total - (epoch - 1) * self.steps_per_epoch)

    def iterations(self, count: int, unit: str) -> int:
        return count * self.steps_per_epoch if unit == "epoch" else count


# Every schedule rescales the current lr (torch's "chainable" form), so warm-ups multiply into it.
SCHEDULES: Registry[Callable[[Optimizer, TrainSpec, Clock], LRScheduler]] = Registry("schedule")
SCHEDULES.add("constant", lambda o, t, c: MultiplicativeLR(o, lambda k: 1.0))
SCHEDULES.add(
    "step",
    lambda o, t, c: MultiStepLR(
        o, [c.iterations(m, t.milestone_unit) for m in t.milestones], gamma=t.gamma
    ),
)
SCHEDULES.add("cosine", lambda o, t, c: CosineAnnealingLR(o, T_max=c.total))  # to 0 at the end


class WarmupUntilError(LRScheduler):
    """He et al. 2015, §4.2 (ResNet-110): "we use 0.01 to warm up the training until the
    training error is below 80% (about 400 iterations), and then go back to 0.1".

    Like torch's ConstantLR, it scales the lr by ``factor`` (warmup_lr / lr) from iteration 0 and
    undoes that once, but the end is an event, not a count: the first :meth:`observe` of a
    training error below ``until_error``. ``ended_at`` is then the number of warm-up iterations.
    """

    def __init__(self, optimizer: Optimizer, factor: float, until_error: float) -> None:
        self.factor = factor
        self.until_error = until_error
        self.ended_at: int | None = None
        super().__init__(optimizer)

    def observe(self, train_error: float) -> None:
        """Called after each optimizer step, before :meth:`step`, with the training error."""
        if self.ended_at is None and train_error < self.until_error:
            self.ended_at = self.last_epoch + 1

    def get_lr(self) -> list[float | Tensor]:
        scale = 1.0
        if self.last_epoch == 0:
            scale = self.factor
        elif self.last_epoch == self.ended_at:
            scale = 1.0 / self.factor
        return [group["lr"] * scale for group in self.optimizer.param_groups]


def linear_warmup(optimizer: Optimizer, iterations: int) -> LinearLR:
    """lr x (k+1)/(iterations+1) at iteration k, full lr from k = iterations on (gradual warm-up,
    Goyal et al. 2017, arXiv 1706.02677)."""
    return LinearLR(optimizer, start_factor=1.0 / (iterations + 1), total_iters=iterations)


def lr_schedule(
    optimizer: Optimizer, train: TrainSpec, clock: Clock
) -> tuple[LRScheduler, WarmupUntilError | None]:
    """The named schedule times the warm-up that ``train`` switches on; step it after every
    optimizer step. The error-driven warm-up is also returned, to be fed the training error."""
    schedulers = [SCHEDULES[train.schedule](optimizer, train, clock)]
    if train.warmup_iterations:
        schedulers.append(linear_warmup(optimizer, train.warmup_iterations))
    error_warmup = None
    if train.warmup_lr is not None and train.warmup_until_error is not None:
        error_warmup = WarmupUntilError(
            optimizer, train.warmup_lr / train.lr, train.warmup_until_error
        )
        schedulers.append(error_warmup)
    return ChainedScheduler(schedulers, optimizer), error_warmup


def loss_fn(kind: str, classes: int) -> Callable[[Tensor, Tensor], Tensor]:
    """``ce``: cross-entropy on labels. ``mse``: mean over samples of ||f(x) - onehot(y)||²,
    the squared loss of Demystifying ResNet's whitened-MNIST experiments."""
    if kind == "ce":
        return F.cross_entropy

    def mse(out: Tensor, y: Tensor) -> Tensor:
        return (out - F.one_hot(y, classes).to(out.dtype)).pow(2).sum(dim=1).mean()

    return mse


def stack_loss(kind: str, classes: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Each member's mean loss over its batch, in one computation for the whole stack:
    (k, B, classes) outputs and (k, B) labels -> (k,). A stack of one takes :func:`loss_fn`'s
    on a view of its batch: a trial alone computes what it computed unstacked, bit for bit."""
    alone = loss_fn(kind, classes)

    def losses(out: Tensor, y: Tensor) -> Tensor:
        k = out.shape[0]
        if k == 1:  # views (no copy, and no gradient kernel): the trial's own loss
            return alone(out.flatten(0, 1), y.flatten())[None]
        if kind == "ce":
            each = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
            return each.view(k, -1).mean(dim=1)
        return (out - F.one_hot(y, classes).to(out.dtype)).pow(2).sum(dim=2).mean(dim=1)

    return losses


def steps(train: TrainSpec, n: int) -> tuple[int, Clock]:
    """(batch size, clock) of a run over ``n`` training examples."""
    batch = n if train.batch_size == "full" else min(train.batch_size, n)
    return batch, Clock.of(train, steps_per_epoch=math.ceil(n / batch))
