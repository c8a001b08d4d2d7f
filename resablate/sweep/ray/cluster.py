"""The Ray a sweep runs on: a local one started on 127.0.0.1, or a running cluster joined.

Whether it can hold one trial's resources is checked before anything is recorded, and how many
trials it runs at once (its slots) decides how seeds are stacked (stacking.py). On a cluster the
other nodes are asked, by a small task on each, whether they read the sweep's data sets and the
checkpoint storage where this node does (:func:`check_nodes`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resablate.errors import UserError
from resablate.spec.grid import canonical
from resablate.spec.schema import DataSpec
from resablate.sweep.capacity import slots_in
from resablate.sweep.plan import Plan
from resablate.sweep.ray.compat import TRIAL_ENV, single_machine

if TYPE_CHECKING:
    from resablate.trial.vision_sets import Torchvision


def ray_slots(plan: Plan) -> int:
    """How many of the plan's trials the Ray this process is connected to can run at once now."""
    import ray

    return slots_in(plan, ray.cluster_resources())


def check_resources(
    plan: Plan,
    available: dict[str, float],
    where: str = "this machine",
    most: dict[str, float] | None = None,
) -> list[str]:
    """Refuse, in one line, a trial that asks for more CPUs or GPUs than ``available``; unless
    the cluster's autoscaler may grow to ``most`` (:func:`autoscaler_most`) and that holds it:
    then the trials wait for it, and the returned notes say so."""
    wanted = plan.spec.resources
    notes = []
    for key, field, amount in (("CPU", "cpu", wanted.cpu), ("GPU", "gpu", wanted.gpu)):
        have = available.get(key, 0.0)
        if amount > have:
            grown = (most or {}).get(key)
            if grown is not None and amount <= grown:
                notes.append(
                    f"note: each trial asks for {amount:g} {key}; {where} has {have:g} now and"
                    f" its autoscaler may grow it to {grown:g}: the trials wait for those nodes"
                )
                continue
            fix = (
                "set resources.gpu: 0 to train on CPUs"
                if key == "GPU"
                else (f"set resources.cpu to at most {have:g}")
            )
            raise plan.error(
                f"resources.{field}",
                f"each trial asks for {amount:g} {key} but {where} has {have:g}; {fix}",
            )
    return notes


# Read by the trials where they run (vision_sets.py's data_root) and set where the driver runs: a
# cluster's nodes start their workers with their own environment, so these travel with the
# driver's runtime env too.
FORWARDED = ("RESABLATE_DATA",)


def worker_env(environ: Mapping[str, str], job: Mapping[str, str] | None) -> dict[str, str]:
    """The env_vars a driver that joins a cluster gives the cluster's workers: TRIAL_ENV and
    the FORWARDED variables set in ``environ``, less those its Ray Job sets already (``job``:
    the job's env_vars, None outside a job; Ray refuses a variable set twice)."""
    env = {**TRIAL_ENV, **{key: environ[key] for key in FORWARDED if key in environ}}
    return {key: value for key, value in env.items() if job is None or key not in job}


def job_env_vars() -> dict[str, str] | None:
    """The env_vars of the Ray Job this process is the driver of (None: not a job's driver)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if raw is None:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}


def start_ray(dashboard: bool, address: str | None = None) -> tuple[bool, str | None]:
    """Start a local Ray on 127.0.0.1 unless one is running, or join the cluster at
    ``address`` ("auto", "HOST:PORT"): (connected here, dashboard URL or None)."""
    for key, value in TRIAL_ENV.items():  # a local Ray's workers inherit this environment
        os.environ.setdefault(key, value)
    # every server of a local Ray binds 127.0.0.1; a driver that joins a cluster must not ask it
    # (the cluster's workers must reach the driver)
    with single_machine(address is None):
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
        context = ray.init(
            # a new Ray of our own, never whatever cluster `ray start` left recorded on this
            # machine (a dead one would hang us; a live one is joined only when --address says so)
            address="local",
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    url = getattr(context, "dashboard_url", None) if dashboard else None
    return True, (f"http://{url}" if url and not url.startswith("http") else url)


FIX_ADDRESS = "start it (ray start --head, or see clusters/README.md) or check --address"


def cluster_resources() -> dict[str, float]:
    """What the Ray this driver is connected to holds in all (CPU, GPU, memory, ...)."""
    import ray

    return dict(ray.cluster_resources())


def stop_ray() -> None:
    """Disconnect from Ray, and stop the local one :func:`start_ray` started."""
    import ray

    ray.shutdown()


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
    # Job's driver adds it to its job's, where `resablate submit` put TRIAL_ENV already)
    env = worker_env(os.environ, job_env_vars())
    here = os.getcwd()
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": env} if env else None,
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


# --- what the other nodes of a cluster see ------------------------------------------------------

CLUSTER_DATA = (
    "a cluster's data sets live on a path every node mounts (or a copy at that path on each):"
    " set data.root or RESABLATE_DATA to its absolute path, e.g. /mnt/shared/data"
)
CLUSTER_STORAGE = (
    "pass --storage a folder every node mounts (e.g. /mnt/shared/resablate), or an s3:// /"
    " gs:// URI"
)
CHECK_TIMEOUT_S = 120.0  # a node's first task starts a worker process (and unpacks a job's files)


def vision_sets(plan: Plan) -> Iterator[tuple[DataSpec, Torchvision]]:
    """The distinct torchvision data specs the plan's trials read (files under data.root); the
    bundled sets (digits, synthetic) read none."""
    from resablate.trial.vision_sets import TORCHVISION

    vision = {v.name: v for v in TORCHVISION}
    for key in dict.fromkeys(canonical(trial.config["data"]) for trial in plan.trials):
        spec = DataSpec.model_validate(json.loads(key))
        if spec.name in vision:
            yield spec, vision[spec.name]


def data_setting(root: str | None, environ: Mapping[str, str]) -> str:
    """The data folder a trial reads, as written (vision_sets.py's data_root resolves it the same
    way; repeated here so that the nodes' check imports no torch)."""
    return root or environ.get("RESABLATE_DATA") or "data"


def check_data_roots(
    plan: Plan, environ: Mapping[str, str] = os.environ, submitted: bool = False
) -> None:
    """Refuse, before anything starts, a torchvision data set read from a relative folder on a
    cluster: each node would resolve it in its own working directory, and ``resablate submit``
    (``submitted``: where data.root unset leaves it to the head's RESABLATE_DATA) uploads no
    data/."""
    for spec, _ in vision_sets(plan):
        root = spec.root if submitted else data_setting(spec.root, environ)
        if root is None or Path(root).expanduser().is_absolute():
            continue
        via = (
            "data.root"
            if spec.root
            else ("RESABLATE_DATA" if environ.get("RESABLATE_DATA") else "the default")
        )
        upload = "; resablate submit uploads no data/" if submitted else ""
        raise plan.error(
            "data.root",
            f"data set {spec.name} is read from {root!r} ({via}), a relative folder: each node"
            f" of a cluster resolves it in its own working directory{upload}; {CLUSTER_DATA}",
        )


def storage_folder(storage: str) -> str | None:
    """The folder a Ray Tune storage names on the node that reads it; None for a remote URI."""
    if storage.startswith("file://"):
        return storage[len("file://") :]
    return None if "://" in storage else storage


def check_nodes(plan: Plan, storage: str, given: bool) -> None:
    """On a joined cluster, before anything is recorded: every node but this one finds the
    plan's torchvision files where its trials will read them, and sees Ray Tune's ``storage``
    (checkpoints) as the same folder as this node, writable. ``given``: --storage named it (the
    default, --results-dir, is this node's alone). A cluster of one node needs nothing; nodes an
    autoscaler adds later are not asked (clusters/README.md)."""
    import ray
    from ray.exceptions import RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not others:
        return
    folder = storage_folder(storage)
    if folder is not None and not given:
        raise UserError(
            f"--storage: not given, so checkpoints would go to --results-dir {storage} on this"
            f" node, which the cluster's {len(others)} other node(s) cannot reach; "
            + CLUSTER_STORAGE
        )
    sets = [(s.name, s.root, v.folder, list(v.files)) for s, v in vision_sets(plan)]
    if folder is None and not sets:
        return
    marker = Path(folder) / f".resablate-shared-{secrets.token_hex(8)}" if folder else None
    token = secrets.token_hex(16)
    look = ray.remote(num_cpus=0, max_retries=0)(look_on_node)
    try:
        if marker is not None:  # the folder exists: check_storage made it
            marker.write_text(token)
        probe = (str(marker), token) if marker is not None else None
        asked = {
            node["NodeID"]: look.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(sets, probe)
            for node in others
        }
        ready, late = ray.wait(
            list(asked.values()), num_returns=len(asked), timeout=CHECK_TIMEOUT_S
        )
        for ref in late:
            ray.cancel(ref, force=True)
        answers = {node: ray.get(ref) for node, ref in asked.items() if ref in ready}
    except RayError as exc:  # a node lost while it was asked
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"--address: the cluster's nodes could not be checked ({first[:200]}); {FIX_ADDRESS}"
        ) from None
    except OSError as exc:
        raise UserError(
            f"--storage {storage}: cannot write there ({exc.strerror or exc}); {CLUSTER_STORAGE}"
        ) from None
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    _refuse(plan, storage, others, answers)


def _refuse(
    plan: Plan, storage: str, nodes: list[dict[str, Any]], answers: dict[str, list[list[str]]]
) -> None:
    """One line for the first problem the nodes reported (and how many more nodes had one)."""
    named = {
        n["NodeID"]: f"node {n.get('NodeManagerAddress', '?')} ({n['NodeID'][:8]})" for n in nodes
    }
    silent = [named[n["NodeID"]] for n in nodes if n["NodeID"] not in answers]
    if silent:
        raise UserError(
            f"--address: {silent[0]} did not answer within {CHECK_TIMEOUT_S:g} s"
            f"{_more(len(silent))}; check it is healthy (ray status) or remove it"
        )
    for kind in ("data", "storage"):
        found = [(named[n], what) for n, said in answers.items() for k, what in said if k == kind]
        if not found:
            continue
        node, what = found[0]
        more = _more(len({n for n, _ in found}))
        if kind == "data":
            raise plan.error("data.root", f"{node} {what}{more}; {CLUSTER_DATA}")
        raise UserError(f"--storage {storage}: {node} {what}{more}; {CLUSTER_STORAGE}")


def _more(count: int) -> str:
    return f" (and {count - 1} other node(s))" if count > 1 else ""


def look_on_node(
    sets: list[tuple[str, str | None, str, list[str]]], probe: tuple[str, str] | None
) -> list[list[str]]:
    """Run on one node (a Ray task there): what it lacks of the data ``sets`` (name, data.root,
    folder, files), read where its trials read them, and whether it sees ``probe`` (the marker
    file the driver wrote into the storage folder, and its content) and can write beside it.
    Returns [kind, problem] pairs: "data" or "storage"."""
    found: list[list[str]] = []
    for name, root, folder, files in sets:
        where = Path(data_setting(root, os.environ)).expanduser() / folder
        missing = [f for f in files if not (where / f).is_file()]
        if missing:
            lacks = "none" if len(missing) == len(files) else ", ".join(missing)
            found.append(["data", f"has {lacks} of data set {name}'s files in {where}"])
    if probe is not None:
        marker, token = Path(probe[0]), probe[1]
        try:
            seen = marker.read_text() == token
        except OSError:
            seen = False
        if not seen:
            found.append(
                ["storage", f"does not see the folder the driver wrote into ({marker.parent})"]
            )
        else:
            try:
                with tempfile.NamedTemporaryFile(dir=marker.parent, prefix=".resablate-write-"):
                    pass
            except OSError as exc:
                found.append(["storage", f"cannot write there ({exc.strerror or exc})"])
    return found
