"""A stack's optimizers: each member steps with its own trial's optimizer and lr schedule.

The members of a stack (:mod:`resablate.trial.batched`) may differ in their training recipe: the
optimizer (sgd, adam, adamw), learning rate, momentum, Nesterov, weight decay, lr schedule and
linear warm-up (:data:`RECIPE`). Members with the same recipe sit next to each other in the
stack (:func:`order`), and each such run of members is one *part*: torch's own optimizer and lr
schedule (:mod:`resablate.trial.optim`, exactly as a trial alone builds them) over the part's slice
of every stacked weight, ``weight[a:b]``: a view, so the optimizer updates the stack's weights in
place, and each step hands it the same slice of the stacked gradient. A stack whose members
share one recipe is one part over the stacked weights themselves; a trial alone is one part
over its network's parameters. Every update is elementwise, so a member's slice steps as its
own trial's optimizer would step it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from resablate.spec.schema import TrainSpec
from resablate.trial.optim import OPTIMIZERS, Clock, WarmupUntilError, lr_schedule

# What the members of one stack may differ in, of their train sections: what the optimizer and
# its lr schedule read (the data stream, loss and compute settings are the stack's, shared)
RECIPE = (
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "milestones",
    "milestone_unit",
    "gamma",
    "warmup_iterations",
    "warmup_lr",
    "warmup_until_error",
)


def recipe(train: TrainSpec) -> str:
    """The optimizer and lr schedule ``train`` asks for, as a key: members with equal keys
    share a part."""
    return json.dumps({k: getattr(train, k) for k in RECIPE}, sort_keys=True)


def order(trains: Sequence[TrainSpec]) -> list[int]:
    """The members' places in a stack: members with one recipe next to each other (in the
    order the recipe first comes), each recipe's members in their given order."""
    first: dict[str, int] = {}
    for i, train in enumerate(trains):
        first.setdefault(recipe(train), i)
    return sorted(range(len(trains)), key=lambda i: (first[recipe(trains[i])], i))


@dataclass
class Part:
    """Members ``start`` to ``stop - 1`` of a stack, which share one recipe."""

    start: int
    stop: int
    optimizer: Optimizer
    scheduler: LRScheduler
    error_warmup: WarmupUntilError | None
    # (stacked weight, the optimizer's view of this part's slice of it); empty when the
    # optimizer holds the weights themselves
    slices: list[tuple[Tensor, Tensor]] = field(default_factory=list)


class StackOptimizer:
    """Every member's optimizer step and lr schedule, over a stack's weights (``params``: one
    tensor per weight, stacked on dim 0 when ``stacked``; else a single network's parameters).
    ``trains[i]`` is member i's train section: members with one recipe must be next to each
    other (:func:`order`)."""

    def __init__(
        self, params: Iterable[Tensor], stacked: bool, trains: Sequence[TrainSpec], clock: Clock
    ) -> None:
        weights = list(params)
        keys = [recipe(t) for t in trains]
        bounds = [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
        starts, stops = [0, *bounds], [*bounds, len(keys)]
        if len(set(keys)) != len(starts):
            raise ValueError("members with one recipe must be next to each other in a stack")
        self.parts: list[Part] = []
        for start, stop in zip(starts, stops, strict=True):
            whole = start == 0 and stop == len(keys)
            slices = [] if whole else [(w, w.detach()[start:stop]) for w in weights]
            held = weights if whole else [view for _, view in slices]
            train = trains[start]
            optimizer = OPTIMIZERS[train.optimizer](held, train)
            scheduler, error_warmup = lr_schedule(optimizer, train, clock)
            self.parts.append(Part(start, stop, optimizer, scheduler, error_warmup, slices))
        if not stacked and len(self.parts) > 1:
            raise ValueError("one network has one recipe")
        self.weights = weights

    @property
    def error_warmup(self) -> WarmupUntilError | None:
        """He et al.'s warm-up, which only a stack of one has (batched.why_not)."""
        return self.parts[0].error_warmup if len(self.parts) == 1 else None

    def zero_grad(self) -> None:
        for weight in self.weights:
            weight.grad = None

    def step(self) -> None:
        """Each part's optimizer step, on its slice of the gradient."""
        for part in self.parts:
            for weight, view in part.slices:
                view.grad = None if weight.grad is None else weight.grad[part.start : part.stop]
            part.optimizer.step()

    def schedule(self) -> None:
        """Each part's lr schedule steps (after :meth:`step`, once per optimizer iteration)."""
        for part in self.parts:
            part.scheduler.step()

    def lr(self, index: int) -> float:
        """Member ``index``'s learning rate now: the one its next step would use."""
        for part in self.parts:
            if part.start <= index < part.stop:
                return float(part.optimizer.param_groups[0]["lr"])
        raise IndexError(f"the stack has no member {index}")

    def state_dict(self) -> list[dict[str, Any]]:
        """Each part's optimizer and lr schedule state (a checkpoint's)."""
        return [
            {"optimizer": p.optimizer.state_dict(), "scheduler": p.scheduler.state_dict()}
            for p in self.parts
        ]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        if len(state) != len(self.parts):
            raise ValueError("the saved stack has other recipes than this one")
        for part, saved in zip(self.parts, state, strict=True):
            part.optimizer.load_state_dict(saved["optimizer"])
            part.scheduler.load_state_dict(saved["scheduler"])
