"""Listening: the sockets (with SO_REUSEPORT for ``--workers``), TLS, and
accepting, with a 503 past ``max_connections``."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import sansio_push as sp

log = logging.getLogger("trio_push")

_UNAVAILABLE = sp.error_response(503, "too many connections", [(b"retry-after", b"1")])
#: Seconds between two warnings about connections refused past max_connections.
_REFUSALS_LOG_PERIOD = 10


async def open_listeners(
    port: int, host: str | None, *, reuse_port: bool, ssl_context: ssl.SSLContext | None
) -> list[Any]:
    """The listeners for ``host:port`` (every address it resolves to), TLS
    ones if ``ssl_context`` is given."""
    listeners: list[Any]
    if reuse_port:
        listeners = await open_reuse_port_listeners(port, host=host)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners
        ]
    return listeners


async def open_reuse_port_listeners(
    port: int, *, host: str | None = None, backlog: int | None = None
) -> list[trio.SocketListener]:
    """Like :func:`trio.open_tcp_listeners`, with ``SO_REUSEPORT`` set, so
    that several processes can listen on the same address and port."""
    if not hasattr(trio.socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this platform")
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, type_, proto, _, address in addresses:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog if backlog is not None else 0xFFFF)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def port_of(listener: Any) -> int:
    """The port a listener (TLS or not) is bound to."""
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    return int(listener.socket.getsockname()[1])


class Acceptor:
    """Accepts connections on listeners and starts ``handle(stream)`` for
    each in a nursery, while fewer than ``max_connections`` are admitted;
    past that, a new one gets a 503 and is closed, and a warning is logged
    at most every 10 seconds (counting the refusals in between)."""

    def __init__(self, max_connections: int, handle: Callable[[Any], Awaitable[None]]) -> None:
        self.max_connections = max_connections
        self._handle = handle
        #: Connections admitted and not yet released (ended).
        self.admitted = 0
        # Refusals not yet logged, and when the last warning was.
        self._refusals = 0
        self._refusals_logged_at = float("-inf")

    def release(self) -> None:
        """An admitted connection has ended."""
        self.admitted -= 1

    async def run(
        self, listeners: list[Any], conn_nursery: trio.Nursery, scope: trio.CancelScope
    ) -> None:
        """Accept on every listener until ``scope`` is cancelled, then close them."""
        with scope:
            try:
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(self._accept, listener, conn_nursery)
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()

    async def _accept(self, listener: Any, conn_nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept: %s; retrying in 0.1 s", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            self._admit(stream, conn_nursery)

    def _admit(self, stream: Any, conn_nursery: trio.Nursery) -> None:
        if self.admitted >= self.max_connections:
            self._log_refusal()
            conn_nursery.start_soon(_refuse, stream)
        else:
            # Counted here, not once handle runs: otherwise a burst of
            # accepts all pass the check before any of them is counted.
            self.admitted += 1
            conn_nursery.start_soon(self._handle, stream)

    def stop_listening(self, listeners: list[Any], conn_nursery: trio.Nursery) -> None:
        """Close ``listeners`` now, taking in the connections already in
        their accept queues first: closing a listener resets those, and with
        ``SO_REUSEPORT`` (``--workers``) the kernel put some of the port's
        new connections there. Synchronous: between the last accept and the
        close nothing else runs (``run`` closes them too, later)."""
        for listener in listeners:
            tls = listener if isinstance(listener, trio.SSLListener) else None
            sock = (tls.transport_listener if tls else listener).socket
            if sock.fileno() < 0:
                continue
            std = socket.socket(fileno=sock.fileno())
            try:
                while True:
                    try:
                        conn, _ = std.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # out of file descriptors: the rest is lost
                    stream: Any = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
                    if tls is not None:
                        # trio.SSLListener.accept, which is async.
                        stream = trio.SSLStream(
                            stream,
                            tls._ssl_context,
                            server_side=True,
                            https_compatible=tls._https_compatible,
                        )
                    self._admit(stream, conn_nursery)
            finally:
                std.detach()
            sock.close()

    def _log_refusal(self) -> None:
        self._refusals += 1
        now = trio.current_time()
        if now - self._refusals_logged_at < _REFUSALS_LOG_PERIOD:
            return
        limit = self.max_connections
        if self._refusals == 1:
            log.warning(
                "max_connections (%d) reached: answering 503 (further refusals are logged"
                " at most every %d s)",
                limit,
                _REFUSALS_LOG_PERIOD,
            )
        else:
            log.warning(
                "max_connections (%d) reached: %d connections answered 503 since the last warning",
                limit,
                self._refusals,
            )
        self._refusals = 0
        self._refusals_logged_at = now


async def _refuse(stream: Any) -> None:
    """Past max_connections: 503 at once, then close (bounded in time)."""
    with trio.move_on_after(1):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(_UNAVAILABLE)
            # Closing with the request still unread makes the kernel send a
            # reset, which can destroy the 503 before the client reads it:
            # say we are done, then read (a little, briefly) until it closes.
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            unread = 64 * 1024
            while unread > 0 and (data := await stream.receive_some(16384)):
                unread -= len(data)
    await trio.aclose_forcefully(stream)
