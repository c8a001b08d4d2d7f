"""Ray 2.60's token authentication as users meet it (issue 20, point 6): a head started where a
token file exists (~/.ray/auth_token) asks every Jobs API request for the token, and Ray's own
Jobs client sends none without RAY_AUTH_MODE=token. `resablate jobs` sends the machine's token
when the head asks, and says which command gets one when there is none or it is refused."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_process
from tests.test_cluster import free_port, kill_node


@pytest.mark.slow
def test_jobs_send_the_token_a_head_asks_for_and_say_how_to_get_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    env = {**os.environ, "HOME": str(home)}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(name, None)
    port, dashboard = free_port(), free_port()
    temp = Path(f"/tmp/ra{port}")  # short: Ray's socket paths live under it
    head = subprocess.Popen(
        [
            *(sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}"),
            *("--include-dashboard=true", "--dashboard-host=127.0.0.1"),
            *(f"--dashboard-port={dashboard}", f"--temp-dir={temp}", "--num-cpus=1"),
            *("--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:  # the dashboard answers, with 401 to a request without the token
            try:
                urllib.request.urlopen(f"{address}/api/jobs/", timeout=2).close()
                status = 200
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                assert time.monotonic() < deadline, "the head's dashboard did not start"
                time.sleep(0.5)
                continue
            break
        assert status == 401  # the head turned token authentication on by itself

        # Ray's own client, as a user's script meets it: no token sent, refused
        plain = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from ray.job_submission import JobSubmissionClient as C; C({address!r})",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plain.returncode != 0 and "uthenticat" in plain.stderr

        listed = run_process("jobs", "--address", address, cwd=tmp_path, env=env)
        assert listed.code == 0, listed.err
        with_path = {
            **env,
            "HOME": str(tmp_path),
            "RAY_AUTH_TOKEN_PATH": str(home / ".ray" / "auth_token"),
        }
        assert run_process("jobs", "--address", address, cwd=tmp_path, env=with_path).code == 0

        none = {**env, "HOME": str(tmp_path)}  # no token file, no variable
        missing = run_process("jobs", "--address", address, cwd=tmp_path, env=none)
        assert missing.code == 2 and missing.err.count("\n") == 1, missing.err
        assert "token authentication and no token is set here" in missing.err
        assert "run `ray get-auth-token` on the head node" in missing.err

        wrong = {**none, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        refused = run_process("jobs", "--address", address, cwd=tmp_path, env=wrong)
        assert refused.code == 2 and "refuses this machine's Ray token" in refused.err, refused.err
    finally:
        kill_node(head.pid)
        subprocess.run(["rm", "-rf", str(temp)], check=False)
