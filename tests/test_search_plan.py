"""The `search:` section: validated and sized by `resablate plan`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write

SWEEP = """
name: searched
model: {depth: 4, width: 16}
data: {validation: 0.2}
train: {epochs: 2}
search: {param: init.c, log_uniform: [0.1, 2.0], n_trials: 4}
grid:
  model.shortcut: [identity, none]
  model.depth: [2, 4]
  seed: [0, 1, 2]
"""


def test_plan_sizes_the_search_as_cells_times_candidates_times_seeds(tmp_path: Path, cli) -> None:
    sweep = write(tmp_path / "s.yaml", SWEEP)
    found = json.loads(cli("plan", str(sweep), "--json").out)
    assert found["search"] == {
        "param": "init.c",
        "cells": 4,
        "candidates_per_cell": 4,
        "seeds": 3,
        "unsearched_trials": 0,
        "total_trials": 48,
    }
    assert found["n_trials"] == 12  # the grid's points, each later run at every candidate c
    assert "4 cells × 4 candidates × 3 seeds = 48 trials" in cli("plan", str(sweep)).out
