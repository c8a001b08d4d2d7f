"""One trial: data + model + optimizer + lr schedule -> per-epoch metrics via a report callback.

One loop (:func:`run_stack`) trains a stack of k >= 1 networks (:mod:`resablate.trial.batched`):
one trial (:func:`run_trial`), or trials of one network and data stream as one computation, each
with its own initialization, batches, optimizer and lr schedule (stack_optim.py), loss,
divergence and reports.

No ray, no mlflow: the runner passes ``report`` (Ray Tune's, or a plain function in-process).
A loss that becomes NaN/inf or exceeds ``train.diverge_above`` ends the trial as ``diverged``:
a result to analyse, not a crash (science.md §4).

Optimizers, lr schedules and warm-ups are optim.py's (a stack's members' each: stack_optim.py);
how the arithmetic runs (bf16, channels-last, compile, deterministic kernels) is compute.py's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from resablate.results import DIVERGED, FINISHED, METRICS, RUNNING
from resablate.spec.catalog import trial_config
from resablate.spec.schema import ProbesSpec, TrialConfig
from resablate.trial import batched, checkpoint, data, stack_optim
from resablate.trial.batched import Stack
from resablate.trial.compute import Compute
from resablate.trial.optim import Clock, loss_fn, stack_loss, steps
from resablate.trial.probing import Prober

Report = Callable[[dict[str, Any]], None]
SYNC_EVERY = 32  # GPU steps whose losses are read from the device together


def epoch_report(
    epoch: int,
    clock: Clock,
    train: tuple[float, float],
    test: tuple[float, float],
    lr: float,
    seconds: float,
    val: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A finished epoch's report: (loss, accuracy) on the training batches, the validation set
    (``data.validation``; left out without one) and the test set."""
    validated = {} if val is None else {"val_loss": val[0], "val_acc": val[1]}
    return {
        "epoch": epoch,
        "status": FINISHED if epoch == clock.epochs else RUNNING,
        "train_loss": train[0],
        "train_acc": train[1],
        **validated,
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
    stack: Stack, x: Tensor, y: Tensor, losses: Callable[[Tensor, Tensor], Tensor], batch: int
) -> list[tuple[float, float]]:
    """Each member's (mean loss, accuracy) over the whole set, in eval mode; ``losses`` is
    :func:`resablate.trial.optim.stack_loss`'s. The sums stay on the device (float64, as
    Python's floats would add them) and are read once."""
    stack.train(False)
    total = torch.zeros(stack.size, dtype=torch.float64, device=x.device)
    correct = torch.zeros(stack.size, dtype=torch.int64, device=x.device)
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        out = stack.evaluate(xb)  # (k, B, classes)
        labels = yb.expand(stack.size, -1)
        total += losses(out, labels).double() * len(yb)
        correct += (out.argmax(dim=2) == yb).sum(dim=1)
    return [
        (t / len(y), c / len(y)) for t, c in zip(total.tolist(), correct.tolist(), strict=True)
    ]


@dataclass
class Member:
    """One network of a stack: its trial's report, generators and running sums."""

    index: int  # its place in the stack
    report: Report
    limit: float  # its train.diverge_above
    shuffle: torch.Generator  # the order of the training set, drawn each epoch
    augment: torch.Generator | None  # crops and flips, on the device
    result: dict[str, Any]  # its last report
    last_finite: float = math.nan  # its last training loss that did not diverge
    total: float = 0.0  # this epoch: sum of batch loss x batch size
    seen: int = 0  # this epoch: training examples read

    def augmented(self, x: Tensor) -> Tensor:
        return x if self.augment is None else data.augment_batch(x, self.augment)


def stacked(tensors: list[Tensor]) -> Tensor:
    """``torch.stack``, with a stack of one as a view: an ordinary trial copies nothing."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


def read(pending: list[tuple[Tensor, int]], live: list[Member], epoch: int) -> None:
    """Check the losses of ``pending`` steps in order, member by member: a loss that is NaN/inf
    or over the member's limit ends it; it reports ``diverged`` and leaves ``live``."""
    losses = torch.stack([value for value, _ in pending]).tolist()  # one device sync
    for current, (_, size) in zip(losses, pending, strict=True):
        for member in list(live):
            loss = current[member.index]
            if math.isfinite(loss) and loss <= member.limit:
                member.last_finite = loss
                member.total += loss * size
                member.seen += size
            else:
                live.remove(member)
                member.result = diverged_report(epoch, member.last_finite, member.result)
                member.report(member.result)
    pending.clear()


def run_stack(
    configs: Sequence[TrialConfig | dict[str, Any]],
    reports: Sequence[Report],
    device: str | torch.device = "cpu",
    probes: ProbesSpec | None = None,
    probe_only: bool = False,
    sync_every: int | None = None,
    checkpoints: checkpoint.Cadence | None = None,
    resume: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train k >= 1 trials as one stack (:mod:`resablate.trial.batched`): one trial, or trials that
    :func:`resablate.trial.batched.check` lets train stacked (one network shape and data stream;
    each its own seed, initialization and training recipe, :mod:`resablate.trial.stack_optim`).
    ``reports[i]`` gets trial i's report after every epoch, as :func:`run_trial` describes them;
    returns each trial's last report. A member that diverges reports so and leaves the stack's
    loss; the others train on. Raises ValueError for configs that cannot train as one stack.

    Every member gets its own trial's generators: initialization (``seed``), shuffle
    (``seed + 1``), augmentation (``seed + 2``), probe batch (``seed``).

    ``checkpoints`` saves the whole training state at the end of the epochs it says are due
    (:mod:`resablate.trial.checkpoint`); ``resume`` (a checkpoint read back) continues from its
    epoch: the epochs before it are neither trained nor reported again, nor are the init probes.
    """
    run = StackRun(configs, reports, device, probes)
    done = 0  # epochs trained before this call
    if resume is not None:
        done, run.live = checkpoint.restore(resume, run.stack, run.optimizers, run.members)
        if checkpoints is not None:
            checkpoints.saved(done)
    else:
        run.probe_init()
    if probe_only:
        return run.results()
    # On a GPU, reading each step's losses would stall the device once per step: they are read
    # in groups of SYNC_EVERY steps instead (He et al.'s warm-up reads every step). Each is
    # still checked in order, so a divergence ends its member at the same epoch with the same
    # last finite loss; only the steps of its group after it ran in vain.
    group = sync_every or (SYNC_EVERY if run.compute.device.type == "cuda" else 1)
    group = 1 if run.optimizers.error_warmup is not None else group
    for epoch in range(done + 1, run.clock.epochs + 1):
        start = time.perf_counter()
        correct = run.train_epoch(epoch, group)
        if correct is None:  # every member diverged
            return run.results()
        run.end_epoch(epoch, correct, time.perf_counter() - start)
        if checkpoints is not None and checkpoints.due(epoch, run.clock.epochs):
            checkpoints.save(
                checkpoint.capture(epoch, run.stack, run.optimizers, run.members, run.live)
            )
    return run.results()


class StackRun:
    """One call of :func:`run_stack`: the stack's networks, data, optimizers and members, in the
    stack's order (members of one recipe next to each other: one optimizer for them)."""

    def __init__(
        self,
        configs: Sequence[TrialConfig | dict[str, Any]],
        reports: Sequence[Report],
        device: str | torch.device,
        probes: ProbesSpec | None,
    ) -> None:
        given = [c if isinstance(c, TrialConfig) else trial_config(c) for c in configs]
        batched.check(given)
        self.places = stack_optim.order([c.train for c in given])
        self.cfgs = cfgs = [given[i] for i in self.places]
        cfg = cfgs[0]
        self.device = device
        self.tensors = tensors = data.load(cfg.data).to(device)
        self.compute = Compute(cfg.train, torch.device(device))
        self.stack = batched.build(cfgs, tensors.shape, self.compute)
        self.loss = loss_fn(cfg.train.loss, tensors.shape.classes)
        self.losses = stack_loss(cfg.train.loss, tensors.shape.classes)  # (k,): each member's
        self.n = len(tensors.y_train)
        self.batch, self.clock = steps(cfg.train, self.n)  # the data stream's: every member's
        self.optimizers = stack_optim.StackOptimizer(
            self.stack.parameters(), self.stack.size > 1, [c.train for c in cfgs], self.clock
        )
        self.members = [
            Member(
                i,
                reports[place],
                c.train.diverge_above,
                torch.Generator(device="cpu").manual_seed(c.seed + 1),
                torch.Generator(device=device).manual_seed(c.seed + 2)
                if tensors.augment
                else None,
                {"epoch": 0, "status": RUNNING},
            )
            for i, (c, place) in enumerate(zip(cfgs, self.places, strict=True))
        ]
        # each member's probes on its own network, with its own seed's probe batch
        self.probers = [
            Prober(probes, tensors, self.loss, c.seed, self.clock.epochs) for c in cfgs
        ]
        self.live = list(self.members)  # the members that have not diverged

    def results(self) -> list[dict[str, Any]]:
        """Each member's last report, in the order of the configs given."""
        return [self.members[self.places.index(i)].result for i in range(len(self.members))]

    def probe_init(self) -> None:
        """Every member's init probes, reported as its epoch 0. Members of one seed and one
        initial network (differing in their recipe) have the same ones: measured once (on a
        copy of the same weights and probe batch)."""
        for member in self.members:
            twin = next((m for m in self.members[: member.index] if self._twins(m, member)), None)
            if twin is not None and "probes" in twin.result:
                member.result = copy.deepcopy(twin.result)
            else:
                member.result = self.probers[member.index](member.result, self.stack, member.index)
            if "probes" in member.result:
                member.report(member.result)

    def _twins(self, a: Member, b: Member) -> bool:
        """The same probe seed and network."""
        return self.cfgs[a.index].seed == self.cfgs[b.index].seed and self.stack.same(
            a.index, b.index
        )

    def train_epoch(self, epoch: int, group: int) -> list[int] | None:
        """Train the live members one epoch, reading their losses ``group`` steps at a time:
        each member's correct training predictions, or None once every member has diverged."""
        stack, tensors, members, live = self.stack, self.tensors, self.members, self.live
        optimizers, device = self.optimizers, self.device
        stack.train(True)
        for member in live:
            member.total, member.seen = 0.0, 0
        hits = torch.zeros(stack.size, dtype=torch.int64, device=device)  # correct, per member
        pending: list[tuple[Tensor, int]] = []  # (each member's loss, batch size) not read yet
        # near-equal batches: never a last batch of one sample (BatchNorm cannot train on it)
        batches = [
            torch.randperm(self.n, generator=m.shuffle)
            .to(device)
            .tensor_split(self.clock.steps_per_epoch)
            for m in members
        ]
        count = self.clock.steps_in(epoch)
        for step in range(count):
            idx = stacked([b[step] for b in batches])  # (k, B)
            xb, yb = tensors.x_train[idx], tensors.y_train[idx]  # (k, B, ...), (k, B)
            if tensors.augment:  # on the device, in batches (pad 4, random crop, flip)
                xb = stacked([m.augmented(xb[m.index]) for m in members])
            out = stack(xb)  # (k, B, classes)
            losses = self.losses(out, yb)  # (k,)
            pending.append((losses.detach(), idx.shape[1]))
            if len(pending) == group or step == count - 1:
                read(pending, live, epoch)
                if not live:
                    return None
            optimizers.zero_grad()
            # each member's gradient lands in its own slice of the stack's weights
            trained = losses if len(live) == stack.size else losses[[m.index for m in live]]
            # one member's loss as a view: no sum, and no gradient kernel for it
            (trained.sum() if len(trained) > 1 else trained.reshape(())).backward()
            optimizers.step()
            hits += (out.detach().argmax(dim=2) == yb).sum(dim=1)
            if optimizers.error_warmup is not None:  # a stack of one (batched.why_not)
                optimizers.error_warmup.observe(1 - int(hits[0]) / members[0].seen)
            optimizers.schedule()
        return hits.tolist()

    def end_epoch(self, epoch: int, correct: list[int], elapsed: float) -> None:
        """Evaluate the live members, run the probes due and report the epoch; ``elapsed``: the
        stack's epoch time (every member's epoch took this long)."""
        stack, tensors = self.stack, self.tensors
        at_once = max(self.batch, batched.EVAL_BATCH)
        tested = evaluate(stack, tensors.x_test, tensors.y_test, self.losses, at_once)
        validated: list[tuple[float, float] | None] = [None] * stack.size
        if tensors.x_val is not None and tensors.y_val is not None:  # as the test set: unaugmented
            validated = [*evaluate(stack, tensors.x_val, tensors.y_val, self.losses, at_once)]
        for member in self.live:
            i = member.index
            trained_on = (member.total / member.seen, correct[i] / member.seen)
            lr = self.optimizers.lr(i)
            result = epoch_report(
                epoch, self.clock, trained_on, tested[i], lr, elapsed, validated[i]
            )
            member.result = self.probers[i](result, stack, i)
            member.report(member.result)


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
    ``train_loss``/``train_acc`` (mean over the epoch's batches), ``val_loss``/``val_acc`` (on
    the validation set, where ``data.validation`` holds one out), ``test_loss``/``test_acc``,
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
    [last] = run_stack([config], [report], device, probes, probe_only, sync_every)
    return last


def probe_trial(
    config: TrialConfig | dict[str, Any],
    probes: ProbesSpec,
    epochs: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """Every chosen probe on a trial's network: at initialization, or after ``epochs`` epochs
    of the trial's training recipe (whatever the probes' own ``at``/``every`` say)."""
    cfg = config if isinstance(config, TrialConfig) else trial_config(config)
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
