"""``resablate ui``: MLflow's own server over a sweep's store, and the links to its experiments."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from resablate.errors import UserError
from resablate.store import Store, check_store, sqlite_path


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


def experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's active experiments that hold runs, newest first."""
    found = Store(uri).search_experiments(order_by=["creation_time DESC"])
    return [(e.name, e.experiment_id) for e in found if e.name != "Default"]


def serve_ui(uri: str, host: str, port: int, say: Callable[[str], Any]) -> int:
    """Run ``mlflow server`` on ``uri`` at ``host:port`` until Ctrl-C; print where to look."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise UserError(
            f"no MLflow store at {path}; run a sweep here first, or pass --tracking-uri"
        )
    check_store(uri)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # MLflow's GenAI job runner (LLM judges; resablate records none) keeps its queue in a
    # folder under /dev/shm (memory) that mlflow server never removes: off unless asked for
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, stdout=sys.stderr, env=env)  # our stdout: addresses only
    base = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise UserError(
                    f"mlflow server exited with code {server.returncode};"
                    f" is port {port} free? Try --port {port + 1}"
                )
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise UserError(
                        f"mlflow server did not answer on {base} within 120 s"
                    ) from None
                time.sleep(0.5)
        say(f"MLflow UI: {base}")
        for name, experiment_id in experiments(uri):
            say(f"  {name}: {experiment_url(base, experiment_id)}")
        say("Stop with Ctrl-C.")
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
