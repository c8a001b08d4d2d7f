"""The stop path (stop.py): every stop signal becomes one request, read at safe points."""

from __future__ import annotations

import os
import signal
import time

import pytest

from resablate import stop


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
