"""SIGINT and SIGTERM at every moment of a command's life.

`install()` (first thing in `main`) makes both signals raise `Interrupted` in
synchronous code — starting the embedded server, migrating, loading kinds —
so `with` blocks unwind and whatever was started is stopped again (the
embedded PostgreSQL among them: `daemon.db.embedded` lets a step it started
finish before the interruption goes on). Once one has arrived, later ones are
ignored: the cleanup they would cut short is what leaves nothing running.

While a command serves (an event loop runs the API or the worker), an
exception thrown into the loop would cancel tasks half-way; there the signals
call a stop callback instead (`on_signals`), and the server and the worker
shut down in order. Without this, SIGTERM kept its default action (die at
once, the embedded server left running) before the loop started, and inside
it only asked a worker that was still starting to stop: `exportd up` hung.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_stopping = False


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived outside an event loop: stop, cleaning up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        return  # already stopping: let the cleanup finish
    _stopping = True
    raise Interrupted(signum)


def install() -> None:
    """Both signals raise `Interrupted` (once) from now on."""
    global _stopping
    _stopping = False
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def shutting_down() -> None:
    """The command's work is over and only cleanup remains: ignore the signals,
    and restore the handler an event loop may have reset on closing."""
    global _stopping
    _stopping = True
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


@contextmanager
def on_signals(callback: Callable[[], None]) -> Iterator[None]:
    """In the running event loop: each SIGINT/SIGTERM calls `callback`.

    On leaving, the synchronous handling is back, in its ignoring state: what
    follows serving is shutting down.
    """
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, callback)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        shutting_down()
