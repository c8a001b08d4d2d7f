"""``resablate ui``: MLflow's own server over a sweep's store, and the links to its experiments."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from resablate.errors import UserError
from resablate.tracking.store import Store, check_store, sqlite_path


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"


def experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's active experiments that hold runs, newest first."""
    found = Store(uri).search_experiments(order_by=["creation_time DESC"])
    return [(e.name, e.experiment_id) for e in found if e.name != "Default"]


def holder(port: int) -> str:
    """Who listens on ``port`` (``pid 123: mlflow server ...``), as far as psutil can tell."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return ""
                command = " ".join(psutil.Process(conn.pid).cmdline())[:80]
                return f" by pid {conn.pid} ({command})"
    except (psutil.Error, OSError):
        pass
    return ""


def check_port(host: str, port: int) -> None:
    """Fail in one line, before anything starts, if ``host:port`` is taken: an MLflow server
    started there would exit, and the links printed would reach whatever holds the port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"port {port} on {host} is in use{holder(port)} ({exc.strerror});"
                f" pass --port {port + 1}, or stop what holds it"
            ) from None


def serve_ui(uri: str, host: str, port: int, say: Callable[[str], Any]) -> int:
    """Run ``mlflow server`` on ``uri`` at ``host:port`` until Ctrl-C or SIGTERM (which stop the
    server and every process it started); print where to look."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise UserError(
            f"no MLflow store at {path}; run a sweep here first, or pass --tracking-uri"
        )
    check_store(uri)
    check_port(host, port)
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
    # its own process group: the workers mlflow server starts (uvicorn) stop with it
    server = subprocess.Popen(command, stdout=sys.stderr, env=env, start_new_session=True)
    base = f"http://{host}:{port}"

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: stop the server, no traceback

    before = signal.signal(signal.SIGTERM, stop)
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
        signal.signal(signal.SIGTERM, before)
        _stop_group(server)


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after 10 s."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # a worker that outlived its parent
    server.wait()
