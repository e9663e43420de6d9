"""HTTP/2 by hand, for the attacks: frames built with ``hyperframe``, header
blocks with ``hpack``, sent over a plain socket (h2c with prior knowledge) by
:class:`RawH2`, which sends whatever it is told, in any order, and parses what
comes back. :class:`H2Client` is the well-behaved side: the ``h2`` library as
a client. :class:`Bystander` keeps making requests and receiving pushes on a
connection of its own while an attack runs. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import hpack
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.helpers.procs import vm_rss_kib
from tests.helpers.server import TIMEOUT, http_client

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Largest flow-control window (RFC 9113 6.9.1).
MAX_WINDOW = 2**31 - 1

__all__ = [
    "MAX_WINDOW",
    "PREFACE",
    "Bystander",
    "ContinuationFrame",
    "DataFrame",
    "ErrorCodes",
    "GoAwayFrame",
    "H2Client",
    "HeadersFrame",
    "Peaks",
    "PingFrame",
    "RawH2",
    "RstStreamFrame",
    "SettingCodes",
    "SSE_ACCEPT",
    "SettingsFrame",
    "WindowUpdateFrame",
    "code_name",
    "request_headers",
    "serialize",
]


def code_name(code: int) -> str:
    """``ENHANCE_YOUR_CALM`` for 0xb: error codes in messages."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return hex(code)


def serialize(frames: Iterable[Frame]) -> bytes:
    return b"".join(f.serialize() for f in frames)


async def open_socket(port: int, rcvbuf: int | None = None, mss: int | None = None) -> Any:
    """A TCP connection to 127.0.0.1:``port``. ``rcvbuf`` and ``mss`` (set
    before it connects) keep what the server can queue in the kernel small:
    on loopback the segment size is 64 KiB and the server's send buffer grows
    to megabytes unless the client announces small segments."""
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if mss is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


def request_headers(
    port: int, path: str = "/", method: str = "GET", extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    return [
        (":method", method),
        (":scheme", "http"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", path),
        *extra,
    ]


SSE_ACCEPT = (("accept", "text/event-stream"),)


class RawH2:
    """One HTTP/2 connection, driven frame by frame.

    Received frames land in :attr:`frames` (in order); the header blocks of
    the server's HEADERS are decoded into :attr:`responses` (stream id ->
    headers), DATA payloads gathered in :attr:`bodies`. The server's SETTINGS
    are acknowledged while reading (``ack_settings``); nothing else is
    answered unless a test says so, so windows stay as the test leaves them.
    """

    def __init__(self, stream: Any, port: int) -> None:
        self.stream = stream
        self.port = port
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = bytearray()
        self.frames: list[Frame] = []
        self.responses: dict[int, list[tuple[str, str]]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.eof = False
        self.ack_settings = True
        self._block: bytearray | None = None
        self._block_stream = 0

    @classmethod
    async def open(
        cls,
        port: int,
        settings: dict[int, int] | None = None,
        *,
        handshake: bool = True,
        preface: bool = True,
        rcvbuf: int | None = None,
        mss: int | None = None,
    ) -> RawH2:
        """Connect, send the preface and our SETTINGS (unless not ``preface``:
        then nothing); with ``handshake``, wait for the server's SETTINGS and
        acknowledge them (without, the server's SETTINGS are never
        acknowledged: a peer that floods may not be able to send an ack)."""
        self = cls(await open_socket(port, rcvbuf, mss), port)
        self.ack_settings = handshake
        if preface:
            await self.send_raw(PREFACE + SettingsFrame(0, settings or {}).serialize())
        if handshake:
            await self.until(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
        return self

    # -- sending -------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, *frames: Frame) -> None:
        await self.send_raw(serialize(frames))

    def block(self, headers: Iterable[tuple[str, str]]) -> bytes:
        """A header block from our HPACK encoder (its dynamic table carries on)."""
        return bytes(self.encoder.encode(list(headers)))

    def headers(
        self,
        stream_id: int,
        path: str = "/",
        *,
        method: str = "GET",
        extra: Iterable[tuple[str, str]] = (),
        end_stream: bool = True,
    ) -> HeadersFrame:
        """A request's HEADERS frame (END_HEADERS set)."""
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        block = self.block(request_headers(self.port, path, method, extra))
        return HeadersFrame(stream_id, block, flags=flags)

    async def request(self, stream_id: int, path: str = "/", **kwargs: Any) -> None:
        await self.send(self.headers(stream_id, path, **kwargs))

    # -- receiving -----------------------------------------------------------

    async def receive(self) -> list[Frame]:
        """Read once; the whole frames that came (empty once the connection
        ends: :attr:`eof`; a reset counts as its end)."""
        if self.eof:
            return []
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return []
        self.buf += data
        out = []
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            del self.buf[: 9 + length]
            out.append(frame)
            await self._note(frame)
        self.frames += out
        return out

    async def _note(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags and self.ack_settings:
            with contextlib.suppress(trio.BrokenResourceError):
                await self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, HeadersFrame):
            self._block, self._block_stream = bytearray(frame.data), frame.stream_id
        elif isinstance(frame, ContinuationFrame) and self._block is not None:
            self._block += frame.data
        elif isinstance(frame, DataFrame):
            self.bodies.setdefault(frame.stream_id, bytearray()).extend(frame.data)
        if isinstance(frame, (HeadersFrame, ContinuationFrame)) and "END_HEADERS" in frame.flags:
            assert self._block is not None
            decoded = self.decoder.decode(bytes(self._block))
            self.responses.setdefault(self._block_stream, []).extend(decoded)
            self._block = None

    async def until(
        self, predicate: Callable[[Frame], bool], timeout: float = TIMEOUT
    ) -> Frame | None:
        """Read until a frame matching ``predicate`` comes (returned, also if
        it came already); None if the connection ends first."""
        for frame in self.frames:
            if predicate(frame):
                return frame
        with trio.fail_after(timeout):
            while not self.eof:
                for frame in await self.receive():
                    if predicate(frame):
                        return frame
        return None

    async def goaway(self, timeout: float = TIMEOUT) -> GoAwayFrame:
        """The server's GOAWAY; fails if the connection ends without one."""
        frame = await self.until(lambda f: isinstance(f, GoAwayFrame), timeout)
        assert isinstance(frame, GoAwayFrame), f"no GOAWAY before the end: {self.summary()}"
        return frame

    async def reset_of(self, stream_id: int, timeout: float = TIMEOUT) -> int:
        """The error code of the server's RST_STREAM on ``stream_id``."""
        frame = await self.until(
            lambda f: isinstance(f, RstStreamFrame) and f.stream_id == stream_id, timeout
        )
        assert isinstance(frame, RstStreamFrame), f"no RST_STREAM {stream_id}: {self.summary()}"
        return int(frame.error_code)

    async def ended(self, stream_id: int, timeout: float = TIMEOUT) -> bytes:
        """The body of a response, once END_STREAM comes on ``stream_id``."""
        frame = await self.until(
            lambda f: (
                f.stream_id == stream_id
                and (isinstance(f, RstStreamFrame) or "END_STREAM" in f.flags)
            ),
            timeout,
        )
        assert frame is not None and not isinstance(frame, RstStreamFrame), self.summary()
        return bytes(self.bodies.get(stream_id, b""))

    def status(self, stream_id: int) -> int:
        return int(dict(self.responses[stream_id])[":status"])

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        """Read (keeping the frames) until the server closes the connection;
        fails if it stays open past ``timeout``."""
        with trio.fail_after(timeout):
            while not self.eof:
                await self.receive()

    def of_type(self, kind: type[Frame]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]

    def summary(self) -> str:
        """What came, for assertion messages: counts by type, GOAWAYs, and the
        codes of the first few RST_STREAMs."""
        counts: dict[str, int] = {}
        for f in self.frames:
            counts[type(f).__name__] = counts.get(type(f).__name__, 0) + 1
        goaways = [
            (ErrorCodes(g.error_code).name, g.last_stream_id) for g in self.of_type(GoAwayFrame)
        ]
        resets = [(r.stream_id, r.error_code) for r in self.of_type(RstStreamFrame)[:8]]
        return (
            f"frames {counts}, GOAWAY {goaways[:3]}, RST_STREAM {resets[:8]} "
            f"(of {len(resets)}), eof {self.eof}"
        )

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- a well-behaved client: the h2 library -------------------------------------------


@dataclass
class Response:
    stream_id: int
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    headed: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    grew: trio.Event = field(default_factory=trio.Event)


class H2Client:
    """The ``h2`` library as a client, on a connection of its own: requests
    run side by side on streams; a reader task (:meth:`run`, started in a
    nursery) takes in what comes and keeps the windows open."""

    def __init__(self, stream: Any, port: int) -> None:
        self.stream = stream
        self.port = port
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.responses: dict[int, Response] = {}
        self.terminated: int | None = None
        self._send_lock = trio.Lock()

    @classmethod
    async def open(cls, port: int, nursery: trio.Nursery) -> H2Client:
        self = cls(await open_socket(port), port)
        self.conn.initiate_connection()
        await self.flush()
        nursery.start_soon(self.run)
        return self

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def run(self) -> None:
        while data := await self.stream.receive_some(65536):
            for event in self.conn.receive_data(data):
                self._handle(event)
            await self.flush()
        self.terminated = self.terminated if self.terminated is not None else -1
        for response in self.responses.values():
            response.done.set()

    def _handle(self, event: Any) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = int(event.error_code)
            return
        response = self.responses.get(getattr(event, "stream_id", 0) or 0)
        if response is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            response.headers = list(event.headers)
            response.status = int(dict(response.headers)[b":status"])
            response.headed.set()
        elif isinstance(event, h2.events.DataReceived):
            response.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            response.grew.set()
            response.grew = trio.Event()
        elif isinstance(event, h2.events.StreamEnded):
            response.done.set()
        elif isinstance(event, h2.events.StreamReset):
            response.reset = int(event.error_code)
            response.done.set()

    async def start(self, path: str = "/", extra: Iterable[tuple[str, str]] = ()) -> Response:
        """Send a GET; its :class:`Response` fills in as it comes."""
        stream_id = self.conn.get_next_available_stream_id()
        response = self.responses[stream_id] = Response(stream_id)
        self.conn.send_headers(stream_id, request_headers(self.port, path, extra=extra), True)
        await self.flush()
        return response

    async def get(self, path: str = "/") -> tuple[int, bytes]:
        response = await self.start(path)
        await response.done.wait()
        del self.responses[response.stream_id]
        return response.status, bytes(response.body)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close_connection()
            await self.flush()
        await self.stream.aclose()


class Bystander:
    """A client that must keep being served while an attack runs: on its own
    HTTP/2 connection (``h2``) a GET and an SSE stream that receives a push
    each round, and a GET over HTTP/1.1 (``httpx``), in a loop, each round
    bounded by :attr:`ROUND` seconds.

    ``handler`` is the push handler behind ``sse_path`` (it records its
    clients in ``clients``, like ``Recorder``): each round writes one event
    to the newest from the server side. ``/`` must answer 200 ``hello``.
    """

    ROUND = 5.0

    def __init__(self, port: int, handler: Any, sse_path: str = "/bystander") -> None:
        self.port = port
        self.handler = handler
        self.sse_path = sse_path
        self.rounds = 0
        self.connects = 0
        self.h2: H2Client | None = None
        self.sse: Response | None = None
        self.http: Any = None

    async def check(self) -> None:
        """One round: every request answered, the push received, in time."""
        assert self.h2 is not None and self.sse is not None
        self.rounds += 1
        with trio.fail_after(self.ROUND):
            assert await self.h2.get("/") == (200, b"hello")
            while len(self.handler.clients) < self.connects:
                await trio.sleep(0.005)
            mark = f"tick {self.rounds}"
            assert self.handler.clients[self.connects - 1].write(mark)
            while f"data: {mark}\n".encode() not in self.sse.body:
                assert self.sse.reset is None and not self.sse.done.is_set(), self.sse
                await self.sse.grew.wait()
            response = await self.http.get(f"http://127.0.0.1:{self.port}/")
            assert (response.status_code, response.text) == (200, "hello")

    async def _loop(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.check()
        task_status.started()
        while True:
            await trio.sleep(0.02)
            await self.check()

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[trio.Nursery]:
        # The nursery inside the HTTP/1.1 client: the rounds stop before it closes.
        async with http_client() as self.http, trio.open_nursery() as nursery:
            self.h2 = await H2Client.open(self.port, nursery)
            self.connects += 1
            self.sse = await self.h2.start(self.sse_path, SSE_ACCEPT)
            with trio.fail_after(self.ROUND):
                await self.sse.headed.wait()
            assert self.sse.status == 200, self.sse
            yield nursery
            nursery.cancel_scope.cancel()
        await self.h2.aclose()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Bystander]:
        """Run the rounds for the duration of the block (the first is done
        before it starts); then one more on fresh connections: the server
        still serves newcomers after the attack."""
        async with self._connected() as nursery:
            await nursery.start(self._loop)
            yield self
        async with self._connected():
            await self.check()


class Peaks:
    """While in :meth:`watching`, every 5 ms: the process' resident set, and
    how many connections and push sessions ``server`` holds; the peaks."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.baseline = 0
        self.rss = 0
        self.connections = 0
        self.sessions = 0

    @property
    def growth_kib(self) -> int:
        """The peak resident set above its level on entry, in KiB."""
        return self.rss - self.baseline

    def _sample(self) -> None:
        self.rss = max(self.rss, vm_rss_kib())
        self.connections = max(self.connections, len(self.server.connections))
        self.sessions = max(self.sessions, len(self.server.push_connections))

    async def _run(self) -> None:
        while True:
            self._sample()
            await trio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[Peaks]:
        self.baseline = self.rss = vm_rss_kib()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run)
            yield self
            self._sample()
            nursery.cancel_scope.cancel()
