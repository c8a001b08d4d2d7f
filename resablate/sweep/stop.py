"""How a sweep stops: one handler for every stop signal, read at safe points.

The whole path of a stop:

1. :func:`handling` wraps a sweep (``driver.run_sweep``). While it is open, Ctrl-C (SIGINT),
   SIGTERM (``kill``, a batch scheduler) and SIGUSR1 (what Ray sends a job's driver on
   ``ray job stop``) all reach :data:`REQUEST`, which notes the signal and raises nothing: a store
   write in progress ends normally, so sqlite's write lock is never left held.
2. Safe points read the request: Ray Tune reads it through a ``Stopper`` (``stop_all``) and stops
   every trial, then returns from ``fit``; the inline runner after each report of a trial (between
   epochs, by raising :class:`Stopped`); the runner before each next Tune run; the search loop
   before it asks new candidates; the driver before it opens the sweep's parent run.
3. Trials stopped mid-way have no ending in the collector: closing the sweep closes their MLflow
   runs as killed and the parent run as KILLED; ``resablate sweep`` exits 130 and says how to
   continue (``--resume``).
4. A second signal raises KeyboardInterrupt at once, wherever the driver is: the user asked to
   stop now. The driver's ``finally`` still closes what it can.

Signals reach only the main thread: in another thread :func:`handling` installs nothing, and a
stop can still be requested with :meth:`StopRequest.set`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


class Stopped(Exception):
    """Raised at a safe point after a stop was requested: the sweep ends, its runs stay."""


class StopRequest:
    """Whether a stop signal arrived while a sweep runs (the first; a second raises at once)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def set(self, signum: int = signal.SIGINT) -> None:
        self.signal = signum

    def clear(self) -> None:
        self.signal = None

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested: call it at a safe point."""
        if self.requested:
            raise Stopped(f"stopped by {signal.Signals(self.signal).name}")  # type: ignore[arg-type]

    def handle(self, signum: int, frame: Any) -> None:
        """The signal handler: note the first signal; raise KeyboardInterrupt on the next."""
        if self.requested:
            raise KeyboardInterrupt
        self.set(signum)


REQUEST = StopRequest()  # signals are per process: so is the request
_open = 0  # :func:`handling` blocks open


def install() -> None:
    """Point every stop signal at :data:`REQUEST` again (after a library set its own, as Ray
    Tune does for SIGUSR1 when its run starts) while :func:`handling` is open; in the main
    thread only."""
    if _open and threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, REQUEST.handle)


def saved() -> contextlib.AbstractContextManager[None]:
    """Restore the stop signals' handlers when the block ends (a library may set its own)."""
    main = threading.current_thread() is threading.main_thread()
    return _restoring() if main else contextlib.nullcontext()


@contextlib.contextmanager
def _restoring() -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(sig, handler)


@contextlib.contextmanager
def handling() -> Iterator[StopRequest]:
    """Route the stop signals to :data:`REQUEST` while the block runs (the request is cleared on
    entry and on exit); the handlers found on entry are restored on exit."""
    global _open
    REQUEST.clear()
    with saved():
        _open += 1
        try:
            install()
            yield REQUEST
        finally:
            _open -= 1
            REQUEST.clear()  # read after the sweep, a request would stop the next one
