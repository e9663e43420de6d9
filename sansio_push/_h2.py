"""An HTTP/2 connection, through h2: many streams over one transport.

:class:`H2Connection` is to HTTP/2 what :class:`~sansio_push.ServerConnection`
is to HTTP/1.1, with the streams in between: bytes in, events out
(:class:`StreamOpened`, :class:`StreamInput`, :class:`WindowOpened`); each
stream (an :class:`~sansio_push.H2Stream`) is read and answered like an
HTTP/1.1 connection; the bytes a stream queues become DATA frames when the
driver hands them to :meth:`H2Connection.frame`, within the peer's flow
control windows and within :data:`SEND_BUDGET` of framed bytes the socket has
not taken. That budget is what keeps the backpressure of HTTP/1.1: a stream
whose bytes cannot be framed is "refused", and its queue bounds count from
there, whatever windows the peer grants.

What h2 does not bound, this module does (docs/http2.md, "Attacks"):

- **Rapid Reset** (CVE-2023-44487): streams the peer resets before their
  answer started cost it one each, every answer started pays one back; past
  ``2 x h2_max_concurrent_streams`` owed: GOAWAY ENHANCE_YOUR_CALM. A stream
  the driver is still answering counts against the concurrent streams
  however the peer ended it: one past the limit is refused (REFUSED_STREAM).
- **Floods** of frames that need an answer (SETTINGS, PING, frames on closed
  streams) from a peer that does not read: our answers that the socket has
  not taken, past :data:`MAX_UNSENT_REPLIES` bytes: GOAWAY ENHANCE_YOUR_CALM.
- What h2 would hold before it judges it, :class:`_FrameGuard` judges at the
  frame headers: a frame past ``h2_max_frame_size`` (FRAME_SIZE_ERROR) and a
  header block (CONTINUATION floods) past ``h2_max_header_list_size``
  (ENHANCE_YOUR_CALM).
- h2 itself refuses the rest: a header block of over 64 CONTINUATION frames
  (PROTOCOL_ERROR), a header list that decodes past
  ``h2_max_header_list_size`` (HPACK bombs: ENHANCE_YOUR_CALM), a window past
  2^31-1 (FLOW_CONTROL_ERROR), a stream id that goes backwards
  (PROTOCOL_ERROR), DATA on a closed stream (RST_STREAM STREAM_CLOSED).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame, SettingsFrame

from ._config import DEFAULT_CONFIG, Config
from ._events import Event
from ._h2_stream import H2Stream, Pairs
from ._outbox import Outbox

#: What a client sends first on an HTTP/2 connection (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Framed bytes the socket has not taken, past which no stream frames more.
SEND_BUDGET = 256 * 1024
#: Our answers to the peer's frames (acks, resets) the socket has not taken,
#: past which the peer is flooding us without reading.
MAX_UNSENT_REPLIES = 128 * 1024

NO_ERROR = ErrorCodes.NO_ERROR
CANCEL = ErrorCodes.CANCEL
REFUSED_STREAM = ErrorCodes.REFUSED_STREAM
ENHANCE_YOUR_CALM = ErrorCodes.ENHANCE_YOUR_CALM


def is_h2_preface(data: bytes) -> bool | None:
    """Whether ``data``, the first bytes of a connection, start HTTP/2's
    preface: True, False, or None when too few have come to tell."""
    if data[: len(PREFACE)] == PREFACE[: len(data)]:
        return True if len(data) >= len(PREFACE) else None
    return False


@dataclass(frozen=True, slots=True)
class StreamOpened(Event):
    """A new request: read it from ``stream`` (a :class:`Request` first)."""

    stream: H2Stream


@dataclass(frozen=True, slots=True)
class StreamInput(Event):
    """``stream`` has events to read (its body, its frames, its end)."""

    stream: H2Stream


@dataclass(frozen=True, slots=True)
class WindowOpened(Event):
    """The peer opened flow control windows: streams may frame more."""


_WINDOW_OPENED = WindowOpened()


class _FrameGuard:
    """Reads the frame headers of what comes in before h2 buffers it: h2
    holds a frame whole before it judges its length, and a header block
    whole (up to 64 CONTINUATION frames of any size) before it decodes it.
    Here a first frame that is not SETTINGS is refused (PROTOCOL_ERROR, as
    RFC 9113 3.4 asks), a frame past ``h2_max_frame_size`` at its header
    (FRAME_SIZE_ERROR), and a header block whose compressed bytes pass
    ``h2_max_header_list_size`` at the frame that passes it
    (ENHANCE_YOUR_CALM: HPACK never makes a list smaller than its block
    but for rare characters' Huffman codes, and no real request is near
    the limit): what a peer makes us hold is bounded by those two."""

    __slots__ = ("_max_frame", "_max_block", "_skip", "_head", "_block", "_first")

    def __init__(self, config: Config) -> None:
        self._max_frame = config.h2_max_frame_size
        self._max_block = config.h2_max_header_list_size
        # Bytes of the current frame's body (first, the preface) not yet seen.
        self._skip = len(PREFACE)
        # The start of a frame header split between two reads.
        self._head = b""
        # Bytes of the header block under way, -1 between blocks.
        self._block = -1
        # No frame header seen yet: the first must be SETTINGS (RFC 9113 3.4).
        self._first = True

    def check(self, data: bytes) -> int | None:
        """The GOAWAY code for what ``data`` holds, or None if it is fine."""
        end = len(data)
        at = 0
        skip = self._skip
        block = self._block
        while True:
            if skip:
                taken = min(skip, end - at)
                skip -= taken
                at += taken
                if skip:
                    break
            head = self._head
            need = 9 - len(head)
            if end - at < need:
                self._head = head + data[at:]
                break
            header = head + data[at : at + need] if head else data[at : at + 9]
            self._head = b""
            at += need
            length = int.from_bytes(header[:3], "big")
            kind, flags = header[3], header[4]
            if self._first:
                self._first = False
                if kind != 0x4:
                    return int(ErrorCodes.PROTOCOL_ERROR)
            if length > self._max_frame:
                return int(ErrorCodes.FRAME_SIZE_ERROR)
            if kind == 0x1:  # HEADERS: a block starts
                block = length if not flags & 0x4 else -1
            elif kind == 0x9 and block >= 0:  # CONTINUATION
                block = block + length if not flags & 0x4 else -1
            if block > self._max_block:
                return int(ENHANCE_YOUR_CALM)
            skip = length
        self._skip = skip
        self._block = block
        return None


class H2Connection:
    """The server side of one HTTP/2 connection, with no I/O.

    Feed it bytes with :meth:`receive_data` (from the preface on) and read
    :meth:`next_event` until it returns ``None``; send what
    :meth:`data_to_send` returns and report it with :meth:`sent`, as for
    a :class:`~sansio_push.ServerConnection`. A stream the driver is done
    with is handed back with :meth:`close_stream`.
    """

    #: The GOAWAY code for a peer that makes us do work it does not read.
    ENHANCE_YOUR_CALM = ENHANCE_YOUR_CALM

    __slots__ = (
        "config",
        "client",
        "server",
        "_h2",
        "_out",
        "_events",
        "streams",
        "_owed_resets",
        "_replies",
        "_draining",
        "_failed",
        "_frames",
        "error_code",
    )

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
        conn = self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # Our headers are checked as they are built (_h2_stream).
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        codes = h2.settings.SettingCodes
        announced = {
            codes.MAX_CONCURRENT_STREAMS: config.h2_max_concurrent_streams,
            codes.MAX_HEADER_LIST_SIZE: config.h2_max_header_list_size,
            codes.MAX_FRAME_SIZE: config.h2_max_frame_size,
            codes.INITIAL_WINDOW_SIZE: config.h2_stream_window,
            codes.ENABLE_CONNECT_PROTOCOL: 1,
        }
        # h2 enforces the concurrent streams itself by closing the whole
        # connection (PROTOCOL_ERROR), where RFC 9113 5.1.2 has one stream
        # refused, and a client may open streams before our SETTINGS reach
        # it. So h2 is told there is no limit, the client is told ours (the
        # SETTINGS frame is ours), and _on_request refuses past it.
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={**announced, codes.MAX_CONCURRENT_STREAMS: 2**31 - 1}
        )
        conn.max_inbound_frame_size = config.h2_max_frame_size
        conn.decoder.max_header_list_size = config.h2_max_header_list_size
        conn.initiate_connection()
        conn.data_to_send()  # h2's SETTINGS, in place of which ours go
        self._out = Outbox()
        settings = {int(code): value for code, value in announced.items()}
        self._out.put(SettingsFrame(0, settings=settings).serialize(), message=False)
        extra = config.h2_connection_window - 65535
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self._out.put(conn.data_to_send(), message=False)
        self._events: list[Event] = []
        #: The streams the driver works on, by id (until close_stream).
        self.streams: dict[int, H2Stream] = {}
        self._owed_resets = 0
        # Our answers to the peer queued since the socket last took everything.
        self._replies = 0
        self._draining = False
        self._failed = False
        self._frames = _FrameGuard(config)
        #: The GOAWAY code we closed with, once the connection failed.
        self.error_code: int | None = None

    # -- state ------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True when, once :meth:`data_to_send` is flushed, the transport
        should be closed: a GOAWAY for an error, the peer's end, or a
        graceful stop with no stream left."""
        return self._failed or (self._draining and not self.streams)

    @property
    def draining(self) -> bool:
        """True once :meth:`shutdown` sent GOAWAY: no new stream is taken."""
        return self._draining

    @property
    def has_room(self) -> bool:
        """Whether streams may frame more: the frames the socket has not
        taken are under :data:`SEND_BUDGET`."""
        return self._out.pending_bytes < SEND_BUDGET

    @property
    def connection_window(self) -> int:
        """What the peer lets us send on the connection, all streams together."""
        return self._h2.outbound_flow_control_window

    # -- bytes in ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means it closed its side."""
        if self._failed:
            return
        if not data:
            self._fail_quietly()
            return
        refused = self._frames.check(data)
        if refused is not None:
            self.goaway(refused)
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 queued the GOAWAY; every stream is over.
            self._failed = True
            self.error_code = int(exc.error_code)
            self._take_h2(reply=True)
            self._reset_all()
            return
        for event in events:
            self._on_event(event)
        if not self._failed:
            self._take_h2(reply=True)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes are needed."""
        events = self._events
        if not events:
            return None
        event = events.pop(0)
        if isinstance(event, StreamInput | StreamOpened):
            event.stream.input_flagged = False
        return event

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.end_of_request()
                self._flag(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            if not self._events or self._events[-1] is not _WINDOW_OPENED:
                self._events.append(_WINDOW_OPENED)
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The peer's GOAWAY: it opens no more streams; those below its
            # last id carry on unless it closed for an error.
            if event.error_code:
                self._fail_quietly()
            else:
                self._draining = True

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        config = self.config
        if self._draining or len(self.streams) >= config.h2_max_concurrent_streams:
            # Still answering streams the peer reset (or stopping): no more.
            # Each refusal is owed too: a peer that keeps opening streams
            # past the limit is doing what Rapid Reset does.
            with contextlib.suppress(h2.exceptions.ProtocolError):  # reset already
                self._h2.reset_stream(stream_id, REFUSED_STREAM)
            if not self._draining:
                self._owe()
            return
        headers: Pairs = [(bytes(n), bytes(v)) for n, v in event.headers or ()]
        stream = H2Stream(self, stream_id, headers, config, client=self.client, server=self.server)
        self.streams[stream_id] = stream
        self._events.append(StreamOpened(stream))
        stream.input_flagged = True  # its first events are read as it opens

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset:
            if size:
                self._h2.acknowledge_received_data(size, stream_id)
            return
        stream.receive_data(bytes(event.data or b""), size)
        self._flag(stream)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is None or stream.reset:
            return
        if not stream.answered:
            # Reset before its answer started: what Rapid Reset does.
            self._owe()
            if self._failed:
                return
        stream.peer_reset()
        self._flag(stream)

    def _owe(self) -> None:
        self._owed_resets += 1
        if self._owed_resets > 2 * self.config.h2_max_concurrent_streams:
            self.goaway(ENHANCE_YOUR_CALM)

    def _flag(self, stream: H2Stream) -> None:
        if not stream.input_flagged:
            stream.input_flagged = True
            self._events.append(StreamInput(stream))

    # -- what streams ask (StreamOwner) -----------------------------------

    def send_headers(self, stream: H2Stream, headers: Pairs, end_stream: bool) -> None:
        """A stream's answer starts (an answer started pays back one reset)."""
        if self._failed or stream.reset:
            return
        if self._owed_resets:
            self._owed_resets -= 1
        self._h2.send_headers(stream.stream_id, headers, end_stream=end_stream)
        stream.answered = True
        stream.end_sent = end_stream
        self._take_h2()

    def ack(self, stream: H2Stream, n: int) -> None:
        """The driver read what ``n`` flow-controlled bytes of ``stream`` made."""
        if self._failed:
            return
        self._h2.acknowledge_received_data(n, stream.stream_id)
        self._take_h2()

    # -- bytes of streams to frames -----------------------------------------

    def frame(self, stream: H2Stream, data: bytes | memoryview) -> int:
        """Frame as much of ``data`` (the start of what ``stream`` has queued)
        as DATA as the windows and :data:`SEND_BUDGET` allow; how many bytes
        that was (report them to the stream with its ``sent``). 0 if none:
        wait for :class:`WindowOpened` or for :meth:`sent` to say so."""
        if self._failed or stream.reset or stream.end_sent or not data:
            return 0
        room = SEND_BUDGET - self._out.pending_bytes
        if room <= 0:
            return 0
        conn = self._h2
        stream_id = stream.stream_id
        try:
            window = conn.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            return 0
        n = min(len(data), window, room)
        if n <= 0:
            return 0
        end = stream.wants_end and n == stream.pending_bytes
        size = conn.max_outbound_frame_size
        view = memoryview(data)
        for start in range(0, n, size):
            stop = min(start + size, n)
            conn.send_data(stream_id, bytes(view[start:stop]), end_stream=end and stop == n)
        stream.end_sent = end
        self._take_h2()
        return n

    def close_stream(self, stream: H2Stream) -> None:
        """The driver is done with ``stream``: end it (END_STREAM) if all it
        queued was framed and its answer is complete, else reset it (CANCEL);
        a request whose body is still coming is then reset with NO_ERROR
        (RFC 9113 8.1: the answer needs none of it)."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if self._failed or stream.reset:
            return
        stream_id = stream.stream_id
        conn = self._h2
        try:
            if not stream.end_sent:
                if stream.all_sent and stream.finished:
                    conn.end_stream(stream_id)
                else:
                    conn.reset_stream(stream_id, CANCEL)
                    stream.reset = True
            if not stream.reset and not stream.request_ended and stream.protocol == "http":
                conn.reset_stream(stream_id, NO_ERROR)
        except h2.exceptions.ProtocolError:
            pass  # h2 has closed it already (the peer's RST or GOAWAY crossed ours)
        stream.end_sent = True
        self._take_h2()

    # -- the end ----------------------------------------------------------

    def shutdown(self) -> None:
        """Graceful stop: GOAWAY (NO_ERROR, the last stream we took); the
        streams open carry on, new ones are refused."""
        if self._draining or self._failed:
            self._draining = True
            return
        self._draining = True
        # Framed here, not by h2: once h2 has sent a GOAWAY it sends nothing
        # more, where the streams open must still be answered.
        goaway = GoAwayFrame(0, last_stream_id=self._h2.highest_inbound_stream_id)
        self._take_h2()
        self._out.put(goaway.serialize(), message=False)

    def goaway(self, code: int) -> None:
        """Close the connection for ``code`` (GOAWAY): every stream is over."""
        if self._failed:
            return
        self._h2.close_connection(code, last_stream_id=self._h2.highest_inbound_stream_id)
        self._take_h2()
        self._failed = True
        self.error_code = int(code)
        self._reset_all()

    def _fail_quietly(self) -> None:
        """The peer went (or sent GOAWAY for an error): nothing more is sent."""
        self._failed = True
        self._reset_all()

    def _reset_all(self) -> None:
        for stream in list(self.streams.values()):
            if not stream.reset:
                stream.peer_reset()
                self._flag(stream)

    # -- bytes out --------------------------------------------------------

    def _take_h2(self, reply: bool = False) -> None:
        data = self._h2.data_to_send()
        if not data:
            return
        self._out.put(data, message=False)
        if reply and not self._failed:
            self._replies += len(data)
            if self._replies > MAX_UNSENT_REPLIES and self._out.pending_bytes > MAX_UNSENT_REPLIES:
                self.goaway(ENHANCE_YOUR_CALM)

    def data_to_send(self) -> bytes:
        """Every byte waiting for the socket (without taking them: see :meth:`sent`)."""
        return self._out.peek()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the socket and not yet taken."""
        return self._out.pending_bytes

    def refused(self) -> None:
        """The socket did not take everything (nothing to do: the budget
        bounds what is framed)."""

    def sent(self, n: int) -> bool:
        """The socket took the first ``n`` bytes of :meth:`data_to_send`.
        True if that made room under :data:`SEND_BUDGET` for streams that
        were refused it."""
        out = self._out
        before = out.pending_bytes
        out.taken(n)
        after = out.pending_bytes
        if not after:
            self._replies = 0
        return before >= SEND_BUDGET > after
