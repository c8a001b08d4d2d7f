"""A trial's probes during training: at the epochs they are due, on a copy of a member's
network, with a fixed probe batch drawn once from the training set by the trial's seed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from resablate.spec.schema import ProbesSpec
from resablate.trial import data
from resablate.trial.batched import Stack


class Prober:
    """Runs the probes due at an epoch on a copy of the network and adds their results to the
    epoch's report; a fixed, seeded probe batch is drawn once from the training set."""

    def __init__(
        self,
        probes: ProbesSpec | None,
        tensors: data.Tensors,
        loss: Callable[[Tensor, Tensor], Tensor],
        seed: int,
        last: int,
    ) -> None:
        self.chosen = probes.chosen() if probes else {}
        self.last, self.seed = last, seed
        if not self.chosen:
            return
        from resablate.probes.measure import ProbeData

        order = torch.randperm(len(tensors.y_train), generator=torch.Generator().manual_seed(seed))
        # the probe batch: the first samples of a seeded order, as many as the largest probe
        # batch (a stack's members each hold theirs: not a copy of the training set each)
        batches = [getattr(p, "batch", None) for p in self.chosen.values()]
        size = max((b for b in batches if isinstance(b, int)), default=1)  # "full": x_train
        order = order[:size].to(tensors.x_train.device)
        self.data = ProbeData(
            tensors.x_train[order],
            tensors.y_train[order],
            tensors.x_train,
            tensors.y_train,
            tensors.x_test,
            tensors.y_test,
            loss,
            tensors.shape.classes,
        )

    def __call__(self, result: dict[str, Any], stack: Stack, index: int = 0) -> dict[str, Any]:
        """``result`` with the probes due at its epoch, measured on member ``index``'s
        network."""
        epoch = result["epoch"]
        due = {n: p.model_dump() for n, p in self.chosen.items() if p.due(epoch, self.last)}
        if not due:
            return result
        from resablate.probes.measure import measure, scalars

        found = measure(stack.network(index), self.data, due, self.seed + 3)
        return {**result, **scalars(found), "probes": found}
