"""Outgoing bytes with exact per-message backpressure accounting."""

from __future__ import annotations

from bisect import bisect_right

from ._errors import LocalProtocolError


class Outbox:
    """Bytes waiting for the socket, and which of them end a message.

    A message counts as pending from :meth:`put` until the driver reports,
    through :meth:`taken`, that its last byte went to the socket. Bytes that
    are not messages (handshakes, pings, close frames) count in
    :attr:`pending_bytes` but not in :attr:`pending`.

    The queue bounds measure the peer, not the app: what was queued before
    the socket first refused bytes is the app's burst and goes out whatever
    its size; from the driver's :meth:`refused` until the outbox is empty
    again, what is queued counts in :attr:`backlog` (see docs/contract.md).
    """

    __slots__ = ("_buf", "_ends", "_queued", "_taken", "_refused_at", "refusing")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Absolute offsets (in bytes ever queued) at which a message ends,
        # ascending (a list: an empty deque costs 600 bytes per connection).
        self._ends: list[int] = []
        self._queued = 0
        self._taken = 0
        # Bytes ever queued when the socket first refused some of them; -1
        # while it has taken everything offered since the outbox was empty.
        self._refused_at = -1
        #: True from :meth:`refused` until everything queued is taken. (A
        #: plain attribute, not a property: it is read for every message.)
        self.refusing = False

    @property
    def pending(self) -> int:
        """Messages queued whose last byte has not been taken."""
        return len(self._ends)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet taken."""
        return self._queued - self._taken

    @property
    def queued_total(self) -> int:
        """Bytes ever queued."""
        return self._queued

    @property
    def taken_total(self) -> int:
        """Bytes ever taken."""
        return self._taken

    def backlog(self) -> tuple[int, int]:
        """Messages and bytes queued since the socket refused, not yet taken
        (``(0, 0)`` unless :attr:`refusing`)."""
        mark = self._refused_at
        if mark < 0:
            return 0, 0
        return (
            len(self._ends) - bisect_right(self._ends, mark),
            self._queued - max(mark, self._taken),
        )

    def put(self, data: bytes, *, message: bool) -> None:
        """Queue ``data``; ``message`` says whether it is one whole message."""
        self._buf += data
        self._queued += len(data)
        if message:
            self._ends.append(self._queued)

    def put_run(self, data: bytes, ends: tuple[int, ...]) -> None:
        """Queue ``data``: whole messages, ending at the offsets ``ends``
        within it (ascending, the last one its length). The same as a
        :meth:`put` of each message."""
        base = self._queued
        self._buf += data
        self._queued += len(data)
        self._ends += [base + end for end in ends]

    def peek(self) -> bytes:
        """Every byte not yet taken, without taking them."""
        return bytes(self._buf)

    def refused(self) -> None:
        """The socket did not take everything offered: from now until the
        outbox is empty, what is queued counts in :meth:`backlog`."""
        if self._refused_at < 0 and self._buf:
            self._refused_at = self._queued
            self.refusing = True

    def taken(self, n: int) -> bool:
        """Mark the first ``n`` bytes as handed to the socket.

        Returns True exactly when this brings :attr:`pending` from above zero
        to zero. Raises :class:`~sansio_push.LocalProtocolError` (the driver's
        mistake) for more bytes than are queued.
        """
        if n < 0 or n > len(self._buf):
            raise LocalProtocolError(f"taken({n}) with {len(self._buf)} bytes queued")
        del self._buf[:n]
        self._taken += n
        if not self._buf:
            self._refused_at = -1
            self.refusing = False
        ends = self._ends
        if not ends or ends[0] > self._taken:
            return False
        del ends[: bisect_right(ends, self._taken)]
        return not ends
