"""Every file in clusters/ parses and carries what the README promises: the package installed on
every node, token authentication, the dashboard on 127.0.0.1, autoscaling GPU workers, no
secrets."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

CLUSTERS = ROOT / "clusters"
# found without importing ray: this test process's later Ray must bind 127.0.0.1, which needs an
# environment switch set before ray is first imported (resablate.runner sets it)
SCHEMA = Path(importlib.util.find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json"


def test_every_cluster_file_is_covered_here() -> None:
    names = {p.name for p in CLUSTERS.iterdir()}
    assert names == {"README.md", "aws.yaml", "gcp.yaml", "kuberay.yaml", "slurm.sh"}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_validate_against_rays_schema(name: str) -> None:
    config = yaml.safe_load((CLUSTERS / name).read_text())
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))
    head = config["available_node_types"][config["head_node_type"]]
    assert head.get("min_workers", 0) == 0
    workers = [
        t for n, t in config["available_node_types"].items() if n != config["head_node_type"]
    ]
    assert [(w["min_workers"], w["max_workers"] > 0) for w in workers] == [(0, True)]
    assert any("pip install -e ~/resablate" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/resablate"] == "."
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert command.startswith("RAY_AUTH_MODE=token ray start")
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]


def test_kuberay_manifests_take_the_token_from_a_secret() -> None:
    cluster, job = yaml.safe_load_all((CLUSTERS / "kuberay.yaml").read_text())
    assert (cluster["kind"], job["kind"]) == ("RayCluster", "RayJob")
    assert cluster["spec"]["rayVersion"] == metadata.version("ray")
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    [gpu] = cluster["spec"]["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] > 0
    containers = [cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [gpu["template"]["spec"]["containers"][0]]
    containers += job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth"
    assert job["spec"]["entrypoint"].startswith("resablate sweep sweeps/")
    assert "--address auto" in job["spec"]["entrypoint"]


def test_the_slurm_script_starts_ray_with_a_token_and_runs_a_sweep() -> None:
    script = CLUSTERS / "slurm.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert os.access(script, os.X_OK) and text.startswith("#!/bin/bash")
    assert "#SBATCH --nodes=" in text and "export RAY_AUTH_MODE=token" in text
    assert "ray start --head" in text and "--dashboard-host=127.0.0.1" in text
    assert "pip install --quiet -e" in text
    assert re.search(r"resablate sweep \"\$SWEEP\" --address \"\$head_ip:\$port\"", text)


def test_no_file_holds_a_credential() -> None:
    for path in CLUSTERS.iterdir():
        text = path.read_text()
        assert not re.search(
            r"(?i)(aws_secret|password|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", text
        )
        assert "BEGIN RSA" not in text and "AKIA" not in text
