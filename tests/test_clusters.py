"""Every file in clusters/ parses, passes the checks of the tool that runs it (Ray's cluster
launcher, KubeRay's CRDs, bash) and carries what the README promises: the package installed on
every node, token authentication, the dashboard unexposed, autoscaling GPU workers, shared storage,
no secrets. And a sweep on a cluster is refused, in one line and before anything is recorded, where
the other nodes cannot see its data sets or its checkpoint storage."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

from resablate.errors import SpecError
from resablate.spec.schema import DataSpec
from resablate.sweep.plan import make_plan
from resablate.sweep.ray import cluster
from resablate.trial import vision_sets
from tests.conftest import ROOT, run_process, write
from tests.kuberay_schema import VENDORED, manifests, uncut

CLUSTERS = ROOT / "clusters"
# found without importing ray: this test process's later Ray must bind 127.0.0.1, which needs an
# environment switch set before ray is first imported (resablate.runner sets it)
SCHEMA = Path(importlib.util.find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json"
RAY = metadata.version("ray")
LAUNCHER = ["aws.yaml", "gcp.yaml"]


def launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def test_every_cluster_file_is_covered_here() -> None:
    names = {p.name for p in CLUSTERS.iterdir()}
    assert names == {"README.md", "aws.yaml", "gcp.yaml", "kuberay.yaml", "slurm.sh"}


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_configs_validate_against_rays_schema(name: str) -> None:
    config = launcher(name)
    jsonschema.validate(config, json.loads(SCHEMA.read_text()))
    head = config["available_node_types"][config["head_node_type"]]
    assert head.get("min_workers", 0) == 0
    workers = [
        t for n, t in config["available_node_types"].items() if n != config["head_node_type"]
    ]
    assert [(w["min_workers"], w["max_workers"] > 0) for w in workers] == [(0, True)]
    # the checkout, with Ray's dashboard and Jobs API at the version this project runs
    install = f'"ray[default,tune]=={RAY}" -e ~/resablate'
    assert any(c.endswith(install) for c in config["setup_commands"])
    assert config["file_mounts"]["~/resablate"] == "."
    assert config["rsync_filter"] == [".gitignore"]  # no local venv, results, MLflow store
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token ray start" in command
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]


def test_the_aws_nodes_boot_a_deep_learning_ami_and_the_head_can_launch_workers() -> None:
    config = launcher("aws.yaml")
    text = (CLUSTERS / "aws.yaml").read_text()
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert images == {"ami-REPLACE-WITH-DLAMI-ID"}  # per region: looked up, never a stale id
    assert "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.* (Ubuntu 24.04) *" in text
    assert "aws ec2 describe-images" in text
    assert any("install -q boto3" in c for c in config["head_setup_commands"])


def test_the_gcp_workers_get_a_driver_and_declare_what_the_autoscaler_cannot_read() -> None:
    config = launcher("gcp.yaml")
    family = "projects/deeplearning-platform-release/global/images/family/common-cu129-"
    for kind in config["available_node_types"].values():
        [disk] = kind["node_config"]["disks"]
        assert disk["initializeParams"]["sourceImage"].startswith(family)
        # the launcher detects no machine's size on GCP: the autoscaler plans with these
        assert kind["resources"].get("CPU", 0) > 0
    worker = config["available_node_types"]["gpu_worker"]
    gpus = sum(a["acceleratorCount"] for a in worker["node_config"]["guestAccelerators"])
    assert worker["resources"]["GPU"] == gpus == 1
    metadata_items = {i["key"]: i["value"] for i in worker["node_config"]["metadata"]["items"]}
    assert metadata_items == {"install-nvidia-driver": "True"}
    assert any("google-api-python-client" in c for c in config["head_setup_commands"])


def test_launcher_configs_pass_the_validation_ray_up_runs() -> None:
    # ray up fills the provider's defaults in (prepare_config), then validates; both offline.
    # In a process of its own: this one must not import ray (see SCHEMA)
    code = (
        "import sys, yaml\n"
        "from ray.autoscaler._private.util import prepare_config, validate_config\n"
        "for path in sys.argv[1:]:\n"
        "    validate_config(prepare_config(yaml.safe_load(open(path))))\n"
        "    print('valid', path)\n"
    )
    paths = [str(CLUSTERS / name) for name in LAUNCHER]
    done = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [w for p in paths for w in ("valid", p)]


def test_kuberay_manifests_validate_against_kuberays_crds() -> None:
    schemas = json.loads(VENDORED.read_text())
    assert "kuberay v1.7.0" in schemas["$comment"]
    docs = manifests()
    assert sorted(docs) == ["RayCluster", "RayJob"]
    for kind, doc in docs.items():
        assert doc["apiVersion"] == "ray.io/v1"
        jsonschema.validate(doc, schemas[kind])
        assert uncut(schemas[kind], doc) == [], "regenerate: python -m tests.kuberay_schema"
    # a misspelt field, at the top and deep inside a pod template, is refused
    for path, wrong in (
        (["spec"], "enableInTreeAutoscalling"),
        (["spec", "headGroupSpec", "template", "spec", "containers", 0], "volumeMount"),
        (["spec", "submitterPodTemplate", "spec"], "restartPolicyy"),
    ):
        kind = "RayJob" if "submitterPodTemplate" in path else "RayCluster"
        doc = copy.deepcopy(docs[kind])
        node = doc
        for key in path:
            node = node[key]
        node[wrong] = True
        with pytest.raises(jsonschema.ValidationError, match=wrong):
            jsonschema.validate(doc, schemas[kind])
    wrong_mode = copy.deepcopy(docs["RayCluster"])
    wrong_mode["spec"]["authOptions"]["mode"] = "tokens"
    with pytest.raises(jsonschema.ValidationError, match="'tokens' is not one of"):
        jsonschema.validate(wrong_mode, schemas["RayCluster"])


def test_kuberay_manifests_authenticate_record_to_the_server_and_share_storage() -> None:
    docs = manifests()
    spec, job = docs["RayCluster"]["spec"], docs["RayJob"]["spec"]
    assert spec["rayVersion"] == RAY
    # the operator hands every pod the token from the Secret, and uses it for the dashboard
    assert spec["authOptions"] == {"mode": "token", "secretName": "ray-auth"}
    head = spec["headGroupSpec"]
    # the operator reaches the dashboard in the pod; outside the cluster nothing does
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["serviceType"] == "ClusterIP"
    [gpu] = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] > 0
    annotated = docs["RayCluster"]["metadata"].get("annotations", {})
    pods = [head["template"]["spec"], gpu["template"]["spec"]]
    for pod in pods:
        [container] = pod["containers"]
        # a command of our own replaces the operator's ray start only with its annotation
        if "command" in container or "args" in container:
            assert annotated.get("ray.io/overwrite-container-cmd") == "true"
        env = {e["name"]: e for e in container["env"]}
        assert "RAY_AUTH_TOKEN" not in env  # the operator's, from the Secret
        # the driver runs in the head pod: it records to the server, never to a sqlite file
        assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow"
        assert Path(env["RESABLATE_DATA"]["value"]).is_absolute()
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {"shared": "resablate-shared"} and mounts == {"shared": "/mnt/shared"}
        assert env["RESABLATE_DATA"]["value"].startswith("/mnt/shared/")
    entry = job["entrypoint"].split()
    assert entry[:3] == ["resablate", "sweep", "sweeps/shortcut_depth.yaml"]
    assert (ROOT / entry[2]).is_file() and "--address auto" in job["entrypoint"]
    for option in ("--storage", "--results-dir"):
        assert entry[entry.index(option) + 1].startswith("/mnt/shared/")
    assert job["clusterSelector"] == {"ray.io/cluster": docs["RayCluster"]["metadata"]["name"]}
    # the image the manifests name is built FROM Ray's own image at this version
    readme = (CLUSTERS / "README.md").read_text()
    assert f"FROM rayproject/ray:{RAY}-py311-gpu" in readme and "ray-ml" not in str(docs)


def test_the_slurm_script_shares_one_venv_and_runs_a_sweep_on_shared_storage() -> None:
    script = CLUSTERS / "slurm.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert os.access(script, os.X_OK) and text.startswith("#!/bin/bash")
    assert "#SBATCH --nodes=" in text and "export RAY_AUTH_MODE=token" in text
    assert "ray start --head" in text and "--dashboard-host=127.0.0.1" in text
    # installed once, under a lock, into the venv every job activates
    assert "VENV=${RESABLATE_VENV:-$HOME/.venvs/resablate}" in text
    assert re.search(r"\(\n\s+flock 9\n.*pip install --quiet -e \"\$PROJECT\".*\) 9> ", text, re.S)
    assert 'source "$VENV/bin/activate"' in text
    assert text.index("activate") < text.index("ray start")
    sweep = text[text.index('resablate sweep "$SWEEP"') :].replace("\\\n", " ")
    assert re.match(r'resablate sweep "\$SWEEP" --address "\$head_ip:\$port"', sweep)
    assert '--storage "$STORAGE"' in sweep and " -q" not in sweep and "--quiet" not in sweep


def test_no_file_holds_a_credential() -> None:
    for path in CLUSTERS.iterdir():
        text = path.read_text()
        assert not re.search(
            r"(?i)(aws_secret|password|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", text
        )
        assert "BEGIN RSA" not in text and "AKIA" not in text


# --- what a cluster's other nodes must see ----------------------------------------------------

MNIST = """
name: vision
model: {family: mlp, depth: 2, width: 8}
data: {name: mnist}
train: {epochs: 1, batch_size: 10}
"""
DIGITS = """
name: bundled
model: {depth: 2, width: 8}
train: {epochs: 1}
"""


def fake_mnist(root: Path, n: int = 20) -> Path:
    """MNIST's four files in torchvision's layout under ``root``: ``n`` blank images each."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        images = struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 28 * 28)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(images)
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(n))
    return root


def test_a_cluster_refuses_torchvision_data_in_a_relative_folder(tmp_path: Path) -> None:
    sweep = write(tmp_path / "m.yaml", MNIST)
    for environ, via in (({}, "the default"), ({"RESABLATE_DATA": "sets"}, "RESABLATE_DATA")):
        with pytest.raises(SpecError) as refused:
            cluster.check_data_roots(make_plan(sweep), environ)
        assert refused.value.field == "data.root"
        assert f"is read from {'sets' if environ else 'data'!r} ({via}), a relative" in str(
            refused.value
        )
        assert "set data.root or RESABLATE_DATA to its absolute path" in str(refused.value)
    with pytest.raises(SpecError, match=r"\(data.root\).*resablate submit uploads no data/"):
        cluster.check_data_roots(make_plan(sweep, ["data.root=data"]), {}, submitted=True)
    # absolute (or home-relative) folders, the head's RESABLATE_DATA, bundled sets: nothing
    cluster.check_data_roots(make_plan(sweep), {"RESABLATE_DATA": str(tmp_path)})
    cluster.check_data_roots(make_plan(sweep, ["data.root=~/sets"]), {})
    cluster.check_data_roots(make_plan(sweep), {}, submitted=True)
    cluster.check_data_roots(make_plan(write(tmp_path / "d.yaml", DIGITS)), {})


def test_the_nodes_resolve_the_data_folder_as_a_trial_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for root, env in ((None, None), (None, str(tmp_path / "env")), ("~/x", "y"), ("rel", None)):
        if env is None:
            monkeypatch.delenv("RESABLATE_DATA", raising=False)
        else:
            monkeypatch.setenv("RESABLATE_DATA", env)
        expected = vision_sets.data_root(DataSpec(name="mnist", root=root))
        assert Path(cluster.data_setting(root, os.environ)).expanduser().resolve() == expected


def test_the_driver_forwards_the_data_folder_to_the_clusters_workers() -> None:
    env = cluster.worker_env({"RESABLATE_DATA": "/mnt/shared/data", "HOME": "/x"}, None)
    assert env == {**cluster.TRIAL_ENV, "RESABLATE_DATA": "/mnt/shared/data"}
    assert cluster.worker_env({}, None) == cluster.TRIAL_ENV
    # a Ray Job's own variables stay the job's (Ray refuses one set twice)
    job = {**cluster.TRIAL_ENV, "RESABLATE_DATA": "/job"}
    assert cluster.worker_env({"RESABLATE_DATA": "/job"}, job) == {}
    assert cluster.worker_env({"RESABLATE_DATA": "/head"}, {}) == cluster.worker_env(
        {"RESABLATE_DATA": "/head"}, None
    )


def test_a_node_reports_missing_files_and_a_storage_folder_it_does_not_share(
    tmp_path: Path,
) -> None:
    # what the task on each node runs (here in this process: the same files are this machine's)
    sets = [
        ("mnist", str(fake_mnist(tmp_path / "full")), "MNIST/raw", list(vision_sets.MNIST_FILES))
    ]
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / ".marker").write_text("token")
    assert cluster.look_on_node(sets, (str(shared / ".marker"), "token")) == []
    assert sorted(os.listdir(shared)) == [".marker"]  # its write probe is gone
    (tmp_path / "full" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    lacks = "has t10k-labels-idx1-ubyte of data set mnist's files in"
    [problem] = cluster.look_on_node(sets, None)
    assert problem[0] == "data" and problem[1].startswith(lacks)
    empty = [("mnist", str(tmp_path / "none"), "MNIST/raw", list(vision_sets.MNIST_FILES))]
    assert cluster.look_on_node(empty, None)[0][1].startswith("has none of data set mnist's")
    # a folder of the same name that is not the one the driver wrote into: no marker, or another
    for marker, token in ((shared / ".other", "token"), (shared / ".marker", "another")):
        [problem] = cluster.look_on_node([], (str(marker), token))
        assert problem == ["storage", f"does not see the folder the driver wrote into ({shared})"]


@pytest.mark.slow
def test_a_sweep_on_two_nodes_is_refused_until_they_share_its_data_and_storage(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    from tests.test_cluster import start_cluster

    # the worker node's own RESABLATE_DATA is stale: the driver's must reach its trials
    with start_cluster(tmp_path, worker_env={"RESABLATE_DATA": str(tmp_path / "stale")}) as c:
        project = c.folder
        fake_mnist(project / "data")  # ./data: the driver alone finds it there
        write(project / "m.yaml", MNIST)
        write(project / "d.yaml", DIGITS)
        before = sorted(os.listdir(project))
        args = ["--address", c.address, "--tracking-uri", c.tracking]
        env = {k: v for k, v in c.env.items() if k != "RESABLATE_DATA"}
        refusals = {
            "relative data": (["sweep", "m.yaml", *args], "data.root: data set mnist is read"),
            "no storage": (
                ["sweep", "d.yaml", *args],
                "--storage: not given, so checkpoints would go to --results-dir"
                f" {project / 'resablate-runs'} on this node, which the cluster's 1 other"
                " node(s) cannot reach; pass --storage a folder every node mounts",
            ),
            "submitted": (
                ["submit", "m.yaml", "--set", "data.root=data", *args[2:], "--address", c.jobs],
                "resablate submit uploads no data/",
            ),
        }
        for what, (command, expected) in refusals.items():
            ran = run_process(*command, cwd=project, env=env)
            assert ran.code == 2, (what, ran.err[-2000:])
            assert ran.err.count("\n") == 1 and expected in ran.err, (what, ran.err)
        assert sorted(os.listdir(project)) == before  # no results folder, no store
        client = MlflowClient(tracking_uri=c.tracking)
        assert [e.name for e in client.search_experiments()] == ["Default"]  # no run

        # the check itself, from a driver of our own on the same cluster: the worker node is
        # asked for the data where its trials would read it, and for the shared folder
        shared = tmp_path / "shared"
        shared.mkdir()
        fake_mnist(tmp_path / "good")
        code = (
            "import os, sys\n"
            "from resablate.sweep.ray import cluster\n"
            "from resablate.errors import UserError\n"
            "from resablate.sweep.plan import make_plan\n"
            "cluster.join(sys.argv[1])\n"
            "for overrides in ([f'data.root={sys.argv[3]}'], []):\n"
            "    try:\n"
            "        cluster.check_nodes(make_plan('m.yaml', overrides), sys.argv[2], True)\n"
            "        print('passed')\n"
            "    except UserError as exc:\n"
            "        print('refused', exc)\n"
            "print(sorted(os.listdir(sys.argv[2])))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, c.address, str(shared), str(tmp_path / "empty")],
            cwd=project,
            env={**env, "RESABLATE_DATA": str(tmp_path / "good")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        refused, passed, listed = done.stdout.strip().splitlines()
        assert re.match(
            rf"refused --set data.root={tmp_path}/empty: data.root: node \S+ \(\w{{8}}\) has"
            rf" none of data set mnist's files in {tmp_path}/empty/MNIST/raw; a cluster's",
            refused,
        ), refused
        # the driver's RESABLATE_DATA reached the worker (its own names a folder without files)
        assert passed == "passed"
        assert listed == "[]"  # the marker written for the check is gone
