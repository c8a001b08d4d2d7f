"""Running a plan's trials: on Ray Tune (the default, tuning.py), or in-process for debugging.

A :class:`Session` is the backend made ready for a plan (a local Ray started, or a cluster
joined: cluster.py); its ``run`` trains the plan's stacks (stacking.py) and its ``search`` the
stacks a search hands out (search.py), each trial's events fanned out to the sweep's listeners
(MLflow, progress) in this process. Ray is imported only when the backend is ray, so ``--inline``
and ``plan`` never pay for it. A stop request (stop.py) is read between stacks, and by every
trial at the end of an epoch, where it saves a checkpoint and stops.

Checkpoints: on Ray Tune they go into the run's storage (tuning.py); inline into
``<results_dir>/<sweep>/checkpoints/<stack id>/``. Either way a retried trial starts from its last
one, ``--resume`` hands a trial the one its MLflow run names (``trial_points``), and a finished
trial's are deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from resablate.errors import UserError
from resablate.results import Events, Listener, TrialRecord
from resablate.spec.grid import Trial
from resablate.sweep import stop
from resablate.sweep.capacity import local_resources, stack_budget
from resablate.sweep.plan import Plan
from resablate.sweep.ray.cluster import (
    check_data_roots,
    check_nodes,
    check_resources,
    cluster_resources,
    ray_slots,
    start_ray,
    stop_ray,
)
from resablate.sweep.ray.compat import autoscaler_most
from resablate.sweep.stacking import resume_point, stack_id, stacking, stacks
from resablate.sweep.worker import failure_text, train_stack, trial_threads
from resablate.trial import checkpoint

BACKENDS = ("ray", "inline")


class Queue(Protocol):
    """Hands out stacks to run (search_queue.CandidateQueue). ``records``: the trials that ended so
    far, which settle the stacks handed out before."""

    def next(self, records: dict[str, TrialRecord]) -> list[Trial] | None:
        """The next stack to run, or None when none can be handed out now."""

    def finished(self, records: dict[str, TrialRecord]) -> bool:
        """Whether nothing is left to hand out, and nothing handed out is still running."""


class Session:
    """A backend made ready for a plan: ``with Session(plan) as session: session.run(listeners)``.

    Entering starts a local Ray on 127.0.0.1 (unless one is already running in this process) and
    checks that it can hold one trial's resources, so that a sweep that cannot run fails with one
    line before anything is recorded. Leaving shuts down the Ray this session started.
    """

    def __init__(
        self,
        plan: Plan,
        backend: str = "ray",
        results_dir: Path = Path("resablate-runs"),
        dashboard: bool = False,
        address: str | None = None,
        storage: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.plan, self.backend, self.results_dir = plan, backend, results_dir
        self.dashboard, self.address = dashboard, address
        # Ray Tune's storage_path: trial folders and checkpoints (a folder, or s3:// / gs://)
        self.storage = storage or str(results_dir.resolve())
        self.storage_given = storage is not None  # the default is this machine's folder
        # trial id -> (checkpoint location, epoch) of the trials --resume continues
        self.trial_points: dict[str, tuple[str, int]] = {}
        self.tag = ""  # appended to the Tune runs' names (a resumed invocation's own folders)
        self.dashboard_url: str | None = None
        self.notes: list[str] = []  # what the user should know of the cluster it joined
        self._started = False

    def check(self) -> None:
        """Refuse what can be refused before Ray starts: a scheduler without Ray Tune, more per
        trial than this machine has (when the trials run here), a data folder that a cluster's
        nodes would each resolve on their own (a relative one)."""
        if self.backend == "inline" and self.plan.spec.scheduler.kind != "none":
            raise self.plan.error(
                "scheduler.kind",
                f"{self.plan.spec.scheduler.kind} stops trials through Ray Tune, which --inline"
                " does not use; drop --inline, or set scheduler.kind: none",
            )
        if self.address is None:
            check_resources(self.plan, local_resources())
        else:
            check_data_roots(self.plan)

    def __enter__(self) -> Session:
        self.check()
        if self.backend == "ray":
            self._started, self.dashboard_url = start_ray(self.dashboard, self.address)
            try:
                where = "this machine" if self.address is None else "the cluster"
                most = autoscaler_most() if self.address is not None else None
                self.notes = check_resources(self.plan, cluster_resources(), where, most)
                if self.address is not None:  # the other nodes: data sets, checkpoint storage
                    check_nodes(self.plan, self.storage, self.storage_given)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            stop_ray()
            self._started = False

    def run(
        self,
        listeners: Sequence[Listener],
        trials: list[Trial] | None = None,
        name: str = "",
        history_of: tuple[str, ...] = (),
    ) -> list[TrialRecord]:
        """Run every trial of the plan (or ``trials``, as the Tune experiment ``name``); returns
        the records of the trials that ended, with the per-epoch values of the ``history_of``
        metrics. A stop request (stop.py) ends it early: the trials stopped have no record."""
        if stop.REQUEST.requested:
            return []
        plan = self.plan if trials is None else dataclasses.replace(self.plan, trials=trials)
        events = Events(listeners, history_of)
        if self.backend == "inline":
            with contextlib.suppress(stop.Stopped):  # the stopped trials have no record
                for stack in stacks(plan, budget=self.budget()):
                    stop.REQUEST.check()
                    self._inline(events, stack)
        else:
            from resablate.sweep.ray.tuning import run_grid

            named = (name or plan.spec.name) + self.tag
            slots, budget = self.slots(), self.budget()
            run_grid(plan, events, self.storage, named, slots, self.trial_points, budget)
        return list(events.collector.records.values())

    def search(
        self,
        listeners: Sequence[Listener],
        queue: Queue,
        name: str,
        history_of: tuple[str, ...] = (),
    ) -> list[TrialRecord]:
        """Run the stacks that ``queue`` hands out (a search's candidates) until it has none
        left: as one long-lived Ray Tune run whose searcher asks the queue, or inline one after
        another. Returns the records of the trials that ended."""
        events = Events(listeners, history_of)
        if stop.REQUEST.requested:
            return []
        if self.backend == "inline":
            with contextlib.suppress(stop.Stopped):  # the stopped trials have no record
                while (stack := queue.next(events.collector.records)) is not None:
                    stop.REQUEST.check()
                    self._inline(events, stack)
        else:
            from resablate.sweep.ray.tuning import run_queue

            named = name + self.tag
            run_queue(
                self.plan, events, self.storage, named, queue, self.slots(), self.trial_points
            )
        return list(events.collector.records.values())

    def slots(self) -> int | None:
        """How many trials run at once when they run on this machine's Ray (the machine's CPUs
        and GPUs over each trial's share, at most max_concurrent_trials); None when they run
        inline or on a cluster, whose size may change while the sweep runs."""
        if self.backend != "ray" or self.address is not None:
            return None
        return ray_slots(self.plan)

    def running_at_once(self) -> int:
        """How many trials run at once now: one inline; on Ray (this machine's or a cluster's)
        as many as its resources hold at each trial's share (resources.cpu, resources.gpu), at
        most resources.max_concurrent_trials."""
        return 1 if self.backend != "ray" else ray_slots(self.plan)

    def budget(self) -> int | None:
        """Bytes one stack may take (capacity.stack_budget) where the trials stack and run on
        this machine (inline, or its own Ray); None elsewhere (a cluster's workers are not
        this machine)."""
        slots = self.slots()
        if not stacking(self.plan, slots or 1) or (self.backend == "ray" and slots is None):
            return None
        return stack_budget(self.plan, slots or 1)

    def _inline(self, events: Events, stack: list[Trial]) -> None:
        """A stack in this process (a breakpoint in train.py just works), retried up to
        ``resources.max_failures`` times, each attempt from the stack's last checkpoint; a stop
        request ends it at the end of the epoch it arrives in, once that epoch is saved."""
        plan, train = self.plan, self.plan.spec.train
        folder = self.results_dir / plan.spec.name / "checkpoints" / stack_id(stack)
        saved = Saved(
            folder.resolve(),
            events,
            stack,
            every=train.checkpoint_every,
            stopping=lambda: stop.REQUEST.requested,
            final=train.keep_checkpoint,
        )
        point = saved.adopt(resume_point(stack, self.trial_points))
        attempts = plan.spec.resources.max_failures + 1
        device = "cuda" if plan.spec.resources.gpu > 0 else "cpu"
        for attempt in range(1, attempts + 1):
            for trial in stack:
                events.started(trial)
            state = saved.latest() or (checkpoint.find(*point) if point else None)
            if state is not None or attempt > 1:
                for trial in stack:
                    events.resumed(trial, int(state["epoch"]) if state else 0)
            try:
                train_stack(
                    [t.config for t in stack],
                    [functools.partial(events.result, t) for t in stack],
                    device,
                    plan.spec.probes,
                    trial_threads(plan),
                    checkpoints=saved,
                    resume=state,
                    plugins=plan.plugins(),
                )
            except (UserError, stop.Stopped):
                raise  # the store failed (recording a result), or a stop: not the trial
            except Exception as exc:
                if attempt < attempts:
                    for trial in stack:
                        events.retried(trial, failure_text(exc))
                    continue
                events.failed(stack, failure_text(exc))
            else:
                for trial in stack:
                    events.finished(trial)
                if events.results(stack):
                    saved.clear()  # a finished stack keeps no checkpoint
                    if point is not None:
                        checkpoint.remove(point[0])
            return


@dataclasses.dataclass
class Saved(checkpoint.Checkpoints):
    """The inline runner's checkpoints of a stack: files in a folder, each told to the sweep's
    listeners (the trials' MLflow runs name it); after one a stop request asked for, the stack
    stops (:class:`~resablate.sweep.stop.Stopped`)."""

    events: Events
    stack: list[Trial]

    def adopt(self, point: tuple[str, int] | None) -> tuple[str, int] | None:
        """Clear what an earlier invocation left in the folder, but for the checkpoint that
        --resume continues from (``point``) and none newer (their epochs have no metrics
        recorded). Returns ``point`` when it is elsewhere; None when :meth:`latest` finds it."""
        here = point is not None and point[0] == str(self.folder)
        for old in self.files():
            if not here or point is None or point[1] < (checkpoint.epoch_of(old.name) or 0):
                old.unlink()
        return None if here else point

    def save(self, state: dict[str, Any]) -> None:
        super().save(state)
        epoch = int(state["epoch"])
        size = (self.folder / checkpoint.name(epoch)).stat().st_size
        for trial in self.stack:
            self.events.checkpointed(trial, str(self.folder), epoch, size)
        stop.REQUEST.check()  # raises Stopped: the stack's trials stay without an ending
