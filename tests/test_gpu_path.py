"""The GPU path's logic, on a CPU: slots of fractional GPUs as Ray counts them, the device an
in-process command picks, the driver asking for free GPU memory without a CUDA context, the
data copy in a stack's budget. What only a GPU shows (a CUDA Lanczos Hessian, a CUDA resume on
another GPU count, the cache handed back between trials) is in benchmarks/gpu_path.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resablate.errors import SpecError, UserError
from resablate.sweep.capacity import fit, gpu_free_bytes, slots_in, stack_budget
from resablate.sweep.plan import make_plan
from resablate.trial.batched import data_bytes
from resablate.trial.compute import choose_device
from tests.conftest import write


@pytest.mark.parametrize(
    "have,each,slots",
    [(1.0, 0.1, 10), (1.0, 0.2, 5), (1.0, 0.3, 3), (2.0, 0.25, 8), (16.0, 1.0, 16), (1.5, 1, 1)],
)
def test_fractional_shares_fit_as_rays_fixed_point_counts_them(
    have: float, each: float, slots: int
) -> None:
    assert fit(have, each) == slots  # float division: 1.0 // 0.1 == 9, 1.0 // 0.2 == 4


def test_a_plan_of_tenth_gpus_runs_ten_trials_on_one_gpu(tmp_path: Path) -> None:
    sweep = "name: g\nmodel: {depth: 2, width: 8}\nresources: {cpu: 1, gpu: 0.1}\n"
    plan = make_plan(write(tmp_path / "g.yaml", sweep))
    assert slots_in(plan, {"CPU": 16.0, "GPU": 1.0}) == 10
    assert slots_in(plan, {"CPU": 4.0, "GPU": 1.0}) == 4  # the CPUs bound it first


RAY_COUNTS = """
import json, os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
ray.init(address="local", num_cpus=32, num_gpus=1, include_dashboard=False, log_to_driver=False)

@ray.remote
class Holder:
    def ping(self):
        return 1

found = {}
for share in (0.1, 0.2):
    held = [Holder.options(num_gpus=share, num_cpus=0).remote() for _ in range(12)]
    pings = [h.ping.remote() for h in held]
    # as many as Ray fits start (returns once they have), then none more within 3 s
    ready, rest = ray.wait(pings, num_returns=int(sys.argv[1 + len(found)]), timeout=60)
    more, _ = ray.wait(rest, num_returns=len(rest), timeout=3)
    found[share] = len(ready) + len(more)
    for h in held:
        ray.kill(h)
print(json.dumps(found))
"""


@pytest.mark.slow
def test_ray_itself_runs_as_many_fractional_shares_as_fit_counts() -> None:
    """Against a real local Ray that declares one GPU (none is needed to count shares). A
    process of its own: importing ray here would change how later local Rays bind."""
    done = subprocess.run(
        [sys.executable, "-c", RAY_COUNTS, *(str(fit(1.0, s)) for s in (0.1, 0.2))],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {str(share): fit(1.0, share) for share in (0.1, 0.2)}


@pytest.mark.parametrize(
    "choice,share,cuda,device",
    [
        ("auto", 0.0, 1, "cpu"),  # the sweep's trials train on CPUs: so do its probes
        ("auto", 0.25, 1, "cuda"),
        ("auto", 1.0, 0, "cpu"),  # no GPU here: the CPU
        ("cpu", 1.0, 1, "cpu"),
        ("cuda", 0.0, 1, "cuda"),
        ("cuda:1", 0.0, 2, "cuda:1"),
    ],
)
def test_probe_follows_the_sweeps_resources_or_device(
    choice: str, share: float, cuda: int, device: str
) -> None:
    assert choose_device(choice, share, cuda) == device


@pytest.mark.parametrize(
    "choice,cuda,text",
    [
        ("cuda", 0, "--device cuda: this machine has no GPU; use --device cpu"),
        ("cuda:2", 2, "--device cuda:2: this machine has 2 GPU(s); use --device cpu"),
        ("gpu", 1, "--device gpu: use auto, cpu, cuda or cuda:N"),
        ("cuda:x", 1, "--device cuda:x: use auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line(choice: str, cuda: int, text: str) -> None:
    with pytest.raises(UserError) as refused:
        choose_device(choice, 0.0, cuda)
    assert str(refused.value) == text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU machine's answer")
def test_probe_on_a_gpu_this_machine_lacks_is_refused_in_one_line(tmp_path: Path, cli) -> None:
    sweep = write(
        tmp_path / "p.yaml", "name: p\nmodel: {depth: 2, width: 8}\nprobes: {weights: {}}\n"
    )
    ran = cli("probe", str(sweep), "--device", "cuda", "--json")
    assert ran.code == 2 and ran.out == ""
    assert ran.err.strip() == (
        "resablate: error: --device cuda: this machine has no GPU; use --device cpu"
    )
    assert cli("probe", str(sweep), "--json").code == 0  # auto: the CPU


@pytest.mark.slow  # a child process that imports torch and asks CUDA
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU machine's answer")
def test_the_driver_asks_for_free_gpu_memory_in_a_child_and_opens_no_cuda_context(
    tmp_path: Path,
) -> None:
    """Without a GPU the child cannot tell (None); with one, this process stays without a CUDA
    context either way (the device check runs the same on a GPU)."""
    assert gpu_free_bytes() is None
    sweep = "name: g\nmodel: {depth: 2, width: 8}\nresources: {cpu: 1, gpu: 0.5}\n"
    plan = make_plan(write(tmp_path / "g.yaml", sweep))
    assert stack_budget(plan, 2) > 0  # no GPU: main memory's
    assert not torch.cuda.is_initialized()


def test_a_stacks_budget_holds_its_one_copy_of_the_data() -> None:
    """CIFAR-10 on the device: 60,000 float32 images of 3 x 32 x 32 and int64 labels."""
    assert data_bytes({"name": "cifar10"}) == 60_000 * (3 * 32 * 32 * 4 + 8)  # about 0.74 GB
    assert data_bytes({"name": "cifar10", "subset": 1000}) == 11_000 * (3 * 32 * 32 * 4 + 8)


def test_a_cluster_that_lacks_gpus_now_but_may_grow_to_them_waits(tmp_path: Path) -> None:
    """clusters/: a CPU head and 0-8 GPU workers that the autoscaler adds while trials wait."""
    from resablate.sweep.ray.cluster import check_resources

    sweep = "name: g\nmodel: {depth: 2, width: 8}\nresources: {cpu: 1, gpu: 1}\n"
    plan = make_plan(write(tmp_path / "g.yaml", sweep))
    head = {"CPU": 4.0}
    [note] = check_resources(plan, head, "the cluster", {"CPU": 68.0, "GPU": 8.0})
    assert note == (
        "note: each trial asks for 1 GPU; the cluster has 0 now and its autoscaler may grow it"
        " to 8: the trials wait for those nodes"
    )
    assert check_resources(plan, {"CPU": 4.0, "GPU": 1.0}, "the cluster") == []
    for most in (None, {"CPU": 68.0, "GPU": 0.0}):  # no autoscaler, or one without GPUs
        with pytest.raises(SpecError, match="asks for 1 GPU but the cluster has 0"):
            check_resources(plan, head, "the cluster", most)


def test_a_cluster_sweeps_relative_data_folder_is_refused_before_any_download(
    tmp_path: Path,
) -> None:
    from tests.conftest import run_process

    sweep = write(
        tmp_path / "c.yaml",
        "name: c\nmodel: {family: cifar, depth: 8}\ndata: {name: cifar10, root: data}\n",
    )
    ran = run_process("sweep", str(sweep), "--address", "127.0.0.1:9", cwd=tmp_path)
    assert ran.code == 2
    [line] = ran.err.strip().splitlines()
    assert "a relative folder" in line and "download" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no data/, no store
