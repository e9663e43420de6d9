"""One HTTP/2 stream: a request and its answer, or a push conversation.

An :class:`H2Stream` is a :class:`~sansio_push.ServerConnection` whose
first phase is :class:`H2RequestPhase` instead of HTTP/1.1's: the request
arrives as decoded headers (h2 read them), its body as the stream's DATA.
After an accepted upgrade the stream moves to the same WebSocket and SSE
phases as an HTTP/1.1 connection does (their bytes become the stream's DATA
frames, SSE unchunked), so a push session drives a stream exactly as it
drives a connection: same queue bounds, same ``pending``, same events.

What only the connection can do (send HEADERS, end or reset the stream,
give the peer back its window) the phase asks of its :class:`StreamOwner`,
the ``H2Connection`` of ``_h2.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from ._config import Config
from ._connection import ServerConnection
from ._env import build_env, env_base
from ._errors import LocalProtocolError
from ._events import Body, EndOfRequest, Event, Rejected, Request
from ._handshake import SSE, WEBSOCKET, sse_accept
from ._http import RequestPhase, response_pairs
from ._outbox import Outbox
from ._sse_stream import SsePhase
from ._state import DONE, Headers, Phase, PhaseObject
from ._websocket import WebSocketPhase

Pairs = list[tuple[bytes, bytes]]

# Headers HTTP/2 forbids (RFC 9113 8.2.2): they name the HTTP/1.1
# connection. An app written for HTTP/1.1 sends some (a WSGI framework's
# Connection: close); they are dropped, not refused.
_CONNECTION_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# What the WebSocket handshake of HTTP/1.1 owns: RFC 8441's answer is a
# plain 200, and a framework's Content-Type must not reach the client.
_NOT_ON_A_WEBSOCKET = frozenset(
    (b"sec-websocket-accept", b"sec-websocket-extensions", b"content-type", b"content-length")
)
_BAD_VALUE = frozenset(b"\r\n\x00")
# A field name (RFC 9110 5.1), lower-case as HTTP/2 has them: no pseudo-header
# (":status") can be smuggled in by an app's header.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")


class StreamOwner(Protocol):
    """What a stream asks of its connection (``_h2.H2Connection``)."""

    def send_headers(self, stream: H2Stream, headers: Pairs, end_stream: bool) -> None: ...

    def ack(self, stream: H2Stream, n: int) -> None: ...


class _Head:
    """A request head as :func:`build_env` reads it, from HTTP/2 headers."""

    __slots__ = ("method", "target", "http_version", "headers")

    def __init__(self, method: bytes, target: bytes, headers: Pairs) -> None:
        self.method = method
        self.target = target
        self.http_version = b"2"
        self.headers = headers


def _response_headers(status: int, pairs: Iterable[tuple[bytes, bytes]]) -> Pairs:
    """``:status`` and the app's headers as HTTP/2 carries them; raises
    :class:`LocalProtocolError` for a value HTTP cannot carry."""
    headers = [(b":status", str(status).encode())]
    for name, value in pairs:
        if name in _CONNECTION_HEADERS:
            continue
        if not _TOKEN.match(name) or _BAD_VALUE.intersection(value):
            raise LocalProtocolError(f"header {name!r}: {value!r} cannot be sent")
        headers.append((name, value.strip(b" \t")))
    return headers


class H2RequestPhase(RequestPhase):
    """One request on a stream: its head, its body, the app's answer."""

    __slots__ = (
        "_stream",
        "_out",
        "_config",
        "_events",
        "_kind",
        "_head_request",
        "_body",
        "_body_left",
        "_ended",
        "_response",
        "_headers_sent",
        "_offered",
        "_tunnel",
    )

    def __init__(self, stream: H2Stream, out: Outbox, config: Config, env_event: Event) -> None:
        self.phase = Phase.HTTP
        self._stream = stream
        self._out = out
        self._config = config
        # Events not yet read: the request first (or its rejection).
        self._events: list[Event] = [env_event]
        self._kind: str | None = None
        self._head_request = False
        # Body bytes received while the events before them wait.
        self._body = b""
        self._body_left = config.max_body_size
        self._ended = False
        # The answer's HEADERS, held until its body or its end, so that an
        # answer with no body is one HEADERS frame with END_STREAM.
        self._response: Pairs | None = None
        self._headers_sent = False
        # The WebSocket subprotocols the client offered.
        self._offered: list[bytes] = []
        # A WebSocket request: its DATA is the WebSocket's, not a body.
        self._tunnel = False

    @classmethod
    def begin(
        cls,
        stream: H2Stream,
        out: Outbox,
        config: Config,
        headers: Pairs,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> H2RequestPhase:
        """The phase of a request that arrived with ``headers`` (h2 checked
        the pseudo-headers): a :class:`Request`, or a :class:`Rejected`
        already answered."""
        pseudo: dict[bytes, bytes] = {}
        regular: Pairs = []
        for name, value in headers:
            if name[:1] == b":":
                pseudo[name] = value
            else:
                regular.append((name, value))
        method = pseudo.get(b":method", b"GET")
        authority = pseudo.get(b":authority")
        if authority is not None and all(n != b"host" for n, _ in regular):
            regular.append((b"host", authority))
        kind = None
        rejected: Rejected | None = None
        if method == b"CONNECT" and pseudo.get(b":protocol") == b"websocket":
            # RFC 8441: the app sees what an HTTP/1.1 upgrade shows it, a GET
            # asking for a WebSocket, so that the same code accepts both.
            method = b"GET"
            regular += [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
            kind = WEBSOCKET
            if dict(regular).get(b"sec-websocket-version", b"").strip() != b"13":
                rejected = Rejected(400, "unsupported Sec-WebSocket-Version (only 13)")
        elif method == b"CONNECT":
            rejected = Rejected(405, "CONNECT is not served")
        elif method == b"GET" and any(
            n == b"accept" and b"text/event-stream" in v.lower() for n, v in regular
        ):
            kind = SSE
        length = dict(regular).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_size:
            rejected = Rejected(413, "request body too large")
        head = _Head(method, pseudo.get(b":path", b"/"), regular)
        env = build_env(head, kind=kind, base=env_base(server, client, config.scheme))
        phase = cls(stream, out, config, rejected or Request(env))
        phase._kind = kind
        phase._head_request = method == b"HEAD"
        # An extended CONNECT has no body (its stream stays open for the
        # WebSocket's frames): the request is complete with its head.
        phase._tunnel = phase._ended = kind == WEBSOCKET
        phase._offered = [
            p.strip() for n, v in regular if n == b"sec-websocket-protocol" for p in v.split(b",")
        ]
        if rejected is not None:
            phase._reject(rejected)
        return phase

    # -- bytes in -----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """A piece of the body; ``b""`` at its end (the peer's END_STREAM).
        On a WebSocket request, frames sent before the answer: kept for the
        WebSocket (at most ``max_body_size`` of them)."""
        if self._tunnel and data and self.phase is not DONE:
            self._body_left -= len(data)
            if self._body_left < 0:
                self._reject(Rejected(400, "WebSocket frames before the answer past max_body_size"))
                return
            self._body += data
            return
        if self._ended or self.phase is DONE:
            return
        if not data:
            self._ended = True
            return
        self._body_left -= len(data)
        if self._body_left < 0:
            self._reject(Rejected(413, "request body too large"))
            return
        self._body += data

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.pop(0)
        if self.phase is DONE:
            return None
        if self._body and not self._tunnel:
            data, self._body = self._body, b""
            return Body(data)
        if self._ended:
            self._ended = False
            self._body_left = -1  # read: nothing more comes
            return EndOfRequest()
        return None

    def _reject(self, event: Rejected) -> None:
        """Answer what the peer did wrong ourselves, and end."""
        if not self._headers_sent:
            body = f"{event.reason}\n".encode()
            self._response = [
                (b":status", str(event.status).encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
            self._send_headers(end_stream=False)
            self._out.put(body, message=False)
            self._stream.wants_end = True
        self._body = b""
        if self._events[-1:] != [event]:
            self._events.append(event)
        self._end()

    # -- the app's answer ---------------------------------------------------

    def start_response(self, status: int, headers: Headers, upgrade: bool) -> PhaseObject | None:
        self._live()
        if self._response is not None or self._headers_sent:
            raise LocalProtocolError("a response has already started")
        if status == 0:
            status = 200
        pairs = response_pairs(headers)
        if upgrade and self._kind is not None and status < 300:
            return self._accept(pairs)
        self._response = _response_headers(status, pairs)
        if self._head_request or status in (204, 304) or 100 <= status < 200:
            self._head_request = True  # no body goes out
        return None

    def send_body(self, data: bytes) -> None:
        if not data or self._head_request:
            return
        self._live()
        if not self._headers_sent:
            if self._response is None:
                raise LocalProtocolError("no response has started")
            self._send_headers(end_stream=False)
        self._out.put(data, message=False)

    def end_response(self) -> None:
        self._live()
        if self._response is None and not self._headers_sent:
            raise LocalProtocolError("no response has started")
        if not self._headers_sent and not self._out.pending_bytes:
            self._send_headers(end_stream=True)
        else:
            if not self._headers_sent:
                self._send_headers(end_stream=False)
            self._stream.wants_end = True
        self._end()

    def _send_headers(self, end_stream: bool) -> None:
        headers = self._response
        assert headers is not None
        self._response = None
        self._headers_sent = True
        self._stream.owner.send_headers(self._stream, headers, end_stream)

    def _accept(self, pairs: Pairs) -> PhaseObject:
        config = self._config
        if self._kind == WEBSOCKET:
            for name, value in pairs:
                if name == b"sec-websocket-protocol" and value not in self._offered:
                    raise LocalProtocolError(f"subprotocol {value!r} was not offered by the client")
        self._headers_sent = True
        received, self._body = self._body, b""
        if self._kind == WEBSOCKET:
            # No permessage-deflate over HTTP/2 (it is not offered back).
            kept = [(n, v) for n, v in pairs if n not in _NOT_ON_A_WEBSOCKET]
            self._stream.owner.send_headers(self._stream, _response_headers(200, kept), False)
            return WebSocketPhase(self._out, config, received)
        stream_headers = _response_headers(200, sse_accept(pairs))
        self._stream.owner.send_headers(self._stream, stream_headers, False)
        return SsePhase(self._out, config, chunked=False)

    def _live(self) -> None:
        if self.phase is DONE:
            raise LocalProtocolError("the stream is finished: nothing more is answered")


class H2Stream(ServerConnection):
    """The server side of one HTTP/2 stream (see the module).

    Made by the connection for each request; the driver reads it with
    :meth:`next_event` when the connection says it has input, and sends
    what :meth:`data_to_send` holds through the connection's
    ``frame()``, which frames it as DATA within the peer's windows.
    """

    __slots__ = (
        "stream_id",
        "owner",
        "wants_end",
        "end_sent",
        "answered",
        "reset",
        "input_flagged",
        "_unacked",
        "_eos",
    )

    def __init__(
        self,
        owner: StreamOwner,
        stream_id: int,
        headers: Pairs,
        config: Config,
        *,
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.owner = owner
        #: The answer ends with what is queued (END_STREAM on its last DATA).
        self.wants_end = False
        #: END_STREAM has gone to the connection.
        self.end_sent = False
        #: The answer's HEADERS have gone to the connection.
        self.answered = False
        #: The peer reset the stream (or the connection ended under it).
        self.reset = False
        #: A StreamInput for it waits among the connection's events.
        self.input_flagged = False
        # Flow-controlled bytes received and not yet given back to the peer:
        # given back once the driver has read every event they made.
        self._unacked = 0
        # The peer ended its side (END_STREAM) while the request phase read.
        self._eos = False
        # Last: reading the request may already answer it (a 413), through us.
        super().__init__(
            config,
            client=client,
            server=server,
            first=lambda out: H2RequestPhase.begin(self, out, config, headers, client, server),
        )

    # -- the app's answer, to a peer that may have gone ------------------

    def start_response(
        self, status: int, headers: Headers = (), *, upgrade: bool = False
    ) -> str | None:
        """As :meth:`ServerConnection.start_response`; once the peer reset the
        stream the answer goes nowhere (as bytes to a closed socket would),
        and no upgrade is made."""
        if self.reset:
            return None
        return super().start_response(status, headers, upgrade=upgrade)

    def send_body(self, data: bytes) -> None:
        if not self.reset:
            super().send_body(data)

    def end_response(self) -> None:
        if not self.reset:
            super().end_response()

    # -- bytes in -----------------------------------------------------------

    def receive_data(self, data: bytes, flow_controlled: int = 0) -> None:
        """DATA from the peer (``flow_controlled`` counts its padding too)."""
        self._unacked += flow_controlled or len(data)
        if data:
            self._state.receive_data(data)

    def end_of_request(self) -> None:
        """The peer's END_STREAM: the end of the body; on a WebSocket the
        peer's end (a half-close, as RFC 8441 maps TCP's FIN); nothing on an
        event stream (its GET had no body)."""
        self._eos = True
        if self.protocol != SSE:
            self._state.receive_data(b"")

    def peer_reset(self) -> None:
        """The peer reset the stream, or the connection is gone: a push
        conversation sees the peer's end (``Closed(1006)``); a request is
        over, unanswered."""
        self.reset = True
        if self.protocol == "http":
            self._state.abort()
        else:
            self._state.receive_data(b"")

    def next_event(self) -> Event | None:
        """The next event; once none is left, what the peer sent is given
        back to it (a driver that stops reading, stops the peer)."""
        event = self._state.next_event()
        if event is None and self._unacked:
            n, self._unacked = self._unacked, 0
            self.owner.ack(self, n)
        return event

    @property
    def request_ended(self) -> bool:
        """Whether the peer has ended its side of the stream."""
        return self._eos

    @property
    def all_sent(self) -> bool:
        """Everything queued has been framed."""
        return self._out.pending_bytes == 0
