"""One trial: data + model + optimizer + lr schedule -> per-epoch metrics via a report callback.

No ray, no mlflow: the runner passes ``report`` (Ray Tune's, or a plain function in-process).
A loss that becomes NaN/inf or exceeds ``train.diverge_above`` ends the trial as ``diverged``:
a result to analyse, not a crash (science.md §4).

The lr schedule steps once per optimizer iteration, on a clock that starts at iteration 0, so
milestones are exact and count the warm-up in (He et al.'s "÷10 at 32k and 48k iterations").
A warm-up multiplies the schedule rather than delaying it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
)

from resablate import data, models
from resablate.registry import Registry
from resablate.results import DIVERGED, FINISHED, METRICS, RUNNING
from resablate.spec import ProbesSpec, TrainSpec, TrialConfig

Report = Callable[[dict[str, Any]], None]
SYNC_EVERY = 32  # GPU steps whose losses are read from the device together
OPTIMIZERS: Registry[Callable[[Iterable[Tensor], TrainSpec], Optimizer]] = Registry("optimizer")
OPTIMIZERS.add(
    "sgd",
    lambda p, t: torch.optim.SGD(
        p, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    ),
)
OPTIMIZERS.add("adam", lambda p, t: torch.optim.Adam(p, lr=t.lr, weight_decay=t.weight_decay))
OPTIMIZERS.add("adamw", lambda p, t: torch.optim.AdamW(p, lr=t.lr, weight_decay=t.weight_decay))


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


def steps(train: TrainSpec, n: int) -> tuple[int, Clock]:
    """(batch size, clock) of a run over ``n`` training examples."""
    batch = n if train.batch_size == "full" else min(train.batch_size, n)
    return batch, Clock.of(train, steps_per_epoch=math.ceil(n / batch))


def epoch_report(
    epoch: int,
    clock: Clock,
    train: tuple[float, float],
    test: tuple[float, float],
    lr: float,
    seconds: float,
) -> dict[str, Any]:
    """A finished epoch's report: (loss, accuracy) on the training batches and the test set."""
    return {
        "epoch": epoch,
        "status": FINISHED if epoch == clock.epochs else RUNNING,
        "train_loss": train[0],
        "train_acc": train[1],
        "test_loss": test[0],
        "test_acc": test[1],
        "lr": lr,
        "epoch_time": seconds,
    }


def diverged_report(epoch: int, last_finite: float, previous: dict[str, Any]) -> dict[str, Any]:
    """The report that ends a diverged trial; the metrics are the last finished epoch's."""
    return {
        "epoch": epoch,
        "status": DIVERGED,
        "diverged_epoch": epoch,
        "last_finite_loss": last_finite,
        **{k: v for k, v in previous.items() if k in METRICS},
    }


@torch.no_grad()
def evaluate(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor],
    batch: int,
    compute: Compute,
) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole set, in eval mode."""
    net.eval()
    total, correct = 0.0, 0
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        with compute.autocast():
            out = net(compute.batch(xb)).float()
        total += float(loss(out, yb)) * len(yb)
        correct += int((out.argmax(dim=1) == yb).sum())
    return total / len(y), correct / len(y)


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
        order = order.to(tensors.x_train.device)
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

    def __call__(self, result: dict[str, Any], net: nn.Module) -> dict[str, Any]:
        epoch = result["epoch"]
        due = {n: p.model_dump() for n, p in self.chosen.items() if p.due(epoch, self.last)}
        if not due:
            return result
        from resablate.probes.measure import measure, scalars

        found = measure(net, self.data, due, self.seed + 3)
        return {**result, **scalars(found), "probes": found}


def run_trial(
    config: TrialConfig | dict[str, Any],
    report: Report = lambda result: None,
    device: str | torch.device = "cpu",
    probes: ProbesSpec | None = None,
    probe_only: bool = False,
    sync_every: int | None = None,
) -> dict[str, Any]:
    """Train one trial, calling ``report`` after every epoch; returns the last report.

    The run lasts ``train.epochs`` epochs, or ``train.max_iterations`` optimizer steps when that
    is set (its last epoch may then be partial). Each report holds ``epoch`` (1-based),
    ``status`` (``running``, then ``finished`` or ``diverged`` on the last one),
    ``train_loss``/``train_acc`` (mean over the epoch's batches), ``test_loss``/``test_acc``,
    ``lr`` (the learning rate at the end of the epoch: the one the next step would use, 0 after
    a whole cosine run) and ``epoch_time``. A diverged report adds ``diverged_epoch`` and
    ``last_finite_loss``.

    ``sync_every`` steps' losses are read from the device together (default: 1 on a CPU,
    ``SYNC_EVERY`` on a GPU); the results do not depend on it.

    ``probes`` run on a copy of the network at the epochs they are due (``init`` is epoch 0,
    reported before training); a report then holds ``probes`` (probe name -> its results) and
    each numeric result as ``<probe>.<key>``. ``probe_only`` stops after the init probes.

    He et al.'s warm-up (``train.warmup_lr``) ends after the first step at which the running
    training error of the current epoch, 1 - (correct so far / samples so far), falls below
    ``train.warmup_until_error``; the next step uses the scheduled lr.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    torch.manual_seed(cfg.seed)  # for any draw not made from the explicit generators below
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    tensors = data.load(cfg.data).to(device)
    compute = Compute(cfg.train, torch.device(device))
    net, forward = compute.model(
        models.build(cfg.model, cfg.init, tensors.shape, generator).to(device)
    )
    optimizer = OPTIMIZERS[cfg.train.optimizer](net.parameters(), cfg.train)
    loss = loss_fn(cfg.train.loss, tensors.shape.classes)
    n = len(tensors.y_train)
    batch, clock = steps(cfg.train, n)
    scheduler, error_warmup = lr_schedule(optimizer, cfg.train, clock)
    shuffle = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    augment = torch.Generator(device=device).manual_seed(cfg.seed + 2) if tensors.augment else None
    last_finite = math.nan
    probe = Prober(probes, tensors, loss, cfg.seed, clock.epochs)
    result = probe({"epoch": 0, "status": RUNNING}, net)
    if "probes" in result:
        report(result)
    if probe_only:
        return result
    # On a GPU, reading each step's loss would stall the device once per step: the losses are
    # read in groups of SYNC_EVERY steps instead (He et al.'s warm-up reads every step). Each is
    # still checked in order, so a divergence ends the trial at the same epoch with the same
    # last finite loss; only the steps of its group after it ran in vain.
    group = sync_every or (SYNC_EVERY if compute.device.type == "cuda" else 1)
    group = 1 if error_warmup is not None else group
    for epoch in range(1, clock.epochs + 1):
        start = time.perf_counter()
        net.train()
        total, correct, seen, diverged = 0.0, 0, 0, False
        hits = torch.zeros((), dtype=torch.int64, device=device)
        pending: list[tuple[Tensor, int]] = []  # (loss, batch size) not read yet
        order = torch.randperm(n, generator=shuffle).to(device)
        # near-equal batches: never a last batch of one sample (BatchNorm cannot train on it)
        batches = order.tensor_split(clock.steps_per_epoch)[: clock.steps_in(epoch)]
        for step, idx in enumerate(batches, start=1):
            xb, yb = tensors.x_train[idx], tensors.y_train[idx]
            if augment is not None:  # on the device, in batches (pad 4, random crop, flip)
                xb = data.augment_batch(xb, augment)
            with compute.autocast():
                out = forward(compute.batch(xb))
            value = loss(out.float(), yb)
            pending.append((value.detach(), len(idx)))
            if len(pending) == group or step == len(batches):
                read = torch.stack([v for v, _ in pending]).tolist()
                for current, (_, size) in zip(read, pending, strict=True):
                    if not math.isfinite(current) or current > cfg.train.diverge_above:
                        diverged = True
                        break
                    last_finite = current
                    total += current * size
                    seen += size
                pending.clear()
                if diverged:
                    break
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            hits += (out.detach().argmax(dim=1) == yb).sum()
            if error_warmup is not None:
                correct = int(hits)
                error_warmup.observe(1 - correct / seen)
            scheduler.step()
        if diverged:
            result = diverged_report(epoch, last_finite, result)
            report(result)
            return result
        test = evaluate(net, tensors.x_test, tensors.y_test, loss, max(batch, 1024), compute)
        lr = float(optimizer.param_groups[0]["lr"])
        trained = (total / seen, int(hits) / seen)
        result = epoch_report(epoch, clock, trained, test, lr, time.perf_counter() - start)
        result = probe(result, net)
        report(result)
    return result


def probe_trial(
    config: TrialConfig | dict[str, Any],
    probes: ProbesSpec,
    epochs: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """Every chosen probe on a trial's network: at initialization, or after ``epochs`` epochs
    of the trial's training recipe (whatever the probes' own ``at``/``every`` say)."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    when: list[str] = ["end"] if epochs else ["init"]
    forced = ProbesSpec.model_validate(
        {
            name: {**p.model_dump(), "at": when, "every": None}
            for name, p in probes.chosen().items()
        }
    )
    if epochs:
        recipe = cfg.train.model_copy(update={"epochs": epochs, "max_iterations": None})
        cfg = cfg.model_copy(update={"train": recipe})
    last = run_trial(cfg, device=device, probes=forced, probe_only=not epochs)
    return dict(last.get("probes", {}))
