"""Ray Jobs: submit a sweep to a cluster's Jobs API and follow it (``resablate submit``, ``jobs``,
``logs``, ``stop``).

The sweep is validated here first (a bad file, or a data set in a relative folder that the
upload leaves out, never reaches the cluster); the job runs ``resablate sweep`` on the head node
against the cluster (``--address auto``) with this folder as its working directory (Ray's
runtime_env uploads it) and records to the MLflow server named by ``--tracking-uri`` /
MLFLOW_TRACKING_URI, which must be a server (a sqlite file is refused).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resablate.errors import UserError
from resablate.sweep.command import sweep_options
from resablate.sweep.plan import Plan
from resablate.sweep.ray.cluster import check_data_roots
from resablate.sweep.ray.compat import TRIAL_ENV, local_token

# what the working directory upload leaves out: local results, stores, caches, data sets
EXCLUDES = [".git", "mlruns", "mlflow.db", "resablate-runs", "reports", "data", "__pycache__"]
EXCLUDES += ["*.pyc", ".venv", "venv", ".mypy_cache", ".ruff_cache", ".pytest_cache"]


JOB_RESULTS_DIR = (
    "~/resablate-runs"  # on the head node: where a job's sweep keeps its results folder
)


GET_TOKEN = (
    "run `ray get-auth-token` on the head node and export RAY_AUTH_TOKEN=<that token> here (or"
    " RAY_AUTH_TOKEN_PATH=<a file holding it>)"
)


def client(address: str) -> Any:
    """A Jobs API client for the dashboard at ``address`` (http://HEAD:8265), or one line.

    Ray 2.60 turns token authentication on for a head started where a token file exists, and its
    Jobs client sends a token only with RAY_AUTH_MODE=token. Here a head that asks for a token
    gets the one this machine has (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, as
    Ray itself looks them up), sent as the Authorization header of every request; a head that
    does not ask is sent none."""
    if not address.startswith(("http://", "https://")):
        raise UserError(
            f"--address {address}: the Jobs API is the dashboard's http address,"
            " e.g. http://127.0.0.1:8265 (an SSH tunnel to the head node)"
        )
    import logging

    logging.getLogger("ray.dashboard").setLevel(logging.WARNING)  # its upload chatter
    try:
        return _connect(address, None)
    except _AuthRequired:
        pass
    token = local_token()
    if token is None:
        raise UserError(
            f"--address {address}: the cluster uses token authentication and no token is set"
            f" here; {GET_TOKEN}"
        )
    try:
        return _connect(address, token)
    except _AuthRequired:
        raise UserError(
            f"--address {address}: the cluster refuses this machine's Ray token (RAY_AUTH_TOKEN,"
            f" RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); {GET_TOKEN}"
        ) from None


class _AuthRequired(Exception):
    """The dashboard answered 401/403: it wants a (valid) token."""


def _connect(address: str, token: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # ConnectionError, or a dashboard that refuses the request
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if any(s in str(exc) for s in ("401", "403", "Unauthorized", "authentication token")):
            raise _AuthRequired from None
        raise UserError(
            f"--address {address}: no Ray Jobs API answers ({first[:200]}); start the cluster's"
            " dashboard (ray start --head --dashboard-host=127.0.0.1) and tunnel to it"
        ) from None


def entrypoint(
    plan: Plan,
    uri: str,
    profile: str | None,
    folder: Path,
    storage: str | None = None,
    flags: tuple[str, ...] = (),
) -> str:
    """The command the job runs on the head node, with the sweep file relative to ``folder``
    (``storage``: Ray Tune's, as the head node names it)."""
    source = Path(plan.source).resolve()
    try:
        relative = source.relative_to(folder.resolve())
    except ValueError:
        raise UserError(
            f"{plan.source}: the sweep file must be inside the folder submitted with it"
            f" ({folder.resolve()}); run resablate submit from the project's folder"
        ) from None
    # Tune's folders, the lock and a search's Optuna journal outlive the job's working directory
    options = sweep_options(profile, plan.overrides, JOB_RESULTS_DIR, storage, address="auto")
    words = ["resablate", "sweep", str(relative), *options, "--tracking-uri", uri]
    words += flags  # --resume, --new
    # the shell that runs the entrypoint expands ~ on the head node
    return shlex.join(words).replace(shlex.quote(JOB_RESULTS_DIR), JOB_RESULTS_DIR)


# Ray's answer while no job agent has registered yet with a head that just started ("please try
# again later"): submission retries for this long before it says so
NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S = 60


def submit(
    address: str,
    plan: Plan,
    uri: str,
    profile: str | None,
    folder: Path,
    yes: bool,
    storage: str | None = None,
    flags: tuple[str, ...] = (),
) -> str:
    """Submit the sweep as a Ray Job; returns its submission id. ``flags``: the job's own
    --resume or --new."""
    check_data_roots(plan, submitted=True)  # the rest is checked on the cluster, by the job
    jobs = client(address)
    command = entrypoint(plan, uri, profile, folder, storage, flags)
    if yes:
        command += " --yes"
    name = f"resablate-{plan.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return str(
                jobs.submit_job(
                    entrypoint=command,
                    submission_id=name,
                    runtime_env={
                        "working_dir": str(folder),
                        "excludes": EXCLUDES,
                        "env_vars": dict(TRIAL_ENV),
                    },
                    metadata={"resablate.sweep": plan.spec.name},
                )
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            if NO_AGENT in first and time.monotonic() < deadline:
                time.sleep(2)  # a head just started: its job agent registers within seconds
                continue
            raise UserError(
                f"--address {address}: the cluster refused the job ({first[:300]})"
            ) from None


def listing(address: str) -> list[dict[str, str]]:
    """The cluster's jobs, newest first: id, status, entrypoint."""
    found = client(address).list_jobs()
    found.sort(key=lambda job: job.start_time or 0, reverse=True)
    return [
        {
            "id": str(job.submission_id or job.job_id),
            "status": str(job.status.value if hasattr(job.status, "value") else job.status),
            "entrypoint": str(job.entrypoint),
        }
        for job in found
    ]


def _known(jobs: Any, address: str, job_id: str) -> None:
    try:
        jobs.get_job_status(job_id)
    except Exception:
        raise UserError(f"no job {job_id} at {address}; `resablate jobs` lists them") from None


def logs(address: str, job_id: str, follow: bool, write: Callable[[str], Any]) -> str:
    """Print a job's logs (all of them, or following them until it ends); returns its status."""
    jobs = client(address)
    _known(jobs, address, job_id)
    if not follow:
        write(jobs.get_job_logs(job_id))
    else:

        async def tail() -> None:
            async for lines in jobs.tail_job_logs(job_id):
                write(lines)

        asyncio.run(tail())
    status = jobs.get_job_status(job_id)
    return str(status.value if hasattr(status, "value") else status)


def stop(address: str, job_id: str) -> bool:
    jobs = client(address)
    _known(jobs, address, job_id)
    return bool(jobs.stop_job(job_id))
