"""Listening: the sockets (with SO_REUSEPORT for ``--workers``; a Unix
socket, ``--uds``; an inherited one, ``--fd``), TLS, and accepting, with a
503 past ``max_connections``."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import sansio_push as sp

log = logging.getLogger("trio_push")

_UNAVAILABLE = sp.error_response(503, "too many connections", [(b"retry-after", b"1")])
#: Seconds between two warnings about connections refused past max_connections.
_REFUSALS_LOG_PERIOD = 10
# Our addresses connections came to, each kept once (at most this many).
_LOCAL_ADDRESSES: dict[tuple[str, int], tuple[str, int]] = {}
_LOCAL_ADDRESSES_KEPT = 64
# Every connection's task is named this: one string for all (trio would
# otherwise make each task a name of its own from the function's).
_TASK_NAME = "trio_push.connection"


async def open_listeners(
    port: int,
    host: str | None,
    *,
    reuse_port: bool,
    ssl_context: ssl.SSLContext | None,
    uds: str | None = None,
    fd: int | None = None,
) -> list[Any]:
    """The listeners for ``host:port`` (every address it resolves to), or
    instead for the Unix socket ``uds``, or the inherited listening socket
    ``fd``; TLS ones if ``ssl_context`` is given."""
    listeners: list[Any]
    if fd is not None:
        listeners = [listener_from_fd(fd)]
    elif uds is not None:
        listeners = [await open_unix_listener(uds)]
    elif reuse_port:
        listeners = await open_reuse_port_listeners(port, host=host)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host)
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners
        ]
    return listeners


#: The mode of a ``--uds`` socket file: anyone on the machine may connect,
#: as anyone may to a port on 127.0.0.1 (uvicorn's choice too); the folder's
#: permissions are the way to restrict it (docs/deployment.md).
UDS_MODE = 0o666


async def open_unix_listener(path: str) -> UnixListener:
    """Listen on a Unix socket at ``path``: a stale socket file there (no
    one listens on it) is removed first; a live one, or a file that is not
    a socket, is an error. The file is removed when the listener closes."""
    _remove_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        os.chmod(path, UDS_MODE)
        sock.listen(0xFFFF)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, exc.strerror, path) from None  # which path it was
    except BaseException:
        sock.close()
        raise
    return UnixListener(trio.SocketListener(sock), path)


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "exists and is not a socket", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # A live server with a full backlog makes connect wait (or refuse
        # with EAGAIN): that is live too.
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # what a server that ended without cleaning up left
            return
        except (TimeoutError, BlockingIOError):
            pass
    raise OSError(errno.EADDRINUSE, "a server is listening on it", path)


class UnixListener(trio.abc.Listener[trio.SocketStream]):
    """A listener on a Unix socket file of ours: closing it removes the file
    (if it is still the one it bound: not one a newer server made)."""

    def __init__(self, listener: trio.SocketListener, path: str) -> None:
        self.listener = listener
        self.socket = listener.socket
        self.path = path
        info = os.stat(path)
        self._identity = (info.st_dev, info.st_ino)

    async def accept(self) -> trio.SocketStream:
        return await self.listener.accept()

    async def aclose(self) -> None:
        await self.listener.aclose()
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)


def listener_from_fd(fd: int) -> trio.SocketListener:
    """A listener on the inherited listening socket ``fd`` (TCP or Unix; as
    systemd's socket activation hands it, from 3 on)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"not a socket ({exc.strerror})", f"fd {fd}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()  # not ours to close
        raise OSError(errno.EINVAL, "not a listening stream socket", f"fd {fd}")
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def socket_of(listener: Any) -> trio.socket.SocketType:
    """The socket under a listener (TLS or not)."""
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    sock: trio.socket.SocketType = listener.socket
    return sock


def addresses(
    sock: trio.socket.SocketType, *, tls: bool
) -> tuple[tuple[str, int] | None, tuple[str, int]]:
    """The peer's address and ours, for the environ. A Unix socket's peer
    has none (no ``REMOTE_ADDR``); ours is then the socket's path as
    ``SERVER_NAME`` and 80 (443 with TLS) as ``SERVER_PORT``, as gunicorn
    gives (PEP 3333 wants both, non-empty)."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if not isinstance(name, str) or not name or name.startswith("\0"):
            name = "localhost"  # unnamed, or in the abstract namespace
        return None, (name, 443 if tls else 80)
    host, port = sock.getpeername()[:2]
    local = sock.getsockname()[:2]
    # Kept for a connection's life: the peer's host (shared by a client's
    # connections, or by all behind a proxy) once, and ours, the same for
    # all on a listener, once.
    if len(_LOCAL_ADDRESSES) < _LOCAL_ADDRESSES_KEPT:
        local = _LOCAL_ADDRESSES.setdefault(local, local)
    return (sys.intern(host), port), local


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


def port_of(listener: Any) -> int | None:
    """The port a listener (TLS or not) is bound to; None on a Unix socket."""
    sock = socket_of(listener)
    if sock.family == socket.AF_UNIX:
        return None
    return int(sock.getsockname()[1])


def describe(listener: Any, scheme: str, host: str | None) -> str:
    """Where a listener listens, for the log: ``http://127.0.0.1:9292`` (with
    ``host`` as given, or else the address bound), ``unix:/run/app.sock``
    (``https+unix:`` with TLS)."""
    sock = socket_of(listener)
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"{'https+' if scheme == 'https' else ''}unix:{name or '(unnamed)'}"
    if host is None:
        host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"{scheme}://{host}:{name[1]}"


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
        #: Connections accepted, and refused with a 503, since the start (metrics).
        self.accepted = 0
        self.refused = 0
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
            self.refused += 1
            self._log_refusal()
            conn_nursery.start_soon(_refuse, stream)
        else:
            # Counted here, not once handle runs: otherwise a burst of
            # accepts all pass the check before any of them is counted.
            self.admitted += 1
            self.accepted += 1
            conn_nursery.start_soon(self._handle, stream, name=_TASK_NAME)

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
