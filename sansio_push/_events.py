"""Events that a :class:`~sansio_push.ServerConnection` hands to its driver.

Each is a small immutable value. The driver gets them from
:meth:`ServerConnection.next_event` until that returns ``None`` (the
connection needs more bytes, or is waiting for the app's answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True)
class Request(Event):
    """A request head has arrived; ``env`` is its PEP 3333 environ.

    ``env['rack.upgrade?']`` is ``'websocket'``, ``'sse'`` or ``None``. The
    body follows as :class:`Body` events and one :class:`EndOfRequest`.
    """

    env: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Body(Event):
    """A piece of the request body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfRequest(Event):
    """The request body is complete; the app may be answered now."""


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """The peer sent something we answered with an error status ourselves.

    The error response is already queued with ``Connection: close``; the
    connection is :attr:`~ServerConnection.finished` once it is flushed.
    """

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Message(Event):
    """A whole WebSocket message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


@dataclass(frozen=True, slots=True)
class Pong(Event):
    """The peer answered one of our pings."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The push conversation is over; no event follows.

    For WebSocket ``code`` is the peer's close code (1006 when the transport
    ended without a close frame, or the code we closed with after a protocol
    error or limit). For SSE the peer closed the transport and ``code`` is
    1006 (no close frame exists there). Plain HTTP reports no ``Closed``:
    :attr:`~ServerConnection.finished` says the connection is over.
    """

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Drained(Event):
    """Every queued message has been taken for the socket (pending went to 0)."""
