"""The phases of a connection and the moves between them, in one place.

A connection is in one phase at a time, and one phase object does that
phase's work: :class:`~sansio_push.ServerConnection` is a facade over it.
Each phase has its module (``_http.py``, ``_websocket.py``,
``_sse_stream.py``); this one says which phases there are, which moves are
allowed, and what every phase object answers.

::

    HTTP ──(upgrade accepted)──► WEBSOCKET ──┐
     │  └──(upgrade accepted)──► SSE ────────┤
     └───────────────────────────────────────┴──► DONE

``HTTP``
    Requests read and answered one at a time, in order (keep-alive and
    pipelining). Each request is read by one reader, chosen at its head: the
    simple-head reader (``_http_fast.py``) takes a plain ``GET``/``HEAD``,
    h11 everything else.
``WEBSOCKET``
    After the 101: messages both ways. Small frames are read without
    wsproto until the first frame wsproto must judge (``_frames.py``).
``SSE``
    After the stream's 200: events out; of the peer, only its end is read.
``DONE``
    Nothing more is read or answered, and no event follows. What is queued
    still goes out; then the driver closes the transport
    (:attr:`~sansio_push.ServerConnection.finished`).

The moves, and what makes each:

=================  =========================================================
HTTP → WEBSOCKET   ``start_response(..., upgrade=True)`` with a status below
                   300, on a valid WebSocket request
HTTP → SSE         the same, on a ``GET`` that accepts ``text/event-stream``
HTTP → DONE        an error we answer ourselves (:class:`Rejected`), a
                   response after which the connection cannot be reused
                   (``Connection: close``, HTTP/1.0, a body left unread),
                   the peer's end between requests, ``abort()``
WEBSOCKET → DONE   :class:`Closed`: the close handshake done (whoever began
                   it; the peer's code), the peer's end without one (1006),
                   a protocol error or a limit (our code, sent in our close
                   frame); or ``abort()``, with no event
SSE → DONE         :class:`Closed` (1006) at the peer's end; or ``close()``
                   (the app's, or the ``'close'`` overflow policy) or
                   ``abort()``, with no event: the driver made that call
=================  =========================================================

There is no other move: a connection that upgraded never reads HTTP again,
and ``DONE`` is the end. :func:`move` is the one place a phase changes, and
refuses any move this table does not list with
:class:`~sansio_push.LocalProtocolError`. A call that only another phase
takes raises it too (``start_response()`` on a WebSocket), except the push
calls, which an HTTP connection answers as a closed one would (``False``,
or nothing), so that a driver need not ask first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Final, Protocol

from ._errors import LocalProtocolError
from ._events import Event
from ._prepared import EventName, Prepared

#: The app's response headers, as ``start_response`` takes them.
Headers = Iterable[tuple[str | bytes, str | bytes]]


class Phase(Enum):
    """Where a connection is in its life (see the table above)."""

    HTTP = "http"
    WEBSOCKET = "websocket"
    SSE = "sse"
    DONE = "done"


#: ``Phase.DONE`` as a module global: on CPython 3.11 an enum member is
#: looked up through the enum's metaclass, several times a global's cost,
#: and the phase objects check for it on every call.
DONE: Final = Phase.DONE

#: The phases each phase may move to.
MOVES: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.HTTP: frozenset({Phase.WEBSOCKET, Phase.SSE, Phase.DONE}),
    Phase.WEBSOCKET: frozenset({Phase.DONE}),
    Phase.SSE: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}


def move(current: Phase, new: Phase) -> Phase:
    """``new``, if :data:`MOVES` allows going there from ``current``; else
    raise :class:`~sansio_push.LocalProtocolError`."""
    if new not in MOVES[current]:
        raise LocalProtocolError(f"a connection cannot go from {current.name} to {new.name}")
    return new


class PhaseObject(Protocol):
    """What every phase object answers: the facade's calls, each taken by
    the phase whose work it is (see the module's docstring for the others).

    ``phase`` is the object's :class:`Phase`: its own, then ``DONE`` once
    it ends (an object never becomes another live phase: the facade moves
    to a new object). ``protocol`` is what
    :attr:`~sansio_push.ServerConnection.protocol` says, ``writable`` what
    :attr:`~sansio_push.ServerConnection.open` says. ``encode`` and
    ``encode_prepared`` give a message's bytes for the connection to queue
    (within its bounds), or ``None`` while the phase takes no writes.
    """

    phase: Phase
    #: True if encoding a message changes the phase (permessage-deflate's
    #: context): the queue bounds are then checked before it is encoded.
    compresses: bool

    @property
    def protocol(self) -> str: ...

    @property
    def writable(self) -> bool: ...

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Event | None: ...

    def start_response(
        self, status: int, headers: Headers, upgrade: bool
    ) -> PhaseObject | None: ...

    def send_body(self, data: bytes) -> None: ...

    def end_response(self) -> None: ...

    def encode(
        self, message: str | bytes, event: EventName, id: str | None, retry: int | None
    ) -> bytes | None: ...

    def encode_prepared(self, prepared: Prepared) -> bytes | None: ...

    def send_keepalive(self, payload: bytes) -> None: ...

    def send_event_id(self, id: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None: ...
