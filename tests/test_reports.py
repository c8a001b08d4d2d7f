"""A trial's epoch reports reach the driver in batches (tune_checkpoints.Outbox): Ray Tune's
``report`` waits for the driver each time, so a trial of short epochs sends several at once,
all of them, in order; under a scheduler each goes on its own.

The Tune run is a process of its own: importing ray here would decide, for every later test of
this session, how a local Ray binds (cluster.start_ray's single-machine switch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ray_script

RUN = """
import json, sys, types
import ray
from ray import tune
from resablate.sweep.ray import tune_checkpoints
from resablate.sweep.ray.tune_checkpoints import REPORT, REPORT_EVERY_S, Outbox

EPOCH = 0.13 * REPORT_EVERY_S  # eight epochs pass REPORT_EVERY_S, seven do not


def trainable(config):
    # the outbox reads a clock that each epoch moves on by EPOCH, however long the machine
    # takes: the batches do not depend on how fast it runs
    clock = {"now": 0.0}
    tune_checkpoints.time = types.SimpleNamespace(monotonic=lambda: clock["now"])
    outbox = Outbox(("epoch",), each=config["each"])
    for epoch in range(1, 41):
        clock["now"] += EPOCH
        outbox.add({"epoch": epoch, "loss": 1.0 / epoch})
    outbox.flush()


got = []


class Seen(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        got.append(result[REPORT])


ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
run = tune.RunConfig(storage_path=sys.argv[2], callbacks=[Seen()], verbose=0)
tune.Tuner(trainable, param_space={"each": sys.argv[1] == "each"}, run_config=run).fit()
ray.shutdown()
print(json.dumps(got))
"""


@pytest.mark.slow  # a real Ray in a subprocess
@pytest.mark.parametrize("each", [False, True])
def test_epoch_reports_travel_in_batches_unless_a_scheduler_reads_each(
    tmp_path: Path, each: bool
) -> None:
    got = ray_script(RUN, "each" if each else "batched", str(tmp_path))
    epochs = [r["epoch"] for batch in got for r in batch]
    assert epochs == list(range(1, 41))  # every report once, in order
    sizes = [len(batch) for batch in got]
    assert sizes == ([1] * 40 if each else [8] * 5)  # a batch per REPORT_EVERY_S: 8 epochs
