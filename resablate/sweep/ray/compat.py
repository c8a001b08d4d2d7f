"""Where resablate works around Ray, each with why and the Ray it was written against (2.60;
pyproject pins ray[tune]>=2.60,<2.61, and a new Ray is taken by rereading this module).

Everything here reads Ray's environment switches, private modules or Tune's internal objects, or
works around a behaviour of Ray's; the rest of sweep/ray uses Ray's public API only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resablate.sweep import stop

WRITTEN_AGAINST = "2.60"

# Read by the trial processes (Ray 2.60): Tune's own CSV/JSON/TensorBoard loggers duplicate what
# MLflow records, and trials stay in their worker's working directory (a local Ray's: the
# driver's), not a trial folder of their own.
TRIAL_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}


@contextlib.contextmanager
def single_machine(active: bool) -> Iterator[None]:
    """While ``active``, a Ray started in the block binds its servers to 127.0.0.1: Ray 2.60
    resolves 127.0.0.1 to the machine's network address unless it runs single-machine, which
    this switch selects (read when ray is imported, so before it). A Ray this process starts
    later (`ray start`, a cluster of its own) must not inherit it: it goes when the block ends."""
    active = active and "ray" not in sys.modules
    active = active and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    if active:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        yield
    finally:
        if active:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)


def quiet_tune() -> None:
    """Tune's switches for a sweep's runs (Ray 2.60), set before each run starts."""
    # a scheduler reads its metric from each epoch's report; the init report (probes at epoch 0)
    # and a diverged one may lack it, which the scheduler skips but Tune would call an error
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Ctrl-C is the driver's (stop.py), not Tune's: Tune learns of it through a Stopper
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for logger in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(logger).setLevel(logging.ERROR)


def take_back_signals() -> None:
    """Call from a Tune callback's ``setup``: Tune 2.60 points SIGUSR1 at its own handler when
    its run starts, and a sweep's stop signals are stop.py's."""
    stop.install()


def fit(tuner: Any) -> Any:
    """``tuner.fit()``, with the stop signals' handlers as they were afterwards: Tune 2.60 leaves
    its SIGUSR1 handler in place when its run returns."""
    with stop.saved():
        return tuner.fit()


def median_stopping(metric: str, **settings: Any) -> Any:
    """Ray Tune's MedianStoppingRule on ``metric``, fed only results that hold it. Ray 2.60's rule
    skips a report without the metric (the epoch-0 probe report, a run that diverged in its first
    epoch) but keeps a completing trial's last result and reads the metric from it later
    (KeyError)."""
    from ray.tune.schedulers import MedianStoppingRule

    class Median(MedianStoppingRule):
        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            if metric in result and "epoch" in result:
                super().on_trial_complete(tune_controller, trial, result)

    return Median(metric=metric, **settings)


def trial_folder(trial: Any, storage: str) -> str:
    """Where a Tune trial's checkpoints are: its folder in the run's storage, as a path or a URI
    of the storage's scheme. Tune 2.60's callbacks get its internal Trial, whose storage context
    is the only place that says."""
    path = trial.storage.trial_fs_path
    scheme, found, _ = storage.partition("://")
    return f"{scheme}://{path}" if found else path


def trial_error(trial: Any) -> str | None:
    """The error Tune stored for a failed trial attempt (the worker's traceback, or why the worker
    died): Tune 2.60 hands its callbacks no error, only the internal Trial's error file."""
    if trial.error_file and os.path.exists(trial.error_file):
        return Path(trial.error_file).read_text(errors="replace")
    return None


def autoscaler_most() -> dict[str, float] | None:
    """What the joined cluster's autoscaler may grow it to, by resource (None: no autoscaler, or
    Ray does not say). Ray 2.60 has no public call for it: this reads Ray's own record of the
    autoscaler's config as Ray Train does (ray._private.state)."""
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
    except Exception:  # a private API: if it moves, the cluster is taken as it is now
        return None
    return None if found is None else {k: float(v) for k, v in found.items()}


def local_token() -> str | None:
    """This machine's Ray token, found where Ray finds it, whatever RAY_AUTH_MODE says: Ray 2.60's
    own loader (private, ray._raylet), the one `ray get-auth-token` uses, so that its order of
    places stays Ray's to change."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # the environment may have changed since Ray first looked
    if not loader.has_token(ignore_auth_mode=True):
        return None
    return str(loader.get_raw_token(ignore_auth_mode=True))
