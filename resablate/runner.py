"""Running a plan's trials: on Ray Tune (the default), or in-process for debugging.

The only module that imports ray (lazily, so ``--inline`` and ``plan`` never pay for it). Ray Tune
schedules one function trainable per trial with the sweep's per-trial resources; trial configs
travel once through the object store (``tune.with_parameters``), and Tune sees only the trial id;
a large grid runs as several Tune runs in turn (:func:`runs_of`), so that the driver's memory
stays flat.
Events from Tune's driver-side callbacks are forwarded to the sweep's listeners (MLflow tracking,
progress), so every MLflow write happens in this one process.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resablate.errors import UserError
from resablate.grid import Trial, cell_id
from resablate.plan import Plan
from resablate.results import FAILED, FINISHED, PRUNED, RUNNING, Collector, Listener, TrialRecord

BACKENDS = ("ray", "inline")
NODE = "ray_node_id"  # the key of a report that names the Ray node the trial runs on
TRIAL = "resablate_trial"  # the key of a stacked seed's report that names its trial
# The key of a Tune result that carries our report whole. Ray Tune keeps running statistics
# (max, min, averages over the last 5 and 10 steps) of every numeric key of every trial's results
# for the whole run; the report travels wrapped in a list, which Tune leaves alone, beside the
# few keys Tune reads itself (the epoch, a scheduler's metric): ~2 KiB less per key and trial.
REPORT = "resablate_report"
# Ray Tune's stop signals: Ctrl-C, and SIGUSR1 (what Ray sends a job's driver to stop it)
STOP_SIGNALS = (signal.SIGINT, *((signal.SIGUSR1,) if hasattr(signal, "SIGUSR1") else ()))


class Events:
    """Fans trial events out to listeners; the collector sees each event first.

    A listener's :class:`UserError` (the tracking store failed) is kept in ``failure`` before it
    propagates, so that it reaches the user as itself even where Ray Tune wraps it.
    """

    def __init__(self, listeners: Sequence[Listener], history_of: tuple[str, ...] = ()) -> None:
        self.collector = Collector(history_of)
        self.listeners = list(listeners)
        self.failure: UserError | None = None

    def _each(self, call: Callable[[Listener], object]) -> None:
        try:
            for listener in self.listeners:
                call(listener)
        except UserError as exc:
            self.failure = exc
            raise

    def started(self, trial: Trial) -> None:
        self.collector.trial_started(trial)
        self._each(lambda listener: listener.trial_started(trial))

    def result(self, trial: Trial, result: dict[str, Any]) -> None:
        self.collector.trial_result(trial, result)
        self._each(lambda listener: listener.trial_result(trial, result))

    def finished(self, trial: Trial, status: str | None = None, error: str | None = None) -> None:
        record = self.collector.finish(trial, status, error)
        self._each(lambda listener: listener.trial_finished(record))

    def retried(self, trial: Trial, error: str | None) -> None:
        self.collector.trial_retried(trial, error)
        self._each(lambda listener: listener.trial_retried(trial, error))


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
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.plan, self.backend, self.results_dir = plan, backend, results_dir
        self.dashboard, self.address = dashboard, address
        self.dashboard_url: str | None = None
        self._started = False
        self.stopped = False  # a stop signal (Ctrl-C) ended a run: later runs run nothing

    def check(self) -> None:
        """Refuse what can be refused before Ray starts: a scheduler without Ray Tune, more per
        trial than this machine has (when the trials run here)."""
        if self.backend == "inline" and self.plan.spec.scheduler.kind != "none":
            raise self.plan.error(
                "scheduler.kind",
                f"{self.plan.spec.scheduler.kind} stops trials through Ray Tune, which --inline"
                " does not use; drop --inline, or set scheduler.kind: none",
            )
        if self.address is None:
            import torch

            _check_resources(
                self.plan,
                {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())},
            )

    def __enter__(self) -> Session:
        self.check()
        if self.backend == "ray":
            self._started, self.dashboard_url = _start_ray(self.dashboard, self.address)
            try:
                import ray

                where = "this machine" if self.address is None else "the cluster"
                _check_resources(self.plan, ray.cluster_resources(), where)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def run(
        self,
        listeners: Sequence[Listener],
        trials: list[Trial] | None = None,
        name: str = "",
        history_of: tuple[str, ...] = (),
    ) -> list[TrialRecord]:
        """Run every trial of the plan (or ``trials``, e.g. a batch of search candidates, as the
        Tune experiment ``name``); returns the records of the trials that ended, with the
        per-epoch values of the ``history_of`` metrics."""
        if self.stopped:
            return []  # a Ctrl-C stopped an earlier run: the sweep ends (a search's batches)
        plan = self.plan if trials is None else dataclasses.replace(self.plan, trials=trials)
        events = Events(listeners, history_of)
        if self.backend == "inline":
            _run_inline(plan, events)
        else:
            name = name or plan.spec.name
            self.stopped = _run_ray(plan, events, self.results_dir, name, self.slots())
        return list(events.collector.records.values())

    def slots(self) -> int | None:
        """How many trials run at once when they run on this machine's Ray (the machine's CPUs
        and GPUs over each trial's share, at most max_concurrent_trials); None when they run
        inline or on a cluster, whose size may change while the sweep runs."""
        if self.backend != "ray" or self.address is not None:
            return None
        return ray_slots(self.plan)


def ray_slots(plan: Plan) -> int:
    """How many of the plan's trials the Ray this process is connected to can run at once now."""
    import ray

    have, wanted = ray.cluster_resources(), plan.spec.resources
    fits = [int(have.get("CPU", 0.0) // wanted.cpu)]
    if wanted.gpu > 0:
        fits.append(int(have.get("GPU", 0.0) // wanted.gpu))
    if wanted.max_concurrent_trials is not None:
        fits.append(wanted.max_concurrent_trials)
    return max(1, min(fits))


def _check_resources(plan: Plan, available: dict[str, float], where: str = "this machine") -> None:
    wanted = plan.spec.resources
    for key, field, amount in (("CPU", "cpu", wanted.cpu), ("GPU", "gpu", wanted.gpu)):
        have = available.get(key, 0.0)
        if amount > have:
            fix = (
                "set resources.gpu: 0 to train on CPUs"
                if key == "GPU"
                else (f"set resources.cpu to at most {have:g}")
            )
            raise plan.error(
                f"resources.{field}",
                f"each trial asks for {amount:g} {key} but {where} has {have:g}; {fix}",
            )


def _run_inline(plan: Plan, events: Events) -> None:
    """Trials one after another in this process: a breakpoint in train.py just works."""
    attempts = plan.spec.resources.max_failures + 1
    for unit in units(plan):
        for attempt in range(1, attempts + 1):
            for trial in unit:
                events.started(trial)
            try:
                train_unit(
                    [t.config for t in unit],
                    [functools.partial(events.result, t) for t in unit],
                    _device(plan),
                    plan.spec.probes,
                )
            except UserError:
                raise  # the store failed (recording a result), not the trial
            except Exception as exc:
                if attempt < attempts:
                    for trial in unit:
                        events.retried(trial, failure_text(exc))
                    continue
                _failed(events, unit, failure_text(exc))
            else:
                for trial in unit:
                    events.finished(trial)
            break


AUTO_STACK_MAX = 8  # seeds_per_trial: auto stacks at most this many seeds in one worker
STACKED = "resablate.stacked_seeds"  # the MLflow tag of a seed trained in a stack: its size


def units(plan: Plan, slots: int | None = None) -> list[list[Trial]]:
    """What each worker runs: one trial, or seeds of one configuration trained stacked, where
    the configuration allows it (:func:`resablate.batched.why_not`); the others run alone.

    ``resources.seeds_per_trial`` caps a stack; ``auto`` (:func:`stack_size`) stacks only when
    the trials run on a local Ray that runs ``slots`` trials at once, and no more than leaves
    every slot a unit. A configuration's seeds are split into stacks of near-equal size.
    """
    chosen = plan.spec.resources.seeds_per_trial
    scheduled = plan.spec.scheduler.kind != "none"  # it stops trials one by one
    if chosen == 1 or (chosen == "auto" and (slots is None or scheduled)):
        return [[t] for t in plan.trials]
    from resablate.batched import why_not

    probes = bool(plan.spec.probes.chosen())

    def alone(config: dict[str, Any]) -> bool:
        try:
            return why_not(config, probes) is not None
        except ValueError:  # a config that does not validate fails in its own worker
            return True

    together: dict[str, list[Trial]] = {}
    for trial in plan.trials:
        key = trial.id if alone(trial.config) else cell_id(trial.config)
        together.setdefault(key, []).append(trial)
    groups = list(together.values())
    size = chosen if chosen != "auto" else stack_size([len(g) for g in groups], slots or 1)
    out: list[list[Trial]] = []
    for group in groups:
        parts = -(-len(group) // size)  # stacks of near-equal size, none over size
        for k in range(parts):
            unit = group[k * len(group) // parts : (k + 1) * len(group) // parts]
            if len(unit) > 1:
                tag = {STACKED: str(len(unit))}
                unit = [dataclasses.replace(t, tags={**t.tags, **tag}) for t in unit]
            out.append(unit)
    return out


def stack_size(groups: Sequence[int], slots: int) -> int:
    """The largest stack (up to AUTO_STACK_MAX seeds) that still gives at least ``slots``
    units, for groups of ``groups[i]`` stackable trials (1: the trial runs alone); 1 when even
    separate trials leave slots idle. Fewer, fuller workers cost nothing while every slot is
    busy: each stack trains its seeds in one computation, one worker start, one Tune trial."""
    for size in range(AUTO_STACK_MAX, 1, -1):
        if sum(-(-n // size) for n in groups) >= slots:
            return size
    return 1


def train_unit(
    configs: list[dict[str, Any]],
    reports: list[Callable[[dict[str, Any]], None]],
    device: str,
    probes: Any,
) -> None:
    """Train a unit: one trial (with its probes), or seeds stacked (they have none)."""
    if len(configs) == 1:
        from resablate.train import run_trial

        run_trial(configs[0], report=reports[0], device=device, probes=probes)
    else:
        from resablate.batched import run_seeds

        run_seeds(configs, reports, device=device)


def unit_id(unit: list[Trial]) -> str:
    return "_".join(t.id for t in unit)


def _failed(events: Events, unit: list[Trial], error: str | None) -> None:
    """A worker failed: its trials that had not ended (a stacked seed may have diverged) fail."""
    for trial in unit:
        record = events.collector.records.get(trial.id)
        ended = record is not None and record.status not in (RUNNING, FINISHED)
        events.finished(trial, None if ended else FAILED, None if ended else error)


def failure_text(exc: BaseException) -> str:
    """A failed trial's error.txt: the traceback, after one line that names a GPU running out
    of memory as such (with the fix) instead of leaving it to the traceback's last line."""
    text = "".join(traceback.format_exception(exc))
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            "GPU out of memory: lower train.batch_size, give each trial more of a GPU"
            " (resources.gpu) so that fewer trials share one, or set resources.seeds_per_trial:"
            f" 1 (a stack of seeds holds one network each)\n{text}"
        )
    return text


def _device(plan: Plan) -> str:
    return "cuda" if plan.spec.resources.gpu > 0 else "cpu"


def _trainable(
    tune_config: dict[str, Any],
    configs: dict[str, list[tuple[str, dict[str, Any]]]],
    threads: int,
    device: str,
    probes: dict[str, Any],
    tune_keys: tuple[str, ...] = ("epoch",),
) -> None:
    """Ray Tune's function trainable: one trial (or stacked seeds), reporting every epoch."""
    import ray
    import torch
    from ray import tune

    from resablate.spec import ProbesSpec

    torch.set_num_threads(threads)
    node = ray.get_runtime_context().get_node_id()  # which node ran it (tagged on the run)
    members = configs[tune_config["trial_id"]]

    def report(trial_id: str, result: dict[str, Any]) -> None:
        named = {TRIAL: trial_id} if len(members) > 1 else {}  # a stacked seed names its trial
        seen = {k: result[k] for k in tune_keys if k in result}
        tune.report({**seen, REPORT: [{**result, NODE: node, **named}]})

    try:
        train_unit(
            [c for _, c in members],
            [functools.partial(report, i) for i, _ in members],
            device,
            ProbesSpec.model_validate(probes),
        )
    except Exception as exc:
        # Not every exception survives Ray's pickling (pydantic's do not): send the traceback text.
        raise RuntimeError(failure_text(exc)) from None


def _forwarder(events: Events, units: dict[str, list[Trial]]) -> Any:
    """A Tune callback that forwards trial events (Tune runs callbacks in this driver process).
    A Tune trial runs a unit: one of our trials, or stacked seeds whose reports name theirs."""
    from ray import tune

    class Forward(tune.Callback):
        # Tune pickles its state (callbacks included) for resuming; the events and trials live
        # only in this process, so they are instance state that pickling leaves out.
        def __init__(self, events: Events, units: dict[str, list[Trial]]) -> None:
            self.events, self.units = events, units
            self.trials = {t.id: t for unit in units.values() for t in unit}
            self.signalled = False  # a Ctrl-C (or Ray's SIGUSR1 stop) reached Tune's handler

        def __getstate__(self) -> dict[str, Any]:
            return {}

        def setup(self, *args: Any, **info: Any) -> None:
            # Tune has installed its stop handlers (they end the run, then return from fit,
            # as if it had ended by itself): note their signal, so that no later run starts
            if threading.current_thread() is not threading.main_thread():
                return
            for sig in STOP_SIGNALS:
                handler = signal.getsignal(sig)
                if callable(handler):
                    signal.signal(sig, functools.partial(self._note, handler))

        def _note(self, handler: Callable[[int, Any], Any], sig: int, frame: Any) -> None:
            self.signalled = True
            handler(sig, frame)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            for ours in self.units[trial.config["trial_id"]]:
                self.events.started(ours)

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            ours = dict(result[REPORT][0])
            named = ours.pop(TRIAL, None)
            unit = self.units[trial.config["trial_id"]]
            self.events.result(self.trials[named] if named else unit[0], ours)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            for ours in self.units[trial.config["trial_id"]]:
                record = self.events.collector.records.get(ours.id)
                # a trial ends by itself with a last report of finished or diverged: one that
                # completes while still running was stopped by the scheduler
                stopped = record is not None and record.status == RUNNING and record.epoch > 0
                self.events.finished(ours, PRUNED if stopped else None)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            _failed(self.events, self.units[trial.config["trial_id"]], _error(trial))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            error = _error(trial)
            for ours in self.units[trial.config["trial_id"]]:
                self.events.retried(ours, error)

    return Forward(events, units)


def _error(trial: Any) -> str | None:
    """The error Tune stored for a failed trial attempt (the worker's traceback, or why the
    worker died)."""
    if trial.error_file and os.path.exists(trial.error_file):
        return Path(trial.error_file).read_text(errors="replace")
    return None


# Read by the trial processes: Tune's own CSV/JSON/TensorBoard loggers duplicate what MLflow
# records, and trials run in the driver's working directory (on a cluster: the job's), so that
# relative paths (data.root, ./data) mean the same there.
TRIAL_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}


def _start_ray(dashboard: bool, address: str | None = None) -> tuple[bool, str | None]:
    """Start a local Ray on 127.0.0.1 unless one is running, or join the cluster at
    ``address`` ("auto", "HOST:PORT"): (connected here, dashboard URL or None)."""
    # Ray resolves 127.0.0.1 to the machine's network address unless it runs single-machine,
    # which this switch selects (read when ray is imported): every Ray server binds 127.0.0.1.
    # A driver that joins a cluster must not set it (its workers must reach the driver).
    single = address is None and "ray" not in sys.modules
    single = single and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    if single:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    for key, value in TRIAL_ENV.items():  # a local Ray's workers inherit this environment
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return False, None
    if address is not None:
        _join(address)
        return True, None
    if dashboard and importlib.util.find_spec("aiohttp_cors") is None:
        raise UserError(
            "the Ray dashboard needs Ray's full install: pip install 'resablate[dashboard]'"
            " (ray[default]), or run without --dashboard"
        )
    try:
        context = ray.init(
            # a new Ray of our own, never whatever cluster `ray start` left recorded on this
            # machine (a dead one would hang us; a live one is joined only when --address says so)
            address="local",
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    finally:
        if single:  # our Ray has it; a cluster this process starts later (`ray start`) must not
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    url = getattr(context, "dashboard_url", None) if dashboard else None
    return True, (f"http://{url}" if url and not url.startswith("http") else url)


FIX_ADDRESS = "start it (ray start --head, or see clusters/README.md) or check --address"


def check_address(address: str) -> None:
    """Fail in one line, before anything starts, on an address no Ray cluster can be at."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected auto or HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        import socket

        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"--address {address}: no Ray cluster answers ({exc}); {FIX_ADDRESS}"
        ) from None


def _join(address: str) -> None:
    """Connect this driver to a running Ray cluster, or fail in one line before anything runs."""
    import ray

    check_address(address)
    # the nodes' workers do not inherit our environment: it travels in the runtime env (a Ray
    # Job's driver keeps its job's, where `resablate submit` put the same variables)
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    here = os.getcwd()
    try:
        ray.init(
            address=address,
            runtime_env=None if in_job else {"env_vars": TRIAL_ENV},
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        # inside a Ray Job, Ray may unpack the job's working directory (our cwd) again while
        # the driver connects: step into the fresh copy at the same path
        if os.path.isdir(here):
            os.chdir(here)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UserError(
            f"--address {address}: cannot join the Ray cluster ({first}); {FIX_ADDRESS}"
        ) from None


def _tune_keys(plan: Plan) -> tuple[str, ...]:
    """The keys of a report that Ray Tune reads itself: the epoch, and a scheduler's metric."""
    chosen = plan.spec.scheduler
    if chosen.kind == "none":
        return ("epoch",)
    return ("epoch", chosen.resolved(plan.spec.search)[0])


def _scheduler(plan: Plan) -> Any:
    """Ray Tune's trial scheduler named by the sweep's ``scheduler:`` section (None: FIFO)."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

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

    class Median(MedianStoppingRule):
        # Ray's rule skips a report without the metric (the epoch-0 probe report, a run that
        # diverged in its first epoch) but keeps a completing trial's last result and reads the
        # metric from it later (KeyError, Ray 2.60): give it only results that hold the metric
        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            if metric in result and "epoch" in result:
                super().on_trial_complete(tune_controller, trial, result)

    return Median(
        time_attr="epoch",
        metric=metric,
        mode=mode,
        grace_period=chosen.grace_period,
        min_samples_required=chosen.min_samples_required,
        # never pause a trial to let a waiting one run: a trainable without checkpoints would
        # start over and log its epochs twice; it runs until it is stopped or ends
        min_time_slice=float("inf"),  # type: ignore[arg-type]
        hard_stop=True,
    )


# A grid runs as several Ray Tune runs in turn, each of at most max(UNITS_PER_RUN,
# UNITS_PER_SLOT x the trials that run at once) units, so that no run waits long on its last
# trials. Tune keeps every trial's bookkeeping (its Trial, the running statistics of its
# automatic result keys, experiment-state snapshots of all its trials) until its run returns, and
# more per trial the longer the run (39 KiB per trial over the first 1,000 of one 3,000-trial
# run): the driver of one run of a 10,000-trial grid would grow by hundreds of MiB. Each run costs
# a Tune start (~5 s on 2 cores: new workers) and the idle tail of its last trials.
UNITS_PER_RUN = 1000
UNITS_PER_SLOT = 50


def runs_of(chosen: list[list[Trial]], slots: int, scheduled: bool) -> list[list[list[Trial]]]:
    """The units split into consecutive Tune runs of near-equal size, none over
    max(UNITS_PER_RUN, UNITS_PER_SLOT x slots); one run under a scheduler, which compares
    every trial with the others of its run."""
    if not chosen:
        return []
    if scheduled:
        return [chosen]
    size = max(UNITS_PER_RUN, UNITS_PER_SLOT * slots)
    parts, n = -(-len(chosen) // size), len(chosen)
    return [chosen[k * n // parts : (k + 1) * n // parts] for k in range(parts)]


def _ended(events: Events, unit: list[Trial]) -> bool:
    return all(
        (r := events.collector.records.get(t.id)) is not None and r.status != RUNNING for t in unit
    )


def _run_ray(
    plan: Plan, events: Events, results_dir: Path, name: str, slots: int | None = None
) -> bool:
    """Run the plan's units as one Ray Tune run, or several in turn (:func:`runs_of`), named
    ``name``, ``name-part002``, ...; a run that a stop signal (Ctrl-C) ended, or that returns
    with a unit not ended, is the last. True if a stop signal ended it."""
    # a scheduler reads its metric from each epoch's report; the init report (probes at epoch 0)
    # and a diverged one may lack it, which the scheduler skips but Tune would call an error
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    for logger in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    scheduled = plan.spec.scheduler.kind != "none"
    parts = runs_of(units(plan, slots), slots or ray_slots(plan), scheduled)
    for k, part in enumerate(parts):
        named = name if k == 0 else f"{name}-part{k + 1:03d}"
        signalled = _tune_run(plan, events, part, results_dir, named)
        # Tune's controller and trials hold one another (reference cycles): collect them now,
        # or the driver keeps every finished run's bookkeeping until Python's rare full
        # collection, which is what running a grid as several runs is for
        gc.collect()
        if signalled or not all(_ended(events, unit) for unit in part):
            return signalled
    return False


def _tune_run(
    plan: Plan, events: Events, part: list[list[Trial]], results_dir: Path, name: str
) -> bool:
    """One Ray Tune run of ``part``'s units; True if a stop signal (Ctrl-C) ended it."""
    from ray import tune

    chosen = {unit_id(unit): unit for unit in part}
    forward = _forwarder(events, chosen)
    resources = plan.spec.resources
    trainable = tune.with_parameters(
        _trainable,
        configs={key: [(t.id, t.config) for t in unit] for key, unit in chosen.items()},
        threads=max(1, int(resources.cpu)),
        device=_device(plan),
        probes=plan.spec.probes.model_dump(mode="json"),
        tune_keys=_tune_keys(plan),
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": resources.cpu, "gpu": resources.gpu}),
        param_space={"trial_id": tune.grid_search(list(chosen))},
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(plan),
            max_concurrent_trials=resources.max_concurrent_trials,
            reuse_actors=True,
            trial_name_creator=lambda t: t.config["trial_id"],
            trial_dirname_creator=lambda t: t.config["trial_id"],
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(results_dir.resolve()),
            verbose=0,
            callbacks=[forward],
            failure_config=tune.FailureConfig(max_failures=resources.max_failures),
        ),
    )
    # Tune's Ctrl-C handler (stop the trials, then return) stays installed after fit() until
    # the next Ctrl-C, which it would then swallow: outside fit, Ctrl-C is the driver's again
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        tuner.fit()
        return bool(forward.signalled)
    except Exception:
        if events.failure is not None:  # Tune wraps a callback's error in its TuneError
            raise events.failure from None
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
