"""`resablate ui`: a real MLflow server on 127.0.0.1 over the sweep's store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_process, write


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) in LISTEN state on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_ui_serves_the_store_on_localhost_and_prints_the_runs_link(tmp_path: Path) -> None:
    sweep = write(
        tmp_path / "ui.yaml", "name: ui-demo\nmodel: {depth: 2, width: 8}\ntrain: {epochs: 1}\n"
    )
    assert run_process("sweep", str(sweep), "--inline", "--quiet", cwd=tmp_path).code == 0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    server = subprocess.Popen(
        [sys.executable, "-m", "resablate.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while not any("Stop with Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline, lines
            line = server.stdout.readline()
            assert line, f"ui exited: {lines}"
            lines.append(line.strip())
        base = f"http://127.0.0.1:{port}"
        assert lines[0] == f"MLflow UI: {base}"
        assert any(
            line.startswith("ui-demo: ")
            and line.endswith("/runs")
            and f"{base}/#/experiments/" in line
            for line in lines
        ), lines
        with urllib.request.urlopen(base, timeout=30) as response:
            assert response.status == 200
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-demo"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert b"ui-demo" in response.read()
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    if os.path.isdir("/dev/shm"):  # MLflow's job queue folder (never removed) was not made
        made = set(os.listdir("/dev/shm")) - shm
        assert not [d for d in made if list(Path("/dev/shm", d).glob("*mlflow-huey-store*"))]


def test_ui_without_a_store_is_one_line(tmp_path: Path) -> None:
    ran = run_process("ui", cwd=tmp_path)
    assert ran.code == 2
    assert ran.err.strip() == (
        f"resablate: error: no MLflow store at {tmp_path / 'mlflow.db'}; run a sweep here first,"
        " or pass --tracking-uri"
    )


def recorded_store(tmp_path: Path) -> dict[str, str]:
    sweep = write(
        tmp_path / "ui.yaml", "name: ui-demo\nmodel: {depth: 2, width: 8}\ntrain: {epochs: 1}\n"
    )
    assert run_process("sweep", str(sweep), "--inline", "--quiet", cwd=tmp_path).code == 0
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_ui_on_a_busy_port_says_so_in_one_line_and_prints_no_link(tmp_path: Path) -> None:
    env = recorded_store(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ran = run_process("ui", "--port", str(port), cwd=tmp_path, env=env, timeout=120)
    assert ran.code == 2
    assert ran.out == ""  # no link to whatever holds the port
    [line] = ran.err.strip().splitlines()
    assert line.startswith(
        f"resablate: error: port {port} on 127.0.0.1 is in use by pid {os.getpid()}"
    )
    assert line.endswith(f"pass --port {port + 1}, or stop what holds it")


@pytest.mark.slow
@pytest.mark.usefixtures("store_uri")  # a copy of an empty store: see conftest
def test_sigterm_stops_the_ui_and_every_process_it_started(tmp_path: Path) -> None:
    import psutil

    env = recorded_store(tmp_path)
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "resablate.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while not any("Stop with Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline, lines
            line = ui.stdout.readline()
            assert line, f"ui exited: {lines}"
            lines.append(line.strip())
        started = psutil.Process(ui.pid).children(recursive=True)
        assert started  # mlflow server and its workers
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
    _, alive = psutil.wait_procs(started, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    assert not listening_addresses(port)  # nothing left on the port
    assert "Traceback" not in ui.stderr.read()
