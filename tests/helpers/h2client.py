"""An HTTP/2 client for the tests: the ``h2`` library over a real trio socket.

``async with h2_connect(port) as h2:`` speaks cleartext HTTP/2 with prior
knowledge; ``h2_connect(port, tls=context)`` speaks TLS and insists that ALPN
chose ``h2``. Requests go on streams of their own, side by side; each
:class:`Stream` keeps its response as it comes (headers, body pieces, the
end or a reset). Flow control is done as a client should: the client gives
the server's bytes back (WINDOW_UPDATE) as it takes them, unless a stream
is opened with ``open_window=False`` (a reader that never reads: only the
connection window is given back), and sends no more than the server's
windows allow.

:class:`H2WebSocket` is RFC 8441 on top: it waits for
SETTINGS_ENABLE_CONNECT_PROTOCOL=1, sends an extended CONNECT, then masked
WebSocket frames (wsproto's frame layer) in DATA frames. :class:`SSEReader`
reads an event stream from a stream incrementally, with the WHATWG parser
the SSE encoder is checked against.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
import trustme
from wsproto.frame_protocol import FrameProtocol, Opcode

from tests.helpers.server import TIMEOUT
from tests.sansio.whatwg_sse import ParsedEvent, parse

#: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
ENABLE_CONNECT_PROTOCOL = 0x8
#: RST_STREAM / GOAWAY codes the tests look for.
NO_ERROR, REFUSED_STREAM, CANCEL = 0x0, 0x7, 0x8


def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` and offers only ``h2`` in ALPN."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    return context


class StreamGone(Exception):
    """The stream was reset, or the connection ended, while the client waited on it."""


class Stream:
    """One request's stream and its response, as far as it has come."""

    def __init__(self, client: H2Client, stream_id: int, open_window: bool) -> None:
        self.client = client
        self.id = stream_id
        #: The response's headers (pseudo-headers too), once they came.
        self.headers: list[tuple[str, str]] | None = None
        self.data = bytearray()
        #: Bytes of body received in all (``data`` is emptied as it is read).
        self.received = 0
        #: The server ended the stream (END_STREAM).
        self.ended = False
        #: The server's RST_STREAM code, if it reset the stream.
        self.reset: int | None = None
        self.open_window = open_window
        #: Flow-controlled bytes not yet given back (``open_window=False``).
        self.unacked = 0

    @property
    def done(self) -> bool:
        """Nothing more will come: ended, reset, or the connection is gone."""
        return self.ended or self.reset is not None or self.client.closed

    @property
    def status(self) -> int:
        return int(self.header(":status") or 0)

    def header(self, name: str) -> str | None:
        for key, value in self.headers or []:
            if key == name:
                return value
        return None

    async def response(self) -> Stream:
        """Wait for the response's headers; raises :class:`StreamGone` if
        the stream ends without them."""
        await self.client.wait(lambda: self.headers is not None or self.done)
        if self.headers is None:
            raise StreamGone(f"stream {self.id}: reset {self.reset}, no response")
        return self

    async def read_some(self) -> bytes:
        """The body received since the last read, waiting for some; ``b""``
        once the stream is done and all was read."""
        await self.client.wait(lambda: bool(self.data) or self.done)
        out = bytes(self.data)
        self.data.clear()
        return out

    async def read_all(self) -> bytes:
        """The rest of the body, until the stream is done."""
        chunks = []
        while chunk := await self.read_some():
            chunks.append(chunk)
        return b"".join(chunks)

    async def wait_done(self) -> None:
        await self.client.wait(lambda: self.done)

    async def send(self, data: bytes, end_stream: bool = False) -> None:
        await self.client.send_data(self.id, data, end_stream)

    async def open(self) -> None:
        """Start giving this stream's window back, and give back all that it held."""
        self.open_window = True
        if self.unacked and not self.done:
            self.client.h2.increment_flow_control_window(self.unacked, stream_id=self.id)
            await self.client.flush()
        self.unacked = 0

    async def cancel(self, code: int = CANCEL) -> None:
        self.client.h2.reset_stream(self.id, error_code=code)
        await self.client.flush()


class H2Client:
    """An HTTP/2 connection, read by a task of its own (see :func:`h2_connect`)."""

    def __init__(
        self,
        sock: trio.abc.Stream,
        *,
        scheme: str,
        authority: str,
        window: int,
        settings: dict[int, int] | None,
    ) -> None:
        self.sock = sock
        self.scheme = scheme
        self.authority = authority
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        codes = h2.settings.SettingCodes
        initial = {codes.ENABLE_PUSH: 0, codes.INITIAL_WINDOW_SIZE: window}
        initial.update({codes(code): value for code, value in (settings or {}).items()})
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values=initial)
        self.streams: dict[int, Stream] = {}
        #: The server's settings, as they came (code -> value).
        self.settings: dict[int, int] = {}
        #: The server's GOAWAY: (error code, last stream id), once it came.
        self.goaway: tuple[int, int] | None = None
        self._frames = bytearray()
        #: The connection is gone (EOF, reset, or a protocol error of the server's).
        self.closed = False
        self.error: Exception | None = None
        self.ping_acks = 0
        self._changed = trio.Event()
        self._send_lock = trio.Lock()

    # -- waiting and sending ----------------------------------------------

    async def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Until ``predicate()`` holds, re-checked whenever frames came; bounded."""
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def flush(self) -> None:
        """Send what h2 has to send (one sender at a time)."""
        async with self._send_lock:
            data = self.h2.data_to_send()
            if data:
                try:
                    await self.sock.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.closed = True
                    self._wake()

    async def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Send ``data`` on a stream within the server's windows, waiting for
        them to open; raises :class:`StreamGone` if the stream goes first."""
        view = memoryview(data)
        while True:
            if view:
                await self.wait(lambda: self._window(stream_id) > 0)
            size = min(self._window(stream_id), self.h2.max_outbound_frame_size, len(view))
            last = size == len(view)
            self.h2.send_data(stream_id, bytes(view[:size]), end_stream=end_stream and last)
            view = view[size:]
            await self.flush()
            if last:
                return

    def _window(self, stream_id: int) -> int:
        stream = self.streams[stream_id]
        if stream.reset is not None or self.closed:
            raise StreamGone(f"stream {stream_id}: reset {stream.reset}, closed {self.closed}")
        try:
            return int(self.h2.local_flow_control_window(stream_id))
        except h2.exceptions.StreamClosedError as exc:
            raise StreamGone(f"stream {stream_id} is closed") from exc

    # -- requests -------------------------------------------------------------

    async def open_stream(
        self, headers: list[tuple[str, str]], end_stream: bool, open_window: bool = True
    ) -> Stream:
        """Send a HEADERS frame on a new stream; the :class:`Stream`."""
        stream = Stream(self, self.h2.get_next_available_stream_id(), open_window)
        self.streams[stream.id] = stream
        self.h2.send_headers(stream.id, headers, end_stream=end_stream)
        await self.flush()
        return stream

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        end_stream: bool = True,
        open_window: bool = True,
    ) -> Stream:
        """Start a request (its body too, if given); read the response from the stream."""
        pseudo = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
        ]
        fields = pseudo + list(headers)
        if body and end_stream and not any(name == "content-length" for name, _ in fields):
            # As curl, httpx and browsers do for a body of known size.
            fields.append(("content-length", str(len(body))))
        stream = await self.open_stream(
            fields, end_stream=end_stream and not body, open_window=open_window
        )
        if body:
            await stream.send(body, end_stream=end_stream)
        return stream

    async def fetch(self, method: str, path: str, **kwargs: Any) -> tuple[int, Stream, bytes]:
        """A whole request and response: ``(status, stream, body)``."""
        stream = await self.request(method, path, **kwargs)
        await stream.response()
        body = await stream.read_all()
        return stream.status, stream, body

    async def sse(self, path: str, open_window: bool = True) -> SSEReader:
        """GET ``path`` as an EventSource does; the reader, once the headers came."""
        accept = [("accept", "text/event-stream")]
        stream = await self.request("GET", path, headers=accept, open_window=open_window)
        await stream.response()
        return SSEReader(stream)

    async def websocket(
        self, path: str, headers: Iterable[tuple[str, str]] = (), open_window: bool = True
    ) -> H2WebSocket:
        """A WebSocket over HTTP/2 (RFC 8441) on a new stream, once accepted."""
        await self.wait(lambda: ENABLE_CONNECT_PROTOCOL in self.settings or self.closed)
        assert self.settings.get(ENABLE_CONNECT_PROTOCOL) == 1, (self.settings, self.error)
        connect = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", self.scheme),
            (":path", path),
            (":authority", self.authority),
            ("sec-websocket-version", "13"),
        ]
        stream = await self.open_stream(connect + list(headers), False, open_window)
        await stream.response()
        assert stream.status == 200, stream.headers
        return H2WebSocket(stream)

    async def ping(self) -> None:
        """A PING; returns once its ACK came."""
        acks = self.ping_acks
        self.h2.ping(b"h2client")
        await self.flush()
        await self.wait(lambda: self.ping_acks > acks)

    async def wait_goaway(self) -> tuple[int, int]:
        await self.wait(lambda: self.goaway is not None or self.closed)
        assert self.goaway is not None, "the connection closed without a GOAWAY"
        return self.goaway

    # -- reading --------------------------------------------------------------

    async def _start(self) -> None:
        self.h2.initiate_connection()
        # The connection window too: the server is not held up by the default 64 KiB.
        self.h2.increment_flow_control_window(16 * 1024 * 1024)
        await self.flush()

    async def read_loop(self) -> None:
        try:
            while data := await self.sock.receive_some(65536):
                for event in self.h2.receive_data(self._take_goaway(data)):
                    self._on(event)
                await self.flush()
                self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except h2.exceptions.ProtocolError as exc:
            self.error = exc
            await self.flush()
        finally:
            self.closed = True
            self._wake()

    def _take_goaway(self, data: bytes | bytearray) -> bytes:
        """``data`` without its GOAWAY frames, which are kept in ``goaway``.

        h2 takes a GOAWAY for the end of everything (any frame after it is a
        ProtocolError), but a graceful GOAWAY lets the streams below its last
        stream id finish: the client must go on reading them."""
        self._frames += data
        out = bytearray()
        while len(self._frames) >= 9:
            end = 9 + int.from_bytes(self._frames[:3], "big")
            if len(self._frames) < end:
                break
            frame = self._frames[:end]
            del self._frames[:end]
            if frame[3] == 0x7:
                last = int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF
                self.goaway = (int.from_bytes(frame[13:17], "big"), last)
            else:
                out += frame
        return bytes(out)

    def _on(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.settings[int(code)] = change.new_value
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acks += 1
        elif stream is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            stream.headers = list(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            stream.data += event.data or b""
            stream.received += len(event.data or b"")
            self._give_back(stream, event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = int(event.error_code or 0)

    def _give_back(self, stream: Stream, size: int) -> None:
        if not size:
            return
        if stream.open_window:
            self.h2.acknowledge_received_data(size, stream.id)
        else:
            stream.unacked += size
            self.h2.increment_flow_control_window(size)


@asynccontextmanager
async def h2_connect(
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    window: int = 65535,
    settings: dict[int, int] | None = None,
) -> AsyncIterator[H2Client]:
    """An :class:`H2Client` on 127.0.0.1:``port``, h2c with prior knowledge or
    (``tls``, see :func:`tls_context`) TLS with ALPN ``h2``; ``window`` is
    SETTINGS_INITIAL_WINDOW_SIZE, ``settings`` more of ours. Closed on exit."""
    with trio.fail_after(TIMEOUT):
        sock: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls is not None:
            sock = trio.SSLStream(sock, tls, server_hostname=host)
            await sock.do_handshake()
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    scheme = "https" if tls is not None else "http"
    client = H2Client(
        sock, scheme=scheme, authority=f"{host}:{port}", window=window, settings=settings
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.read_loop)
        try:
            await client._start()
            yield client
        finally:
            nursery.cancel_scope.cancel()
            # Shielded: a Cancelled from the cancelled nursery must not take
            # the place of an exception on its way out.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(sock)


class SSEReader:
    """The events of an event stream on a :class:`Stream`, read as they come."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.events: list[ParsedEvent] = []
        self._buf = b""

    async def _more(self) -> bool:
        data = await self.stream.read_some()
        self._buf += data
        # Parse up to the end of the last whole event; keep the rest.
        end = max(self._buf.rfind(b"\n\n"), self._buf.rfind(b"\r\n\r\n"))
        if end >= 0:
            whole, self._buf = self._buf[: end + 2], self._buf[end + 2 :]
            self.events += parse(whole)
        return bool(data)

    async def next(self, n: int = 1) -> list[ParsedEvent]:
        """The next ``n`` events (EOFError if the stream ends first)."""
        while len(self.events) < n:
            if not await self._more():
                raise EOFError(f"{self.stream.id}: ended after {len(self.events)} of {n} events")
        out, self.events = self.events[:n], self.events[n:]
        return out

    async def rest(self) -> list[ParsedEvent]:
        """Every event until the stream is done."""
        while await self._more():
            pass
        out, self.events = self.events, []
        return out


class WSClosed(Exception):
    """The server closed the WebSocket: ``code`` (None: no close frame)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class H2WebSocket:
    """A WebSocket over an HTTP/2 stream (RFC 8441), framed by wsproto.

    Pings are answered with a pong (while ``auto_pong``); when the server
    closes, its close frame is echoed and the client's half of the stream is
    ended (END_STREAM)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.frames = FrameProtocol(client=True, extensions=[])
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        self.auto_pong = True
        #: The server's close (code, reason), once it came.
        self.close: tuple[int | None, str] | None = None
        self._sent_close = False
        self._parts: list[bytes | str] = []

    # -- sending ----------------------------------------------------------

    async def _send(self, data: bytes, end_stream: bool = False) -> None:
        await self.stream.send(data, end_stream)

    async def send(self, message: str | bytes) -> None:
        await self._send(bytes(self.frames.send_data(message, True)))

    async def send_fragments(self, parts: list[str | bytes]) -> None:
        """One message in ``len(parts)`` frames (a first frame, continuations)."""
        for i, part in enumerate(parts):
            await self._send(bytes(self.frames.send_data(part, i == len(parts) - 1)))

    async def ping(self, payload: bytes = b"") -> None:
        await self._send(bytes(self.frames.ping(payload)))

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Our close frame (the server's answer comes through :meth:`receive`)."""
        self._sent_close = True
        await self._send(bytes(self.frames.close(code, reason)))

    # -- receiving ---------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next whole message; raises :class:`WSClosed` at the server's close
        (or the stream's end without one)."""
        while True:
            for frame in self.frames.received_frames():
                message = await self._on_frame(frame)
                if message is not None:
                    return message
            if self.close is not None:
                raise WSClosed(*self.close)
            data = await self.stream.read_some()
            if not data:
                self.close = self.close or (None, f"stream done, reset {self.stream.reset}")
                raise WSClosed(*self.close)
            self.frames.receive_bytes(data)

    async def _on_frame(self, frame: Any) -> str | bytes | None:
        if frame.opcode is Opcode.PING:
            self.pings.append(frame.payload)
            if self.auto_pong:
                await self._send(bytes(self.frames.pong(frame.payload)))
        elif frame.opcode is Opcode.PONG:
            self.pongs.append(frame.payload)
        elif frame.opcode is Opcode.CLOSE:
            code, reason = frame.payload
            self.close = (int(code), reason or "")
            with contextlib.suppress(StreamGone):
                if not self._sent_close:
                    await self.send_close(int(code))
                await self._send(b"", end_stream=True)
        else:
            self._parts.append(frame.payload)
            if frame.message_finished:
                parts, self._parts = self._parts, []
                return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]
        return None

    async def messages(self, n: int) -> list[str | bytes]:
        return [await self.receive() for _ in range(n)]

    async def close_code(self) -> int | None:
        """Read (dropping messages) until the server's close; its code."""
        try:
            while True:
                await self.receive()
        except WSClosed as closed:
            return closed.code

    async def close_and_wait(self, code: int = 1000) -> int | None:
        """The closing handshake from our side: the code the server answers with,
        once it has ended the stream."""
        await self.send_close(code)
        got = await self.close_code()
        await self.stream.wait_done()
        return got
