"""Outgoing bytes with exact per-message backpressure accounting."""

from __future__ import annotations

from bisect import bisect_right


class Outbox:
    """Bytes waiting for the socket, and which of them end a message.

    A message counts as pending from :meth:`put` until the driver reports,
    through :meth:`taken`, that its last byte went to the socket. Bytes that
    are not messages (handshakes, pings, close frames) count in
    :attr:`pending_bytes` but not in :attr:`pending`.
    """

    __slots__ = ("_buf", "_ends", "_queued", "_taken")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Absolute offsets (in bytes ever queued) at which a message ends,
        # ascending (a list: an empty deque costs 600 bytes per connection).
        self._ends: list[int] = []
        self._queued = 0
        self._taken = 0

    @property
    def pending(self) -> int:
        """Messages queued whose last byte has not been taken."""
        return len(self._ends)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet taken."""
        return self._queued - self._taken

    def put(self, data: bytes, *, message: bool) -> None:
        """Queue ``data``; ``message`` says whether it is one whole message."""
        self._buf += data
        self._queued += len(data)
        if message:
            self._ends.append(self._queued)

    def peek(self) -> bytes:
        """Every byte not yet taken, without taking them."""
        return bytes(self._buf)

    def taken(self, n: int) -> bool:
        """Mark the first ``n`` bytes as handed to the socket.

        Returns True exactly when this brings :attr:`pending` from above zero
        to zero. Raises ``ValueError`` for more bytes than are queued.
        """
        if n < 0 or n > len(self._buf):
            raise ValueError(f"taken({n}) with {len(self._buf)} bytes queued")
        del self._buf[:n]
        self._taken += n
        ends = self._ends
        if not ends or ends[0] > self._taken:
            return False
        del ends[: bisect_right(ends, self._taken)]
        return not ends
