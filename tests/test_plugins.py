"""A sweep's own variants (spec/plugins.py): a module named under ``plugins:`` registers a
shortcut or a placement, and the sweep names it as it names resablate's own, inline and in Ray
Tune's worker processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import resablate
from resablate.errors import SpecError
from resablate.trial import data
from tests.conftest import run_terminal

# every test records in its tmp_path's mlflow.db, a copy of an empty store (conftest.store_uri):
# MLflow takes seconds to create one, which the tests that create theirs still do
pytestmark = pytest.mark.usefixtures("store_uri")

# x' = h(x) + 0.5·F(x): a shortcut a user might try, and one whose sum a test can check by hand
PLUGIN = """
from torch import nn

import resablate
from resablate.models.shortcuts import downsample

class HalfBranch(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.h = h

    def forward(self, x, fx):
        return self.h(x) + 0.5 * fx


resablate.SHORTCUTS.add("half_branch", lambda g, spec: HalfBranch(downsample(g, spec)))
resablate.PLACEMENTS.add("post_no_act", resablate.Placement("W N σ W N", stem="conv_norm_act"))
"""

SWEEP = """
name: plugged
plugins: [{plugin}]
model: {{family: mlp, width: 8, shortcut_depth: 2, activation: {activation}, norm: none}}
data: {{name: digits}}
train: {{epochs: 1, batch_size: 64, lr: 0.01}}
grid:
  model.depth: [4]
  model.shortcut: [half_branch, identity]
  seed: [0]
resources: {{cpu: 1}}
"""


def sweep_file(folder: Path, plugin: str = "my_variants.py", activation: str = "mid") -> Path:
    (folder / "my_variants.py").write_text(PLUGIN)
    path = folder / "plugged.yaml"
    path.write_text(SWEEP.format(plugin=plugin, activation=activation))
    return path


@pytest.fixture(autouse=True)
def _forget_the_plugin():
    """Each test imports the plugin afresh (a registry refuses a name registered twice)."""
    from resablate.models.placement import PLACEMENTS
    from resablate.models.shortcuts import SHORTCUTS

    yield
    for registry, name in ((SHORTCUTS, "half_branch"), (PLACEMENTS, "post_no_act")):
        registry._entries.pop(name, None)
    for module in [m for m in sys.modules if "my_variants" in m]:
        del sys.modules[module]


def test_a_plugins_shortcut_is_built_where_the_sweep_names_it(tmp_path: Path) -> None:
    plan = resablate.make_plan(sweep_file(tmp_path))
    [half] = [t for t in plan.trials if t.config["model"]["shortcut"] == "half_branch"]
    from resablate import models

    cfg = resablate.trial_config(half.config)
    shape = data.DATASETS["digits"].shape(cfg.data)
    net = models.build(cfg.model, cfg.init, shape, torch.Generator().manual_seed(0))
    sums = [m for m in net.modules() if type(m).__name__ == "HalfBranch"]
    assert len(sums) == 2  # depth 4: two units of two layers
    x, fx = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(sums[0](x, fx), x + 0.5 * fx)


def test_a_plugins_placement_is_named_as_the_papers_are(tmp_path: Path) -> None:
    plan = resablate.make_plan(sweep_file(tmp_path, activation="post_no_act"))
    assert {t.config["model"]["activation"] for t in plan.trials} == {"post_no_act"}
    from resablate.models.placement import parse_placement

    assert parse_placement("post_no_act").after_add == ""  # what the plugin says, not post's σ


def test_without_its_plugin_the_sweep_is_refused_naming_the_shortcut(tmp_path: Path) -> None:
    path = sweep_file(tmp_path)
    path.write_text(path.read_text().replace("plugins: [my_variants.py]\n", ""))
    with pytest.raises(SpecError, match=r"model\.shortcut.*unknown shortcut 'half_branch'"):
        resablate.make_plan(path)


@pytest.mark.parametrize(
    "plugin, problem",
    [
        ("nowhere.py", r"plugins: no file /.*/nowhere\.py; put it next to the sweep file"),
        ("no_such_module", r"plugins: no module 'no_such_module' \(looked in .*\); put it next"),
        ("broken.py", r"plugins: '/.*/broken\.py' could not be imported \(RuntimeError: boom\)"),
        (
            "valueerror.py",
            r"plugins: '/.*/valueerror\.py' could not be imported \(ValueError: x\)",
        ),
    ],
)
def test_a_plugin_that_cannot_be_imported_is_one_line_naming_it(
    tmp_path: Path, plugin: str, problem: str
) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "valueerror.py").write_text("raise ValueError('x')\n")
    with pytest.raises(SpecError, match=problem) as found:
        resablate.make_plan(sweep_file(tmp_path, plugin=plugin))
    assert "\n" not in str(found.value)


def test_a_plugin_module_is_found_next_to_the_sweep_file(tmp_path: Path) -> None:
    plan = resablate.make_plan(sweep_file(tmp_path, plugin="my_variants"))
    assert plan.plugins() == (("my_variants", str(tmp_path.resolve())),)
    assert "half_branch" in resablate.SHORTCUTS


@pytest.mark.slow
def test_a_plugged_sweep_trains_on_a_local_ray_whose_workers_import_the_plugin(
    tmp_path: Path,
) -> None:
    path = sweep_file(tmp_path)
    ran = run_terminal("sweep", str(path), cwd=tmp_path)  # as a user runs it: Ray Tune, the bar
    assert ran.code == 0, ran.out
    assert "2/2" in ran.out, ran.out
    runs = resablate.read_sweep(f"sqlite:///{tmp_path / 'mlflow.db'}", "plugged")
    by_shortcut = {r.params["model.shortcut"]: r for r in runs.runs}
    assert set(by_shortcut) == {"half_branch", "identity"}
    assert {r.status for r in runs.runs} == {"finished"}
    # the two arms differ in their sum only: the same seed, data and init, other losses
    half, plain = (by_shortcut[k].metrics["train_loss"] for k in ("half_branch", "identity"))
    assert half != plain
