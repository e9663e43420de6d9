"""Helpers for tests of a server running in the test's own Trio run.

Clients are real ones we did not write (websockets, trio-websocket, httpx,
httpx-sse, curl) or raw sockets where a client would normalize away what a
test must send. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import trio
import wsproto
import wsproto.events as wse

#: Every wait in the tests is bounded by this many seconds (enough for the heaviest:
#: a thousand clients, subprocesses, Redis restarting).
TIMEOUT = 15.0

# Short timeouts so that a test that leaves a client connected ends quickly.
FAST = {"drain_timeout": 2.0, "close_timeout": 2.0}

# -- apps and handlers ------------------------------------------------------


class Recorder:
    """A handler that records its callbacks, plain (not async)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.clients: list[Any] = []
        self.opened = trio.Event()
        self.closed = trio.Event()
        self.token = trio.lowlevel.current_trio_token()

    def _set(self, event: trio.Event) -> None:
        # Callbacks may run in worker threads.
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            self.token.run_sync_soon(event.set)
        else:
            event.set()

    def on_open(self, client: Any) -> None:
        self.events.append(("open", None))
        self.clients.append(client)
        self._set(self.opened)

    def on_message(self, client: Any, data: Any) -> None:
        self.events.append(("message", data))

    def on_drained(self, client: Any) -> None:
        self.events.append(("drained", None))

    def on_close(self, client: Any) -> None:
        self.events.append(("close", None))
        self._set(self.closed)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def push_app(handler: Any, status: int = 200, headers: Any = None) -> Callable[..., Any]:
    """An app that accepts every push request with ``handler``, and answers
    plain HTTP requests with 200 ``hello``."""

    def app(env: dict[str, Any]) -> Any:
        if env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = handler
            return status, headers or {}, b""
        return 200, {"content-type": "text/plain"}, b"hello"

    return app


class Echo:
    """Echoes every WebSocket message; counts its callbacks."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.shutdowns = 0

    def on_open(self, client: Any) -> None:
        self.opened += 1

    def on_message(self, client: Any, data: Any) -> None:
        client.write(data)

    def on_shutdown(self, client: Any) -> None:
        self.shutdowns += 1

    def on_close(self, client: Any) -> None:
        self.closed += 1


def echo_app(handler: Any) -> Any:
    """Push requests get ``handler``; ``/body`` echoes the request body; the
    rest get 200 ``hello``."""

    def app(env: dict[str, Any]) -> Any:
        if env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = handler
            return 200, {}, b""
        if env["PATH_INFO"] == "/body":
            return 200, {"content-type": "application/octet-stream"}, env["wsgi.input"].read()
        return 200, {"content-type": "text/plain"}, b"hello"

    return app


# -- raw sockets ------------------------------------------------------------


async def connect(port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP connection to the server; ``rcvbuf`` sets its receive buffer
    before it connects, so that the window is small from the start."""
    if rcvbuf is None:
        return await trio.open_tcp_stream("127.0.0.1", port)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, buf: bytearray) -> bytes:
    """Read into ``buf`` until it contains ``marker``; return and remove up to it."""
    while marker not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"EOF before {marker!r}; got {bytes(buf)!r}")
        buf += data
    i = buf.index(marker) + len(marker)
    out = bytes(buf[:i])
    del buf[:i]
    return out


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Read until EOF."""
    chunks = []
    while data := await stream.receive_some(65536):
        chunks.append(data)
    return b"".join(chunks)


async def exchange(port: int, data: bytes, *, timeout: float = TIMEOUT) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it
    (a reset after the answer counts as closed). Fails if it never closes."""
    chunks: list[bytes] = []
    with trio.fail_after(timeout):
        stream = await connect(port)
        async with stream:
            # The server may answer and close before taking it all.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)
            try:
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
            except trio.BrokenResourceError:
                pass
    return b"".join(chunks)


def status_line(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def head_lines(response: bytes) -> list[bytes]:
    """The header lines of the first response, lower-cased."""
    head = response.split(b"\r\n\r\n", 1)[0]
    return [line.lower() for line in head.split(b"\r\n")[1:]]


def ws_handshake(path: str = "/", extra: str = "") -> tuple[bytes, str]:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    return request.encode(), key


class RawWebSocket:
    """A WebSocket client on a raw trio socket, framed by wsproto: for tests
    that must control when (and whether) the client reads."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: list[Any] = []
        #: Pings received; answered with a pong while ``auto_pong`` is true.
        self.pings = 0
        self.auto_pong = True

    @classmethod
    async def open(cls, port: int, path: str = "/", rcvbuf: int | None = None) -> RawWebSocket:
        self = cls(await connect(port, rcvbuf))
        await self.stream.send_all(self.ws.send(wse.Request(host="127.0.0.1", target=path)))
        while not any(
            isinstance(e, (wse.AcceptConnection, wse.RejectConnection)) for e in self.events
        ):
            await self._pump()
        assert isinstance(self.events.pop(0), wse.AcceptConnection)
        return self

    async def _pump(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, wse.Ping):
                self.pings += 1
                if self.auto_pong:
                    await self.stream.send_all(self.ws.send(event.response()))
                continue
            if isinstance(event, wse.CloseConnection):
                with contextlib.suppress(Exception):
                    await self.stream.send_all(self.ws.send(event.response()))
            self.events.append(event)
        return bool(data)

    async def messages(self, n: int) -> list[Any]:
        """Read until ``n`` whole messages have come; return them."""
        out: list[Any] = []
        parts: list[Any] = []
        while len(out) < n:
            while not self.events:
                if not await self._pump() and not self.events:
                    raise EOFError(f"EOF after {len(out)} messages")
            event = self.events.pop(0)
            if isinstance(event, wse.Message):
                parts.append(event.data)
                if event.message_finished:
                    first = parts[0]
                    out.append(("" if isinstance(first, str) else b"").join(parts))
                    parts = []
            elif isinstance(event, wse.CloseConnection):
                raise EOFError(f"closed {event.code} after {len(out)} messages")
        return out

    async def close_code(self) -> int | None:
        """Read (dropping messages) until the server's close frame; its code,
        or None if the connection ended without one."""
        while True:
            while not self.events:
                if not await self._pump() and not self.events:
                    return None
            event = self.events.pop(0)
            if isinstance(event, wse.CloseConnection):
                return int(event.code)

    async def send(self, message: Any) -> None:
        await self.stream.send_all(self.ws.send(wse.Message(data=message)))

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- clients we did not write -------------------------------------------------


def ws_connect(url: str, **kwargs: Any) -> Any:
    """The ``websockets`` sync client (call it in a thread), with no proxy."""
    from websockets.sync.client import connect as ws_sync_connect

    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("proxy", None)
    return ws_sync_connect(url, **kwargs)


def http_client(**kwargs: Any) -> Any:
    """An ``httpx.AsyncClient`` (runs under Trio through anyio), no proxy."""
    import httpx

    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("trust_env", False)
    return httpx.AsyncClient(**kwargs)


async def get(url: str, method: str = "GET") -> Any:
    """One request with :func:`http_client`, bounded; the ``httpx.Response``."""
    with trio.fail_after(TIMEOUT):
        async with http_client() as http:
            return await http.request(method, url)


async def get_text(url: str) -> str:
    """The body of GET ``url``, which must answer 200."""
    response = await get(url)
    assert response.status_code == 200
    return response.text


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking client code in a thread (it must bound its own waits)."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until true, failing after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def fill_until_refused(client: Any) -> int:
    """Write 64 KiB messages on ``client``, a turn of the loop apart, until its
    socket stops taking them (``pending`` is above 0 a turn later): from then
    on the queue bounds count what is written. How many were written."""
    n = 0
    while True:
        assert client.write(b"f" * 65536)
        n += 1
        await trio.sleep(0.01)
        if client.pending:
            return n


def parse_responses(data: bytes, methods: list[str] | None = None) -> list[Any]:
    """Split raw bytes from the server into ``(status, headers, body)``
    responses, with h11 as the client side (``headers`` a dict, lower-case
    names; ``methods`` gives each request's method, for HEAD)."""
    import h11

    out = []
    methods = list(methods or [])
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")
    while True:
        method = methods.pop(0) if methods else "GET"
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return out
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {n.decode().lower(): v.decode("latin-1") for n, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, headers, body))
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return out
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return out
        conn.start_next_cycle()
