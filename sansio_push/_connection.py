"""One TCP connection's whole life: HTTP/1.1, then maybe WebSocket or SSE."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import h11
import wsproto.events as ws
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.connection import ConnectionType
from wsproto.utilities import LocalProtocolError as WSLocalProtocolError

from . import _http_fast
from ._codes import (
    ABNORMAL,
    MESSAGE_TOO_BIG,
    NORMAL,
    POLICY_VIOLATION,
    can_send_close_code,
    error_response,
    phrase,
)
from ._config import DEFAULT_CONFIG, Config
from ._env import build_env
from ._errors import LocalProtocolError
from ._events import (
    Body,
    Closed,
    Drained,
    EndOfRequest,
    Event,
    Message,
    Pong,
    Rejected,
    Request,
)
from ._frames import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    NotTaken,
    chunk,
    encode_frame,
    encode_message,
    read_frame,
)
from ._handshake import (
    SSE,
    WEBSOCKET,
    UpgradeRefused,
    sse_accept,
    upgrade_kind,
    websocket_accept,
)
from ._outbox import Outbox
from ._prepared import DEFAULT_EVENT, DefaultEvent, Prepared
from ._sse import encode_comment, encode_event

Headers = Iterable[tuple[str | bytes, str | bytes]]


_HEAD_TOO_LARGE = "request head too large"
# _next_fast_event: this request is h11's to read.
_TO_H11 = object()
_LF_END = re.compile(rb"\n\r?\n")
# A header line that starts with a space or tab: obs-fold (RFC 9112 5.2).
_OBS_FOLD = re.compile(rb"\n[ \t]")


def _bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def _has_obs_fold(raw: bytes) -> bool:
    """Whether the request head at the start of ``raw`` has an obs-fold (a
    bare LF ends lines and the head too, as for h11; the body is not looked at)."""
    end = _LF_END.search(raw)
    return _OBS_FOLD.search(raw, 0, len(raw) if end is None else end.start()) is not None


class ServerConnection:
    """The server side of one connection, with no I/O.

    Feed it bytes with :meth:`receive_data` and read :meth:`next_event` until
    it returns ``None``. Answer each :class:`Request` with
    :meth:`start_response` (then :meth:`send_body` and :meth:`end_response`),
    or with ``start_response(..., upgrade=True)`` to accept a push upgrade.
    Send what :meth:`data_to_send` returns and report it with :meth:`sent`.

    Not thread-safe: one driver task owns it.
    """

    def __init__(
        self,
        config: Config = DEFAULT_CONFIG,
        *,
        client: tuple[str, int] | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.server = server
        #: ``'http'`` until an upgrade, then ``'websocket'`` or ``'sse'``.
        self.protocol: str = "http"
        #: Messages refused by the ``'drop'`` overflow policy.
        self.dropped = 0
        self._h11: h11.Connection | None = self._new_h11()
        self._ws: WSConnection | None = None
        # WebSocket bytes received and not yet read, and where reading is in
        # them, while frames are read without wsproto (see _frames); None
        # once wsproto reads them.
        self._ws_in: bytes | None = None
        self._ws_pos = 0
        self._compressed = False
        self._out = Outbox()
        self._kind: str | None = None
        self._head_request = False
        self._body_left = config.max_body_size
        self._fragments: list[Any] = []
        self._fragments_size = 0
        # A push connection takes writes until it closes.
        self._writable = False
        # Nothing more comes from the peer that we care about.
        self._read_done = False
        # Whether the transport should be closed once the outbox is flushed.
        self._finished = False
        self._closed_event_sent = False
        self._peer_eof = False
        self._sse_chunked = False
        # The fast path (see _http_fast): bytes not yet handed to h11, and the state
        # of a fast request: 0 none, 1 head read, 2 body (none) read, 3 answering.
        self._raw = b""
        self._via_h11 = False
        self._eof = False
        self._fast_state = 0
        self._framing: _http_fast.Framing | None = None

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_head_size)

    # -- state ------------------------------------------------------------

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
        return self._writable

    @property
    def finished(self) -> bool:
        """True when, once :meth:`data_to_send` is flushed, the transport
        should be closed: nothing further will be read or answered."""
        return self._finished

    # -- bytes in ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        if self._read_done:
            if not data:
                self._finish()
            return
        if self._ws_in is not None:
            if not data:
                self._peer_eof = True
            else:
                # What is left of a frame not yet whole, then the new bytes.
                rest = self._ws_in[self._ws_pos :]
                self._ws_in = rest + data if rest else data
                self._ws_pos = 0
        elif self._ws is not None:
            if data:
                self._ws.receive_data(data)
            else:
                # Frames already received come first: wsproto would report the
                # 1006 ahead of them, so the end is fed once they are read.
                self._peer_eof = True
        elif self._h11 is not None:
            if self._via_h11:
                self._h11.receive_data(data)
            elif data:
                self._raw += data
            else:
                self._eof = True
        elif not data:
            # SSE: the only thing we read is the end.
            self._read_done = True

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes (or an answer) are needed."""
        if self._closed_event_sent:
            return None
        if self.protocol == WEBSOCKET:
            if self._ws_in is not None:
                event = self._next_small_frame()
                if not isinstance(event, NotTaken):
                    return event
            return self._next_ws_event()
        if self.protocol == SSE:
            if self._read_done:
                self._writable = False
                self._finish()
                return self._closed(ABNORMAL, "peer closed")
            return None
        return self._next_http_event()

    def _next_http_event(self) -> Event | None:
        conn = self._h11
        if conn is None or self._finished:
            return None
        if not self._via_h11:
            fast = self._next_fast_event()
            if fast is not _TO_H11:
                return fast  # type: ignore[return-value]
            self._via_h11 = True
            if _has_obs_fold(self._raw):
                # h11 would unfold it, reading the head otherwise than a proxy
                # that does not ("Transfer-Encoding:\r\n chunked"): refused,
                # as RFC 9112 5.2 allows.
                return self._reject(400, "obsolete line folding in the request head")
            conn.receive_data(self._raw)
            self._raw = b""
            if self._eof:
                conn.receive_data(b"")
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                return self._reject(431, _HEAD_TOO_LARGE)
            return self._reject(exc.error_status_hint, str(exc) or "malformed request")
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return None
        if isinstance(event, h11.Request):
            return self._on_request(event)
        if isinstance(event, h11.Data):
            self._body_left -= len(event.data)
            if self._body_left < 0:
                return self._reject(413, "request body too large")
            return Body(bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            return EndOfRequest()
        if isinstance(event, h11.ConnectionClosed):
            if conn.our_state in (h11.IDLE, h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                self._finish()
            return None
        return None  # pragma: no cover - h11 has no other server-side events

    def _next_fast_event(self) -> Event | None | object:
        """The next event of a simple request (see _http_fast), or _TO_H11 to hand
        what was received to h11."""
        state = self._fast_state
        if state == 1:
            self._fast_state = 2
            return EndOfRequest()
        if state:
            return None  # waiting for the answer, as h11 does
        # Empty lines before a request line are ignored (RFC 9112 2.2: old
        # clients send a CRLF after a POST body), CR or LF alone as nginx and
        # llhttp do; h11 would answer 400.
        raw = self._raw = self._raw.lstrip(b"\r\n")
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            if self._eof or len(raw) > self.config.max_head_size or _LF_END.search(raw):
                return _TO_H11  # h11 also ends a head at a blank line after a bare LF
            return None
        if end + 4 > self.config.max_head_size:
            return _TO_H11
        request = _http_fast.parse_simple(raw[:end])
        if request is None:
            return _TO_H11
        self._raw = raw[end + 4 :]
        self._fast_state = 1
        self._kind = None
        self._head_request = request.method == b"HEAD"
        self._body_left = self.config.max_body_size
        return Request(
            build_env(
                request,
                kind=None,
                server=self.server,
                client=self.client,
                scheme=self.config.scheme,
            )
        )

    def _on_request(self, request: h11.Request) -> Event:
        # h11 bounds only a head still incomplete; one that arrived whole in
        # a single read is measured here (as sent, less any optional spaces).
        size = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n\r\n")
        size += sum(len(n) + len(v) + 4 for n, v in request.headers.raw_items())
        if size > self.config.max_head_size:
            return self._reject(431, _HEAD_TOO_LARGE)
        if not request.http_version.startswith(b"1."):
            # h11 parses any d.d version and would answer "HTTP/2.0" as 1.1.
            return self._reject(505, "only HTTP/1.x is served")
        if request.method == b"CONNECT":
            # h11 would turn any 2xx answer into a tunnel: not ours to serve.
            return self._reject(501, "CONNECT is not supported")
        try:
            kind = upgrade_kind(request)
        except UpgradeRefused as exc:
            return self._reject(exc.status, str(exc), exc.headers)
        headers = dict(request.headers)
        if b"transfer-encoding" in headers and b"content-length" in headers:
            # RFC 9112 6.1: h11 would frame by Transfer-Encoding, a proxy in
            # front might by Content-Length (request smuggling): refuse, close.
            return self._reject(400, "both Content-Length and Transfer-Encoding")
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.config.max_body_size:
            return self._reject(413, "request body too large")
        self._kind = kind
        self._head_request = request.method == b"HEAD"
        self._body_left = self.config.max_body_size
        assert self._h11 is not None
        if self._h11.they_are_waiting_for_100_continue:
            self._out.put(
                self._h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                ),
                message=False,
            )
        env = build_env(
            request,
            kind=kind,
            server=self.server,
            client=self.client,
            scheme=self.config.scheme,
        )
        self._request = request
        return Request(env)

    def _reject(
        self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> Event:
        conn = self._h11
        if conn is not None and conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # A response is already under way: all we can do is close.
            self._finish()
            return Rejected(status, reason)
        self._out.put(error_response(status, reason, headers or []), message=False)
        self._finish()
        return Rejected(status, reason)

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
        if status == 0:
            status = 200
        pairs = [(_bytes(n).lower(), _bytes(v)) for n, v in headers]
        conn = self._h11
        if conn is None:
            raise LocalProtocolError("start_response() after the connection upgraded")
        if self._fast_state:
            if self._fast_state == 3:
                raise LocalProtocolError("a response has already started")
            head, self._framing = _http_fast.start_response(
                status, pairs, phrase(status), self._head_request
            )
            self._fast_state = 3
            self._out.put(head, message=False)
            return None
        if upgrade and self._kind is not None and status < 300:
            if self._kind == WEBSOCKET:
                self._accept_websocket(pairs)
            else:
                # An event stream is a 200 whatever 2xx the app chose: a 204
                # would tell the browser there is no body to stream.
                self._accept_sse(200, pairs)
            return self.protocol
        self._send_head(h11.Response, status, pairs)
        return None

    def send_body(self, data: bytes) -> None:
        """A piece of the response body (dropped for HEAD)."""
        if data and not self._head_request:
            if self._fast_state:
                if self._framing is None:
                    raise LocalProtocolError("no response has started")
                self._out.put(self._framing.body(data), message=False)
                return
            self._send_h11(h11.Data(data=data))

    def end_response(self) -> None:
        """Finish the response; the next pipelined request may follow."""
        conn = self._h11
        assert conn is not None
        if self._fast_state:
            framing = self._framing
            if framing is None:
                raise LocalProtocolError("no response has started")
            end = framing.end()
            if end:
                self._out.put(end, message=False)
            self._fast_state = 0
            self._framing = None
            if not framing.keep_alive or (self._eof and not self._raw):
                self._finish()
            return
        self._send_h11(h11.EndOfMessage())
        if conn.our_state is h11.MUST_CLOSE:
            self._finish()
        elif conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            # What came after this request goes back to where every request
            # head starts (empty lines skipped, the fast path first), and a
            # new h11 reads the next one if the fast path does not.
            data, closed = conn.trailing_data
            self._h11 = self._new_h11()
            self._raw, self._eof = bytes(data), closed
            self._via_h11 = False
        elif conn.their_state is not h11.DONE:
            # The app answered without reading the whole body: we cannot
            # tell where the next request starts, so close.
            self._finish()

    def respond(self, status: int, headers: Headers = (), body: bytes = b"") -> None:
        """A whole response at once, with ``Content-Length`` set if missing."""
        pairs = list(headers)
        if not any(
            _bytes(n).lower() in (b"content-length", b"transfer-encoding") for n, _ in pairs
        ):
            pairs.append((b"content-length", str(len(body)).encode()))
        self.start_response(status, pairs)
        self.send_body(body)
        self.end_response()

    def _send_h11(self, event: Any) -> None:
        assert self._h11 is not None
        try:
            data = self._h11.send(event)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        if data:
            self._out.put(data, message=False)

    def _accept_websocket(self, pairs: list[tuple[bytes, bytes]]) -> None:
        conn = self._h11
        assert conn is not None
        headers, deflate = websocket_accept(self._request, pairs, self.config)
        self._send_head(h11.InformationalResponse, 101, headers)
        trailing, _closed = conn.trailing_data
        self._h11 = None
        self._request = None  # type: ignore[assignment]
        if deflate is not None:
            self._compressed = True
            self._ws = WSConnection(ConnectionType.SERVER, [deflate], trailing_data=bytes(trailing))
        else:
            self._ws_in = bytes(trailing)
        self.protocol = WEBSOCKET
        self._writable = True

    def _accept_sse(self, status: int, pairs: list[tuple[bytes, bytes]]) -> None:
        data = self._send_head(h11.Response, status, sse_accept(pairs))
        # h11 frames an HTTP/1.1 stream with chunks and an HTTP/1.0 one by
        # closing it; from here on we write the body ourselves, the same way.
        self._sse_chunked = b"transfer-encoding: chunked" in data.lower()
        self._h11 = None
        self._request = None  # type: ignore[assignment]
        self.protocol = SSE
        self._writable = True

    def _send_head(
        self,
        kind: type[h11.Response | h11.InformationalResponse],
        status: int,
        headers: list[tuple[bytes, bytes]],
    ) -> bytes:
        """Queue the response head h11 writes (validating the headers); its bytes."""
        assert self._h11 is not None
        try:
            data = self._h11.send(kind(status_code=status, headers=headers, reason=phrase(status)))
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        assert data is not None
        self._out.put(data, message=False)
        return data

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
        if not self._writable:
            return False
        if self.protocol == SSE:
            name = self.config.sse_event if isinstance(event, DefaultEvent) else event
            data = encode_event(message, event=name, id=id, retry=retry)
            if self._sse_chunked:
                data = chunk(data)
        elif self._compressed:
            assert self._ws is not None
            data = self._ws_send(
                ws.TextMessage(data=message)
                if isinstance(message, str)
                else ws.BytesMessage(data=bytes(message))
            )
        else:
            data = encode_message(message)
        return self._queue(data, burst)

    def send_prepared(self, prepared: Prepared, *, burst: bool = False) -> bool:
        """Queue a message encoded once by :func:`prepare`; as :meth:`send_message`."""
        if not self._writable:
            return False
        if self.protocol == SSE:
            block = prepared.sse_block(self.config.sse_event, self._sse_chunked)
            return self._queue(block, burst)
        if self._compressed:
            return self.send_message(prepared.message, burst=burst)
        return self._queue(prepared.ws_frame, burst)

    def _queue(self, data: bytes, burst: bool = False) -> bool:
        out = self._out
        # Only what is queued while the socket refuses counts (see refused).
        if out.refusing and not burst:
            cfg = self.config
            queued, size = out.backlog()
            if queued >= cfg.max_queue_messages or size + len(data) > cfg.max_queue_bytes:
                self.overflow()
                return False
        out.put(data, message=True)
        return True

    def overflow(self) -> None:
        """Apply the overflow policy to a refused message: ``'drop'`` counts
        it in :attr:`dropped`; ``'close'`` closes with 1008 (SSE: ends the
        stream)."""
        if self.config.overflow == "drop":
            self.dropped += 1
        else:
            self.close(POLICY_VIOLATION, "send queue full: the client does not read")

    def send_keepalive(self, payload: bytes = b"") -> None:
        """WebSocket: queue a ping carrying ``payload``. SSE: queue a comment
        line (ignored by clients; keeps proxies and NATs from timing out)."""
        if not self._writable:
            return
        if self.protocol == WEBSOCKET:
            if len(payload) > 125:
                raise LocalProtocolError("a ping's payload is at most 125 bytes")
            self._out.put(encode_frame(OP_PING, payload), message=False)
        else:
            comment = encode_comment()
            self._out.put(chunk(comment) if self._sse_chunked else comment, message=False)

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Close after what is already queued: a close frame (WebSocket) or
        the end of the stream (SSE). Further writes are refused. Idempotent.

        On a WebSocket the peer's close frame is awaited next
        (:class:`Closed` follows); the driver bounds that wait.
        """
        websocket = self.protocol == WEBSOCKET
        if websocket and not can_send_close_code(code):
            raise LocalProtocolError(
                f"{code} is not a close code an endpoint may send (RFC 6455 7.4)"
            )
        if not self._writable:
            return
        self._writable = False
        if websocket:
            self._to_wsproto()
            self._out.put(
                self._ws_send(ws.CloseConnection(code=code, reason=reason)), message=False
            )
        else:
            if self._sse_chunked:
                self._out.put(b"0\r\n\r\n", message=False)
            self._finish()

    def abort(self) -> None:
        """The driver gave up on the transport (a write or pong timeout, a
        reset): refuse further writes at once. Nothing more will be sent."""
        self._writable = False
        self._read_done = True
        self._finish()

    def _ws_send(self, event: ws.Event) -> bytes:
        assert self._ws is not None
        try:
            return self._ws.send(event)
        except WSLocalProtocolError as exc:  # pragma: no cover - guarded by _writable
            raise LocalProtocolError(str(exc)) from exc

    def _next_small_frame(self) -> Event | NotTaken | None:
        """The next event while frames are read without wsproto; or
        ``TO_WSPROTO`` once wsproto reads them (see _frames)."""
        assert self._ws_in is not None
        while True:
            buf = self._ws_in
            got = read_frame(buf, self._ws_pos, self.config.max_message_size)
            if got is None and not self._peer_eof:
                if self._ws_pos == len(buf):
                    self._ws_in, self._ws_pos = b"", 0  # what was read is let go
                return None
            if not isinstance(got, tuple):  # a frame wsproto must judge, or the end
                self._to_wsproto()
                return NotTaken.TO_WSPROTO
            opcode, payload, self._ws_pos = got
            if isinstance(payload, str) or opcode == OP_BINARY:
                return Message(payload)
            if opcode == OP_PING:
                self._out.put(encode_frame(OP_PONG, payload), message=False)
            else:
                return Pong(payload)

    def _to_wsproto(self) -> None:
        """From here on wsproto reads the connection, from the first byte
        not yet read."""
        if self._ws_in is not None:
            rest = self._ws_in[self._ws_pos :]
            self._ws_in, self._ws_pos = None, 0
            self._ws = WSConnection(ConnectionType.SERVER, [], trailing_data=rest)

    def _next_ws_event(self) -> Event | None:
        conn = self._ws
        assert conn is not None
        for event in conn.events():
            if isinstance(event, ws.Message):
                result = self._on_fragment(event)
                if result is not None:
                    return result
            elif isinstance(event, ws.Ping):
                if conn.state is WSState.OPEN:
                    self._out.put(conn.send(event.response()), message=False)
            elif isinstance(event, ws.Pong):
                return Pong(bytes(event.payload))
            elif isinstance(event, ws.CloseConnection):
                return self._on_ws_close(event)
        if self._peer_eof:
            self._peer_eof = False
            conn.receive_data(None)
            return self._next_ws_event()
        return None

    def _on_fragment(self, event: ws.Message[Any]) -> Event | None:
        data = event.data
        # The limit is in bytes: text counts as its UTF-8 encoding.
        self._fragments_size += (
            len(data.encode()) if isinstance(data, str) and not data.isascii() else len(data)
        )
        if self._fragments_size > self.config.max_message_size:
            return self._ws_fail(MESSAGE_TOO_BIG, "message too big")
        if event.message_finished:
            parts, self._fragments = self._fragments, []
            self._fragments_size = 0
            if isinstance(data, str):
                return Message("".join(parts) + data if parts else data)
            return Message(b"".join(parts) + data if parts else bytes(data))
        self._fragments.append(data)
        return None

    def _on_ws_close(self, event: ws.CloseConnection) -> Event:
        conn = self._ws
        assert conn is not None
        state = conn.state
        if state is WSState.REMOTE_CLOSING:
            # The peer closes first: echo its code (RFC 6455 5.5.1).
            self._writable = False
            self._out.put(conn.send(event.response()), message=False)
        elif state is WSState.OPEN:
            # wsproto found a protocol error (1002, 1007, ...): close with it.
            return self._ws_fail(int(event.code), event.reason or "")
        self._writable = False
        self._read_done = True
        self._finish()
        return self._closed(int(event.code), event.reason or "")

    def _ws_fail(self, code: int, reason: str) -> Event:
        conn = self._ws
        assert conn is not None
        self._writable = False
        if conn.state in (WSState.OPEN, WSState.REMOTE_CLOSING):
            self._out.put(conn.send(ws.CloseConnection(code=code, reason=reason)), message=False)
        self._read_done = True
        self._finish()
        return self._closed(code, reason)

    def _closed(self, code: int, reason: str) -> Event:
        self._closed_event_sent = True
        return Closed(code, reason)

    def _finish(self) -> None:
        self._finished = True
        if self._ws is not None:
            # wsproto reads frames with a generator kept on its FrameProtocol,
            # whose frame refers back to it: a reference cycle until the
            # generator returns, which it does only when asked for a frame
            # after the close frame (never, on an abort or a lost peer). Nothing
            # more is read from here: end it, so that reference counting frees
            # wsproto's objects (its sends do not use it).
            self._ws._proto._parse_more.close()

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
