"""Helpers for the channel-history tests: an EventSource that resumes as a
browser's does (httpx + httpx-sse), and a TCP proxy that can keep a server
away from Redis while others reach it."""

from __future__ import annotations

import functools
from collections.abc import Callable

import httpx
import trio
from httpx_sse import aconnect_sse

from tests.helpers.server import TIMEOUT, http_client


class EventSource:
    """An SSE client as a browser's ``EventSource``: reads ``url`` with
    httpx-sse and, with ``reconnect``, opens it again when the stream ends,
    sending the last event id it got as ``Last-Event-ID``.

    It keeps, over all its connections, the data of the ``msg`` events
    (``messages``), the ``gap`` events (``gaps``: ``"gap <channel>
    <reason>"``) and everything in order (``log``: ``(event, data)``), and
    the pid of each connection's server (from its ``hello`` event)."""

    def __init__(self, url: str, last_id: str | None = None, reconnect: bool = False) -> None:
        self.url = url
        self.last_id = last_id
        self.reconnect = reconnect
        self.messages: list[str] = []
        #: The last event id as of each of ``messages`` (a browser's lastEventId).
        self.ids: list[str] = []
        self.gaps: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.pids: list[str] = []
        self.ended = 0
        self._changed = trio.Event()

    async def run(self) -> None:
        """Read (and reconnect) until cancelled, or the stream ends without ``reconnect``."""
        timeout = httpx.Timeout(TIMEOUT, read=None)
        async with http_client(timeout=timeout) as http:
            while True:
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                try:
                    async with aconnect_sse(http, "GET", self.url, headers=headers) as source:
                        async for sse in source.aiter_sse():
                            self._on(sse.event, sse.data, sse.id)
                except httpx.HTTPError:
                    pass  # the server went away: as for the stream's end
                self.ended += 1
                self._wake()
                if not self.reconnect:
                    return
                await trio.sleep(0.02)

    def _on(self, event: str, data: str, id: str) -> None:
        if id:
            self.last_id = id
        # (An id-only block, where a subscription starts, is a "message"
        # event with no data for httpx-sse.)
        if event == "msg":
            self.messages.append(data)
            self.ids.append(id)
        elif event == "gap":
            self.gaps.append(data)
        elif event == "hello":
            self.pids.append(data.split()[1])
        if event in ("msg", "gap", "hello"):
            self.log.append((event, data))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[EventSource], bool]) -> None:
        with trio.fail_after(TIMEOUT):
            while not predicate(self):
                await self._changed.wait()

    async def wait_messages(self, n: int) -> list[str]:
        await self.wait_for(lambda c: len(c.messages) >= n)
        return self.messages


async def open_event_source(
    nursery: trio.Nursery, url: str, last_id: str | None = None, reconnect: bool = False
) -> tuple[EventSource, trio.CancelScope]:
    """An :class:`EventSource` reading in ``nursery`` once its server said
    hello; cancel the scope to close it (as a page that goes away)."""
    source = EventSource(url, last_id, reconnect)
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await source.run()

    nursery.start_soon(run)
    await source.wait_for(lambda s: len(s.pids) >= 1)
    return source, scope


class TcpProxy:
    """Forwards the connections made to its port to ``127.0.0.1:target``
    while :attr:`open`; when not, it closes new ones at once (a server
    behind it sees Redis unreachable, and backs off). :meth:`cut` ends the
    ones it carries; while :attr:`paused` it forwards nothing (Redis, as
    the server sees it, stops answering)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.open = True
        self._streams: set[trio.SocketStream] = set()
        self._resumed = trio.Event()
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    @paused.setter
    def paused(self, paused: bool) -> None:
        if paused and not self.paused:
            self._resumed = trio.Event()
        elif not paused:
            self._resumed.set()

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
        )
        self.port = listeners[0].socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        for stream in list(self._streams):
            stream.socket.close()

    async def _handle(self, down: trio.SocketStream) -> None:
        if not self.open:
            await trio.aclose_forcefully(down)
            return
        try:
            up = await trio.open_tcp_stream("127.0.0.1", self.target)
        except OSError:
            await trio.aclose_forcefully(down)
            return
        self._streams |= {down, up}
        try:
            async with trio.open_nursery() as nursery:

                async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                    try:
                        while data := await source.receive_some(65536):
                            await self._resumed.wait()
                            await sink.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, down, up)
                nursery.start_soon(pump, up, down)
        finally:
            self._streams -= {down, up}
            await trio.aclose_forcefully(up)
            await trio.aclose_forcefully(down)
