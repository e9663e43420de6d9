"""The push session: one WebSocket or event stream, after the upgrade.

A session owns what a push connection needs beyond the protocol: the
handler's callbacks (its base, ``_dispatch.CallbackQueue``), the writer, the
keepalive, pong and close deadlines, and its pub/sub cursors. It reads
nothing itself: whoever reads the transport (``_connection.py`` for HTTP/1.1)
feeds it the peer's events (:meth:`~CallbackQueue.message`,
:meth:`PushSession.pong`, :meth:`PushSession.closed`), and it sends through
a *sink* (``_transport.Sink``), so that an HTTP/2 stream can be one.

The words for sending (see also ``_transport.py``):

- **write**: the app queues one message on the core (:meth:`PushSession.write`,
  which hands a write from another thread to the loop; published messages
  :meth:`PushSession.take_published`). Nothing is sent yet.
- **flush**: send what the core has queued, now, if the socket takes it all
  (``send_now``: no task switch); else start the *writer*, a helper task
  that sends, waiting for the socket, until nothing is left
  (:meth:`PushSession.flush`). The reader flushes once per read.
- **flush_soon**: something was queued from outside the session's own tasks
  (a publish, another connection's write, a keepalive, a thread): the
  server's flusher flushes it in the next turn of the loop, with whatever
  else is queued by then (:meth:`PushSession.flush_soon`).
- **sent**: the socket took ``n`` more bytes (:meth:`PushSession.sent`):
  ``pending`` drops, ``on_drained`` may follow, a ping's pong deadline and a
  close's deadline run from when they are out.
"""

from __future__ import annotations

import logging
from threading import get_ident
from typing import Any

import trio

import sansio_push as sp

from ._context import Context
from ._dispatch import DONE, OVER, CallbackQueue
from ._glob import is_pattern
from ._history import OVERFLOW, UNKNOWN, PagePositions, Position, announcement
from ._pubsub import PULL_BYTES, Cursor, any_detached, backlog, connection_id, detach, pull
from ._transport import Sink, Transport

log = logging.getLogger("trio_push")
access_log = logging.getLogger("trio_push.access")

_NEVER = float("inf")
# The reason of the core's close past a queue bound (overflow 'close').
_QUEUE_FULL = "send queue full: the client does not read"


def _check_utf8(message: str | bytes) -> None:
    """Raise the ``UnicodeError`` that encoding ``message`` as SSE would."""
    if isinstance(message, str):
        message.encode("utf-8")
    else:
        message.decode("utf-8")


def _close_code(code: int) -> int:
    """``code`` as a :class:`sansio_push.CloseCode` when it has a name."""
    try:
        return sp.CloseCode(code)
    except ValueError:
        return code


class PushSession(CallbackQueue):
    """One push conversation: a protocol core past its upgrade, a sink for
    its bytes, a handler and its client. Event loop thread only, except
    :meth:`write`."""

    # Slots: thousands of these live at once, each without a dict.
    __slots__ = (
        "core",
        "_sink",
        "_thread",
        "cursors",
        "loading",
        "_unannounced",
        "_lost",
        "_positions",
        "_flush_queued",
        "_writer_scope",
        "_close_deadline",
        "_close_end",
        "_next_keepalive",
        "_pong_deadline",
        "_ping_end",
        "_opened_at",
        "_messages_out",
        "close_code",
        "close_reason",
    )

    def __init__(self, ctx: Context, sink: Sink, core: sp.ServerConnection, handler: Any) -> None:
        super().__init__(ctx, handler)
        self.core = core
        self._sink = sink
        # The event loop's thread: a write from there needs no hop.
        self._thread = ctx.loop.thread_id
        #: Pub/sub subscriptions: what was published is taken from each
        #: topic's shared log right before a send (see _pubsub.Topic).
        self.cursors: list[Cursor] = []
        #: History loads and gap notices in flight (see _pubsub.Subscriber).
        self.loading = 0
        # History subscriptions whose start the page is not told yet: that
        # waits until on_gap has returned (see announce).
        self._unannounced: list[Cursor] | None = None
        # overflow='resync': channels without history whose messages it
        # missed, for on_gap once its socket has taken its queue (see _lose).
        self._lost: list[str] | None = None
        # Where the page says it was (read from the request when first asked).
        self._positions: PagePositions | None = None
        # On the server's flush list, or being flushed (see flush).
        self._flush_queued = False
        # The writer's scope: a writer task runs (only while a send waits for
        # the socket) exactly while this is set.
        self._writer_scope: trio.CancelScope | None = None
        self._close_deadline = _NEVER
        # Where the close frame (SSE: the stream's end) ends in the bytes
        # queued, while the socket has not taken it yet (0: none waits).
        self._close_end = 0
        self._next_keepalive = _NEVER
        self._pong_deadline = _NEVER
        # Where the last ping ends in the bytes queued while the socket has
        # not taken it yet (0: none waits): see sent.
        self._ping_end = 0
        self._opened_at = 0.0
        self._messages_out = 0
        #: How the WebSocket closed (see Client.close_code); None while
        #: open, and for SSE.
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def peer(self) -> str:
        return self._sink.peer

    @property
    def pending(self) -> int:
        """Messages queued and not yet handed to the OS, published ones not
        yet taken from their topics included."""
        return self.core.pending + (backlog(self) if self.cursors else 0)

    # -- the session's life -----------------------------------------------------

    def start(self) -> None:
        """The upgrade is answered: ``on_open`` first, keepalives from now."""
        ctx = self.ctx
        options = ctx.options
        self._opened_at = now = trio.current_time()
        websocket = self.core.protocol == "websocket"
        self._next_keepalive = now + (options.ping_interval if websocket else options.sse_keepalive)
        ctx.sessions.add(self)
        self._count_open(1)
        self.queue("on_open")
        if ctx.stopping:
            # Upgraded while a graceful stop was under way (the app was
            # still deciding when it began): shut it down too, rather
            # than leave it open until the drain times out.
            self.shutdown()

    async def finish(self) -> None:
        """The reader is done: wait for the helpers, then leave."""
        await self.wait_for_helpers()
        self.ctx.sessions.discard(self)
        self._count_open(-1)
        self._leave_pubsub()
        self.closed(sp.CloseCode.ABNORMAL, "")  # if nothing closed it before
        client = self.client
        access_log.info(
            "%s - %s %s closed after %.1fs, %d in, %d out",
            self.peer,
            client.protocol,
            client.env.get("PATH_INFO", ""),
            trio.current_time() - self._opened_at,
            self._messages_in,
            self._messages_out,
        )

    def _count_open(self, n: int) -> None:
        counters = self.ctx.counters
        if self.core.protocol == "websocket":
            counters.websocket_open += n
        else:
            counters.sse_open += n
        if isinstance(self._sink, Transport):  # a whole HTTP/1.1 connection
            counters.upgraded_open += n

    def release(self) -> None:
        """Let go of the client and the handler, which refer back to us (a
        handler per connection keeps its client): reference counting then
        frees a closed session, where the raised gc thresholds (tune_gc)
        would leave the cycle, and all it holds, for a rare collection. The
        client still answers (``write()`` False, ``open`` False) through us."""
        self.client = self.handler = None

    def end(self) -> None:
        """The transport is done: no more writes, stop reading, on_close last."""
        if self.state:
            return
        self.state = OVER
        self.closed(sp.CloseCode.ABNORMAL, "")  # if nothing closed it before
        # Writes from now on return False, and client.open is False, even
        # when it ended by a timeout rather than a close.
        self.core.abort()
        self._sink.stop_reading()
        self.unpark()
        # Out of pub/sub before on_close runs: nothing is delivered to it any
        # more (finish() also does this, for a cancelled one).
        self._leave_pubsub()
        self._append("on_close", ())

    # -- events from the peer -----------------------------------------------------

    def receive(self, event: sp.Event) -> None:
        """One of the peer's events, from whoever reads the transport: a
        message for ``on_message``, a pong, or the close."""
        if isinstance(event, sp.Message):
            self.message(event.data)
        elif isinstance(event, sp.Pong):
            self.pong()
        elif isinstance(event, sp.Closed):
            self.closed(event.code, event.reason)

    def receive_all(self) -> bool:
        """Hand on every event the core has (:meth:`receive`), then flush
        the answers to them (callbacks' writes, pongs, a close frame: once
        per read, not per message). Whether the reader may wait for more
        bytes: not once the session or the connection is over, nor while
        callbacks pile up (:attr:`reading_paused`)."""
        core = self.core
        while not self.state:
            event = core.next_event()
            if event is None:
                if core.pending_bytes or not core.open:
                    self.flush()
                return not (core.finished or self.reading_paused or self.state)
            self.receive(event)
        return False

    def pong(self) -> None:
        """The peer answered a ping."""
        self._pong_deadline = _NEVER
        self._ping_end = 0

    def closed(self, code: int, reason: str) -> None:
        """The WebSocket closes with ``code``: the core's Closed event (the
        peer's close frame, or the code the core closed with after a
        protocol error or a limit), or our own close. The first one is what
        the handler sees (:attr:`Client.close_code`)."""
        if self.close_code is None and self.core.protocol == "websocket":
            self.close_code = _close_code(code)
            self.close_reason = reason

    # -- sending ----------------------------------------------------------------

    def flush(self) -> None:
        """Send what the core has queued, right here, if the socket takes it
        all (no task switch); else start the writer to wait for the socket.
        Called by the reader after each read, and by the server's flusher
        after :meth:`flush_soon`."""
        if self._writer_scope is not None or self.state:
            self._flush_queued = False
            return
        core = self.core
        self._flush_queued = True  # pull() below must not queue us again
        try:
            while True:
                if self.cursors:
                    pull(self, PULL_BYTES)
                data = core.data_to_send()
                if data:
                    n = self._sink.send_now(data)
                    if n:
                        self.sent(n)
                    if n < len(data):
                        core.refused()
                        self._start_writer()
                        return
                if not (self.cursors and self._more_published()):
                    break
            if core.finished:
                self.end()
            elif core.open and self.cursors:  # (an echo has none: no call)
                self._cursors_idle()
        finally:
            self._flush_queued = False

    def _more_published(self) -> bool:
        """Whether a pull would take more: messages wait in the logs for us
        (a pull may queue nothing and still take some: those after a history
        load that the history brought already, up to its byte limit). While
        history loads, nothing is taken: loaded() flushes us again."""
        return bool(self.cursors) and not self.loading and backlog(self) > 0 and self.core.open

    def flush_soon(self) -> None:
        """Have the server's flusher :meth:`flush` in the next turn of the
        loop (with whatever else is queued by then)."""
        if self._writer_scope is not None or self._flush_queued or self.state == DONE:
            return
        self._flush_queued = True
        flush_soon = self.ctx.flush_soon
        assert flush_soon is not None
        flush_soon(self)

    def sent(self, n: int) -> None:
        """The socket took ``n`` more bytes."""
        core = self.core
        self.ctx.counters.bytes_out += n
        drained = core.sent(n) is not None
        # overflow='resync': once the socket has taken its queue (its
        # messages, or all of it: a queue of pongs and pings has none to
        # drain), read on from history, and tell what was lost.
        if (drained or not core.pending_bytes) and (
            self._lost or (self.cursors and any_detached(self))
        ):
            self._read_on()
        elif drained and not (self.cursors and backlog(self)):
            self.queue("on_drained")
        if self._ping_end:
            # The socket takes bytes: the peer reads. Until the ping is out it
            # is behind what was queued before it, and once it is out, the
            # peer has pong_timeout to answer.
            if core.bytes_sent >= self._ping_end:
                self._ping_end = 0
            self._pong_deadline = trio.current_time() + self.ctx.options.pong_timeout
        if self._close_end:
            # The same for the close: a peer still reading what was queued
            # before it is not cut off; close_timeout counts from when it is out.
            if core.bytes_sent >= self._close_end:
                self._close_end = 0
            self._close_deadline = trio.current_time() + self.ctx.options.close_timeout
        self.unpark()

    def _read_on(self) -> None:
        """overflow='resync', its socket drained: on_gap for what it lost,
        and history for what it let go of."""
        lost, self._lost = self._lost, None
        for channel in lost or ():
            self.loading -= 1  # held by _lose, now by on_gap
            self.gap(channel, OVERFLOW)
        if any_detached(self):
            self.ctx.pubsub.resync(self)

    def _lose(self, channel: str) -> None:
        """overflow='resync' dropped messages of ``channel``, which keeps
        no history. on_gap runs once the socket has taken its queue: run
        now, what it writes would be refused by the bounds the client is
        past. Until then nothing more from pub/sub is taken for it."""
        if getattr(self.handler, "on_gap", None) is None:
            self.gap(channel, OVERFLOW)  # a warning, now
            return
        if self._lost is None:
            self._lost = []
        if channel not in self._lost:
            self._lost.append(channel)
            self.loading += 1

    def refused(self) -> None:
        """The socket did not take everything at once (see Config's bounds)."""
        self.core.refused()

    def _cursors_idle(self) -> None:
        for cursor in self.cursors:
            # A publish wakes us.
            if not cursor.idle:
                cursor.idle = True
                cursor.topic.idle[cursor] = None

    def _start_writer(self) -> None:
        if self.start_helper(self._writer):
            self._writer_scope = trio.CancelScope()

    async def _writer(self) -> None:
        """Send until nothing is queued (then end, the session idle), or
        until the session is over (then end it)."""
        over = True
        try:
            assert self._writer_scope is not None
            # tick() cancels this scope to abort a session past a deadline.
            with self._writer_scope:
                over = await self._send_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._writer_scope = None
            if over:
                self.end()

    async def _send_all(self) -> bool:
        core = self.core
        sink = self._sink
        while True:
            data = core.data_to_send()
            if not data and self.cursors:
                # Only once the socket has taken what is queued: taken while
                # it refuses, a pull would count against the queue bounds and
                # close a reader that reads (what waits stays in the log,
                # where enforce_bounds judges the reader).
                pull(self, PULL_BYTES)
                data = core.data_to_send()
            if not data:
                if self._more_published():
                    continue  # that pull took only what history had brought
                break
            if not await sink.send(data, self):
                log.warning(
                    "%s: no write progress for %ss, aborting",
                    self.peer,
                    self.ctx.options.write_timeout,
                )
                return True
        if core.finished:
            return True
        if core.open:
            self._cursors_idle()
        return False

    # -- deadlines --------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the server's timer: queue a keepalive when one is due,
        and abort a session past its pong or close deadline, whatever its
        writer is doing (a send stuck on a peer that does not read included)."""
        if self.state:
            return
        options = self.ctx.options
        if now >= self._pong_deadline:
            reason = f"no pong {options.pong_timeout}s after a ping"
        elif now >= self._close_deadline:
            reason = f"close not completed within {options.close_timeout}s"
        else:
            if self.core.open and now >= self._next_keepalive:
                self._keepalive(now)
                self.flush_soon()
            return
        log.warning("%s: %s, aborting", self.peer, reason)
        if self._writer_scope is not None:
            self._writer_scope.cancel()  # the writer ends the session
        else:
            self.end()

    def _keepalive(self, now: float) -> None:
        options = self.ctx.options
        core = self.core
        core.send_keepalive()
        if core.protocol == "websocket":
            self._next_keepalive = now + options.ping_interval
            if self._pong_deadline == _NEVER:
                # A peer that neither answers nor reads for pong_timeout is
                # gone; one that reads what was queued before the ping, however
                # slowly, gets pong_timeout from when the ping is out (sent).
                self._pong_deadline = now + options.pong_timeout
                self._ping_end = core.bytes_queued
        else:
            self._next_keepalive = now + options.sse_keepalive

    # -- what the client asks -------------------------------------------------------

    def write(
        self,
        message: str | bytes,
        event: str | None | sp.DefaultEvent,
        id: str | None,
        retry: int | None,
    ) -> bool:
        """Client.write, from any thread."""
        if get_ident() != self._thread:
            if not self.core.open:
                return False
            return self._hand_to_loop(sp.prepare(message, event=event, id=id, retry=retry))
        if self.cursors:
            pull(self)  # what was published before goes first
        core = self.core
        was_open = core.open
        ok = core.send_message(message, event=event, id=id, retry=retry)
        return self._queued() if ok else self._after_refusal(was_open)

    def _hand_to_loop(self, prepared: sp.Prepared) -> bool:
        """A write from another thread, handed to the loop in call order.

        What cannot be sent fails here, in the caller's thread. A WebSocket
        frame is also encoded here (the loop is spared the work); an SSE
        event is encoded once, by the core on the loop: its block depends on
        the stream's framing, which only the core knows."""
        if self.core.protocol == "sse":
            _check_utf8(prepared.message)
        else:
            prepared.ws_frame  # noqa: B018 - computed and kept for the loop
        burst = get_ident() == self.callback_thread
        return self.ctx.loop.call(self.write_prepared, prepared, burst)

    def write_prepared(self, prepared: sp.Prepared, burst: bool = False) -> bool:
        """A write from another thread; ``burst`` if it is the thread running
        this session's callback: one callback's writes are the app's burst,
        as they are on the event loop, where no send comes between them."""
        if self.cursors:
            pull(self)
        core = self.core
        was_open = core.open
        ok = core.send_prepared(prepared, burst=burst)
        return self._queued() if ok else self._after_refusal(was_open)

    def take_published(self, batch: list[sp.Prepared], run: sp.PreparedRun | None = None) -> None:
        """Queue messages taken from pub/sub topics (see _pubsub.pull); a
        ``run`` of them in one piece when the core can (see send_run)."""
        core = self.core
        was_open = core.open
        # With 'resync', what pub/sub hands over is not cut by the queue
        # bounds: a subscriber too far behind lets go of the logs instead
        # (_pubsub.detach) and reads on from history.
        burst = core.config.overflow == "resync"
        dropped = core.dropped
        if run is not None and core.send_run(run, burst=burst):
            queued = len(batch)
        else:
            queued = self._send_each(batch, burst)
        self._messages_out += queued
        counters = self.ctx.counters
        counters.messages_out += queued
        if core.dropped != dropped:
            counters.overflow(core.config.overflow, core.dropped - dropped)
        if not core.open:
            self._after_refusal(was_open)
        self.flush_soon()

    def _send_each(self, batch: list[sp.Prepared], burst: bool) -> int:
        """Queue each message in turn, as the bounds allow; how many were."""
        core = self.core
        send = core.send_prepared
        queued = 0
        for prepared in batch:
            try:
                if send(prepared, burst=burst):
                    queued += 1
                elif not core.open:
                    break
            except ValueError:
                # Bytes that are not UTF-8 cannot be an SSE event.
                log.warning("%s: a published message cannot be sent as SSE; skipped", self.peer)
        return queued

    def _queued(self) -> bool:
        self._messages_out += 1
        self.ctx.counters.messages_out += 1
        if not self._inline:  # else the reader flushes once the callback returns
            self.flush_soon()
        return True

    def _after_refusal(self, was_open: bool) -> bool:
        """A write was refused; if the queue bound closed the session (the
        'close' overflow policy), say so and bound the close."""
        core = self.core
        if was_open:
            # Refused while open: a queue bound's policy (see overflow).
            self.ctx.counters.overflow("close" if not core.open else core.config.overflow)
        if was_open and not core.open:
            self.closed(sp.CloseCode.POLICY_VIOLATION, _QUEUE_FULL)
            log.warning(
                "%s: send queue full (%d messages, %d bytes pending), closing",
                self.peer,
                core.pending,
                core.pending_bytes,
            )
            self._bound_close()
            self._leave_pubsub()
            self.flush_soon()
        return False

    def _bound_close(self) -> None:
        """The close is queued: the peer has ``close_timeout`` to complete it
        from when it is out, and until then for as long as the socket keeps
        taking bytes (see sent)."""
        self._close_end = self.core.bytes_queued
        self._close_deadline = trio.current_time() + self.ctx.options.close_timeout

    def overflow(self) -> None:
        """More was published to this session while its socket refused than
        its queue bounds allow: the 'close' policy, or 'resync'."""
        if self.core.config.overflow == "resync":
            if not any_detached(self):
                self.ctx.counters.overflow("resync")
                log.warning("%s: too far behind; reading on from history once it drains", self.peer)
            for channel in detach(self):
                self._lose(channel)
            return
        was_open = self.core.open
        self.core.overflow()
        self._after_refusal(was_open)

    def close(self, code: int = sp.CloseCode.NORMAL, reason: str = "") -> None:
        """Flush what is queued, then close (WebSocket ``code``; SSE ends)."""
        core = self.core
        if self.cursors and core.open:
            pull(self)  # what was published before the close goes out
        if core.open:
            core.close(code, reason)
            self.closed(code, reason)
            self._bound_close()
            self._leave_pubsub()
        self.flush_soon()

    def subscribe(self, channel: str, since: str | None = None, envelope: bool = False) -> None:
        """Client.subscribe, on the loop. On SSE without ``since``, a channel
        with history resumes from the page's ``Last-Event-ID``; where the
        page's id (or on a WebSocket, the ``since`` it sent, once the app
        has read it) says nothing we can read about it, on_gap hears
        'unknown'."""
        if not self.core.open:
            return
        pubsub = self.ctx.pubsub
        if since is None and not is_pattern(channel) and pubsub.history.get(channel) is not None:
            if self.core.protocol == "sse":
                positions = self.positions()
                since = positions.get(channel)
                if since is None and positions.incomplete:
                    self.gap(channel, UNKNOWN)
            elif self._positions is not None and channel in self._positions.unreadable:
                self.gap(channel, UNKNOWN)
        position = Position.parse(channel, since) if since is not None else None
        pubsub.subscribe(self, channel, position, envelope)

    def positions(self) -> PagePositions:
        """Where the page says it was on each channel (see Client.since)."""
        if self._positions is None:
            self._positions = PagePositions(self.client.env, self.core.protocol)
        return self._positions

    def gap(self, channel: str, reason: str) -> None:
        """The client will not get everything after its position on
        ``channel``: ``on_gap`` runs before anything more is taken from
        pub/sub (see gap_told); without one, a warning says so."""
        self.ctx.counters.gap(reason)
        if getattr(self.handler, "on_gap", None) is None:
            log.warning(
                "%s: missed messages on %r (%s) and %s has no on_gap",
                self.peer,
                channel,
                reason,
                type(self.handler).__name__,
            )
            return
        self.loading += 1
        self.queue("on_gap", (channel, reason))

    def gap_told(self) -> None:
        """``on_gap`` has returned: pub/sub delivery goes on."""
        self.loading -= 1
        if not self.loading and self._unannounced:
            self._announce_waiting()
        self.flush_soon()

    def announce(self, cursor: Cursor) -> None:
        """A history subscription knows where it starts: the page learns the
        position before any message (SSE: an id-only block; WebSocket with
        the envelope: one without data), so that a reconnect right away
        resumes from there. Not before ``on_gap`` has returned (or other
        loads are done; nothing from pub/sub goes out before either): a
        page given the position past a gap before what on_gap writes would,
        if it left in between, resume from there and never hear of it."""
        if cursor.last is None or not self.core.open:
            return
        if self._unannounced is None:
            self._unannounced = []
        self._unannounced.append(cursor)
        if not self.loading:
            self._announce_waiting()

    def _announce_waiting(self) -> None:
        waiting = self._unannounced or []
        self._unannounced = None
        core = self.core
        if not core.open:
            return
        if core.protocol == "sse":
            id = connection_id([c for c in self.cursors if c.topic.history])
            if id:
                core.send_event_id(id)
            return
        for cursor in waiting:
            if cursor.envelope and cursor.last is not None and cursor in self.cursors:
                core.send_message(announcement(cursor.last), burst=True)

    def unsubscribe(self, channel: str) -> None:
        self.ctx.pubsub.unsubscribe(self, channel)

    def subscribe_refused(self, channel: str, reason: str) -> None:
        """The pub/sub engine refused our subscription to ``channel``."""
        self.queue("on_subscribe_error", (channel, reason))

    def _leave_pubsub(self) -> None:
        """Closing or ended: nothing published from now on can be sent, so
        the session leaves its subscriptions (and holds nothing in the
        logs). Its cursors are its subscriptions."""
        if self.cursors:
            self.ctx.pubsub.unsubscribe_all(self)

    # -- the server's shutdown ---------------------------------------------------

    def shutdown(self) -> None:
        """Graceful server stop: on_shutdown, then close 1001."""
        self.queue("on_shutdown")

    def drain_expired(self) -> bool:
        """The graceful shutdown's drain is over and this session is still
        here: its close frame goes out now if the socket takes it (the server
        cancels it next). True if its ``on_shutdown`` never got to run."""
        skipped = any(name == "on_shutdown" for name, _ in self._callbacks)
        if self.core.open:
            self.close(sp.CloseCode.GOING_AWAY, "server shutting down")
            self.flush()
        return skipped
