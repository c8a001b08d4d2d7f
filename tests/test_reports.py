"""A trial's epoch reports reach the driver in batches (tune_checkpoints.Outbox): Ray Tune's
``report`` waits for the driver each time, so a trial of short epochs sends several at once,
all of them, in order; under a scheduler each goes on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune

from resablate.tune_checkpoints import REPORT, REPORT_EVERY_S, Outbox


def _trainable(config: dict[str, Any]) -> None:
    import time

    outbox = Outbox(("epoch",), each=config["each"])
    for epoch in range(1, 41):
        time.sleep(REPORT_EVERY_S / 10)  # ten epochs a batch
        outbox.add({"epoch": epoch, "loss": 1.0 / epoch})
    outbox.flush()


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("each", [False, True])
def test_epoch_reports_travel_in_batches_unless_a_scheduler_reads_each(
    tmp_path: Path, local_ray: Any, each: bool
) -> None:
    got: list[list[dict[str, Any]]] = []

    class Seen(tune.Callback):
        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            got.append(result[REPORT])

    tuner = tune.Tuner(
        _trainable,
        param_space={"each": each},
        run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=[Seen()], verbose=0),
    )
    tuner.fit()
    epochs = [r["epoch"] for batch in got for r in batch]
    assert epochs == list(range(1, 41))  # every report once, in order
    if each:
        assert [len(batch) for batch in got] == [1] * 40
    else:
        assert 2 <= len(got) <= 10  # about one batch per REPORT_EVERY_S (ten epochs)
