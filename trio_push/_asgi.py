"""ASGI 3 apps: their scopes, and the network side of ``receive``/``send``.

The HTTP/1.1 request loop (and an HTTP/2 stream's, which reuses it) hands a
request to :meth:`ASGIAdapter.answer` instead of calling a push-style app.
The app runs on its app loop (``_asgi_app.py``); what it sends arrives here
as items, in order, and becomes the core's response, through the same
bounds, timeouts and access log as any response:

- an ``http`` scope is an :class:`HttpExchange`: the head waits for the
  first body message (a body sent whole gets a ``Content-Length``, and an
  app that fails before it gets a 500), each body piece is flushed with the
  write timeout, the request body is read as the app asks for it, and
  ``http.disconnect`` comes when the client goes or the response is done.
- a ``websocket`` scope is a :class:`WebSocketExchange` until the app
  accepts (or denies: a 403, or its own response through
  ``websocket.http.response``); once accepted, the same object is the push
  handler of an ordinary push session, so the WebSocket gets the session's
  keepalives, pong and close deadlines, write timeout and graceful shutdown
  (1001). What the app sends goes to the session's queue; ``send`` waits
  while the queue holds more than the server's queue bounds.
- the ``trio_push.upgrade`` extension: on a push request (WebSocket or SSE)
  the app sends ``{"type": "trio_push.upgrade", "handler": handler}`` and
  the connection becomes a push session of that handler, with pub/sub, as
  a push-style app's (docs/asgi.md).
- ``lifespan``: :class:`Lifespan`, before the server listens and after the
  connections are gone.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import trio

import sansio_push as sp

from ._app import NO_BODY, with_length
from ._asgi_app import (
    ACCEPT,
    BODY,
    CLOSE,
    DONE,
    HTTP_DISCONNECT,
    SEND,
    START,
    UPGRADE,
    AppChannel,
    AppLoop,
    ClientDisconnected,
    app_loop,
    run_app,
)
from ._context import Context
from ._http import PHRASES, RequestLoop, Upgrade, request_line
from ._wsgi import EMPTY_INPUT, finish_environ

log = logging.getLogger("trio_push")
access_log = logging.getLogger("trio_push.access")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

# The item the body's reader hands run() when the client has gone, and
# the one a graceful stop hands it (see shutdown).
_GONE = "gone"
_STOP = "stop"

# Messages the app has not yet taken from a WebSocket, past which reading
# waits for it (the push session's reader pauses behind them).
INBOUND_WINDOW = 64


class LifespanFailed(OSError):
    """The app answered ``lifespan.startup`` with ``lifespan.startup.failed``:
    the server does not start. (An ``OSError``, as a port in use is: what
    keeps a server from starting comes out of ``serve`` as itself, not
    wrapped in an exception group.)"""


def is_asgi(app: Any) -> bool:
    """True for an ASGI 3 app: an ``async def`` taking ``(scope, receive,
    send)``, or an object whose ``__call__`` is one (FastAPI, Starlette,
    Django's ASGIHandler). An object with a ``call(env)`` method is
    push-style, whatever its ``__call__``."""
    if callable(getattr(app, "call", None)):
        return False
    fn: Any
    if inspect.isfunction(app) or inspect.ismethod(app):
        fn = app
    elif isinstance(app, type):
        return False
    else:
        fn = getattr(app, "__call__", None)  # noqa: B004 - the bound method, for its signature
    if fn is None or not inspect.iscoroutinefunction(fn):
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    return required <= 3 and (len(positional) >= 3 or varargs)


def _headers(env: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request's headers from its environ, lower-case, in the order they
    came (a repeated header comes once, its values joined as RFC 9110 5.3
    allows; see docs/asgi.md)."""
    headers = []
    for key, value in env.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-")
        elif key == "CONTENT_TYPE":
            name = "content-type"
        elif key == "CONTENT_LENGTH":
            name = "content-length"
        else:
            continue
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return headers


def _address(host: str | None, port: str | None) -> list[Any] | None:
    if not host or not port:
        return None
    return [host, int(port)]


class ASGIAdapter:
    """Runs an ASGI app (see the module): ``loop`` is ``'asyncio'`` or
    ``'trio'``, ``root_path`` the prefix a proxy in front of us took off."""

    def __init__(self, app: Any, loop: str = "asyncio", root_path: str = "") -> None:
        self.app = app
        self.app_loop: AppLoop = app_loop(loop)
        self.root_path = root_path.rstrip("/")
        #: The lifespan's state: each request's scope gets a shallow copy.
        self.state: dict[str, Any] = {}
        self.lifespan: Lifespan | None = None

    def __repr__(self) -> str:
        return f"ASGIAdapter({self.app!r}, loop={self.app_loop.name!r})"

    # -- the server's life ---------------------------------------------------------

    async def start(self, ctx: Context, nursery: trio.Nursery) -> None:
        """Start the app loop and run the lifespan's startup; raises
        :class:`LifespanFailed` if the app says it failed."""
        await self.app_loop.start(nursery)
        self.lifespan = Lifespan(self, ctx)
        try:
            await self.lifespan.startup()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.app_loop.stop(0)
            raise

    async def stop(self, timeout: float, grace: float) -> None:
        """The lifespan's shutdown (within ``timeout``), then the app loop's
        end (what still runs gets ``grace`` seconds, then is cancelled)."""
        if self.lifespan is not None:
            await self.lifespan.shutdown(timeout)
        await self.app_loop.stop(grace)

    # -- requests --------------------------------------------------------------------

    def scope(self, env: dict[str, Any], kind: str) -> dict[str, Any]:
        """The ASGI scope of a request, from its environ (proxy headers applied)."""
        raw = env["RAW_URI"].encode("latin-1").partition(b"#")[0]
        raw_path, _, query = raw.partition(b"?")
        if not raw_path.startswith(b"/"):
            # The absolute form (RFC 9112 3.2.2): its path.
            raw_path = b"/" + raw_path.partition(b"//")[2].partition(b"/")[2]
        root = self.root_path
        path = env["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
        scheme = env["wsgi.url_scheme"]
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        protocol = env["SERVER_PROTOCOL"]
        scope = {
            "type": kind,
            "asgi": ASGI_VERSION,
            "http_version": "2" if protocol == "HTTP/2" else protocol[5:],
            "scheme": scheme,
            "path": root + path,
            "raw_path": root.encode("utf-8") + raw_path,
            "query_string": query,
            "root_path": root,
            "headers": _headers(env),
            "client": _address(env.get("REMOTE_ADDR"), env.get("REMOTE_PORT")),
            "server": _address(env.get("SERVER_NAME"), env.get("SERVER_PORT")),
            "state": self.state.copy(),
        }
        extensions: dict[str, Any] = {}
        if kind == "http":
            scope["method"] = env["REQUEST_METHOD"]
        else:
            offered = env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")
            scope["subprotocols"] = [p.strip() for p in offered if p.strip()]
            extensions["websocket.http.response"] = {}
        push = env["rack.upgrade?"]
        if push is not None:
            extensions["trio_push.upgrade"] = {"kind": push}
        scope["extensions"] = extensions
        return scope

    def serves(self, target: Any) -> bool:
        """Whether ``target`` (what the server dispatched a request to) is this app."""
        return target is self

    async def answer(self, loop: RequestLoop, env: dict[str, Any]) -> Upgrade | None:
        """Answer one request (the request loop's ``_answer`` for ASGI)."""
        ctx = loop._ctx
        started = trio.current_time()
        finish_environ(env, EMPTY_INPUT, ctx.environ, ctx.proxy)
        if loop.origin_refused(env, started):
            return None
        kind = "websocket" if env["rack.upgrade?"] == "websocket" else "http"
        exchange_type = WebSocketExchange if kind == "websocket" else HttpExchange
        exchange = exchange_type(self, loop, env, self.scope(env, kind), started, request_line(env))
        return await exchange.run()


class HttpExchange:
    """The network side of one request's scope (see the module)."""

    __slots__ = (
        "_adapter",
        "_loop",
        "_ctx",
        "env",
        "_scope",
        "_started",
        "_request_line",
        "channel",
        "_items",
        "_lot",
        "_reader",
        "_wants",
        "_body_done",
        "_start",
        "_head_sent",
        "_finished",
        "_dead",
        "_complete",
    )

    kind = "http"

    def __init__(
        self,
        adapter: ASGIAdapter,
        loop: RequestLoop,
        env: dict[str, Any],
        scope: dict[str, Any],
        started: float,
        request_line: str,
    ) -> None:
        self._adapter = adapter
        self._loop = loop
        self._ctx = ctx = loop._ctx
        self.env = env
        self._scope = scope
        self._started = started
        self._request_line = request_line
        config = ctx.options.protocol
        extensions = frozenset(scope["extensions"])
        self.channel = AppChannel(
            self.kind,
            self,
            ctx.loop,
            adapter.app_loop,
            config.max_queue_bytes,
            config.max_queue_messages,
            extensions,
        )
        # What the app sent, waiting for run().
        self._items: list[tuple[Any, ...]] = []
        self._lot = trio.lowlevel.ParkingLot()
        # The request body's reader, while it runs: its scope and its end.
        self._reader: tuple[trio.CancelScope, trio.Event] | None = None
        self._wants = 0
        self._body_done = False
        self._start: tuple[Any, ...] | None = None
        self._head_sent = False
        # run() is over: what the app sends from now on is not answered.
        self._finished = False
        # The client has gone (or the core refused the request).
        self._dead = False
        # The response is complete, or the connection upgraded.
        self._complete = False

    # -- from the app (on the server's loop) ------------------------------------------

    def post(self, item: tuple[Any, ...]) -> None:
        if self._finished:
            if item[0] is DONE:
                self._app_ended(item[1])
            return
        self._items.append(item)
        self._lot.unpark_all()

    def want(self) -> None:
        """The app waits in ``receive``."""
        if self._finished:
            self._to_app(self.channel.deliver, HTTP_DISCONNECT)
            return
        self._wants += 1
        if self._reader is None:
            # In the server's connection nursery, not a nursery of the
            # request's own (it would cost every request 30 us); run() waits
            # for it to end before the connection reads again.
            reader = self._reader = (trio.CancelScope(), trio.Event())
            nursery = self._ctx.nursery
            assert nursery is not None
            nursery.start_soon(self._read_in, *reader)

    async def _read_in(self, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                await self._read_for_app()
        except Exception:
            # A bug of ours must cost one request, never the server.
            log.exception("%s: internal error reading a request body", self._loop._transport.peer)
            self._client_gone()
        finally:
            self._reader = None
            done.set()

    def resume(self) -> None:
        """Not used by HTTP: its events are read only when asked for."""

    def _to_app(self, fn: Any, *args: Any) -> None:
        self._adapter.app_loop.to_app(fn, *args)

    # -- the exchange -------------------------------------------------------------------

    async def run(self) -> Upgrade | None:
        loop = self._loop
        # The first piece of the body (a 100 Continue goes out first) is
        # read before the app starts: most requests have it all by then.
        first = await loop.body_chunk()
        if loop._rejected or (not first and loop.core.finished):
            return None  # the core answered (413), or the client has gone
        self._body_done = not first
        self._first_event(first)
        adapter = self._adapter
        adapter.app_loop.spawn(run_app, adapter.app, self._scope, self.channel, self)
        try:
            result = await self._serve()
            self._complete = not self._dead
            return result
        finally:
            self._finished = True
            reader = self._reader
            if reader is not None:
                reader[0].cancel()
                with trio.CancelScope(shield=True):
                    await reader[1].wait()
            loop.streaming = None
            # The app's end may have come while the last piece was sent.
            for item in self._items:
                if item[0] is DONE:
                    self._app_ended(item[1])
            self._items = []
            if not self._complete:
                self._to_app(self.channel.gone, self._gone_event())
            elif self._wants:
                # A receive waits (for the client's end, say): the response
                # is complete, so it gets http.disconnect now.
                self._to_app(self.channel.wake)

    def _gone_event(self) -> dict[str, Any]:
        return HTTP_DISCONNECT

    def _first_event(self, body: bytes) -> None:
        """What ``receive`` gives first (the body's first piece, or b"")."""
        self.channel.deliver({"type": "http.request", "body": body, "more_body": bool(body)})

    async def _serve(self) -> Upgrade | None:
        """Handle what the app sends until the response is complete."""
        while True:
            while not self._items:
                await self._lot.park()
            item = self._items.pop(0)
            kind = item[0]
            if kind is DONE:
                self._app_ended(item[1])
                return await self._app_returned()
            if kind is UPGRADE:
                try:
                    return self._upgrade(item[1], item[2])
                except (sp.LocalProtocolError, TypeError, ValueError) as exc:
                    self._app_error(exc)
                    await self._loop._flush()
                    return None
            if kind is _GONE:  # the client went (see _read_for_app)
                raise trio.BrokenResourceError("the client has gone")
            if kind is _STOP:
                await self._end_streaming()
                return None
            outcome = await self._handle(item)
            if outcome is not None:
                return outcome[0]

    async def _handle(self, item: tuple[Any, ...]) -> tuple[Upgrade | None] | None:
        """One item of the app's; ``(result,)`` once the exchange is over."""
        if item[0] is START:
            self._start = item
            return None
        if item[0] is BODY:
            return (None,) if await self._body(item[1], item[2], item[3]) else None
        return None

    async def _body(self, data: bytes, more: bool, wants_grant: bool) -> bool:
        """Send a piece of the body (the head first); True once it is the last."""
        core = self._loop.core
        if not self._head_sent:
            assert self._start is not None
            status, headers = self._start[1], self._start[2]
            if not more:
                if status in NO_BODY or 100 <= status < 200:
                    data = b""
                else:
                    head = self.env["REQUEST_METHOD"] == "HEAD"
                    try:
                        headers = with_length(headers, len(data), head=head)
                    except sp.LocalProtocolError as exc:
                        return self._app_error(exc)
            try:
                core.start_response(status, headers)
            except (sp.LocalProtocolError, TypeError, ValueError) as exc:
                return self._app_error(exc)
            self._head_sent = True
            if more and self.kind == "http":
                self._loop.streaming = self
                if self._ctx.stopping:
                    self.shutdown()
        core.send_body(data)
        if not more:
            core.end_response()
        await self._loop._flush()
        if wants_grant:
            self._to_app(self.channel.grant)
        if not more:
            self._log(self._start[1] if self._start else 200)
        return not more

    def shutdown(self) -> None:
        """The server stops gracefully while the app streams its response
        (an event stream, say): end it now, as a complete response, and the
        app hears ``http.disconnect`` (its sends raise from now on)."""
        if self._head_sent and not self._finished:
            self._items.insert(0, (_STOP,))
            self._lot.unpark_all()

    async def _end_streaming(self) -> None:
        self._dead = True  # the app is told it has gone
        try:
            self._loop.core.end_response()
        except sp.LocalProtocolError:  # short of its Content-Length: cut it off
            raise trio.BrokenResourceError("response ended at shutdown") from None
        await self._loop._flush()
        self._log(self._start[1] if self._start else 200, " (ended at shutdown)")

    def _app_error(self, exc: BaseException) -> bool:
        """The app sent what HTTP cannot carry: a 500 instead."""
        log.error("invalid response from ASGI app for %s: %s", self._request_line, exc)
        self._internal_error()
        return True

    def _internal_error(self) -> None:
        self._loop._respond_error()
        self._dead = True
        self._log(500)

    def _log(self, status: int, note: str = "") -> None:
        self._ctx.counters.response(status, self._started)
        access_log.info(
            '%s - "%s" %d %s%s',
            self._loop._transport.peer,
            self._request_line,
            status,
            PHRASES.get(status, ""),
            note,
        )

    def _app_ended(self, exc: BaseException | None) -> None:
        """Log what the app raised (not its cancellation at the server's end,
        nor a send to a client that had gone)."""
        if exc is None or not isinstance(exc, Exception):
            return
        if isinstance(exc, ClientDisconnected):
            log.debug("ASGI app for %s: %s", self._request_line, exc)
            return
        self._ctx.counters.callback_errors += 1
        log.error("Exception in ASGI application (%s)", self._request_line, exc_info=exc)

    async def _app_returned(self) -> Upgrade | None:
        """The app ended before the response did."""
        if self._head_sent:
            log.error("ASGI app for %s returned before its response ended", self._request_line)
            raise trio.BrokenResourceError("response incomplete")
        if not self._dead:
            log.error("ASGI app for %s returned without a response", self._request_line)
            self._internal_error()
            await self._loop._flush()
        return None

    def _upgrade(self, handler: Any, headers: list[Any]) -> Upgrade | None:
        """``trio_push.upgrade``: the connection becomes a push session."""
        loop = self._loop
        kind = loop.core.start_response(200, headers, upgrade=True)
        assert kind is not None  # the extension is offered on push requests only
        self._head_sent = True
        sent = 101 if kind == "websocket" else 200
        self._log(sent, f" {kind} open")
        return kind, handler, self.env

    # -- the request body, as the app asks for it ------------------------------------------

    async def _read_for_app(self) -> None:
        """Hand the app the request's next events while it asks for them:
        the body's pieces, then ``http.disconnect`` when the client goes."""
        loop = self._loop
        while self._wants:
            if self._body_done:
                await loop.until_gone()
                self._client_gone()
                return
            try:
                chunk = await loop.next_body_chunk()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""  # a body that stalled past header_timeout: gone
                self._body_done = True
                loop.core.abort()
            if not chunk and (loop._rejected or loop.core.finished):
                self._client_gone()
                return
            self._body_done = not chunk
            self._wants -= 1
            event = {"type": "http.request", "body": chunk, "more_body": bool(chunk)}
            self._to_app(self.channel.deliver, event)

    def _client_gone(self) -> None:
        """The app hears ``http.disconnect``, and its sends raise from now
        on (told in one go: it cannot send before it knows); run() ends."""
        self._dead = True
        self._to_app(self.channel.gone, HTTP_DISCONNECT)
        self._items.append((_GONE,))
        self._lot.unpark_all()


class WebSocketExchange(HttpExchange):
    """A ``websocket`` scope: the handshake, then the push handler of its session."""

    __slots__ = ("client", "_session", "_early", "_inbound", "_behind", "_app_done", "on_message")

    kind = "websocket"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: The push client, once the session has opened.
        self.client: Any = None
        self._session: Any = None
        # What the app sent between its accept and the session's on_open.
        self._early: list[tuple[Any, ...]] | None = []
        self._inbound = 0
        # The app is behind: reading waits until it takes a message (resume).
        self._behind = False
        self._app_done = False
        #: The push session's on_message (see _message).
        self.on_message = self._message if self._ctx.limiter is None else self._message_async

    def _first_event(self, body: bytes) -> None:
        self.channel.deliver({"type": "websocket.connect"})

    def _gone_event(self) -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006, "reason": ""}

    def want(self) -> None:
        """A WebSocket's events come as they arrive, not when asked for."""

    async def _handle(self, item: tuple[Any, ...]) -> tuple[Upgrade | None] | None:
        kind = item[0]
        if kind is ACCEPT:
            try:
                return (self._accept(item[1], item[2]),)
            except (sp.LocalProtocolError, TypeError, ValueError) as exc:
                self._app_error(exc)
                await self._loop._flush()
                return (None,)
        if kind is CLOSE:
            # Closed before the handshake: refused (ASGI: a 403).
            loop = self._loop
            loop.core.respond(403, [("content-type", "text/plain; charset=utf-8")], b"")
            await loop._flush()
            self._log(403)
            return (None,)
        outcome = await super()._handle(item)
        if outcome is not None:
            # Denied: the app's receive gives websocket.disconnect (1006).
            self._dead = True
        return outcome

    async def _app_returned(self) -> Upgrade | None:
        if self._head_sent:
            return await super()._app_returned()
        log.error("ASGI app for %s returned without accepting or closing", self._request_line)
        self._internal_error()
        await self._loop._flush()
        return None

    def _accept(self, subprotocol: str | None, headers: list[Any]) -> Upgrade:
        if subprotocol is not None:
            headers = [*headers, (b"sec-websocket-protocol", subprotocol.encode("latin-1"))]
        kind = self._loop.core.start_response(200, headers, upgrade=True)
        assert kind == "websocket"
        self._head_sent = True
        # What the app sent right after its accept waits for on_open.
        self._early = self._items
        self._items = []
        self._log(101, " websocket open")
        return "websocket", self, self.env

    # -- after the accept: items from the app, handled as they come --------------------------

    def post(self, item: tuple[Any, ...]) -> None:
        if not self._finished:
            super().post(item)
            return
        try:
            self._after_accept(item)
        except Exception:  # a bug of ours must not reach the Trio run
            log.exception("%s: internal error in an ASGI WebSocket", self._loop._transport.peer)

    def _after_accept(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind is DONE:
            self._app_done = True
            self._app_ended(item[1])
            self._resume_reading()
            error = item[1] is not None and isinstance(item[1], Exception)
            if self._early is not None:
                self._early.append((CLOSE, 1011 if error else 1000, ""))
            elif self.client is not None and self.client.open:
                self._close(sp.CloseCode.INTERNAL_ERROR if error else sp.CloseCode.NORMAL, "")
            return
        if self._early is not None:
            self._early.append(item)
        elif kind is SEND:
            self._send(item[1], item[2])
        elif kind is CLOSE:
            self._close(item[1], item[2])

    def _close(self, code: int, reason: str) -> None:
        if not sp.can_send_close_code(code):
            log.warning("ASGI app asked to close with %s, which may not be sent: 1011", code)
            code = sp.CloseCode.INTERNAL_ERROR
        self._session.close(code, reason)

    def _send(self, data: str | bytes, wants_grant: bool) -> None:
        session = self._session
        if session.core.open:
            # The app's own flow control bounds it (AppChannel's window).
            session.write_prepared(sp.prepare(data), burst=True)
        if wants_grant and not session.start_helper(self._grant_when_sent):
            self._to_app(self.channel.grant)

    async def _grant_when_sent(self) -> None:
        """Let the app send on once the socket has taken what is queued (or
        the session is over: then its sends raise)."""
        session = self._session
        core = session.core
        while core.open and core.pending_bytes and not session.state:
            await session.park()
        self._to_app(self.channel.grant)

    # -- the push handler's callbacks ------------------------------------------------------

    async def on_open(self, client: Any) -> None:
        self.client = client
        self._session = client._session
        early, self._early = self._early, None
        for item in early or ():
            self._after_accept(item)

    def _deliver(self, data: str | bytes) -> bool:
        """Hand the app a message; True if it is now so many behind that
        reading must wait until it takes this one (see :meth:`on_backlog`)."""
        event = (
            {"type": "websocket.receive", "text": data}
            if isinstance(data, str)
            else {"type": "websocket.receive", "bytes": data}
        )
        self._inbound += 1
        if self._inbound < INBOUND_WINDOW or self._app_done:
            self._to_app(self.channel.deliver, event)
            return False
        self._inbound = 0
        self._behind = True
        self._to_app(self.channel.deliver, event, True)
        return True

    def _message(self, client: Any, data: str | bytes) -> None:
        """on_message, plain: it runs in the reader, without a task switch;
        when the app is behind, ``on_backlog`` is queued after it, and the
        messages that follow queue behind that (the reader stops once they
        pile up)."""
        if self._deliver(data):
            self._session.queue("on_backlog")

    async def _message_async(self, client: Any, data: str | bytes) -> None:
        """on_message with ``threads > 0`` (a plain one would run in a worker
        thread): on the loop, in the dispatcher."""
        if self._deliver(data):
            await self.on_backlog(client)

    async def on_backlog(self, client: Any) -> None:
        """Until the app has taken the message it was behind on, or the
        session is over (on_close, queued behind this, must run)."""
        session = self._session
        while self._behind and not session.state:
            await session.park()

    def resume(self) -> None:
        """The app took the message on_message waits for."""
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self._behind:
            self._behind = False
            self._session.unpark()

    async def on_close(self, client: Any) -> None:
        code = client.close_code
        event = {
            "type": "websocket.disconnect",
            "code": int(code) if code is not None else 1006,
            "reason": client.close_reason,
        }
        self._to_app(self.channel.gone, event)


class Lifespan:
    """The ``lifespan`` scope: startup before the server listens, shutdown
    after its connections are gone. An app that does not speak it (raises,
    or returns, before answering the startup) is served without it, as
    uvicorn's ``--lifespan auto`` does."""

    def __init__(self, adapter: ASGIAdapter, ctx: Context) -> None:
        self._adapter = adapter
        self._items: list[tuple[Any, ...]] = []
        self._lot = trio.lowlevel.ParkingLot()
        self.channel = AppChannel("lifespan", self, ctx.loop, adapter.app_loop, 0, 0)
        self.supported = False
        self._ended = False

    def post(self, item: tuple[Any, ...]) -> None:
        self._items.append(item)
        self._lot.unpark_all()

    def want(self) -> None:
        """Its events are handed over when they happen."""

    def resume(self) -> None:
        """Not used by the lifespan."""

    async def _next(self) -> tuple[Any, ...]:
        while not self._items:
            await self._lot.park()
        return self._items.pop(0)

    async def startup(self) -> None:
        adapter = self._adapter
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": adapter.state}
        self.channel.deliver({"type": "lifespan.startup"})
        adapter.app_loop.spawn(run_app, adapter.app, scope, self.channel, self)
        item = await self._next()
        if item[0] is DONE:
            self._ended = True
            log.info("ASGI 'lifespan' protocol appears unsupported.")
            if item[1] is not None and isinstance(item[1], Exception):
                log.debug("the app's answer to the lifespan scope", exc_info=item[1])
            return
        if item[1] == "lifespan.startup.complete":
            self.supported = True
            log.info("ASGI lifespan: startup complete")
            return
        if item[1] == "lifespan.startup.failed":
            message = item[2].get("message", "")
            raise LifespanFailed(message or "the app said lifespan.startup.failed")
        raise LifespanFailed(f"unexpected ASGI message {item[1]!r} during the lifespan's startup")

    async def shutdown(self, timeout: float) -> None:
        if not self.supported or self._ended:
            return
        self._adapter.app_loop.to_app(self.channel.deliver, {"type": "lifespan.shutdown"})
        with trio.move_on_after(timeout) as scope:
            item = await self._next()
        if scope.cancelled_caught:
            log.warning("ASGI lifespan: shutdown not complete after %ss", timeout)
        elif item[0] is DONE:
            if item[1] is not None and isinstance(item[1], Exception):
                log.error("Exception in ASGI lifespan shutdown", exc_info=item[1])
        elif item[1] == "lifespan.shutdown.failed":
            log.error("ASGI lifespan: shutdown failed: %s", item[2].get("message", ""))
        else:
            log.info("ASGI lifespan: shutdown complete")


class ASGIPush:
    """An ASGI app that hands every push request to a push handler, through
    the ``trio_push.upgrade`` extension: ``factory(scope)`` (plain or
    ``async def``) returns the handler for the request, or None to refuse
    it (403). A request the extension is not offered for (neither a
    WebSocket nor an event stream, or a server other than trio-push) gets
    400. Mount it where a framework takes an ASGI app (Starlette's
    ``Route``/``WebSocketRoute``/``Mount``, FastAPI's ``app.mount``); see
    docs/asgi.md. ``headers`` go out on the 101 or the event stream's 200.
    """

    def __init__(self, factory: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.factory = factory
        self.headers = list(headers or ())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return
        if kind == "websocket":
            await receive()  # websocket.connect
        handler = None
        offered = "trio_push.upgrade" in scope.get("extensions", {})
        if offered:
            handler = self.factory(scope)
            if inspect.isawaitable(handler):
                handler = await handler
        if handler is not None:
            await send({"type": "trio_push.upgrade", "handler": handler, "headers": self.headers})
            return
        status = 403 if offered else 400
        prefix = "websocket.http" if kind == "websocket" else "http"
        body = b"Forbidden\n" if offered else b"expected a WebSocket or an event stream request\n"
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
        await send({"type": f"{prefix}.response.body", "body": body})
