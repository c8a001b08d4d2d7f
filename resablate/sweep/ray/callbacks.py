"""Ray Tune's driver-side callbacks of a sweep's run: every trial event forwarded to the sweep's
listeners (MLflow, progress; so every MLflow write happens in the driver), and the stop that ends
the run once the trials running at a stop request have saved."""

from __future__ import annotations

from typing import Any

from ray import tune

from resablate.results import PRUNED, RUNNING, Events
from resablate.spec.grid import Trial
from resablate.sweep import stop
from resablate.sweep.ray import compat
from resablate.sweep.ray.tune_checkpoints import CHECKPOINT, REPORT, RESUMED, Point, delete

TRIAL = "resablate_trial"  # the key of a stacked seed's report that names its trial


class StopRequested(tune.Stopper):
    """Ends the Tune run when a stop was requested (stop.py): the trials running then save a
    checkpoint at the end of their epoch and are stopped at it; once every one of them has,
    Tune stops the rest and returns from ``fit``."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return stop.REQUEST.requested and CHECKPOINT in result

    def stop_all(self) -> bool:
        return stop.REQUEST.requested and self.forward.saved_all()


class Forward(tune.Callback):
    """Forwards trial events to the sweep's listeners (Tune runs callbacks in the driver). A Tune
    trial trains a stack: one of our trials, or several whose reports name theirs."""

    def __init__(
        self,
        events: Events,
        chosen: dict[str, list[Trial]],
        storage: str = "",
        flag: Any = None,
        stack_points: dict[str, Point] | None = None,
    ) -> None:
        self.events, self.stacks = events, chosen  # a searcher adds stacks as it hands them out
        self.storage, self.flag, self.stack_points = storage, flag, stack_points or {}
        self.running: set[str] = set()  # Tune's ids of the trials running
        self.seen: set[str] = set()  # Tune's ids of the trials started in this run
        self.waiting: set[str] | None = None  # those running at a stop request, not yet saved
        self.unregistered: dict[str, dict[str, Any]] = {}  # reported, Tune's save task pending

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its state (callbacks included) for resuming; the events and trials live
        # only in this process
        return {}

    def setup(self, *args: Any, **info: Any) -> None:
        compat.take_back_signals()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if stop.REQUEST.requested and self.waiting is None:  # tell the trials, once
            self.waiting = set(self.running)
            if self.flag is not None:
                self.flag.set.remote()

    def saved_all(self) -> bool:
        """Whether every trial that ran when the stop was requested has saved since, or ended."""
        return self.waiting is not None and not self.waiting

    def location(self, trial: Any) -> str:
        """Where a Tune trial's checkpoints are: its folder in the run's storage, as a path or a
        URI of the storage's scheme."""
        return compat.trial_folder(trial, self.storage)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        if trial.trial_id not in self.seen:  # not a retry, not a paused trial going on
            self.seen.add(trial.trial_id)
            # an earlier invocation's run of the same name left these (a resumed invocation's
            # runs are named apart, so this never holds the checkpoint it resumes from)
            delete([self.location(trial)])
        for ours in self.stacks[trial.config["trial_id"]]:
            self.events.started(ours)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        stack = self.stacks[trial.config["trial_id"]]
        if CHECKPOINT in result:  # told on when Tune has registered it (on_checkpoint)
            [self.unregistered[trial.trial_id]] = result[CHECKPOINT]
            return
        if RESUMED in result:
            for member in stack:
                self.events.resumed(member, int(result[RESUMED]))
            return
        for sent in result[REPORT]:  # a batch of epoch reports, in the order they were made
            ours = dict(sent)
            named = ours.pop(TRIAL, None)
            member = next(t for t in stack if t.id == named) if named else stack[0]
            self.events.result(member, ours)

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        """Tune takes a reported checkpoint only once the worker's save task returns it, after
        ``on_trial_result`` (and registers it in this same step): a run's checkpoint tag,
        written here, never names one that a retry of its trial (max_failures) would not start
        from, nor does a stop count a trial as saved before."""
        saved = self.unregistered.pop(trial.trial_id, None)
        if saved is None:
            return
        for member in self.stacks[trial.config["trial_id"]]:
            self.events.checkpointed(
                member, self.location(trial), int(saved["epoch"]), int(saved["bytes"])
            )
        if self.waiting is not None:
            self.waiting.discard(trial.trial_id)

    def _gone(self, trial: Any) -> None:
        self.running.discard(trial.trial_id)
        if self.waiting is not None:
            self.waiting.discard(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._gone(trial)
        stack = self.stacks[trial.config["trial_id"]]
        for ours in stack:
            record = self.events.collector.records.get(ours.id)
            # a trial ends by itself with a last report of finished or diverged; one that
            # completes while still running was stopped: by the scheduler (pruned), or by a stop
            # request (it has no ending: its run is closed as killed)
            running = record is not None and record.status == RUNNING
            if running and stop.REQUEST.requested:
                continue
            pruned = running and record is not None and record.epoch > 0
            self.events.finished(ours, PRUNED if pruned else None)
        if self.events.results(stack):
            point = self.stack_points.get(trial.config["trial_id"])
            delete([self.location(trial), *([point[0]] if point else [])])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._gone(trial)
        self.events.failed(self.stacks[trial.config["trial_id"]], compat.trial_error(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = compat.trial_error(trial)
        for ours in self.stacks[trial.config["trial_id"]]:
            self.events.retried(ours, error)
