"""The Trio side of one TCP connection: read, dispatch, write."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import threading
from collections.abc import AsyncIterable, Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import trio

import sansio_push as sp

from ._app import (
    NO_BODY,
    AppError,
    as_bytes,
    close_body,
    fixed_body,
    is_body,
    normalize,
    with_length,
)
from ._calls import call, in_thread
from ._client import Client
from ._pubsub import PULL_BYTES, Cursor, backlog, pull
from ._wsgi import EMPTY_INPUT, BodyReader, finish_environ

if TYPE_CHECKING:
    from ._server import Server

log = logging.getLogger("trio_push")
access_log = logging.getLogger("trio_push.access")

_RECEIVE_SIZE = 65536
# Writes go out in pieces of this size; write_timeout bounds each piece.
_SEND_PIECE = 65536
# Incoming WebSocket messages waiting for on_message, and their bytes,
# past which we stop reading (one message is always taken: see
# docs/limits-and-timeouts.md for the arithmetic).
_MAX_QUEUED_CALLBACKS = 64
_MAX_QUEUED_INBOUND_BYTES = 1024 * 1024
_ERROR_BODY = b"Internal Server Error\n"
_NEVER = float("inf")
# Callbacks that are nothing but the handler's (on_shutdown is followed by a
# close, on_close by the end): not queued when the handler has no such method.
_SKIPPABLE = frozenset(("on_message", "on_drained", "on_open", "on_subscribe_error"))
# How long, and how much, to read from a peer after we decided to close.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1024 * 1024


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


_END = object()


class Connection:
    """Drives a :class:`sansio_push.ServerConnection` over a Trio stream.

    HTTP requests are answered by the task that reads them, in order. After
    an upgrade that task reads frames, and two helper tasks run only while
    needed, in the server's connection nursery: a writer while the socket
    does not take at once what the core has queued, and a dispatcher while
    callbacks are queued (it runs them one at a time, in order). What is
    queued is sent without a task of its own when the socket takes it all:
    by the reader after each read, else by the server's flusher (see
    :meth:`push_out`). A plain ``on_message`` (``threads=0``) with nothing
    queued before it runs inline in the reader: no task switch per message.
    An idle connection is one task.
    """

    # Slots: thousands of these live at once, and past 30 attributes an
    # instance would get a dict of its own (1.5 KiB).
    __slots__ = (
        "server",
        "stream",
        "socket",
        "core",
        "client",
        "handler",
        "idle",
        "scope",
        "_callbacks",
        "_dispatching",
        "_close_queued",
        "_pushing",
        "_helpers",
        "_flush_queued",
        "_inline",
        "_fd",
        "_lot",
        "_close_called",
        "_over",
        "_close_deadline",
        "_next_keepalive",
        "_pong_deadline",
        "_ping_end",
        "_inbound_bytes",
        "callback_thread",
        "_opened_at",
        "_messages_in",
        "_messages_out",
        "_writer_scope",
        "cursors",
        "_body_done",
        "_rejected",
    )

    def __init__(
        self,
        server: Server,
        stream: trio.abc.Stream,
        socket: trio.socket.SocketType,
        core: sp.ServerConnection,
    ) -> None:
        self.server = server
        self.stream = stream
        #: The TCP socket under ``stream`` (which may be TLS).
        self.socket = socket
        self.core = core
        self.client: Client | None = None
        self.handler: Any = None
        self.idle = True
        self.scope: trio.CancelScope | None = None
        # A list, not a deque: an empty deque costs 600 bytes per connection.
        self._callbacks: list[tuple[str, tuple[Any, ...]]] = []
        # A dispatcher task runs only while callbacks are queued (or while a
        # plain one runs inline in the reader): an idle connection has none.
        self._dispatching = False
        self._close_queued = False
        # True while the connection may start helper tasks (a writer, a
        # dispatcher); how many run. They live in the server's connection
        # nursery, and the connection waits for them before it closes: a
        # nursery of its own would cost every idle connection 1.3 KiB.
        self._pushing = False
        self._helpers = 0
        # On the server's flush list, or being flushed (see push_out).
        self._flush_queued = False
        # True while a callback runs inline in the reader: what it writes is
        # sent when it returns, in one send.
        self._inline = False
        # Plain TCP: the socket's descriptor, to send without a task switch.
        self._fd = socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        # Where the connection's task waits (for callbacks to drain while it
        # reads, for its helpers at the end); made when first needed.
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._close_called = False
        self._over = False
        self._close_deadline = _NEVER
        self._next_keepalive = _NEVER
        self._pong_deadline = _NEVER
        # Where the last ping ends in the bytes queued while the socket has
        # not taken it yet (0: none waits): see _sent.
        self._ping_end = 0
        # Bytes of the messages queued for on_message.
        self._inbound_bytes = 0
        #: The worker thread running one of this connection's callbacks (0: none).
        self.callback_thread = 0
        self._opened_at = 0.0
        self._messages_in = 0
        self._messages_out = 0
        # The writer's scope: a writer task runs (only while a send waits for
        # the socket) exactly while this is set.
        self._writer_scope: trio.CancelScope | None = None
        #: Pub/sub subscriptions: what was published is taken from each
        #: topic's shared log right before a send (see _pubsub.Topic).
        self.cursors: list[Cursor] = []
        self._body_done = False
        self._rejected = False

    @property
    def peer(self) -> str:
        client = self.core.client
        return f"{client[0]}:{client[1]}" if client else "-"

    # -- the connection's life --------------------------------------------

    async def run(self) -> None:
        try:
            upgraded = False
            # The server's graceful stop cancels this scope to end an idle
            # HTTP connection; a push connection is stopped by its handler
            # (on_shutdown), so it does without one.
            with trio.CancelScope() as self.scope:
                upgraded = await self._serve_http()
            self.scope = None
            if upgraded:
                # Called here, not from _serve_http: what its frame holds
                # (the last read, a timeout's scope) is freed.
                await self._serve_push()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # A bug of ours must cost one connection, never the server.
            log.exception("%s: internal error, closing the connection", self.peer)
        finally:
            if self.client is not None and not self._close_called:
                # Cancelled before the dispatcher got to it: on_close
                # still runs, exactly once (shielded, within close_timeout).
                await self._run_callback("on_close", ())
            self._fd = -1
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            # The client refers to us (client._conn), and so may the handler
            # (a handler per connection keeps its client): let go of both, so
            # that reference counting frees a closed connection. The raised
            # gc thresholds (tune_gc) would leave the cycle, and everything
            # it holds, waiting for a collection. The client still answers
            # (write() False, open False) through us and our core.
            self.client = self.handler = None

    async def _linger(self) -> None:
        """Close our side first and drop what the peer still sends, briefly.

        Closing a socket with unread bytes makes the kernel send a reset,
        which can destroy our last response (a 413 to a client still sending
        its body) before the client reads it; nginx's lingering_close does
        the same for the same reason.
        """
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None:  # TLS streams cannot half-close
            return
        with trio.move_on_after(_LINGER_SECONDS):
            try:
                await send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            budget = _LINGER_BYTES
            while budget > 0 and (data := await self._receive()):
                budget -= len(data)

    async def _receive(self) -> bytes:
        fd = self._fd
        try:
            if fd < 0:
                return await self.stream.receive_some(_RECEIVE_SIZE)
            # Plain TCP: wait, then read. We read whenever we have handled all
            # that came, so trying first would mostly be a failed system call.
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    return os.read(fd, _RECEIVE_SIZE)
                except BlockingIOError:
                    continue
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return b""

    async def _flush(self) -> None:
        data = self.core.data_to_send()
        if data and not await self._send(data):
            raise trio.BrokenResourceError("write timeout")

    async def _send(self, data: bytes) -> bool:
        """Send ``data``, reporting each piece to the core as it goes. False
        if the socket took nothing for ``write_timeout``: the bound is on
        progress, so a slow reader that keeps reading is not cut off."""
        if self._fd >= 0:
            # Most sends fit the socket's buffer: one system call, without
            # trio's checkpoints (the caller's next wait is one).
            sent = self._write_now(data)
            if sent == len(data):
                return True
            data = data[sent:]
        # The socket did not take it all at once (TLS: may not; we cannot
        # tell): from here the queue bounds count what is queued.
        self.core.refused()
        timeout = self.server.options.write_timeout
        view = memoryview(data)
        for start in range(0, len(view), _SEND_PIECE):
            piece = view[start : start + _SEND_PIECE]
            with trio.move_on_after(timeout) as scope:
                await self.stream.send_all(piece)
            if scope.cancelled_caught:
                return False
            self._sent(len(piece))
        return True

    def _sent(self, n: int) -> None:
        core = self.core
        if core.sent(n) is not None and not (self.cursors and backlog(self)):
            self._queue_callback("on_drained", ())
        if self._ping_end:
            # The socket takes bytes: the peer reads. Until the ping is out it
            # is behind what was queued before it, and once it is out, the
            # peer has pong_timeout to answer.
            if core.bytes_sent >= self._ping_end:
                self._ping_end = 0
            self._pong_deadline = trio.current_time() + self.server.options.pong_timeout
        self._unpark()

    def overflow(self) -> None:
        """More was published to this connection while its socket refused
        than its queue bounds allow (the 'close' policy)."""
        was_open = self.core.open
        self.core.overflow()
        self._refused(was_open)

    def _write_now(self, data: bytes) -> int:
        """Send what the socket takes now, without blocking; how much that was."""
        try:
            n = os.write(self._fd, data)
        except OSError:  # full (BlockingIOError), or broken: trio's send says which
            return 0
        if n:
            self._sent(n)
        return n

    def push_out(self) -> None:
        """Send what the push core has queued, right here, if the socket
        takes it all (no task switch); else start the writer to wait for
        the socket. Called by the reader after each read, and by the
        server's flusher for a connection woken from outside (a publish,
        another connection's write, a keepalive, a thread)."""
        if self._writer_scope is not None or self._over:
            self._flush_queued = False
            return
        core = self.core
        self._flush_queued = True  # pull() below must not queue us again
        try:
            while True:
                if self.cursors:
                    pull(self, PULL_BYTES)
                data = core.data_to_send()
                if data and (self._fd < 0 or self._write_now(data) < len(data)):
                    core.refused()
                    self._start_writer()
                    return
                if not (self.cursors and backlog(self) and core.open):
                    break
            if core.finished:
                self.end()
            elif core.open:
                self._cursors_idle()
        finally:
            self._flush_queued = False

    def wake(self) -> None:
        """Something was queued from outside this connection's tasks (a
        publish, another connection's write, a keepalive, a thread): the
        server's flusher sends it soon, with whatever else is queued by then."""
        if self._writer_scope is not None or self._flush_queued or not self._pushing:
            return
        self._flush_queued = True
        self.server.flush_soon(self)

    def _cursors_idle(self) -> None:
        for cursor in self.cursors:
            # A publish wakes us.
            if not cursor.idle:
                cursor.idle = True
                cursor.topic.idle[cursor] = None

    def _start_writer(self) -> None:
        if self._start_helper(self._write):
            self._writer_scope = trio.CancelScope()

    def _start_helper(self, fn: Callable[[], Awaitable[None]]) -> bool:
        if not self._pushing:
            return False
        self._helpers += 1
        self.server.conn_nursery.start_soon(self._helper, fn)
        return True

    async def _helper(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except Exception:
            # A bug of ours must cost one connection, never the server.
            log.exception("%s: internal error, closing the connection", self.peer)
            self.end()
        finally:
            self._helpers -= 1
            if not self._helpers:
                self._unpark()

    # -- HTTP ---------------------------------------------------------------

    async def _serve_http(self) -> bool:
        """Answer requests until the connection ends (False) or upgrades (True)."""
        core = self.core
        options = self.server.options
        head_started: float | None = None
        fresh = False
        while True:
            event = core.next_event()
            if event is None:
                await self._flush()
                if core.finished:
                    await self._linger()
                    return False
                if self.server.stopping:
                    return False
                # Between requests the idle bound applies; once a request's
                # first bytes are in, its whole head must follow in time.
                self.idle = head_started is None
                if head_started is None:
                    deadline = trio.current_time() + options.idle_timeout
                else:
                    deadline = head_started + options.header_timeout
                with trio.move_on_at(deadline) as scope:
                    data = await self._receive()
                if scope.cancelled_caught:
                    if not self.idle:
                        log.info(
                            "%s: request head incomplete after %ss, closing",
                            self.peer,
                            options.header_timeout,
                        )
                    return False
                self.idle = False
                fresh = True
                if head_started is None:
                    head_started = trio.current_time()
                core.receive_data(data)
                continue
            self.idle = False
            head_started = None
            if isinstance(event, sp.Request):
                if not fresh:
                    # Pipelined: let other connections run between requests.
                    await trio.lowlevel.checkpoint()
                fresh = False
                self._body_done = self._rejected = False
                if await self._answer(event.env):
                    return True
            elif isinstance(event, sp.Rejected):
                access_log.info('%s - "-" %d (%s)', self.peer, event.status, event.reason)

    async def body_chunk(self) -> bytes:
        """The next piece of the request body; ``b""`` at its end."""
        core = self.core
        if not self._body_done:
            await self._flush()  # a 100 Continue, if the client waits for it
        while not self._body_done:
            event = core.next_event()
            if event is None:
                if core.finished:
                    self._body_done = True
                else:
                    # A body that stops coming would hold the connection
                    # forever (slowloris on the body): bound each wait.
                    timeout = self.server.options.header_timeout
                    with trio.move_on_after(timeout) as scope:
                        data = await self._receive()
                    if scope.cancelled_caught:
                        log.info("%s: request body stalled for %ss, closing", self.peer, timeout)
                        raise trio.BrokenResourceError("request body stalled")
                    core.receive_data(data)
            elif isinstance(event, sp.Body):
                return event.data
            elif isinstance(event, sp.EndOfRequest):
                self._body_done = True
            elif isinstance(event, sp.Rejected):
                # 413 (or 400) is queued; whatever the app answers is dropped.
                access_log.info('%s - "-" %d (%s)', self.peer, event.status, event.reason)
                self._body_done = self._rejected = True
        return b""

    async def _discard_body(self) -> None:
        while await self.body_chunk():
            pass

    async def _answer(self, env: dict[str, Any]) -> bool:
        """Call the app and send its answer; True if the connection upgraded."""
        server = self.server
        if server.interface == "wsgi":
            wsgi_input: Any = BodyReader(self.body_chunk)
        else:
            chunks = []
            while chunk := await self.body_chunk():
                chunks.append(chunk)
            wsgi_input = io.BytesIO(b"".join(chunks)) if chunks else EMPTY_INPUT
        finish_environ(env, wsgi_input, server.environ)
        if self._rejected:
            return False
        request_line = f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"
        origins = server.options.allow_origins
        origin = env.get("HTTP_ORIGIN")
        if (
            env["rack.upgrade?"]
            and origins is not None
            and origin is not None
            and origin not in origins
        ):
            self.core.respond(403, [("content-type", "text/plain")], b"Origin not allowed\n")
            access_log.info('%s - "%s" 403 Forbidden (origin)', self.peer, request_line)
            return False
        try:
            target = server.dispatch(env)
            status, headers, result_body = normalize(
                await call(target, env, limiter=server.limiter, slow=server.options.slow_callback)
            )
            # What the app did not read must be consumed before the answer
            # ends, to find the next request (the core bounds it with
            # max_body_size; past that the 413 replaces the app's answer).
            await self._discard_body()
            if self._rejected:
                await close_body(result_body)
                return False
            handler = env.get("rack.upgrade")
            upgrading = handler is not None and env["rack.upgrade?"] is not None and status < 300
            if not upgrading and not is_body(result_body):
                # Found now, a 500 can still be sent; once the head is out,
                # all that is left is to cut the connection.
                raise AppError(f"response body {result_body!r} is not bytes, str or iterable")
            fixed = None if upgrading else fixed_body(result_body)
            if fixed is not None:
                if status in NO_BODY or 100 <= status < 200:
                    fixed = b""
                else:
                    # HEAD gets the header fields GET would (RFC 9110 9.3.2):
                    # without a length, h11 would frame it as chunked.
                    head = env["REQUEST_METHOD"] == "HEAD"
                    headers = with_length(headers, len(fixed), head=head)
            kind = self.core.start_response(status, headers, upgrade=handler is not None)
        except Exception:
            log.exception("error in app for %s", request_line)
            self._respond_error()
            access_log.info('%s - "%s" 500 Internal Server Error', self.peer, request_line)
            return False
        if kind is not None:
            await close_body(result_body)
            self.handler = handler
            self.client = Client(self, env, kind)
            sent = 101 if kind == "websocket" else 200
            access_log.info('%s - "%s" %d %s open', self.peer, request_line, sent, kind)
            return True
        await self._send_body(result_body, fixed, request_line)
        access_log.info('%s - "%s" %d %s', self.peer, request_line, status, _phrase(status))
        return False

    def _respond_error(self) -> None:
        headers = [("content-type", "text/plain; charset=utf-8"), ("connection", "close")]
        # If a response had already started, all we can do is close.
        with contextlib.suppress(ValueError, RuntimeError):
            self.core.respond(500, headers, _ERROR_BODY)

    async def _send_body(self, body: Any, fixed: bytes | None, request_line: str) -> None:
        core = self.core
        if fixed is not None:
            core.send_body(fixed)
            core.end_response()
            return
        try:
            # _answer checked it is one or the other (is_body).
            limiter = self.server.limiter
            if isinstance(body, AsyncIterable):
                async for chunk in body:
                    await self._send_chunk(chunk)
            elif limiter is None:
                for chunk in body:
                    await self._send_chunk(chunk)
            else:
                # With threads, a plain iterable's rows may take time (a
                # database cursor): each next() runs in the pool, as the app.
                rows = iter(body)
                while (chunk := await in_thread(next, rows, _END, limiter=limiter)) is not _END:
                    await self._send_chunk(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception:
            log.exception("error in response body for %s", request_line)
            # The head is out: the only honest signal left is to close.
            raise trio.BrokenResourceError("response body failed") from None
        finally:
            await close_body(body, self.server.limiter)
        core.end_response()

    async def _send_chunk(self, chunk: Any) -> None:
        self.core.send_body(as_bytes(chunk))
        await self._flush()
        await trio.lowlevel.checkpoint()  # a send may not have been one

    # -- push ---------------------------------------------------------------

    async def _serve_push(self) -> None:
        server = self.server
        self._opened_at = trio.current_time()
        options = server.options
        interval = (
            options.ping_interval if self.core.protocol == "websocket" else options.sse_keepalive
        )
        self._next_keepalive = self._opened_at + interval
        server.push_connections.add(self)
        self._pushing = True
        try:
            self._queue_callback("on_open", ())
            if server.stopping:
                # Upgraded while a graceful stop was under way (the app was
                # still deciding when it began): shut it down too, rather
                # than leave it open until the drain times out.
                self.shutdown()
            core = self.core
            while not self._over:
                event = core.next_event()
                if event is None:
                    if core.pending_bytes or not core.open:
                        # Answers to what was read (callbacks' writes, pongs,
                        # a close frame): once per read, not per message.
                        self.push_out()
                    if core.finished:
                        return
                    # Stop reading while callbacks pile up, or while our
                    # own answers do (pongs to a ping flood from a peer
                    # that does not read are not messages, so no queue
                    # bound refuses them).
                    while (
                        len(self._callbacks) > _MAX_QUEUED_CALLBACKS
                        or self._inbound_bytes > _MAX_QUEUED_INBOUND_BYTES
                        or core.pending_bytes > core.config.max_queue_bytes
                    ) and not self._over:
                        await self._park()
                    if self._over:
                        return  # the socket must not be waited for again
                    core.receive_data(await self._receive())
                elif isinstance(event, sp.Message):
                    self._messages_in += 1
                    if not self._dispatching and self._plain("on_message"):
                        await self._inline_callback("on_message", (event.data,))
                    else:
                        self._queue_callback("on_message", (event.data,))
                elif isinstance(event, sp.Pong):
                    self._pong_deadline = _NEVER
                    self._ping_end = 0
        finally:
            # As a nursery would: the helpers end first (when cancelled,
            # they are too), then the socket may close.
            with trio.CancelScope(shield=True):
                while self._helpers:
                    await self._park()
            self._pushing = False
            server.push_connections.discard(self)
            self._leave_pubsub()
            assert self.client is not None
            access_log.info(
                "%s - %s %s closed after %.1fs, %d in, %d out",
                self.peer,
                self.client.protocol,
                self.client.env.get("PATH_INFO", ""),
                trio.current_time() - self._opened_at,
                self._messages_in,
                self._messages_out,
            )

    async def _write(self) -> None:
        """Send until nothing is queued (then end, the connection idle), or
        until the connection is over (then end it)."""
        over = True
        try:
            assert self._writer_scope is not None
            # tick() cancels this scope to abort a connection past a deadline.
            with self._writer_scope:
                over = await self._write_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._writer_scope = None
            if over:
                self.end()

    async def _write_all(self) -> bool:
        core = self.core
        while True:
            if self.cursors:
                pull(self, PULL_BYTES)
            data = core.data_to_send()
            if not data:
                break
            if not await self._send(data):
                log.warning(
                    "%s: no write progress for %ss, aborting",
                    self.peer,
                    self.server.options.write_timeout,
                )
                return True
        if core.finished:
            return True
        if core.open:
            self._cursors_idle()
        return False

    def tick(self, now: float) -> None:
        """Called by the server's timer: queue a keepalive when one is due,
        and abort a connection past its pong or close deadline, whatever its
        writer is doing (a send stuck on a peer that does not read included)."""
        if self._over:
            return
        options = self.server.options
        if now >= self._pong_deadline:
            reason = f"no pong {options.pong_timeout}s after a ping"
        elif now >= self._close_deadline:
            reason = f"close not completed within {options.close_timeout}s"
        else:
            if self.core.open and now >= self._next_keepalive:
                self._keepalive(now)
                self.wake()
            return
        log.warning("%s: %s, aborting", self.peer, reason)
        if self._writer_scope is not None:
            self._writer_scope.cancel()  # the writer ends the connection
        else:
            self.end()

    def _keepalive(self, now: float) -> None:
        options = self.server.options
        self.core.send_keepalive()
        if self.core.protocol == "websocket":
            self._next_keepalive = now + options.ping_interval
            if self._pong_deadline == _NEVER:
                # A peer that neither answers nor reads for pong_timeout is
                # gone; one that reads what was queued before the ping, however
                # slowly, gets pong_timeout from when the ping is out (_sent).
                self._pong_deadline = now + options.pong_timeout
                self._ping_end = self.core.bytes_queued
        else:
            self._next_keepalive = now + options.sse_keepalive

    def end(self) -> None:
        """The transport is done: no more writes, stop reading, on_close last."""
        if self._over:
            return
        self._over = True
        # Writes from now on return False, and client.open is False, even
        # when it ended by a timeout rather than a close.
        self.core.abort()
        self._stop_reading()
        # Out of pub/sub before on_close runs: nothing is delivered to it any
        # more (_serve_push also does this, for a cancelled one).
        self._leave_pubsub()
        self._queue_callback("on_close", ())

    def _unpark(self) -> None:
        if self._lot is not None:
            self._lot.unpark_all()

    async def _park(self) -> None:
        """Until :meth:`_unpark` (the caller checks what it waits for)."""
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()

    def _stop_reading(self) -> None:
        """Wake the reader to end: a wait for the socket ends as if it had
        closed, a wait for callbacks to drain ends too (without a cancel
        scope of the reader's own: it would cost every connection one)."""
        trio.lowlevel.notify_closing(self.socket)
        self._unpark()

    def _queue_callback(self, name: str, args: tuple[Any, ...]) -> None:
        if self._close_queued:
            return  # nothing runs after on_close
        if name in _SKIPPABLE and getattr(self.handler, name, None) is None:
            return  # a callback the handler lacks: no task to start for it
        if name == "on_close":
            self._close_queued = True
        elif name == "on_message":
            self._inbound_bytes += len(args[0])
        self._callbacks.append((name, args))
        if not self._dispatching:
            self._start_dispatcher()

    def _start_dispatcher(self) -> None:
        # Once the connection is over, run() runs on_close.
        self._dispatching = self._start_helper(self._dispatch)

    async def _dispatch(self) -> None:
        """Run queued callbacks one at a time, in order; end when none is left."""
        callbacks = self._callbacks
        try:
            while callbacks:
                name, args = callbacks.pop(0)
                if name == "on_message":
                    self._inbound_bytes -= len(args[0])
                self._unpark()
                await self._run_callback(name, args)
                if name == "on_close":
                    return
                if name == "on_shutdown":
                    self.close(sp.GOING_AWAY, "server shutting down")
        finally:
            self._dispatching = False

    def _plain(self, name: str) -> bool:
        """Whether callback ``name`` runs on the event loop as a plain call."""
        return self.server.limiter is None and not inspect.iscoroutinefunction(
            getattr(self.handler, name, None)
        )

    async def _inline_callback(self, name: str, args: tuple[Any, ...]) -> None:
        """Run a plain callback here, in the reader, with no task switch: only
        when no other callback is queued or running, so the order holds."""
        self._dispatching = self._inline = True
        try:
            await self._run_callback(name, args)
        finally:
            self._dispatching = self._inline = False
            if self._callbacks:
                self._start_dispatcher()

    async def _run_callback(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "on_close":
            if not self._close_called:
                self._close_called = True
                await self._run_on_close()
            return
        fn = getattr(self.handler, name, None)
        if fn is None:
            return
        if self.server.limiter is not None and not inspect.iscoroutinefunction(fn):
            fn = self._marking_thread(fn)
        try:
            await call(
                fn,
                self.client,
                *args,
                limiter=self.server.limiter,
                slow=self.server.options.slow_callback,
            )
        except Exception:
            log.exception("error in %s.%s", type(self.handler).__name__, name)
            self.close(sp.INTERNAL_ERROR, "internal error")

    def _marking_thread(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, noting the worker thread it runs in as the callback's."""

        def run(*args: Any) -> Any:
            self.callback_thread = threading.get_ident()
            try:
                return fn(*args)
            finally:
                self.callback_thread = 0

        return run

    async def _run_on_close(self) -> None:
        """``on_close``, exactly once: shielded, so the server's cancellation
        at the end of a shutdown does not cut it short, and given until
        ``close_timeout`` after the drain's deadline (see Server.closing). A
        plain one that has no worker thread by then (they are busy) runs
        here, on the event loop, instead."""
        fn = getattr(self.handler, "on_close", None)
        if fn is None:
            return
        options = self.server.options
        limiter = self.server.limiter
        threaded = limiter is not None and not inspect.iscoroutinefunction(fn)
        # Whoever takes it runs on_close: the worker thread, or this task
        # if the thread has not started it by the deadline.
        claim = threading.Lock()

        def claimed(client: Client) -> Any:
            return fn(client) if claim.acquire(blocking=False) else None

        server = self.server
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = server.close_deadline
                server.closing.add(scope)
                try:
                    await call(
                        claimed if threaded else fn,
                        self.client,
                        limiter=limiter,
                        slow=options.slow_callback,
                    )
                finally:
                    server.closing.discard(scope)
            if scope.cancelled_caught:
                if threaded and claim.acquire(blocking=False):
                    log.warning(
                        "%s: no worker thread free for on_close %ss after the drain;"
                        " running it on the event loop",
                        self.peer,
                        options.close_timeout,
                    )
                    await call(fn, self.client, limiter=None, slow=options.slow_callback)
                else:
                    log.warning(
                        "%s: on_close still running %ss after the drain; no longer waited for",
                        self.peer,
                        options.close_timeout,
                    )
        except Exception:
            log.exception("error in %s.on_close", type(self.handler).__name__)

    def drain_expired(self) -> bool:
        """The graceful shutdown's drain is over and this connection is still
        here: its close frame goes out now if the socket takes it (the server
        cancels it next). True if its ``on_shutdown`` never got to run."""
        skipped = any(name == "on_shutdown" for name, _ in self._callbacks)
        if self.client is not None and self.core.open:
            self.close(sp.GOING_AWAY, "server shutting down")
            self.push_out()
        return skipped

    # -- used by Client -------------------------------------------------------

    def write(
        self,
        message: str | bytes,
        event: str | None | sp.DefaultEvent,
        id: str | None,
        retry: int | None,
    ) -> bool:
        if self.cursors:
            pull(self)  # what was published before goes first
        was_open = self.core.open
        if self.core.send_message(message, event=event, id=id, retry=retry):
            return self._queued()
        return self._refused(was_open)

    def write_prepared(self, prepared: sp.Prepared, burst: bool = False) -> bool:
        """A write from another thread; ``burst`` if it is the thread running
        this connection's callback: one callback's writes are the app's burst,
        as they are on the event loop, where no send comes between them."""
        if self.cursors:
            pull(self)
        was_open = self.core.open
        if self.core.send_prepared(prepared, burst=burst):
            return self._queued()
        return self._refused(was_open)

    def queue_published(self, batch: list[sp.Prepared]) -> None:
        """Queue messages taken from pub/sub topics (see _pubsub.pull)."""
        core = self.core
        was_open = core.open
        send = core.send_prepared
        queued = 0
        for prepared in batch:
            try:
                if send(prepared):
                    queued += 1
                elif not core.open:
                    break
            except ValueError:
                # Bytes that are not UTF-8 cannot be an SSE event.
                log.warning("%s: a published message cannot be sent as SSE; skipped", self.peer)
        self._messages_out += queued
        if not core.open:
            self._refused(was_open)
        self.wake()

    def _queued(self) -> bool:
        self._messages_out += 1
        if not self._inline:  # else the reader sends it once the callback returns
            self.wake()
        return True

    def _refused(self, was_open: bool) -> bool:
        if was_open and not self.core.open:
            # The queue bound closed it (overflow policy 'close').
            log.warning(
                "%s: send queue full (%d messages, %d bytes pending), closing",
                self.peer,
                self.core.pending,
                self.core.pending_bytes,
            )
            self._close_deadline = trio.current_time() + self.server.options.close_timeout
            self._leave_pubsub()
            self.wake()
        return False

    def close(self, code: int = sp.NORMAL, reason: str = "") -> None:
        if self.cursors and self.core.open:
            pull(self)  # what was published before the close goes out
        if self.core.open:
            self.core.close(code, reason)
            self._close_deadline = trio.current_time() + self.server.options.close_timeout
            self._leave_pubsub()
        self.wake()

    def _leave_pubsub(self) -> None:
        """Closing or ended: nothing published from now on can be sent, so
        the connection leaves its subscriptions (and holds nothing in the
        logs). Its cursors are its subscriptions."""
        if self.cursors:
            assert self.client is not None
            self.server.pubsub.unsubscribe_all(self.client)

    def shutdown(self) -> None:
        """Graceful server stop: on_shutdown, then close 1001."""
        self._queue_callback("on_shutdown", ())
