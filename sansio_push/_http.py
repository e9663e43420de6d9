"""The HTTP phase: requests read and answered, one at a time, in order.

Each request has one reader, chosen at its head: the simple-head reader
(``_http_fast.py``) for a plain keep-alive ``GET``/``HEAD``, which it reads
and answers as h11 would, or h11 for anything else, handed the bytes from
the head's first one. Once the answer ends, the next head starts over with
the simple-head reader. :class:`_Step` says where the request is.

The rules this server adds to h11's are :meth:`HttpPhase._check` (request
heads) and :func:`_has_obs_fold`; an upgrade request's are in
``_handshake.py``. Each rule refuses with a
:class:`~sansio_push.RemoteProtocolError` naming the status, which
:meth:`HttpPhase._reject` answers (:class:`Rejected`, then DONE).
"""

from __future__ import annotations

import contextlib
import re
from enum import Enum, auto
from typing import Any

import h11

from . import _http_fast
from ._codes import error_response, phrase
from ._config import Config
from ._env import RequestHead, build_env, env_base
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import Body, EndOfRequest, Event, Rejected, Request
from ._handshake import WEBSOCKET, UpgradeRefused, sse_accept, upgrade_kind, websocket_accept
from ._outbox import Outbox
from ._prepared import EventName, Prepared
from ._sse_stream import SsePhase
from ._state import DONE, Headers, Phase, PhaseObject, move
from ._websocket import DeflateWebSocketPhase, WebSocketPhase

_HEAD_TOO_LARGE = "request head too large"
_LF_END = re.compile(rb"\n\r?\n")
# A header line that starts with a space or tab: obs-fold (RFC 9112 5.2).
_OBS_FOLD = re.compile(rb"\n[ \t]")


def as_bytes(value: str | bytes) -> bytes:
    """A header name or value as bytes (``str`` as latin-1)."""
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def response_pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The app's response headers as (lowercase name, value) bytes. Spaces and
    tabs around a value are not part of it (RFC 9110 5.5) and are dropped, as
    gunicorn does: Django's WSGI handler sends every ``Set-Cookie`` value with
    a leading space, which h11 and h2 would refuse."""
    return [(as_bytes(n).lower(), as_bytes(v).strip(b" \t")) for n, v in headers]


def _has_obs_fold(raw: bytes) -> bool:
    """Whether the request head at the start of ``raw`` has an obs-fold (a
    bare LF ends lines and the head too, as for h11; the body is not looked at)."""
    end = _LF_END.search(raw)
    return _OBS_FOLD.search(raw, 0, len(raw) if end is None else end.start()) is not None


# The heads of simple requests' answers, by (status, HEAD?, the app's headers):
# an app answers most requests with a few header sets, and writing one is a
# tenth of a request. Only small ones, and emptied when full.
_HEADS: dict[tuple[int, bool, tuple[Any, ...]], tuple[bytes, bool, int, bool]] = {}
_HEADS_KEPT = 256
_HEAD_KEPT_SIZE = 1024


def _fast_head(
    status: int, headers: tuple[Any, ...], head_request: bool
) -> tuple[bytes, _http_fast.Framing]:
    """:func:`_http_fast.start_response` for the app's ``headers``, remembered."""
    key = (status, head_request, headers)
    try:
        known = _HEADS.get(key) if type(status) is int else None
    except TypeError:  # a header that is not a tuple of str or bytes
        known = None
    if known is not None:
        data, chunked, left, keep_alive = known
        return data, _http_fast.Framing(chunked, left, keep_alive)
    data, framing = _http_fast.start_response(
        status, response_pairs(headers), phrase(status), head_request
    )
    if type(status) is int and len(data) <= _HEAD_KEPT_SIZE:
        with contextlib.suppress(TypeError):
            if len(_HEADS) >= _HEADS_KEPT:
                _HEADS.clear()
            _HEADS[key] = (data, framing.chunked, framing.left, framing.keep_alive)
    return data, framing


class _Step(Enum):
    """Where the current request is (while h11 reads one, its states say more)."""

    #: No request yet: the simple-head reader looks at the next head first.
    HEAD = auto()
    #: h11 reads this request and writes its answer.
    H11 = auto()
    #: The simple-head reader read a head; the end of its (empty) body is next.
    BODY = auto()
    #: The request is read; the app's answer is awaited.
    WAIT = auto()
    #: The answer has started (:meth:`HttpPhase.start_response`).
    ANSWER = auto()


# The steps as module globals: on CPython 3.11 an enum member is looked up
# through the enum's metaclass, several times a global's cost, and a
# keep-alive request checks its step a dozen times.
_HEAD = _Step.HEAD
_H11 = _Step.H11
_BODY = _Step.BODY
_WAIT = _Step.WAIT
_ANSWER = _Step.ANSWER


class RequestPhase:
    """What a phase that reads requests answers before any upgrade (HTTP/1.1's
    here, an HTTP/2 stream's in ``_h2_stream.py``): the push calls send
    nothing, and its end is DONE."""

    __slots__ = ("phase",)
    phase: Phase
    protocol = "http"
    writable = False
    compresses = False

    def _end(self) -> None:
        if self.phase is not DONE:
            self.phase = move(self.phase, DONE)

    # -- the push calls, before any upgrade ---------------------------------

    def encode(
        self, message: str | bytes, event: EventName, id: str | None, retry: int | None
    ) -> bytes | None:
        """Nothing is sent before an upgrade."""
        return None

    def encode_prepared(self, prepared: Prepared) -> bytes | None:
        """Nothing is sent before an upgrade."""
        return None

    def send_keepalive(self, payload: bytes) -> None:
        """Nothing to keep alive before an upgrade."""

    def send_event_id(self, id: str) -> None:
        """No event stream before an upgrade."""

    def close(self, code: int, reason: str) -> None:
        """Nothing to close before an upgrade (the driver closes the transport,
        or ends the stream)."""

    def abort(self) -> None:
        self._end()


class HttpPhase(RequestPhase):
    """HTTP/1.1 requests and their answers, until an upgrade or the end."""

    __slots__ = (
        "_out",
        "_config",
        "_client",
        "_server",
        "_env_base",
        "_step",
        "_h11",
        "_raw",
        "_eof",
        "_framing",
        "_request",
        "_kind",
        "_head_request",
        "_body_left",
    )

    def __init__(
        self,
        out: Outbox,
        config: Config,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> None:
        self.phase = Phase.HTTP
        self._out = out
        self._config = config
        self._client = client
        self._server = server
        # What every request's environ has, made at the first request.
        self._env_base: dict[str, Any] | None = None
        self._step = _HEAD
        # h11, while it reads a request (_Step.H11).
        self._h11: h11.Connection | None = None
        # Bytes received and not yet handed to a reader, and the peer's end.
        self._raw = b""
        self._eof = False
        # The simple-head reader's answer: its body framing (_Step.ANSWER).
        self._framing: _http_fast.Framing | None = None
        # The request being answered, and what _begin() resets for each.
        self._request: RequestHead | None = None
        self._kind: str | None = None
        self._head_request = False
        self._body_left = config.max_body_size

    # -- bytes in -----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.phase is DONE:
            return
        if self._step is _H11:
            assert self._h11 is not None
            self._h11.receive_data(data)
        elif data:
            self._raw += data
        else:
            self._eof = True

    def next_event(self) -> Event | None:
        if self.phase is DONE:
            return None
        step = self._step
        if step is _HEAD:
            return self._read_head()
        if step is _H11:
            return self._next_h11_event()
        if step is _BODY:
            self._step = _WAIT
            return EndOfRequest()
        return None  # waiting for the answer, as h11 does

    def _read_head(self) -> Event | None:
        """A simple request head (see _http_fast), or the hand-over to h11."""
        # Empty lines before a request line are ignored (RFC 9112 2.2: old
        # clients send a CRLF after a POST body), CR or LF alone as nginx and
        # llhttp do; h11 would answer 400.
        raw = self._raw
        if not raw and not self._eof:
            return None  # (asked after every answer)
        raw = self._raw = raw.lstrip(b"\r\n")
        end = raw.find(b"\r\n\r\n")
        max_size = self._config.max_head_size
        if end < 0:
            if self._eof or len(raw) > max_size or _LF_END.search(raw):
                return self._to_h11()  # h11 also ends a head at a blank line after a bare LF
            return None
        request = _http_fast.parse_simple(raw[:end]) if end + 4 <= max_size else None
        if request is None:
            return self._to_h11()
        self._raw = raw[end + 4 :]
        self._step = _BODY
        return self._begin(request, None)

    def _to_h11(self) -> Event | None:
        """h11 reads this request, from its first byte, and writes its answer."""
        if _has_obs_fold(self._raw):
            # h11 would unfold it, reading the head otherwise than a proxy
            # that does not ("Transfer-Encoding:\r\n chunked"): refused,
            # as RFC 9112 5.2 allows.
            return self._reject(RemoteProtocolError("obsolete line folding in the request head"))
        conn = self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._config.max_head_size
        )
        self._step = _H11
        if self._raw:  # (b"" would tell h11 the peer closed)
            conn.receive_data(self._raw)
            self._raw = b""
        if self._eof:
            conn.receive_data(b"")
        return self._next_h11_event()

    def _next_h11_event(self) -> Event | None:
        conn = self._h11
        assert conn is not None
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            reason = _HEAD_TOO_LARGE if status == 431 else str(exc) or "malformed request"
            return self._reject(RemoteProtocolError(reason, status=status))
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return None
        if isinstance(event, h11.Request):
            return self._on_request(conn, event)
        if isinstance(event, h11.Data):
            self._body_left -= len(event.data)
            if self._body_left < 0:
                return self._reject(RemoteProtocolError("request body too large", status=413))
            return Body(bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            return EndOfRequest()
        if isinstance(event, h11.ConnectionClosed):
            if conn.our_state in (h11.IDLE, h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                self._end()
            return None
        return None  # pragma: no cover - h11 has no other server-side events

    def _on_request(self, conn: h11.Connection, request: h11.Request) -> Event:
        try:
            kind = self._check(request)
        except RemoteProtocolError as exc:
            return self._reject(exc)
        if conn.they_are_waiting_for_100_continue:
            continue_ = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            self._out.put(conn.send(continue_), message=False)
        return self._begin(request, kind)

    def _check(self, request: h11.Request) -> str | None:
        """The upgrade ``request`` asks for (``None``: none), once it passes
        the rules we add to h11's; raises RemoteProtocolError for one it breaks."""
        # h11 bounds only a head still incomplete; one that arrived whole in
        # a single read is measured here (as sent, less any optional spaces).
        size = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n\r\n")
        size += sum(len(n) + len(v) + 4 for n, v in request.headers.raw_items())
        if size > self._config.max_head_size:
            raise RemoteProtocolError(_HEAD_TOO_LARGE, status=431)
        if not request.http_version.startswith(b"1."):
            # h11 parses any d.d version and would answer "HTTP/2.0" as 1.1.
            raise RemoteProtocolError("only HTTP/1.x is served", status=505)
        if request.method == b"CONNECT":
            # h11 would turn any 2xx answer into a tunnel: not ours to serve.
            raise RemoteProtocolError("CONNECT is not supported", status=501)
        kind = upgrade_kind(request)
        headers = dict(request.headers)
        if b"transfer-encoding" in headers and b"content-length" in headers:
            # RFC 9112 6.1: h11 would frame by Transfer-Encoding, a proxy in
            # front might by Content-Length (request smuggling): refuse, close.
            raise RemoteProtocolError("both Content-Length and Transfer-Encoding")
        length = headers.get(b"content-length")
        if length is not None and int(length) > self._config.max_body_size:
            raise RemoteProtocolError("request body too large", status=413)
        return kind

    def _begin(self, request: RequestHead, kind: str | None) -> Request:
        """Start on ``request``: the one place a request's state is reset."""
        config = self._config
        self._request = request
        self._kind = kind
        self._head_request = request.method == b"HEAD"
        self._body_left = config.max_body_size
        base = self._env_base
        if base is None:
            base = self._env_base = env_base(self._server, self._client, config.scheme)
        env = build_env(request, kind=kind, base=base)
        return Request(env)

    def _reject(self, exc: RemoteProtocolError) -> Event:
        """Answer what the peer did wrong ourselves, and end."""
        conn = self._h11
        # If a response is already under way, all we can do is close.
        if conn is None or conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers = exc.headers if isinstance(exc, UpgradeRefused) else []
            self._out.put(error_response(exc.status, str(exc), headers), message=False)
        self._end()
        return Rejected(exc.status, str(exc))

    # -- the app's answer ---------------------------------------------------

    def start_response(self, status: int, headers: Headers, upgrade: bool) -> PhaseObject | None:
        """Start the answer; the phase to move to if it accepts an upgrade."""
        self._live()
        if status == 0:
            status = 200
        step = self._step
        if step is _H11:
            pairs = response_pairs(headers)
            if upgrade and self._kind is not None and status < 300:
                return self._accept(pairs)
            self._send_head(h11.Response, status, pairs)
            return None
        if step is _ANSWER:
            raise LocalProtocolError("a response has already started")
        if step is _HEAD:
            raise LocalProtocolError("no request to answer")
        self._start_fast(status, headers)
        return None

    def _start_fast(self, status: int, headers: Headers) -> _http_fast.Framing:
        """Queue a simple request's response head; its body's framing."""
        head, framing = _fast_head(status, tuple(headers), self._head_request)
        self._step = _ANSWER
        self._framing = framing
        self._out.put(head, message=False)
        return framing

    def answer(self, status: int, headers: Headers, body: bytes) -> None:
        """:meth:`start_response`, :meth:`send_body` and :meth:`end_response`
        in one call: the same bytes, the same errors at the same points (a
        simple request's in one pass)."""
        step = self._step
        if (step is not _BODY and step is not _WAIT) or self.phase is DONE:
            self.start_response(status, headers, False)
            self.send_body(body)
            self.end_response()
            return
        framing = self._start_fast(200 if status == 0 else status, headers)
        if body and not self._head_request:
            self._out.put(framing.body(body), message=False)
        self._end_fast(framing)

    def send_body(self, data: bytes) -> None:
        if not data or self._head_request:
            return
        self._live()
        if self._step is _H11:
            self._send_h11(h11.Data(data=data))
            return
        if self._framing is None:
            raise LocalProtocolError("no response has started")
        self._out.put(self._framing.body(data), message=False)

    def end_response(self) -> None:
        self._live()
        if self._step is _H11:
            self._end_h11_response()
            return
        framing = self._framing
        if framing is None:
            raise LocalProtocolError("no response has started")
        self._end_fast(framing)

    def _end_fast(self, framing: _http_fast.Framing) -> None:
        """End a simple request's answer."""
        end = framing.end()
        if end:
            self._out.put(end, message=False)
        self._ready()
        if not framing.keep_alive or (self._eof and not self._raw):
            self._end()

    def _end_h11_response(self) -> None:
        conn = self._h11
        assert conn is not None
        self._send_h11(h11.EndOfMessage())
        if conn.our_state is h11.MUST_CLOSE:
            self._end()
        elif conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            # What came after this request goes back to where every request
            # head starts (empty lines skipped, the simple-head reader first).
            data, closed = conn.trailing_data
            self._raw, self._eof = bytes(data), closed
            self._ready()
        elif conn.their_state is not h11.DONE:
            # The app answered without reading the whole body: we cannot
            # tell where the next request starts, so close.
            self._end()

    def _ready(self) -> None:
        """Ready for the next request head."""
        self._step = _HEAD
        self._h11 = None
        self._framing = None
        self._request = None

    def _accept(self, pairs: list[tuple[bytes, bytes]]) -> PhaseObject:
        conn = self._h11
        request = self._request
        assert conn is not None and request is not None
        config = self._config
        if self._kind == WEBSOCKET:
            headers, deflate = websocket_accept(request, pairs, config)
            self._send_head(h11.InformationalResponse, 101, headers)
            received = bytes(conn.trailing_data[0])
            if deflate is None:
                return WebSocketPhase(self._out, config, received)
            return DeflateWebSocketPhase(self._out, config, received, deflate)
        # An event stream is a 200 whatever 2xx the app chose: a 204 would
        # tell the browser there is no body to stream.
        data = self._send_head(h11.Response, 200, sse_accept(pairs))
        # h11 frames an HTTP/1.1 stream with chunks and an HTTP/1.0 one by
        # closing it; from here on we write the body ourselves, the same way.
        return SsePhase(self._out, config, b"transfer-encoding: chunked" in data.lower())

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

    def _send_h11(self, event: Any) -> None:
        assert self._h11 is not None
        try:
            data = self._h11.send(event)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        if data:
            self._out.put(data, message=False)

    def _live(self) -> None:
        if self.phase is DONE:
            raise LocalProtocolError("the connection is finished: nothing more is answered")
