"""The Ray a sweep runs on: a local one started on 127.0.0.1, or a running cluster joined.

Whether it can hold one trial's resources is checked before anything is recorded, and how many
trials it runs at once (its slots) decides how seeds are stacked (stacking.py).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from resablate.errors import UserError
from resablate.plan import Plan, slots_in


def ray_slots(plan: Plan) -> int:
    """How many of the plan's trials the Ray this process is connected to can run at once now."""
    import ray

    return slots_in(plan, ray.cluster_resources())


def check_resources(plan: Plan, available: dict[str, float], where: str = "this machine") -> None:
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


# Read by the trial processes: Tune's own CSV/JSON/TensorBoard loggers duplicate what MLflow
# records, and trials run in the driver's working directory (on a cluster: the job's), so that
# relative paths (data.root, ./data) mean the same there.
TRIAL_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}


def start_ray(dashboard: bool, address: str | None = None) -> tuple[bool, str | None]:
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
        join(address)
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


def join(address: str) -> None:
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
