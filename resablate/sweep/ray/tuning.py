"""A plan's stacks run as Ray Tune trials: the trainable, the events Tune reports, the stop.

Ray Tune schedules one function trainable per stack with the sweep's per-trial resources; the
stacks' trial configs travel once through the object store (``tune.with_parameters``) and Tune
sees only the stack's id. A large grid runs as several Tune runs in turn (:func:`runs_of`), so
that the driver's memory stays flat. Tune's driver-side callbacks forward every trial event to
the sweep's listeners (MLflow, progress), so every MLflow write happens in the driver. A stop
request (stop.py) reaches the trials through a flag (a small Ray actor) that each reads at the end
of an epoch: each saves a checkpoint and is stopped there, then Tune returns.

Checkpoints (checkpoint.py, tune_checkpoints.py) travel as Ray Tune ``Checkpoint``s into the
run's storage (``storage_path``: --results-dir, or a shared folder or s3:// / gs:// URI on a
cluster), the newest two kept per trial. A retried trial (max_failures, a lost worker or node)
and a paused one start from the last of them; ``--resume`` hands a trial the checkpoint its
MLflow run names. A finished trial's checkpoints are deleted (or its last logged to MLflow:
train.keep_checkpoint).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from resablate.results import RUNNING, Events, TrialRecord
from resablate.spec.grid import Trial
from resablate.sweep import capacity, stacking, stop
from resablate.sweep.capacity import runs_of
from resablate.sweep.plan import Plan
from resablate.sweep.ray import compat
from resablate.sweep.ray.callbacks import TRIAL, Forward, StopRequested
from resablate.sweep.ray.cluster import ray_slots
from resablate.sweep.ray.tune_checkpoints import (
    REPORT,
    RESUMED,
    Outbox,
    Point,
    Reported,
    StopFlag,
    polled,
    resume_state,
)
from resablate.sweep.stacking import stack_id, stacks
from resablate.sweep.worker import failure_text, train_stack, trial_threads
from resablate.trial import checkpoint

NODE = "ray_node_id"  # the key of a report that names the Ray node the trial runs on


def _trainable(
    tune_config: dict[str, Any],
    configs: dict[str, list[tuple[str, dict[str, Any]]]],
    threads: int,
    device: str,
    probes: dict[str, Any],
    tune_keys: tuple[str, ...] = ("epoch",),
    every: int | None = None,
    stack_points: dict[str, Point] | None = None,
    flag: Any = None,
    final: bool = False,
    plugins: tuple[tuple[str, str], ...] = (),
) -> None:
    """Ray Tune's function trainable: one stack (a trial, or several stacked), reporting every
    epoch of each of its trials (in batches, :class:`Outbox`), saving checkpoints (every
    ``every`` epochs; the default cadence when None; at the last epoch when ``final``) and
    starting from one when there is one (:func:`resume_state`; ``stack_points``: where --resume
    found each stack's)."""
    from resablate.spec.schema import ProbesSpec

    node = ray.get_runtime_context().get_node_id()  # which node ran it (tagged on the run)
    # a grid's stacks come through ``configs``; a searcher's in the Tune trial's own config
    members = tune_config.get("members") or configs[tune_config["trial_id"]]
    # a scheduler decides at every epoch: each report goes at once; else in batches
    outbox = Outbox(tune_keys, each=len(tune_keys) > 1)

    def report(trial_id: str, result: dict[str, Any]) -> None:
        named = {TRIAL: trial_id} if len(members) > 1 else {}  # a stack's member names its trial
        outbox.add({**result, NODE: node, **named})

    key = tune_config["trial_id"]
    state = resume_state(tune_config.get("resume") or (stack_points or {}).get(key))
    if state is not None:
        tune.report({"epoch": state["epoch"], REPORT: [], RESUMED: state["epoch"]})
    stopping = polled(flag) if flag is not None else None
    try:
        train_stack(
            [c for _, c in members],
            [functools.partial(report, i) for i, _ in members],
            device,
            ProbesSpec.model_validate(probes),
            threads,
            checkpoints=Reported(every=every, stopping=stopping, final=final, outbox=outbox),
            resume=state,
            plugins=plugins,
        )
        outbox.flush()
    except Exception as exc:
        with contextlib.suppress(Exception):  # what it trained before it failed is a result
            outbox.flush()
        # Not every exception survives Ray's pickling (pydantic's do not): send the traceback text.
        raise RuntimeError(failure_text(exc)) from None


def _tune_keys(plan: Plan) -> tuple[str, ...]:
    """The keys of a report that Ray Tune reads itself: the epoch, and a scheduler's metric."""
    chosen = plan.spec.scheduler
    if chosen.kind == "none":
        return ("epoch",)
    return ("epoch", chosen.resolved(plan.spec.search)[0])


def _scheduler(plan: Plan) -> Any:
    """Ray Tune's trial scheduler named by the sweep's ``scheduler:`` section (None: FIFO)."""
    from ray.tune.schedulers import ASHAScheduler

    chosen = plan.spec.scheduler
    if chosen.kind == "none":
        return None
    metric, mode = chosen.resolved(plan.spec.search)
    if chosen.kind == "asha":
        epochs = max(int(t.config["train"]["epochs"]) for t in plan.trials)
        return ASHAScheduler(
            time_attr="epoch",
            metric=metric,
            mode=mode,
            max_t=max(epochs, chosen.grace_period),
            grace_period=chosen.grace_period,
            reduction_factor=chosen.reduction_factor,
        )

    return compat.median_stopping(
        metric,
        time_attr="epoch",
        mode=mode,
        grace_period=chosen.grace_period,
        min_samples_required=chosen.min_samples_required,
        # a trial paused to let a waiting one run resumes from its last checkpoint: it runs at
        # least one checkpoint interval between pauses, so that it always gets past one
        min_time_slice=interval(plan),
        hard_stop=True,
    )


def interval(plan: Plan) -> int:
    """The most epochs between two checkpoints of any trial of the plan (:func:`_every`)."""
    every = plan.spec.train.checkpoint_every
    epochs = max((int(t.config["train"]["epochs"]) for t in plan.trials), default=1)
    return every or checkpoint.default_every(epochs)


def _every(plan: Plan) -> int | None:
    """Epochs between a trial's checkpoints: ``train.checkpoint_every``; under median stopping,
    which pauses trials, at most :func:`interval` epochs even when they take less than a
    minute (a paused trial resumes from its last checkpoint); else the default cadence."""
    if plan.spec.train.checkpoint_every is None and plan.spec.scheduler.kind == "median":
        return interval(plan)
    return plan.spec.train.checkpoint_every


def _ended(events: Events, stack: list[Trial]) -> bool:
    return all(
        (r := events.collector.records.get(t.id)) is not None and r.status != RUNNING
        for t in stack
    )


def run_grid(
    plan: Plan,
    events: Events,
    storage: str,
    name: str,
    slots: int | None = None,
    trial_points: dict[str, Point] | None = None,
    budget: int | None = None,
) -> None:
    """Run the plan's stacks as one Ray Tune run, or several in turn (:func:`runs_of`), named
    ``name``, ``name-part002``, ...; a stop request, or a run that returns with a stack not
    ended, ends the grid. ``trial_points``: where --resume found unfinished trials' checkpoints (by
    trial id); a stack whose trials all have the same one starts from it."""
    compat.quiet_tune()
    scheduled = plan.spec.scheduler.kind != "none"
    parts = runs_of(stacks(plan, slots, budget), slots or ray_slots(plan), scheduled)
    for k, part in enumerate(parts):
        if stop.REQUEST.requested:
            return
        chosen = {stack_id(stack): stack for stack in part}
        configs = {key: [(t.id, t.config) for t in stack] for key, stack in chosen.items()}
        space = {"trial_id": tune.grid_search(list(chosen))}
        named = name if k == 0 else f"{name}-part{k + 1:03d}"
        found = {
            key: stacking.resume_point(stack, trial_points or {}) for key, stack in chosen.items()
        }
        stack_points = {key: point for key, point in found.items() if point is not None}
        _fit(
            plan, events, storage, named, chosen, stack_points, configs=configs, param_space=space
        )
        # Tune's controller and trials hold one another (reference cycles): collect them now,
        # or the driver keeps every finished run's bookkeeping until Python's rare full
        # collection, which is what running a grid as several runs is for
        gc.collect()
        if not all(_ended(events, stack) for stack in part):
            return


def _fit(
    plan: Plan,
    events: Events,
    storage: str,
    name: str,
    chosen: dict[str, list[Trial]],
    stack_points: dict[str, Point],
    configs: dict[str, list[tuple[str, dict[str, Any]]]] | None = None,
    param_space: dict[str, Any] | None = None,
    search_alg: Any = None,
) -> None:
    """One Ray Tune run: of the stacks in ``chosen`` (their configs passed once, ``configs``),
    or of those a searcher hands out (it adds them to ``chosen``; their configs travel in each
    Tune trial's config). ``stack_points``: the stacks' checkpoints to start from (by stack id; a
    searcher adds to it); the run's checkpoints go into ``storage``."""
    # on the driver's node: it starts no worker on a node the trials need, and goes with the driver
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    flag = StopFlag.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]
    forward = Forward(events, chosen, storage, flag, stack_points)
    resources = plan.spec.resources
    trainable = tune.with_parameters(
        _trainable,
        configs=configs or {},
        threads=trial_threads(plan),
        device="cuda" if resources.gpu > 0 else "cpu",
        probes=plan.spec.probes.model_dump(mode="json"),
        tune_keys=_tune_keys(plan),
        every=_every(plan),
        stack_points=stack_points,
        flag=flag,
        final=plan.spec.train.keep_checkpoint,
        plugins=plan.plugins(),
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": resources.cpu, "gpu": resources.gpu}),
        param_space=param_space or {},
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(plan),
            search_alg=search_alg,
            num_samples=-1 if search_alg is not None else 1,
            max_concurrent_trials=resources.max_concurrent_trials,
            reuse_actors=True,
            trial_name_creator=lambda t: t.config["trial_id"],
            trial_dirname_creator=lambda t: t.config["trial_id"],
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=0,
            stop=StopRequested(forward),
            callbacks=[forward],
            failure_config=tune.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoint.KEEP),
        ),
    )
    try:
        compat.fit(tuner)
    except Exception:
        if events.failure is not None:  # Tune wraps a callback's error in its TuneError
            raise events.failure from None
        raise


class Candidates(Searcher):
    """Ray Tune's searcher over a search's queue (search_queue.CandidateQueue): each suggestion is
    the next stack of a cell's Optuna candidate, asked as trials end and slots free up. After
    ``limit`` stacks it hands out no more: the run ends when they have, and the next run of the
    same queue continues (Tune's bookkeeping of a run's trials is freed when the run returns).

    Tune pickles its searcher with the run's state, so this holds only what it reads: the queue
    (plain data, Optuna studies and the earlier invocation's records) and the sweep's records
    by trial id, never the listeners (the progress bar holds locks, MLflow a client)."""

    def __init__(
        self,
        queue: Any,
        records: dict[str, TrialRecord],
        chosen: dict[str, list[Trial]],
        limit: int,
        trial_points: dict[str, Point],
        stack_points: dict[str, Point],
    ) -> None:
        super().__init__()
        self.queue, self.records, self.chosen, self.limit = queue, records, chosen, limit
        self.trial_points = trial_points  # by trial id: where --resume found checkpoints
        self.stack_points = stack_points  # by stack id: what the stacks handed out start from

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        records = self.records
        full = len(self.chosen) >= self.limit
        stack = None if stop.REQUEST.requested or full else self.queue.next(records)
        if stack is None:
            done = stop.REQUEST.requested or full or self.queue.finished(records)
            return Searcher.FINISHED if done else None  # type: ignore[return-value]
        key = stack_id(stack)
        self.chosen[key] = stack
        point = stacking.resume_point(stack, self.trial_points)
        if point is not None:
            self.stack_points[key] = point
        return {"trial_id": key, "members": [(t.id, t.config) for t in stack], "resume": point}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Nothing to do here: the queue reads how the trials ended from the sweep's records."""


def run_queue(
    plan: Plan,
    events: Events,
    storage: str,
    name: str,
    queue: Any,
    slots: int | None,
    trial_points: dict[str, Point] | None = None,
) -> None:
    """Ray Tune runs of every stack that ``queue`` hands out, until it has none left: one run,
    or several in turn (``name``, ``name-part002``, ...) of at most max(STACKS_PER_RUN,
    STACKS_PER_SLOT x slots) stacks each, as a grid's; a stop request ends them."""
    compat.quiet_tune()
    limit = max(capacity.STACKS_PER_RUN, capacity.STACKS_PER_SLOT * (slots or ray_slots(plan)))
    for k in itertools.count():
        chosen: dict[str, list[Trial]] = {}
        named = name if k == 0 else f"{name}-part{k + 1:03d}"
        stack_points: dict[str, Point] = {}
        searcher = Candidates(
            queue, events.collector.records, chosen, limit, trial_points or {}, stack_points
        )
        _fit(plan, events, storage, named, chosen, stack_points, search_alg=searcher)
        gc.collect()
        records = events.collector.records
        ended = all(_ended(events, stack) for stack in chosen.values())
        if stop.REQUEST.requested or not ended or queue.finished(records):
            return
