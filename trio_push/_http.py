"""The HTTP/1.1 request loop of one connection, until it ends or upgrades.

One task reads, feeds the bytes to the protocol core, calls the app for each
request and sends its answer, in order (so pipelined requests are answered
in order). It bounds the wait between requests (``idle_timeout``), for a
request head and for each piece of a body (``header_timeout``). When the app
accepts a push upgrade, :meth:`RequestLoop.serve` returns what the push
session needs: the kind, the handler and the env. While the task waits for
a request, the read poller answers one that needs no waiting itself
(:meth:`RequestLoop.ready`), and leaves the task the rest.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

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
from ._calls import call, call_plain, in_thread, is_async, is_awaitable
from ._context import Context
from ._transport import Transport
from ._wsgi import EMPTY_INPUT, BodyReader, finish_environ

log = logging.getLogger("trio_push")
access_log = logging.getLogger("trio_push.access")

_ERROR_BODY = b"Internal Server Error\n"
_END = object()
_NEVER = float("inf")

#: What an upgrade hands the push session: its kind (``'websocket'`` or
#: ``'sse'``), the app's handler, and the request's env.
Upgrade = tuple[str, Any, dict[str, Any]]


#: The reason phrase of each status HTTP names.
PHRASES = {status.value: status.phrase for status in HTTPStatus}


def request_line(env: dict[str, Any]) -> str:
    """The request as an access log line names it."""
    return f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"


class RequestLoop:
    """Answers the requests of one connection (see the module)."""

    __slots__ = (
        "_ctx",
        "_transport",
        "core",
        "idle",
        "deadline",
        "_expired",
        "_body_done",
        "_rejected",
        "streaming",
        "_head_started",
        "_answered",
        "_held",
        "_rest",
    )

    def __init__(self, ctx: Context, transport: Transport, core: sp.ServerConnection) -> None:
        self._ctx = ctx
        self._transport = transport
        self.core = core
        #: True while waiting for a request after answering one (the
        #: server's graceful stop ends such a connection at once; one that
        #: was just opened gets its first request answered).
        self.idle = False
        #: While waiting for a request's bytes, when the wait must end
        #: (``idle_timeout``, ``header_timeout``); the server's reaper ends
        #: it (:meth:`expire`) once passed.
        self.deadline = _NEVER
        self._expired = False
        self._body_done = False
        self._rejected = False
        #: What ends the response under way at a graceful stop (an ASGI
        #: app's streamed response), or None.
        self.streaming: Any = None
        # When the head of the request under way began to come (None:
        # between requests), and whether a request has been answered.
        self._head_started: float | None = None
        self._answered = False
        # Left by ready() for the loop's task: an event it did not handle,
        # and the rest of an answer it began.
        self._held: sp.Event | None = None
        self._rest: Coroutine[Any, Any, Upgrade | None] | None = None

    async def serve(self, started: float | None = None) -> Upgrade | None:
        """Answer requests until the connection ends (None) or upgrades;
        ``started``: when the first bytes (already fed to the core) came."""
        core = self.core
        ctx = self._ctx
        self._head_started = started
        fresh = started is not None
        while True:
            rest = self._rest
            if rest is not None:
                self._rest = None
                upgrade = await rest
                if upgrade is not None:
                    return upgrade
                fresh = False
                continue
            event = self._held
            if event is None:
                event = core.next_event()
            else:
                self._held = None
            if event is None:
                await self._flush()
                if core.finished:
                    await self._transport.linger()
                    return None
                if ctx.stopping and self._answered:
                    return None
                self._wait_from(ctx.now())
                try:
                    data = await self._read()
                finally:
                    # (Also when cancelled: the reaper must not end a
                    # connection that is closing.)
                    self.deadline = _NEVER
                expired, self._expired = self._expired, False
                if expired and not data:
                    if not self.idle:
                        log.info(
                            "%s: request head incomplete after %ss, closing",
                            self._transport.peer,
                            ctx.options.header_timeout,
                        )
                    return None
                if data is None:
                    continue  # ready() read it
                self.idle = False
                fresh = True
                if self._head_started is None:
                    self._head_started = ctx.now()
                core.receive_data(data)
                continue
            self.idle = False
            self._head_started = None
            if isinstance(event, sp.Request):
                if not fresh:
                    # Pipelined: let other connections run between requests.
                    await trio.lowlevel.checkpoint()
                fresh = False
                self._body_done = self._rejected = False
                upgrade = await self._answer(event.env)
                if upgrade is not None:
                    return upgrade
                self._answered = True
            elif isinstance(event, sp.Rejected):
                ctx.counters.response(event.status)
                access_log.info(
                    '%s - "-" %d (%s)', self._transport.peer, event.status, event.reason
                )

    def _wait_from(self, now: float) -> None:
        """Before waiting for bytes: between requests the idle bound
        applies; once a request's first bytes are in, its whole head must
        follow in time."""
        head_started = self._head_started
        self.idle = head_started is None and self._answered
        options = self._ctx.options
        if head_started is None:
            self.deadline = now + options.idle_timeout
        else:
            self.deadline = head_started + options.header_timeout

    async def _read(self) -> bytes | None:
        """The next bytes from the peer (``b""`` at its end, if the
        connection broke, or once :meth:`expire` ended the wait), or None
        if none came after all (the read poller's :meth:`ready` read them)."""
        transport = self._transport
        if not transport.plain:
            return await transport.receive()
        try:
            await transport.readable()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
        return transport.read_now()

    def ready(self) -> bool:
        """Bytes came while the loop waits for a request: the read poller
        asks this first, before it wakes the loop's task (as
        ``Connection.ready`` for a push connection). The bytes are read, and
        a request that needs no waiting (no body, not a push request, a plain
        app on the event loop, neither WSGI nor ASGI: most keep-alive GETs)
        is answered here, as the loop would, and sent if the socket takes it
        all. Whether the loop may go on waiting: False if its task has more
        to do (anything else that came, which it is left, or the rest of
        an answer begun here, a send that waits, the connection's end)."""
        transport = self._transport
        data = transport.read_now()
        if not data:
            return data is None  # (the peer's end: the loop reads it itself)
        ctx = self._ctx
        core = self.core
        self.idle = False
        if self._head_started is None:
            self._head_started = ctx.now()
        core.receive_data(data)
        answered = False
        while (event := core.next_event()) is not None:
            target = None if answered else self._inline_target(event)
            if target is None:
                self._held = event
                return False
            answered = True
            self._head_started = None
            self._body_done = self._rejected = False
            self._answered = True
            assert isinstance(event, sp.Request)
            if not self._answer_now(event.env, target):
                return False
        data = core.data_to_send()
        if data:
            n = transport.send_now(data)
            if n:
                core.sent(n)
            if n < len(data):
                core.refused()
                return False
        if core.finished or (ctx.stopping and self._answered):
            return False
        self._wait_from(ctx.now())
        return True

    def _inline_target(self, event: sp.Event) -> Callable[..., Any] | None:
        """What :meth:`ready` calls for ``event`` (a request it may
        answer itself), or None."""
        ctx = self._ctx
        if not isinstance(event, sp.Request) or ctx.asgi is not None or ctx.wsgi:
            return None
        env = event.env
        if ctx.limiter is not None or env["rack.upgrade?"] is not None:
            return None
        if "HTTP_TRANSFER_ENCODING" in env or env.get("CONTENT_LENGTH", "0") != "0":
            return None
        target = ctx.dispatch(env)
        return None if is_async(target) else target

    def expire(self) -> None:
        """End the wait for a request's bytes: its :attr:`deadline` passed.
        (One timer for every connection, ``Server._reap``, instead of a cancel
        scope around every wait: that cost a fifth of a keep-alive request.)"""
        self._expired = True
        self._transport.stop_reading()

    async def _flush(self) -> None:
        """Send what the core has queued."""
        data = self.core.data_to_send()
        if data and not await self._transport.send(data, self.core):
            raise trio.BrokenResourceError("write timeout")

    async def body_chunk(self) -> bytes:
        """The next piece of the request body; ``b""`` at its end."""
        if not self._body_done:
            await self._flush()  # a 100 Continue, if the client waits for it
        return await self.next_body_chunk()

    async def next_body_chunk(self) -> bytes:
        """:meth:`body_chunk` without sending anything (an ASGI app's body is
        read by a task of its own while another one sends the response)."""
        while (chunk := self._body_had()) is None:
            # A body that stops coming would hold the connection forever
            # (slowloris on the body): bound each wait.
            timeout = self._ctx.options.header_timeout
            with trio.move_on_after(timeout) as scope:
                await self._receive()
            if scope.cancelled_caught:
                log.info("%s: request body stalled for %ss, closing", self._transport.peer, timeout)
                raise trio.BrokenResourceError("request body stalled")
        return chunk

    def _body_had(self) -> bytes | None:
        """The next piece of the body from what has come (``b""`` at its
        end), or None if more bytes are needed first."""
        core = self.core
        while not self._body_done:
            event = core.next_event()
            if event is None:
                if not core.finished:
                    return None
                self._body_done = True
            elif isinstance(event, sp.Body):
                return event.data
            elif isinstance(event, sp.EndOfRequest):
                self._body_done = True
            elif isinstance(event, sp.Rejected):
                # 413 (or 400) is queued; whatever the app answers is dropped.
                self._ctx.counters.response(event.status)
                access_log.info(
                    '%s - "-" %d (%s)', self._transport.peer, event.status, event.reason
                )
                self._body_done = self._rejected = True
        return b""

    async def _receive(self) -> None:
        """Feed the core the next bytes of the body (an HTTP/2 stream waits
        for its connection to do it instead)."""
        self.core.receive_data(await self._transport.receive())

    async def until_gone(self) -> None:
        """Until the client has gone (its end, or a broken connection), while
        the app answers a request it has read. What it sends meanwhile (a
        pipelined request) is kept for the core, and then nothing more is
        watched."""
        data = await self._transport.receive()
        self.core.receive_data(data)
        if data:
            await trio.sleep_forever()

    async def _discard_body(self) -> None:
        while await self.body_chunk():
            pass

    async def _answer(self, env: dict[str, Any]) -> Upgrade | None:
        """Call the app and send its answer; what the push session needs if
        the connection upgraded."""
        ctx = self._ctx
        asgi = ctx.asgi
        if asgi is not None and asgi.serves(ctx.dispatch(env)):
            return await asgi.answer(self, env)
        started = ctx.now()
        if ctx.wsgi:
            wsgi_input: Any = BodyReader(self.body_chunk)
        elif (first := self._body_had()) == b"":
            wsgi_input = EMPTY_INPUT  # no body (most requests), nothing to wait for
        else:
            chunks = [first] if first else []
            while chunk := await self.body_chunk():
                chunks.append(chunk)
            wsgi_input = io.BytesIO(b"".join(chunks)) if chunks else EMPTY_INPUT
        finish_environ(env, wsgi_input, ctx.environ, ctx.proxy)
        if self._rejected:
            return None
        if self.origin_refused(env, started):
            return None
        try:
            target = ctx.dispatch(env)
            slow = ctx.options.slow_callback
            if ctx.limiter is None and not is_async(target):
                result = call_plain(target, env, slow=slow)  # (no coroutine to make)
            else:
                result = await call(target, env, limiter=ctx.limiter, slow=slow)
        except Exception:
            self._app_failed(env, started)
            return None
        return await self._reply(env, started, result)

    def _answer_now(self, env: dict[str, Any], target: Callable[..., Any]) -> bool:
        """:meth:`_answer`, for :meth:`ready`, of a request it may answer:
        True once answered; False if the rest needs the loop's task (the app
        returned an awaitable, or a body to stream), left to it."""
        ctx = self._ctx
        started = ctx.now()
        self._body_had()  # its end: b""
        finish_environ(env, EMPTY_INPUT, ctx.environ, ctx.proxy)
        try:
            result = call_plain(target, env, slow=ctx.options.slow_callback)
            if is_awaitable(result):
                self._rest = self._reply(env, started, result)
                return False
            status, headers, result_body = normalize(result)
            kind, fixed, handler = self._respond(env, status, headers, result_body)
        except Exception:
            self._app_failed(env, started)
            return True
        if kind is not None or fixed is None:
            self._rest = self._after_head(env, started, status, kind, handler, result_body)
            return False
        self._done(env, status, started)
        return True

    async def _reply(self, env: dict[str, Any], started: float, result: Any) -> Upgrade | None:
        """The rest of :meth:`_answer` once the app returned ``result``."""
        try:
            if is_awaitable(result):
                result = await result
            status, headers, result_body = normalize(result)
            # What the app did not read must be consumed before the answer
            # ends, to find the next request (the core bounds it with
            # max_body_size; past that the 413 replaces the app's answer).
            if not self._body_done:
                await self._discard_body()
            if self._rejected:
                await close_body(result_body)
                return None
            kind, fixed, handler = self._respond(env, status, headers, result_body)
        except Exception:
            self._app_failed(env, started)
            return None
        if kind is not None or fixed is None:
            return await self._after_head(env, started, status, kind, handler, result_body)
        self._done(env, status, started)
        return None

    def _respond(
        self, env: dict[str, Any], status: int, headers: Any, result_body: Any
    ) -> tuple[str | None, bytes | None, Any]:
        """Queue the answer's head (and a fixed body, whole): the push kind
        if it accepts an upgrade, the fixed body, and the app's handler."""
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
            self.core.answer(status, headers, fixed)
            return None, fixed, handler
        return self.core.start_response(status, headers, upgrade=handler is not None), None, handler

    async def _after_head(
        self,
        env: dict[str, Any],
        started: float,
        status: int,
        kind: str | None,
        handler: Any,
        result_body: Any,
    ) -> Upgrade | None:
        """What is left once the head is queued: an upgrade's end of the
        HTTP phase, or a streamed body."""
        if kind is not None:
            await close_body(result_body)
            sent = 101 if kind == "websocket" else 200
            self._ctx.counters.response(sent, started)
            self._access(env, sent, f"{kind} open")
            return kind, handler, env
        await self._send_body(result_body, env)
        self._done(env, status, started)
        return None

    def _app_failed(self, env: dict[str, Any], started: float) -> None:
        log.exception("error in app for %s", request_line(env))
        self._respond_error()
        self._ctx.counters.response(500, started)
        self._access(env, 500, "Internal Server Error")

    def _done(self, env: dict[str, Any], status: int, started: float) -> None:
        self._ctx.counters.response(status, started)
        self._access(env, status, PHRASES.get(status, ""))

    def _access(self, env: dict[str, Any], status: int, what: str) -> None:
        """The access log's line for a request answered ``status``."""
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s - "%s" %d %s', self._transport.peer, request_line(env), status, what
            )

    def origin_refused(self, env: dict[str, Any], started: float) -> bool:
        """Whether a push request came from an Origin ``allow_origins`` does
        not list: it is answered 403."""
        ctx = self._ctx
        origins = ctx.options.allow_origins
        origin = env.get("HTTP_ORIGIN")
        if (
            env["rack.upgrade?"]
            and origins is not None
            and origin is not None
            and origin not in origins
        ):
            self.core.respond(403, [("content-type", "text/plain")], b"Origin not allowed\n")
            ctx.counters.response(403, started)
            self._access(env, 403, "Forbidden (origin)")
            return True
        return False

    def _respond_error(self) -> None:
        headers = [("content-type", "text/plain; charset=utf-8"), ("connection", "close")]
        # If a response had already started, all we can do is close.
        with contextlib.suppress(ValueError, RuntimeError):
            self.core.respond(500, headers, _ERROR_BODY)

    async def _send_body(self, body: Any, env: dict[str, Any]) -> None:
        """Send a streamed body, as it is produced."""
        core = self.core
        limiter = self._ctx.limiter
        try:
            # _answer checked it is one or the other (is_body).
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
            log.exception("error in response body for %s", request_line(env))
            # The head is out: the only honest signal left is to close.
            raise trio.BrokenResourceError("response body failed") from None
        finally:
            await close_body(body, limiter)
        core.end_response()

    async def _send_chunk(self, chunk: Any) -> None:
        self.core.send_body(as_bytes(chunk))
        await self._flush()
        await trio.lowlevel.checkpoint()  # a send may not have been one
