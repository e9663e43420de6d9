"""One TCP connection's bytes: in, out, with write deadlines. No HTTP.

The words for sending, here and in ``_push.py``:

- **send_now** (:meth:`Transport.send_now`): hand bytes to the socket
  without waiting; it returns how many the socket took (plain TCP: one
  ``os.write``, no task switch; TLS: none, as trio's SSL stream cannot be
  written without waiting).
- **send** (:meth:`Transport.send`): all of some bytes, waiting for the
  socket as needed, each wait bounded by ``write_timeout`` (plain TCP: a
  write each time the socket has room; TLS: 16 KiB pieces, a TLS record).
- **sent**: the report that the socket took ``n`` more bytes
  (:meth:`Progress.sent`; the protocol core's ``sent(n)`` is one).

A :class:`Transport` is what a push session sends through (its *sink*):
HTTP/1.1 hands it the transport itself, and HTTP/2 will hand each stream's
session an object with the same three methods over the shared transport.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ._poller import Reader, ReadPoller

_RECEIVE_SIZE = 65536
# TLS sends that wait go out in pieces of this size (a TLS record's most);
# write_timeout bounds each, and each is progress (see Transport.send).
_SEND_PIECE = 16384
# How long, and how much, to read from a peer after we decided to close.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1024 * 1024


class Progress(Protocol):
    """Who is told how a :meth:`Transport.send` goes (the protocol core is
    one: these are its ``refused`` and ``sent``)."""

    def refused(self) -> None:
        """The socket did not take everything at once."""

    def sent(self, n: int) -> object:
        """The socket took ``n`` more bytes."""


class Sink(Protocol):
    """What a push session needs of what carries its bytes."""

    @property
    def peer(self) -> str: ...

    def send_now(self, data: bytes) -> int: ...

    async def send(self, data: bytes, progress: Progress) -> bool: ...

    def stop_reading(self) -> None: ...


class Transport:
    """A Trio stream (plain TCP or TLS) and its socket.

    One task reads (:meth:`receive`); sending is :meth:`send_now` from any
    task, or :meth:`send` from one task at a time.

    For plain TCP only the socket is kept: the trio stream over it is made
    when a send waits, and to close (trio's ``SocketStream`` and its
    conflict detector would cost every idle connection 176 bytes).
    """

    __slots__ = ("stream", "socket", "address", "write_timeout", "_fd", "_poller")

    def __init__(
        self,
        stream: trio.abc.Stream,
        socket: trio.socket.SocketType,
        address: tuple[str, int] | None,
        write_timeout: float,
    ) -> None:
        plain = isinstance(stream, trio.SocketStream)
        #: The stream over ``socket`` (TLS), or None for plain TCP.
        self.stream: trio.abc.Stream | None = None if plain else stream
        #: The TCP socket (under ``stream`` with TLS).
        self.socket = socket
        #: The peer's address.
        self.address = address
        self.write_timeout = write_timeout
        # Plain TCP: the socket's descriptor, to send and read without
        # trio's stream (-1 for TLS, and once closed).
        self._fd = socket.fileno() if plain else -1
        # Where readable waits, once use_poller gave one.
        self._poller: ReadPoller | None = None

    @property
    def peer(self) -> str:
        """``host:port`` of the peer, for logs."""
        address = self.address
        return f"{address[0]}:{address[1]}" if address else "-"

    async def receive(self) -> bytes:
        """The next bytes from the peer; ``b""`` once it closed, the
        connection broke, or :meth:`stop_reading` was called."""
        fd = self._fd
        try:
            if fd < 0:
                return await self._stream().receive_some(_RECEIVE_SIZE)
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

    @property
    def plain(self) -> bool:
        """True for plain TCP (not TLS), while open: :meth:`readable` and
        :meth:`read` may be used instead of :meth:`receive`."""
        return self._fd >= 0

    def use_poller(self, poller: ReadPoller | None, reader: Reader) -> None:
        """From now on :meth:`readable` waits through ``poller`` when it
        runs (plain TCP only), which asks ``reader`` to handle what comes
        first (called again: a new reader, as when HTTP upgrades to a push
        session): a connection spares a system call and a task switch per
        read."""
        if poller is not None and self._fd >= 0 and poller.register(self._fd, reader):
            self._poller = poller

    def readable(self) -> Awaitable[None]:
        """Plain TCP: wait until the socket has bytes for :meth:`read`
        (raises ``trio.ClosedResourceError`` once :meth:`stop_reading` was
        called). This returns trio's own wait, not a coroutine of ours
        around it: an idle push connection waits in it, and every frame in
        that wait is kept by each idle one (so its reader, in
        ``_connection.py``, awaits this rather than :meth:`receive`)."""
        if self._poller is not None:
            return self._poller.readable(self._fd)
        return trio.lowlevel.wait_readable(self._fd)

    def read(self, receive: Callable[[bytes], object]) -> None:
        """Plain TCP, once :meth:`readable`: hand ``receive`` the bytes that
        came (``b""`` at the peer's end, or if the connection broke), or
        nothing if none came after all. (Handed, not returned: a caller
        that kept them in a local would keep them while it waits again.)"""
        data = self.read_now()
        if data is not None:
            receive(data)

    def read_now(self) -> bytes | None:
        """Plain TCP: the bytes the socket has (``b""`` at the peer's end,
        or if the connection broke), or None if it has none yet."""
        try:
            data = os.read(self._fd, _RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError:  # reset, or closed under us
            return b""
        if len(data) == _RECEIVE_SIZE and self._poller is not None:
            self._poller.mark_ready(self._fd)  # more may be there: no event would say
        return data

    def send_now(self, data: bytes) -> int:
        """Hand ``data`` to the socket without waiting; how much it took (0:
        full, broken, or TLS, which trio's :meth:`send` says which)."""
        if self._fd < 0:
            return 0
        try:
            return os.write(self._fd, data)
        except OSError:  # full (BlockingIOError), or broken: send() says which
            return 0

    async def send(self, data: bytes, progress: Progress) -> bool:
        """Send all of ``data``, telling ``progress`` each piece the socket
        takes (plain TCP: each write, as the peer makes room; TLS: each
        16 KiB piece). False if the socket took nothing for ``write_timeout``: the
        bound is on progress, so a slow reader that keeps reading is not cut
        off. Raises ``trio.BrokenResourceError`` if the connection broke."""
        # Most sends fit the socket's buffer: one system call, without
        # trio's checkpoints (the caller's next wait is one).
        n = self.send_now(data)
        if n:
            progress.sent(n)
            if n == len(data):
                return True
        progress.refused()
        view = memoryview(data)[n:]
        timeout = self.write_timeout
        fd = self._fd
        if fd < 0:
            stream = self._stream()
            for start in range(0, len(view), _SEND_PIECE):
                piece = view[start : start + _SEND_PIECE]
                with trio.move_on_after(timeout) as scope:
                    await stream.send_all(piece)
                if scope.cancelled_caught:
                    return False
                progress.sent(len(piece))
            return True
        # Plain TCP: each write is reported as it happens, so a peer that
        # reads slowly shows its progress (a close's wait restarts with it:
        # a whole 64 KiB piece at a time cut off readers slower than one per
        # close_timeout, and lost what they had not read).
        while view:
            with trio.move_on_after(timeout) as scope:
                await trio.lowlevel.wait_writable(fd)
            if scope.cancelled_caught:
                return False
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc}") from exc
            progress.sent(n)
            view = view[n:]
        return True

    def _stream(self) -> trio.abc.Stream:
        return self.stream if self.stream is not None else trio.SocketStream(self.socket)

    def stop_reading(self) -> None:
        """Make the reader's :meth:`receive` return ``b""`` (without a cancel
        scope of the reader's own: it would cost every connection one)."""
        trio.lowlevel.notify_closing(self.socket)
        if self._poller is not None:
            self._poller.closing(self._fd)

    async def linger(self) -> None:
        """Close our side first and drop what the peer still sends, briefly.

        Closing a socket with unread bytes makes the kernel send a reset,
        which can destroy our last response (a 413 to a client still sending
        its body) before the client reads it; nginx's lingering_close does
        the same for the same reason.
        """
        send_eof = getattr(self._stream(), "send_eof", None)
        if send_eof is None:  # TLS streams cannot half-close
            return
        with trio.move_on_after(_LINGER_SECONDS):
            try:
                await send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            budget = _LINGER_BYTES
            while budget > 0 and (data := await self.receive()):
                budget -= len(data)

    async def aclose(self) -> None:
        """Close the stream, at once (shielded from cancellation)."""
        if self._poller is not None:
            self._poller.forget(self._fd)
            self._poller = None
        self._fd = -1
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream())
