"""One HTTP/2 connection: many streams, each a request or a push session.

:class:`H2Driver` drives a :class:`sansio_push.H2Connection` over a
transport. Its one reader task reads the socket, feeds the core and hands
each stream what came for it; the socket is written by whoever has bytes
(``send_now``), and by a writer task only while the socket does not take them.

- A new stream gets a task (:meth:`H2Driver._serve_stream`) that answers its
  request as the HTTP/1.1 request loop answers one (:class:`StreamRequest`,
  the same code: WSGI, router, static files, the app's errors).
- A stream the app upgrades becomes a push session whose *sink* is the
  stream (:class:`StreamSink`): the session writes, flushes and is bounded
  exactly as over HTTP/1.1, and its bytes become DATA frames within the
  peer's windows. It has no task of its own once open: the reader feeds it
  the peer's frames; while its callbacks pile up, the stream is no longer
  read, so the peer's window for it closes and only it stops.
- A stream that cannot send waits for a window or for room in the socket;
  past ``write_timeout`` without progress it is reset, and if it was the
  connection's window that held it, the whole connection is closed (GOAWAY
  ENHANCE_YOUR_CALM): a peer that never opens it is a peer that never reads.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

import sansio_push as sp

from ._client import Client
from ._context import Context
from ._http import RequestLoop, Upgrade, access_log
from ._push import PushSession
from ._transport import Progress, Transport

log = logging.getLogger("trio_push")

_NEVER = float("inf")
# How long the last bytes (a GOAWAY) may take to leave once the connection ends.
_LAST_WORDS_SECONDS = 1.0


class StreamSink:
    """What a stream's request loop and push session send through (a
    ``_transport.Sink``), and where its request loop waits for the body."""

    __slots__ = ("_driver", "core", "session", "paused", "feeding", "_lot")

    def __init__(self, driver: H2Driver, core: sp.H2Stream) -> None:
        self._driver = driver
        self.core = core
        #: The push session, once the app upgraded the stream.
        self.session: PushSession | None = None
        #: Reading is paused (callbacks pile up); a helper resumes it.
        self.paused = False
        #: Its events are being read (by the reader, or the resume helper).
        self.feeding = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    @property
    def peer(self) -> str:
        return self._driver.transport.peer

    def send_now(self, data: bytes | memoryview) -> int:
        """Frame what the windows and the socket's room allow; how much.
        When the room is what ran out, the frames go to the socket at once
        (if it takes them, there is room again): a burst to many streams of
        one connection is framed in a few sends, not refused stream by
        stream into a writer task each."""
        driver = self._driver
        core = driver.core
        n = core.frame(self.core, data)
        if n < len(data) and not core.has_room:
            driver.flush()
            if core.has_room:
                n += core.frame(self.core, memoryview(data)[n:])
        if n:
            driver.flush_soon()
        return n

    async def send(self, data: bytes, progress: Progress) -> bool:
        """Frame all of ``data``, waiting for windows and room; False after
        ``write_timeout`` without progress. Raises ``BrokenResourceError``
        if the stream or the connection is gone."""
        n = self.send_now(data)
        if n:
            progress.sent(n)
            if n == len(data):
                return True
        progress.refused()
        driver = self._driver
        view = memoryview(data)
        done = n
        timeout = driver.options.write_timeout
        last_progress = trio.current_time()
        while done < len(view):
            if self.core.reset or driver.core.finished:
                raise trio.BrokenResourceError("stream reset")
            with trio.move_on_at(last_progress + timeout) as scope:
                await driver.room()
            n = self.send_now(view[done:])
            if n:
                progress.sent(n)
                done += n
                last_progress = trio.current_time()
            elif scope.cancelled_caught:
                if driver.core.connection_window <= 0:
                    driver.stalled()
                return False
        return True

    def stop_reading(self) -> None:
        """The push session is over: end the stream (or reset it, if not all
        it queued went out), and see the session out."""
        self._driver.stream_over(self)

    async def wait_input(self) -> None:
        """Until the reader hands the stream something (its body, its end)."""
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()

    def wake(self) -> None:
        if self._lot is not None:
            self._lot.unpark_all()


class StreamRequest(RequestLoop):
    """The request of one stream, answered as the HTTP/1.1 loop answers one."""

    __slots__ = ("_sink",)

    def __init__(self, ctx: Context, sink: StreamSink) -> None:
        super().__init__(ctx, sink, sink.core)  # type: ignore[arg-type]
        self._sink = sink

    async def serve(self, started: float | None = None) -> Upgrade | None:
        """Answer the stream's request: None, or what its push session needs."""
        event = self.core.next_event()
        if isinstance(event, sp.Request):
            upgrade = await self._answer(event.env)
            if upgrade is not None:
                return upgrade
        elif isinstance(event, sp.Rejected):
            self._ctx.counters.response(event.status)
            access_log.info('%s - "-" %d (%s) HTTP/2', self._sink.peer, event.status, event.reason)
        await self._flush()
        return None

    async def _receive(self) -> None:
        await self._sink.wait_input()

    async def until_gone(self) -> None:
        """Until the client resets the stream (or the connection ends)."""
        while not self._sink.core.reset:
            await self._sink.wait_input()


class H2Driver:
    """Drives one :class:`sansio_push.H2Connection` (see the module)."""

    __slots__ = (
        "_ctx",
        "options",
        "transport",
        "core",
        "sinks",
        "_nursery",
        "_room_lot",
        "_gone_lot",
        "_read_scope",
        "_writing",
        "_flush_queued",
        "_over",
    )

    def __init__(self, ctx: Context, transport: Transport, core: sp.H2Connection) -> None:
        self._ctx = ctx
        self.options = ctx.options
        self.transport = transport
        self.core = core
        #: The streams being served, by id.
        self.sinks: dict[int, StreamSink] = {}
        self._nursery: trio.Nursery | None = None
        self._room_lot = trio.lowlevel.ParkingLot()
        # Where the end of the connection waits for its streams to be gone.
        self._gone_lot = trio.lowlevel.ParkingLot()
        self._read_scope: trio.CancelScope | None = None
        self._writing = False
        self._flush_queued = False
        # The transport is done (broken, stuck, or a fatal error of ours).
        self._over = False

    @property
    def peer(self) -> str:
        return self.transport.peer

    async def run(self, received: bytes) -> None:
        """Serve the connection, ``received`` its first bytes, until it ends."""
        core = self.core
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                if received:  # b"" would be the peer's end
                    core.receive_data(received)
                await self._read()
            finally:
                with trio.CancelScope(shield=True):
                    # Every stream is over: sessions see the peer's end.
                    core.receive_data(b"")
                    self._handle_events()
                    self._room_lot.unpark_all()
                    await self._last_words()
                await self._see_sessions_out()
        if core.error_code is not None and not self._over:
            # A GOAWAY for an error, to a peer still sending: closing with
            # its bytes unread would reset the connection and lose it.
            await self.transport.linger()

    async def _see_sessions_out(self) -> None:
        """Keep the nursery open until every push session is seen out
        (``_finish_push`` runs in it: on_close, exactly once), shielded as
        an HTTP/1.1 connection's on_close is: once a shutdown's drain is
        over, for close_timeout at most."""
        ctx = self._ctx
        with trio.CancelScope(shield=True, deadline=ctx.close_deadline) as scope:
            ctx.closing.add(scope)
            try:
                while self.sinks:
                    await self._gone_lot.park()
            finally:
                ctx.closing.discard(scope)

    async def _read(self) -> None:
        core = self.core
        transport = self.transport
        idle_timeout = self.options.idle_timeout
        while True:
            self._handle_events()
            self.flush()
            if core.finished or self._over:
                return
            deadline = _NEVER if core.streams else trio.current_time() + idle_timeout
            data = None
            with trio.CancelScope(deadline=deadline) as self._read_scope:
                data = await transport.receive()
            self._read_scope = None
            if data is None:
                if self._over:
                    return
                # Idle past idle_timeout, or woken to stop: say goodbye.
                core.shutdown()
                continue
            core.receive_data(data)
            if not data:
                return

    async def _last_words(self) -> None:
        """Send what is left (a GOAWAY, last frames), briefly."""
        data = self.core.data_to_send()
        if data and not self._over and not self._writing:
            with trio.move_on_after(_LAST_WORDS_SECONDS):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.transport.send(data, self)

    def _handle_events(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            if isinstance(event, sp.StreamOpened):
                sink = self.sinks[event.stream.stream_id] = StreamSink(self, event.stream)
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_stream, sink)
            elif isinstance(event, sp.StreamInput):
                found = self.sinks.get(event.stream.stream_id)
                if found is None:
                    continue
                if found.core.reset:
                    self._room_lot.unpark_all()  # a send waiting on it gives up
                if found.session is not None:
                    self._feed(found)
                else:
                    found.wake()
            elif isinstance(event, sp.WindowOpened):
                self._room_lot.unpark_all()

    # -- streams ------------------------------------------------------------

    async def _serve_stream(self, sink: StreamSink) -> None:
        try:
            upgrade = await StreamRequest(self._ctx, sink).serve()
            if upgrade is not None:
                await self._open_push(sink, *upgrade)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("%s: internal error on an HTTP/2 stream, resetting it", self.peer)
        finally:
            if sink.session is None:
                self._forget(sink)

    async def _open_push(self, sink: StreamSink, kind: str, handler: Any, env: Any) -> None:
        session = sink.session = PushSession(self._ctx, sink, sink.core, handler)
        session.client = Client(session, env, kind)
        session.start()
        self.flush_soon()  # the stream's HEADERS
        self._feed(sink)  # frames that came with the request

    def _feed(self, sink: StreamSink, resuming: bool = False) -> None:
        """Hand a push session the peer's events on its stream, as the
        HTTP/1.1 reader does, until none is left or its callbacks pile up
        (then a helper waits for them and reads on: one reader at a time)."""
        session = sink.session
        assert session is not None
        core = sink.core
        if resuming:
            sink.paused = False
        elif sink.paused or sink.feeding:
            return  # the one reading it reads what came, to the end
        sink.feeding = True
        try:
            while not session.state:
                if session.reading_paused:
                    sink.paused = True
                    session.start_helper(lambda: self._resume(sink))
                    return
                event = core.next_event()
                if event is None:
                    if core.pending_bytes or not core.open:
                        session.flush()
                    return
                session.receive(event)
        finally:
            sink.feeding = False

    async def _resume(self, sink: StreamSink) -> None:
        session = sink.session
        assert session is not None
        await session.resume_reading()
        self._feed(sink, resuming=True)
        self.flush()

    def stream_over(self, sink: StreamSink) -> None:
        """A push session ended (``PushSession.end``): end its stream, and
        see the session out in a task (its helpers, on_close)."""
        self.core.close_stream(sink.core)
        self.flush_soon()
        nursery = self._nursery
        assert nursery is not None
        try:
            nursery.start_soon(self._finish_push, sink)
        except RuntimeError:  # past close_timeout at a shutdown: the run is over
            assert self._ctx.nursery is not None
            self._ctx.nursery.start_soon(self._finish_push, sink)

    async def _finish_push(self, sink: StreamSink) -> None:
        session = sink.session
        assert session is not None
        try:
            await session.finish()
        finally:
            await session.ensure_on_close()
            session.release()
            self._forget(sink)

    def _forget(self, sink: StreamSink) -> None:
        self.core.close_stream(sink.core)
        self.sinks.pop(sink.core.stream_id, None)
        self._gone_lot.unpark_all()
        self.flush_soon()
        scope = self._read_scope
        if scope is None:
            return
        if self.core.finished:
            scope.cancel()  # drained: the reader ends the connection
        elif not self.core.streams:
            # The last stream is done: the idle bound runs from now.
            scope.deadline = trio.current_time() + self.options.idle_timeout

    # -- the socket -----------------------------------------------------------

    async def room(self) -> None:
        """Until a window opens or the socket takes framed bytes."""
        await self._room_lot.park()

    def flush_soon(self) -> None:
        """Have the server's flusher write what is framed, in the next turn
        of the loop (with what other streams frame by then)."""
        if self._flush_queued or self._writing or self._over:
            return
        self._flush_queued = True
        flush_soon = self._ctx.flush_soon
        assert flush_soon is not None
        flush_soon(self)

    def flush(self) -> None:
        """Write what is framed, now if the socket takes it, else in a writer."""
        self._flush_queued = False
        if self._writing or self._over:
            return
        data = self.core.data_to_send()
        if not data:
            return
        n = self.transport.send_now(data)
        if n:
            self.sent(n)
        if n < len(data):
            self._writing = True
            assert self._nursery is not None
            self._nursery.start_soon(self._write)

    async def _write(self) -> None:
        try:
            while data := self.core.data_to_send():
                if not await self.transport.send(data, self):
                    log.warning(
                        "%s: no write progress for %ss, closing the HTTP/2 connection",
                        self.peer,
                        self.options.write_timeout,
                    )
                    self.end()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.end()
        finally:
            self._writing = False

    def sent(self, n: int) -> None:
        """The socket took ``n`` more bytes (``_transport.Progress``)."""
        if self.core.sent(n):
            self._room_lot.unpark_all()

    def refused(self) -> None:
        """The socket did not take everything at once (the core's budget
        already bounds what is framed)."""

    def stalled(self) -> None:
        """A stream could not send for write_timeout because the connection's
        window stayed shut: the peer does not read. Close it all."""
        log.warning(
            "%s: HTTP/2 connection window shut for %ss, closing",
            self.peer,
            self.options.write_timeout,
        )
        self.core.goaway(sp.H2Connection.ENHANCE_YOUR_CALM)
        self.flush()
        self._stop()

    def end(self) -> None:
        """The transport is done: stop reading, every stream ends."""
        self._over = True
        self._room_lot.unpark_all()
        self._stop()

    def _stop(self) -> None:
        if self._read_scope is not None:
            self._read_scope.cancel()

    # -- the server's shutdown ------------------------------------------------

    def shutdown(self) -> None:
        """Graceful stop: GOAWAY, then on_shutdown for every push stream (each
        closes 1001, or ends its event stream); the connection ends with its
        last stream."""
        self.core.shutdown()
        for sink in list(self.sinks.values()):
            if sink.session is not None:
                sink.session.shutdown()
        self.flush_soon()
        if self.core.finished:
            self._stop()

    def drain_expired(self) -> bool:
        """The drain is over: every push stream's close goes out now if it
        can; True if one of them never got to run on_shutdown."""
        skipped = False
        for sink in list(self.sinks.values()):
            if sink.session is not None:
                skipped = sink.session.drain_expired() or skipped
        return skipped
