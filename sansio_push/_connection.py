"""One TCP connection's whole life: HTTP/1.1, then maybe WebSocket or SSE.

:class:`ServerConnection` is a facade: the work is its phase object's
(``_http.py``, ``_websocket.py``, ``_sse_stream.py``), the phases and their
moves are written down in ``_state.py``, and what every phase shares, the
outbox, is the facade's.
"""

from __future__ import annotations

from collections.abc import Callable

from ._codes import NORMAL, POLICY_VIOLATION
from ._config import DEFAULT_CONFIG, Config
from ._events import Drained, Event
from ._http import HttpPhase, as_bytes
from ._outbox import Outbox
from ._prepared import DEFAULT_EVENT, DefaultEvent, Prepared, PreparedRun
from ._push import PushPhase
from ._state import DONE, Headers, PhaseObject, move


class ServerConnection:
    """The server side of one connection, with no I/O.

    Feed it bytes with :meth:`receive_data` and read :meth:`next_event` until
    it returns ``None``. Answer each :class:`Request` with
    :meth:`start_response` (then :meth:`send_body` and :meth:`end_response`),
    or with ``start_response(..., upgrade=True)`` to accept a push upgrade.
    Send what :meth:`data_to_send` returns and report it with :meth:`sent`.

    A call the connection's state does not allow raises
    :class:`LocalProtocolError`; what the peer does wrong becomes an event
    (:class:`Rejected`, :class:`Closed`), never an exception.

    Not thread-safe: one driver task owns it.
    """

    # No instance dict: thousands of connections wait at once.
    __slots__ = ("config", "client", "server", "dropped", "_out", "_state", "_compresses")

    def __init__(
        self,
        config: Config = DEFAULT_CONFIG,
        *,
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
        first: Callable[[Outbox], PhaseObject] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.server = server
        #: Messages refused by the ``'drop'`` overflow policy.
        self.dropped = 0
        self._out = Outbox()
        # The first phase, given the outbox: HTTP/1.1's, unless a subclass
        # (an HTTP/2 stream, _h2_stream.py) starts elsewhere.
        self._state: PhaseObject = (
            HttpPhase(self._out, config, client, server) if first is None else first(self._out)
        )
        # The phase's own compresses, kept here: read on every send.
        self._compresses = False

    # -- state ------------------------------------------------------------

    @property
    def protocol(self) -> str:
        """``'http'`` until an upgrade, then ``'websocket'`` or ``'sse'``."""
        return self._state.protocol

    @property
    def pending(self) -> int:
        """Messages queued whose last byte the driver has not yet taken."""
        return self._out.pending

    @property
    def pending_bytes(self) -> int:
        """All bytes queued and not yet taken (messages and protocol bytes)."""
        return self._out.pending_bytes

    @property
    def open(self) -> bool:
        """True while a push connection accepts writes."""
        return self._state.writable

    @property
    def finished(self) -> bool:
        """True when, once :meth:`data_to_send` is flushed, the transport
        should be closed: nothing further will be read or answered."""
        return self._state.phase is DONE

    # -- bytes in ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        self._state.receive_data(data)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes (or an answer) are needed."""
        return self._state.next_event()

    # -- the app's answer -------------------------------------------------

    def start_response(
        self, status: int, headers: Headers = (), *, upgrade: bool = False
    ) -> str | None:
        """Answer the current request.

        With ``upgrade`` (the app set a handler) and ``status < 300`` (0
        counts as 200) on a push request, the connection upgrades and this
        returns ``'websocket'`` or ``'sse'``; the app's headers go out on the
        101 or the SSE 200, and :meth:`send_body` is not used. Otherwise it
        starts a normal response and returns ``None``. Raises
        :class:`LocalProtocolError` (a ``ValueError``) for headers HTTP does
        not allow (a CR or LF in a value, say), before anything is queued,
        and for a call the connection's state does not allow.
        """
        state = self._state.start_response(status, headers, upgrade)
        if state is None:
            return None
        move(self._state.phase, state.phase)  # the one phase change made here
        self._state = state
        self._compresses = state.compresses
        return state.protocol

    def send_body(self, data: bytes) -> None:
        """A piece of the response body (dropped for HEAD)."""
        self._state.send_body(data)

    def end_response(self) -> None:
        """Finish the response; the next pipelined request may follow."""
        self._state.end_response()

    def answer(self, status: int, headers: Headers = (), body: bytes = b"") -> None:
        """:meth:`start_response`, :meth:`send_body` and :meth:`end_response`
        in one call, for a body known in advance (the same bytes and errors,
        one call instead of three). Unlike :meth:`respond`, it adds no header."""
        state = self._state
        if isinstance(state, HttpPhase):
            state.answer(status, headers, body)
            return
        self.start_response(status, headers)
        self.send_body(body)
        self.end_response()

    def respond(self, status: int, headers: Headers = (), body: bytes = b"") -> None:
        """A whole response at once, with ``Content-Length`` set if missing."""
        pairs = list(headers)
        if not any(
            as_bytes(n).lower() in (b"content-length", b"transfer-encoding") for n, _ in pairs
        ):
            pairs.append((b"content-length", str(len(body)).encode()))
        self.start_response(status, pairs)
        self.send_body(body)
        self.end_response()

    # -- push: bytes out --------------------------------------------------

    def send_message(
        self,
        message: str | bytes,
        *,
        event: str | None | DefaultEvent = DEFAULT_EVENT,
        id: str | None = None,
        retry: int | None = None,
        burst: bool = False,
    ) -> bool:
        """Queue one message. WebSocket: ``str`` as text, bytes as binary.
        SSE: one event, with ``event``, ``id``, ``retry`` if given. With
        ``burst``, the queue bounds do not apply: the driver says so for
        what the app writes in one go (one callback's writes).

        Returns False, queueing nothing, if the connection is not open or the
        ``'drop'`` policy refused it. Raises :class:`LocalProtocolError` (a
        ``ValueError``) for SSE fields that cannot be encoded (a line break
        in ``event`` or ``id``).
        """
        if self._compresses and not burst:
            # Compressing a refused message would advance the context the
            # client inflates with: judge the bounds on its size before.
            if self._out.refusing and self._over_bound(len(message)):
                return False
            burst = True
        data = self._state.encode(message, event, id, retry)
        return False if data is None else self._queue(data, burst)

    def send_prepared(self, prepared: Prepared, *, burst: bool = False) -> bool:
        """Queue a message encoded once by :func:`prepare`; as :meth:`send_message`."""
        if self._compresses:
            return self.send_message(prepared.message, burst=burst)
        data = self._state.encode_prepared(prepared)
        return False if data is None else self._queue(data, burst)

    def send_run(self, run: PreparedRun, *, burst: bool = False) -> bool:
        """Queue every message of ``run`` in one piece, exactly as
        :meth:`send_prepared` of each in turn would, where each would be
        queued as it is: open, no compression, and the queue bounds not
        counting (the socket is not refusing, or ``burst``). Returns False,
        queueing nothing, otherwise: then send them one by one."""
        state = self._state
        if self._compresses or (self._out.refusing and not burst):
            return False
        joined = state.encode_run(run) if isinstance(state, PushPhase) else None
        if joined is None:
            return False
        self._out.put_run(*joined)
        return True

    def _queue(self, data: bytes, burst: bool = False) -> bool:
        out = self._out
        # Only what is queued while the socket refuses counts (see refused).
        if out.refusing and not burst and self._over_bound(len(data)):
            return False
        out.put(data, message=True)
        return True

    def _over_bound(self, size: int) -> bool:
        """Whether one more message of ``size`` bytes would pass a queue
        bound; if so the overflow policy is applied to it."""
        cfg = self.config
        queued, pending = self._out.backlog()
        if queued >= cfg.max_queue_messages or pending + size > cfg.max_queue_bytes:
            self.overflow()
            return True
        return False

    def overflow(self) -> None:
        """Apply the overflow policy to a refused message: ``'drop'`` and
        ``'resync'`` count it in :attr:`dropped`; ``'close'`` closes with
        1008 (SSE: ends the stream)."""
        if self.config.overflow != "close":
            self.dropped += 1
        else:
            self.close(POLICY_VIOLATION, "send queue full: the client does not read")

    def send_event_id(self, id: str) -> None:
        """SSE: queue a block with only an ``id`` field: it sets the client's
        last event id (sent back as ``Last-Event-ID`` when it reconnects)
        without dispatching an event. WebSocket: nothing. Raises
        :class:`LocalProtocolError` for an id SSE cannot carry."""
        self._state.send_event_id(id)

    def send_keepalive(self, payload: bytes = b"") -> None:
        """WebSocket: queue a ping carrying ``payload``. SSE: queue a comment
        line (ignored by clients; keeps proxies and NATs from timing out)."""
        self._state.send_keepalive(payload)

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Close after what is already queued: a close frame (WebSocket) or
        the end of the stream (SSE). Further writes are refused. Idempotent.

        On a WebSocket the peer's close frame is awaited next
        (:class:`Closed` follows); the driver bounds that wait.
        """
        self._state.close(code, reason)

    def abort(self) -> None:
        """The driver gave up on the transport (a write or pong timeout, a
        reset): refuse further writes at once. Nothing more will be sent."""
        self._state.abort()

    # -- bytes out --------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Every byte waiting for the socket (without taking them: see :meth:`sent`)."""
        return self._out.peek()

    def refused(self) -> None:
        """The driver offered the socket bytes of :meth:`data_to_send` and it
        did not take them all. From now until everything queued is taken,
        the queue bounds count what is queued (what was queued before is
        the app's burst, sent whatever its size)."""
        self._out.refused()

    @property
    def refusing(self) -> bool:
        """True from :meth:`refused` until everything queued is taken."""
        return self._out.refusing

    @property
    def bytes_queued(self) -> int:
        """Bytes ever queued for the socket (an offset :attr:`bytes_sent`
        reaches once they are all taken)."""
        return self._out.queued_total

    @property
    def bytes_sent(self) -> int:
        """Bytes ever reported taken with :meth:`sent`."""
        return self._out.taken_total

    def sent(self, n: int) -> Drained | None:
        """The driver handed the first ``n`` bytes of :meth:`data_to_send` to
        the socket. Returns :class:`Drained` exactly when that brought
        :attr:`pending` from above zero to zero."""
        return Drained() if self._out.taken(n) else None
