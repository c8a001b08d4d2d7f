"""The stop path (stop.py): every stop signal becomes one request, read at safe points."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from resablate.sweep import stop


def _press(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs in the main thread at the next bytecode


@pytest.mark.parametrize("sig", stop.STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_is_a_request_and_a_second_one_stops_at_once(sig: int) -> None:
    before = {s: signal.getsignal(s) for s in stop.STOP_SIGNALS}
    with stop.handling() as request:
        assert not request.requested
        _press(sig)  # raises nothing: whatever runs now (a store write) ends normally
        assert request.requested and request.signal == sig
        with pytest.raises(stop.Stopped, match=signal.Signals(sig).name):
            request.check()
        with pytest.raises(KeyboardInterrupt):
            _press(signal.SIGINT)
    assert {s: signal.getsignal(s) for s in stop.STOP_SIGNALS} == before


def test_a_new_sweep_starts_without_the_last_ones_request() -> None:
    with stop.handling() as request:
        _press(signal.SIGTERM)
        assert request.requested
    assert not stop.REQUEST.requested  # a runner used outside a sweep is not stopped by it
    with stop.handling() as request:
        assert not request.requested
        request.check()  # nothing to raise


def test_install_takes_a_signal_back_from_a_library_that_set_its_own() -> None:
    with stop.handling() as request:
        signal.signal(signal.SIGUSR1, lambda *args: None)  # as Ray Tune does when its run starts
        stop.install()
        _press(signal.SIGUSR1)
        assert request.signal == signal.SIGUSR1


def test_a_stop_signal_during_a_store_write_lets_the_write_finish(tmp_path: Path) -> None:
    """The write that a Ctrl-C falls in is not interrupted (a KeyboardInterrupt inside a sqlite
    write can leave its write lock held, and closing the runs then waits on it)."""
    from mlflow.tracking import MlflowClient

    from resablate.tracking.store import Store

    class CtrlCMidWrite(MlflowClient):
        def set_tag(self, *args: object, **kwargs: object) -> None:
            _press(signal.SIGINT)  # lands while the write is under way
            super().set_tag(*args, **kwargs)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = Store(uri)
    run_id = store.create_run(store.experiment("stop"), {})
    store.client = CtrlCMidWrite(tracking_uri=uri)
    with stop.handling() as request:
        store.set_tag(run_id, "written", "yes")
        assert request.requested
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.tags["written"] == "yes"
    assert store.broken is None
