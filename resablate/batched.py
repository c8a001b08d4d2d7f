"""Several seeds of one configuration trained as one computation (``resources.seeds_per_trial``).

The seeds' networks are stacked (``torch.func.stack_module_state``) and run with ``vmap`` over
``functional_call``: one forward and one backward pass per step for all seeds, one optimizer over
the stacked weights. Short trials on CPU spend much of their time in Python and per-call overhead,
which the stack pays once for all seeds.

Every seed sees exactly what its own run in :func:`resablate.train.run_trial` would: the same
initialization (from its own generator), the same batches (its own shuffle), the same lr schedule,
each seed's loss (the sum over seeds has each seed's gradient in its own slice of the stack), and
its own report per epoch. Results agree with separate runs to float tolerance (stacked matrix
products may round differently). A seed that diverges is reported and leaves the stack's loss;
the others train on.

Only configurations whose computation is the same for every seed qualify (:func:`why_not`): no
BatchNorm statistics, no random layers (dropout, stochastic depth), no warm-up driven by each
seed's own training error, no probes, default compute settings.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from resablate import data, models
from resablate.results import RUNNING
from resablate.spec import COMPUTE_FIELDS, TrainSpec, TrialConfig
from resablate.train import (
    OPTIMIZERS,
    Report,
    diverged_report,
    epoch_report,
    loss_fn,
    lr_schedule,
    steps,
)


def why_not(config: TrialConfig | dict[str, Any], probes: bool = False) -> str | None:
    """Why the seeds of ``config`` cannot train stacked (None: they can)."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    if probes:
        return "probes run on each seed's own network"
    if cfg.model.norm != "none":
        return f"model.norm {cfg.model.norm} keeps running statistics per network"
    if cfg.model.drop_path > 0 or cfg.model.shortcut == "dropout":
        return "random layers (drop_path, dropout shortcut) draw per network"
    if cfg.train.warmup_lr is not None:
        return "train.warmup_lr ends at each seed's own training error"
    defaults = TrainSpec.model_fields
    changed = [k for k in COMPUTE_FIELDS if getattr(cfg.train, k) != defaults[k].default]
    if changed:
        return f"train.{changed[0]} is set"
    return None


def same_but_seed(configs: Sequence[dict[str, Any]]) -> bool:
    first = {k: v for k, v in configs[0].items() if k != "seed"}
    return all({k: v for k, v in c.items() if k != "seed"} == first for c in configs)


def run_seeds(
    configs: Sequence[TrialConfig | dict[str, Any]],
    reports: Sequence[Report],
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Train the seeds of one configuration together; ``reports[i]`` gets seed i's per-epoch
    reports (as from :func:`~resablate.train.run_trial`). Returns each seed's last report."""
    from torch.func import functional_call, stack_module_state, vmap

    cfgs = [c if isinstance(c, TrialConfig) else TrialConfig.model_validate(c) for c in configs]
    dumped = [c.model_dump(mode="json") for c in cfgs]
    if not same_but_seed(dumped):
        raise ValueError("run_seeds trains seeds of one configuration: the configs differ")
    reason = why_not(cfgs[0])
    if reason:
        raise ValueError(f"these seeds cannot train stacked: {reason}")
    cfg, seeds = cfgs[0], len(cfgs)
    tensors = data.load(cfg.data).to(device)
    nets = []
    for c in cfgs:
        torch.manual_seed(c.seed)  # as run_trial: the same draws before the generators
        generator = torch.Generator(device="cpu").manual_seed(c.seed)
        nets.append(models.build(c.model, c.init, tensors.shape, generator).to(device))
    params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
    skeleton = copy.deepcopy(nets[0]).to("meta")
    del nets

    def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(skeleton, (p, b), (x,))

    forward = vmap(one)  # each seed its own batch
    shared = vmap(one, in_dims=(0, 0, None))  # every seed the same batch (evaluation)
    optimizer = OPTIMIZERS[cfg.train.optimizer](params.values(), cfg.train)
    loss = loss_fn(cfg.train.loss, tensors.shape.classes)
    n = len(tensors.y_train)
    batch, clock = steps(cfg.train, n)
    scheduler, _ = lr_schedule(optimizer, cfg.train, clock)
    shuffles = [torch.Generator(device="cpu").manual_seed(c.seed + 1) for c in cfgs]
    augments = (
        [torch.Generator(device=device).manual_seed(c.seed + 2) for c in cfgs]
        if tensors.augment
        else None
    )
    last_finite = [math.nan] * seeds
    results: list[dict[str, Any]] = [{"epoch": 0, "status": RUNNING} for _ in cfgs]
    active = list(range(seeds))
    for epoch in range(1, clock.epochs + 1):
        start = time.perf_counter()
        total, correct, seen = [0.0] * seeds, [0] * seeds, [0] * seeds
        splits = [
            torch.randperm(n, generator=g).to(device).tensor_split(clock.steps_per_epoch)
            for g in shuffles
        ]
        for step in range(clock.steps_in(epoch)):
            idx = torch.stack([s[step] for s in splits])
            xb, yb = tensors.x_train[idx], tensors.y_train[idx]
            if augments is not None:
                xb = torch.stack([data.augment_batch(xb[i], g) for i, g in enumerate(augments)])
            out = forward(params, buffers, xb)
            losses = torch.stack([loss(out[i], yb[i]) for i in range(seeds)])
            current = losses.detach().tolist()
            for i in list(active):
                if not math.isfinite(current[i]) or current[i] > cfg.train.diverge_above:
                    active.remove(i)
                    results[i] = diverged_report(epoch, last_finite[i], results[i])
                    reports[i](results[i])
                else:
                    last_finite[i] = current[i]
            if not active:
                return results
            optimizer.zero_grad(set_to_none=True)
            losses[active].sum().backward()
            optimizer.step()
            hits = (out.detach().argmax(dim=2) == yb).sum(dim=1).tolist()
            for i in active:
                total[i] += current[i] * len(idx[i])
                correct[i] += hits[i]
                seen[i] += len(idx[i])
            scheduler.step()
        tested = _evaluate(shared, params, buffers, tensors, loss, max(batch, 1024), seeds)
        lr = float(optimizer.param_groups[0]["lr"])
        elapsed = time.perf_counter() - start  # the stack's: every seed's epoch took this long
        for i in active:
            trained = (total[i] / seen[i], correct[i] / seen[i])
            results[i] = epoch_report(epoch, clock, trained, tested[i], lr, elapsed)
            reports[i](results[i])
    return results


@torch.no_grad()
def _evaluate(
    shared: Any,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    tensors: data.Tensors,
    loss: Any,
    batch: int,
    seeds: int,
) -> list[tuple[float, float]]:
    """Each seed's (mean loss, accuracy) on the test set, as train.evaluate computes them."""
    total, correct = [0.0] * seeds, [0] * seeds
    x, y = tensors.x_test, tensors.y_test
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        out = shared(params, buffers, xb)
        hits = (out.argmax(dim=2) == yb).sum(dim=1).tolist()
        for i in range(seeds):
            total[i] += float(loss(out[i], yb)) * len(yb)
            correct[i] += hits[i]
    return [(total[i] / len(y), correct[i] / len(y)) for i in range(seeds)]
