"""When connections' sockets have bytes to read, from one epoll of our own.

Trio's ``wait_readable`` registers the socket with the loop's epoll each
time a task waits on it (``EPOLLONESHOT``): one ``epoll_ctl`` system call per
read, the cost of a connection that reads a request or message and answers
it (a keep-alive request, an echo) as often as its peer writes. A
:class:`ReadPoller` registers each socket once, edge-triggered, in an epoll
of its own that one task of the server waits on through Trio: a turn of the
loop with many sockets ready costs one ``epoll_ctl`` and one ``epoll_wait``
in all.

Edge-triggered means an event comes only when new bytes come: a reader
(:meth:`Transport.readable <trio_push._transport.Transport.readable>`, then
``read``) reads until a read comes back short before it waits again, and a read that fills
its buffer leaves the socket marked ready, and once the peer's end has come
every read is. Linux only (``select.epoll``);
elsewhere, and for TLS, the transport waits through Trio.

When bytes come for a socket whose reader waits, the poller first asks the
socket's :class:`Reader` to read and handle them itself (``ready()``, in the
reader task's context): an echo's message, or a keep-alive GET, is answered
without waking the reader's task, and so without a turn of Trio's scheduler. The reader's task
is woken only when it has more to do than that.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Awaitable
from typing import Any, Protocol

import outcome
import trio

_FLAGS = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_FLAGS |= getattr(select, "EPOLLET", 0)
# The peer's end (or an error): every read from now on is ready, and no more
# events come (a read that comes back short may leave the end unread).
_ENDED = getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLHUP", 0)
_ENDED |= getattr(select, "EPOLLERR", 0)

log = logging.getLogger("trio_push")


class Reader(Protocol):
    def ready(self) -> bool:
        """Read and handle what came, as the waiting reader would; whether
        it may go on waiting (else its task is woken)."""


class ReadPoller:
    """Readiness of many sockets: each registered once (:meth:`register`),
    waited for with :meth:`wait`, let go of with :meth:`forget`, while the
    server runs :meth:`run`. Event loop thread only."""

    __slots__ = ("_epoll", "_waiting", "_readers", "_ready", "_ended")

    def __init__(self) -> None:
        self._epoll: Any = None
        # The reader task waiting for each socket.
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        # Who reads each socket (asked first when bytes come for it).
        self._readers: dict[int, Reader] = {}
        # Sockets with an event (or a full read) since their reader last
        # read: the next read needs no wait.
        self._ready: set[int] = set()
        # Sockets whose peer's end (or an error) has come: always ready.
        self._ended: set[int] = set()

    @staticmethod
    def available() -> bool:
        return hasattr(select, "epoll")

    def register(self, fd: int, reader: Reader) -> bool:
        """Watch ``fd``, read by ``reader``, from now until :meth:`forget`
        (bytes already there count as an event; registered again, its
        reader is now ``reader``); False, doing nothing, unless :meth:`run`
        runs."""
        if self._epoll is None:
            return False
        readers = self._readers
        if fd not in readers:
            self._epoll.register(fd, _FLAGS)
        readers[fd] = reader
        return True

    def forget(self, fd: int) -> None:
        """Stop watching ``fd`` (before it is closed: its number may be reused)."""
        self._ready.discard(fd)
        self._ended.discard(fd)
        self._waiting.pop(fd, None)
        self._readers.pop(fd, None)
        if self._epoll is not None:
            with contextlib.suppress(OSError):  # registered with an epoll since closed
                self._epoll.unregister(fd)

    def mark_ready(self, fd: int) -> None:
        """A read filled its buffer: more may wait, and no event will say so."""
        self._ready.add(fd)

    def readable(self, fd: int) -> Awaitable[None]:
        """Until ``fd`` may be read: a checkpoint if it is marked ready (no
        longer marked: a short read means it has nothing more) or its peer's
        end has come, else :meth:`wait` (an awaitable, not a coroutine around
        one: an idle connection keeps every frame of its wait)."""
        ready = self._ready
        if fd in ready:
            ready.remove(fd)
            return trio.lowlevel.checkpoint()
        if fd in self._ended:
            return trio.lowlevel.checkpoint()
        return self.wait(fd)

    async def wait(self, fd: int) -> None:
        """Until ``fd`` has an event (or :meth:`closing`: then
        ``trio.ClosedResourceError``). A checkpoint."""
        waiting = self._waiting
        waiting[fd] = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiting.pop(fd, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def closing(self, fd: int) -> None:
        """Wake the task waiting for ``fd`` with ``trio.ClosedResourceError``
        (as ``trio.lowlevel.notify_closing`` does for Trio's waits)."""
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError()))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Have the sockets with events read: by their readers, or by the
        waiting tasks, woken; until cancelled (with the server's connections)."""
        epoll = self._epoll = select.epoll()
        task_status.started()
        waiting = self._waiting
        readers = self._readers
        ready = self._ready
        ended = self._ended
        reschedule = trio.lowlevel.reschedule
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, flags in epoll.poll(0):
                    if flags & _ENDED:
                        ended.add(fd)
                    task = waiting.get(fd)
                    if task is None:
                        ready.add(fd)
                        continue
                    if not flags & _ENDED:
                        try:
                            # (What the reader reads may end its wait: closing.)
                            if task.context.run(readers[fd].ready) and fd not in ready:
                                continue
                        except Exception:
                            # A bug of ours: the reader's task meets it and
                            # closes its connection; the poller serves on.
                            log.exception("internal error reading a connection")
                    if waiting.pop(fd, None) is not None:
                        reschedule(task)
        finally:
            # A server that serves again starts anew.
            self._epoll = None
            ready.clear()
            ended.clear()
            readers.clear()
            epoll.close()
