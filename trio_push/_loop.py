"""The event loop a server runs on, as any thread sees it; signal watching.

A Trio run is single-threaded: what changes its state (a connection's send
queue, pub/sub's tables, the server's stop event) runs on its thread.
:meth:`Loop.call` is the one way there from anywhere: at once when called on
that thread, else handed to the run through its ``TrioToken``, in call order,
without blocking the caller.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from threading import get_ident
from typing import Any, TypeVar

import trio

log = logging.getLogger("trio_push")

T = TypeVar("T")


class Loop:
    """The thread of a Trio run, and the way onto it from other threads."""

    __slots__ = ("thread_id", "token")

    def __init__(self) -> None:
        #: The run's thread (None until :meth:`enter`).
        self.thread_id: int | None = None
        self.token: trio.lowlevel.TrioToken | None = None

    def enter(self) -> None:
        """Called inside the Trio run: from now on it is the loop."""
        self.token = trio.lowlevel.current_trio_token()
        self.thread_id = get_ident()

    def call(self, fn: Callable[..., object], *args: Any) -> bool:
        """``fn(*args)`` on the loop: at once on its thread (or before the
        run has begun, when there is no loop to hop to yet); from another
        thread, handed to the run without waiting, after whatever that
        thread handed it before. False if the run has finished: ``fn`` is
        then dropped."""
        thread = self.thread_id
        if thread is None or get_ident() == thread:
            fn(*args)
            return True
        assert self.token is not None
        try:
            self.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    def call_and_wait(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run on the loop, and its result: from another
        thread this blocks until the loop has run it. Raises
        ``trio.RunFinishedError`` if the run has finished."""
        if self.thread_id is None or get_ident() == self.thread_id:
            return fn(*args)
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)


async def watch_signals(
    stopping: Callable[[], bool], stop: Callable[[], None], abort: Callable[[], None]
) -> None:
    """On SIGINT or SIGTERM, ``stop()`` (a graceful stop); once ``stopping()``
    is true, ``abort()`` instead. Main thread only."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stopping():
                log.warning("%s again: stopping now", signal.Signals(signum).name)
                abort()
            else:
                log.info("%s: graceful shutdown", signal.Signals(signum).name)
                stop()
