"""sansio_push's HTTP/2 core, driven with h2 as the client: no sockets.

Each test wires a real h2 client connection to an H2Connection by hand (the
bytes each sends are fed to the other), so every frame is one h2 wrote or
read, and the accounting (windows, the send budget, owed resets, unsent
replies) is checked byte by byte.
"""

from __future__ import annotations

import itertools
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame
from hypothesis import given, settings
from hypothesis import strategies as st

import sansio_push as sp
from sansio_push._h2 import MAX_UNSENT_REPLIES, SEND_BUDGET, _FrameGuard

GET = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com")]


class Pair:
    """An h2 client and our server core, joined by hand."""

    def __init__(self, config: sp.Config | None = None) -> None:
        config = config or sp.Config()
        self.server = sp.H2Connection(config, client=("10.0.0.1", 5000), server=("10.0.0.2", 443))
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        self.received: list[Any] = []
        self.pump()

    def pump(self, *, take: bool = True) -> list[Any]:
        """Client bytes to the server; with ``take``, the server's bytes
        back to the client (as a socket that reads everything would)."""
        data = self.client.data_to_send()
        if data:
            self.server.receive_data(data)
        events: list[Any] = []
        if take:
            out = self.server.data_to_send()
            if out:
                self.server.sent(len(out))
                events = self.client.receive_data(out)
                self.received += events
                more = self.client.data_to_send()
                if more:
                    self.server.receive_data(more)
        return events

    def server_events(self) -> list[Any]:
        return list(iter(self.server.next_event, None))

    def open(self, stream_id: int, headers: list[tuple[str, str]], end: bool = True) -> sp.H2Stream:
        self.client.send_headers(stream_id, headers, end_stream=end)
        self.pump()
        opened = [e for e in self.server_events() if isinstance(e, sp.StreamOpened)]
        assert [e.stream.stream_id for e in opened] == [stream_id]
        return opened[0].stream

    def send(self, stream: sp.H2Stream) -> int:
        """Frame what the stream has queued, as a driver's send_now would."""
        n = self.server.frame(stream, stream.data_to_send())
        if n:
            stream.sent(n)
        return n


def stream_events(stream: sp.H2Stream) -> list[sp.Event]:
    return list(iter(stream.next_event, None))


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_the_preface_is_told_from_http_1_1_after_as_few_bytes_as_it_takes() -> None:
    assert sp.is_h2_preface(sp.PREFACE) is True
    assert sp.is_h2_preface(sp.PREFACE + b"\x00\x00") is True
    assert sp.is_h2_preface(b"PRI * HT") is None
    assert sp.is_h2_preface(b"") is None
    assert sp.is_h2_preface(b"GET / HTTP/1.1\r\n") is False
    assert sp.is_h2_preface(b"P") is None and sp.is_h2_preface(b"PUT") is False


def test_settings_announce_the_limits_and_extended_connect() -> None:
    config = sp.Config(h2_max_concurrent_streams=7, h2_max_header_list_size=9000)
    pair = Pair(config)
    changed = of(pair.received, h2.events.RemoteSettingsChanged)[0].changed_settings
    codes = h2.settings.SettingCodes
    assert changed[codes.MAX_CONCURRENT_STREAMS].new_value == 7
    assert changed[codes.MAX_HEADER_LIST_SIZE].new_value == 9000
    assert changed[codes.ENABLE_CONNECT_PROTOCOL].new_value == 1
    assert changed[codes.INITIAL_WINDOW_SIZE].new_value == config.h2_stream_window
    assert pair.client.outbound_flow_control_window == config.h2_connection_window


def test_a_get_is_an_environ_like_http_1_1_with_http_2_as_its_protocol() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/a%20b?x=1"), ("cookie", "a=1"), ("cookie", "b=2")])
    request, end = stream_events(stream)
    assert isinstance(request, sp.Request) and isinstance(end, sp.EndOfRequest)
    env = request.env
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"]) == ("GET", "/a b", "x=1")
    assert env["HTTP_HOST"] == "example.com"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["REMOTE_ADDR"] == "10.0.0.1" and env["rack.upgrade?"] is None


def test_an_answer_with_no_body_is_one_headers_frame_and_connection_headers_go() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/")])
    stream_events(stream)
    stream.start_response(204, [("Connection", "close"), ("X-A", "1")])
    stream.end_response()
    events = pair.pump()
    (response,) = of(events, h2.events.ResponseReceived)
    assert response.headers == [(b":status", b"204"), (b"x-a", b"1")]
    assert response.stream_ended is not None
    assert stream.end_sent and stream.finished


def test_spaces_around_a_header_value_are_dropped() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/")])
    stream_events(stream)
    stream.start_response(204, [("Set-Cookie", " csrftoken=abc; Path=/ ")])
    stream.end_response()
    (response,) = of(pair.pump(), h2.events.ResponseReceived)
    assert response.headers == [(b":status", b"204"), (b"set-cookie", b"csrftoken=abc; Path=/")]


def test_a_body_is_framed_as_data_with_end_stream_on_its_last_frame() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/")])
    stream_events(stream)
    body = bytes(range(256)) * 200  # over one 16 KiB frame
    stream.respond(200, [("content-type", "application/octet-stream")], body)
    assert pair.send(stream) == len(body)
    events = pair.pump()
    assert b"".join(e.data for e in of(events, h2.events.DataReceived)) == body
    assert len(of(events, h2.events.DataReceived)) == 4
    assert of(events, h2.events.StreamEnded)


def test_a_request_body_arrives_and_its_window_is_given_back_once_read() -> None:
    # Small windows: h2 gives a window back once half of it is used.
    pair = Pair(sp.Config(h2_stream_window=65535, h2_connection_window=65535))
    pair.client.send_headers(1, [*GET[1:], (":method", "POST"), (":path", "/p")])
    for _ in range(4):
        pair.client.send_data(1, b"x" * 12_500)
    pair.client.end_stream(1)
    pair.pump()
    (opened,) = of(pair.server_events(), sp.StreamOpened)
    window = pair.client.outbound_flow_control_window
    events = stream_events(opened.stream)
    assert b"".join(e.data for e in of(events, sp.Body)) == b"x" * 50_000
    assert of(events, sp.EndOfRequest)
    pair.pump()
    assert pair.client.outbound_flow_control_window == window + 50_000


def test_a_body_past_max_body_size_is_answered_413_by_the_core() -> None:
    pair = Pair(sp.Config(max_body_size=1000))
    pair.client.send_headers(1, [*GET[1:], (":method", "POST"), (":path", "/p")])
    pair.client.send_data(1, b"x" * 2000)
    pair.pump()
    (opened,) = of(pair.server_events(), sp.StreamOpened)
    events = stream_events(opened.stream)
    assert of(events, sp.Rejected)[0].status == 413
    pair.send(opened.stream)
    pair.server.close_stream(opened.stream)
    pair.pump()
    events = pair.received
    assert of(events, h2.events.ResponseReceived)[0].headers[0] == (b":status", b"413")
    assert of(events, h2.events.StreamEnded)
    # The body it was still sending is not wanted (RFC 9113 8.1).
    assert of(events, h2.events.StreamReset)[0].error_code == ErrorCodes.NO_ERROR


def test_extended_connect_is_a_websocket_request_and_its_frames_are_data() -> None:
    pair = Pair()
    connect = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", "/ws"),
        (":authority", "example.com"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat"),
    ]
    stream = pair.open(1, connect, end=False)
    request, end = stream_events(stream)
    assert isinstance(request, sp.Request) and isinstance(end, sp.EndOfRequest)
    assert request.env["rack.upgrade?"] == "websocket"
    assert request.env["REQUEST_METHOD"] == "GET"
    assert stream.start_response(200, [("sec-websocket-protocol", "chat")], upgrade=True) == (
        "websocket"
    )
    events = pair.pump()
    assert of(events, h2.events.ResponseReceived)[0].headers == [
        (b":status", b"200"),
        (b"sec-websocket-protocol", b"chat"),
    ]
    # A masked text frame from the client, then our answer to it.
    masked = bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(
        b ^ k for b, k in zip(b"hello", itertools.cycle(b"\x01\x02\x03\x04"))
    )
    pair.client.send_data(1, masked)
    pair.pump()
    assert of(pair.server_events(), sp.StreamInput)
    assert stream_events(stream) == [sp.Message("hello")]
    assert stream.send_message("back")
    pair.send(stream)
    events = pair.pump()
    assert of(events, h2.events.DataReceived)[0].data == b"\x81\x04back"


def test_an_event_stream_is_unchunked_and_its_get_ending_is_not_the_peer_leaving() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/e"), ("accept", "text/event-stream")])
    request, _ = stream_events(stream)
    assert request.env["rack.upgrade?"] == "sse"
    assert stream.start_response(200, [("connection", "close")], upgrade=True) == "sse"
    assert stream.send_message("tick")
    pair.send(stream)
    events = pair.pump()
    headers = dict(of(events, h2.events.ResponseReceived)[0].headers)
    assert headers[b"content-type"] == b"text/event-stream" and b"connection" not in headers
    assert of(events, h2.events.DataReceived)[0].data == b"event: msg\ndata: tick\n\n"
    assert stream.open and stream_events(stream) == []
    # The browser closing its EventSource resets the stream: the peer's end.
    pair.client.reset_stream(1, ErrorCodes.CANCEL)
    pair.pump()
    assert of(pair.server_events(), sp.StreamInput)
    assert stream_events(stream) == [sp.Closed(sp.ABNORMAL, "peer closed")]


def test_a_shut_stream_window_refuses_that_stream_only() -> None:
    pair = Pair()
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    pair.pump()
    a = pair.open(1, [*GET, (":path", "/a"), ("accept", "text/event-stream")])
    b = pair.open(3, [*GET, (":path", "/b"), ("accept", "text/event-stream")])
    for stream in (a, b):
        stream_events(stream)
        stream.start_response(200, [], upgrade=True)
        stream.send_message("x")
    assert pair.send(a) == 0 and pair.send(b) == 0
    pair.client.increment_flow_control_window(100, stream_id=3)
    pair.pump()
    assert of(pair.server_events(), sp.WindowOpened)
    assert pair.send(a) == 0
    assert pair.send(b) == len(b"event: msg\ndata: x\n\n")
    assert a.pending == 1 and b.pending == 0


def test_no_stream_frames_past_the_budget_of_unsent_frames() -> None:
    pair = Pair()
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 8 * SEND_BUDGET})
    pair.client.increment_flow_control_window(8 * SEND_BUDGET)
    pair.pump()
    stream = pair.open(1, [*GET, (":path", "/big")])
    stream_events(stream)
    big = b"y" * (SEND_BUDGET * 2)
    stream.respond(200, [], big)
    framed = pair.server.frame(stream, stream.data_to_send())
    stream.sent(framed)
    assert 0 < framed <= SEND_BUDGET
    assert pair.server.frame(stream, stream.data_to_send()) == 0
    # The socket takes the frames: room again.
    assert pair.server.sent(len(pair.server.data_to_send())) is True


def test_rapid_reset_gets_goaway_enhance_your_calm() -> None:
    config = sp.Config(h2_max_concurrent_streams=10)
    pair = Pair(config)
    stream_id = 1
    for _ in range(2 * config.h2_max_concurrent_streams + 1):
        pair.client.send_headers(stream_id, [*GET, (":path", "/")], end_stream=True)
        pair.client.reset_stream(stream_id, ErrorCodes.CANCEL)
        stream_id += 2
    pair.server.receive_data(pair.client.data_to_send())
    assert pair.server.finished
    assert pair.server.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    events = pair.client.receive_data(pair.server.data_to_send())
    (goaway,) = of(events, h2.events.ConnectionTerminated)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_answered_streams_pay_back_what_resets_cost() -> None:
    config = sp.Config(h2_max_concurrent_streams=10)
    pair = Pair(config)
    stream_id = 1
    for _ in range(10):  # 100 resets in all, far past 2 x 10, with answers between
        for _ in range(10):
            pair.client.send_headers(stream_id, [*GET, (":path", "/")], end_stream=True)
            pair.client.reset_stream(stream_id, ErrorCodes.CANCEL)
            stream_id += 2
        pair.pump()
        for event in pair.server_events():
            if isinstance(event, sp.StreamOpened):
                pair.server.close_stream(event.stream)  # the driver is done with it
        for _ in range(10):
            stream = pair.open(stream_id, [*GET, (":path", "/")])
            stream_id += 2
            stream_events(stream)
            stream.respond(200, [], b"ok")
            pair.send(stream)
            pair.server.close_stream(stream)
            pair.pump()
    assert not pair.server.finished


def test_streams_still_answered_after_their_reset_count_against_the_limit() -> None:
    pair = Pair(sp.Config(h2_max_concurrent_streams=2))
    a = pair.open(1, [*GET, (":path", "/slow")])
    b = pair.open(3, [*GET, (":path", "/slow")])
    pair.client.reset_stream(1, ErrorCodes.CANCEL)
    pair.client.reset_stream(3, ErrorCodes.CANCEL)
    pair.client.send_headers(5, [*GET, (":path", "/")], end_stream=True)
    events = pair.pump()
    assert [e.error_code for e in of(events, h2.events.StreamReset)] == [ErrorCodes.REFUSED_STREAM]
    assert a.reset and b.reset
    pair.server.close_stream(a)  # the app finished with it
    pair.server_events()
    pair.open(7, [*GET, (":path", "/")])


def test_a_ping_flood_from_a_peer_that_does_not_read_gets_goaway() -> None:
    pair = Pair()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    sent = 0
    while not pair.server.finished and sent < 20_000:
        pair.server.receive_data(ping * 100)
        sent += 100
    assert pair.server.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert pair.server.pending_bytes < MAX_UNSENT_REPLIES + 64 * 1024
    # A peer that reads its acks is served however many it sends.
    reader = Pair()
    for _ in range(200):
        reader.server.receive_data(ping * 100)
        reader.server.sent(reader.server.pending_bytes)
    assert not reader.server.finished


def test_a_settings_flood_from_a_peer_that_does_not_read_gets_goaway() -> None:
    pair = Pair()
    settings = SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 5}).serialize()
    for _ in range(200):
        if pair.server.finished:
            break
        pair.server.receive_data(settings * 100)
    assert pair.server.error_code == ErrorCodes.ENHANCE_YOUR_CALM


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (
            b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x7f\xff\xff\xff" * 2,
            ErrorCodes.FLOW_CONTROL_ERROR,
        ),
        (b"\x00\x40\x01\x00\x00\x00\x00\x00\x01" + b"\x00" * 0x4001, ErrorCodes.FRAME_SIZE_ERROR),
    ],
    ids=["window update past 2^31-1", "frame past max frame size"],
)
def test_h2_refuses_what_it_bounds_with_the_right_goaway(frames: bytes, code: int) -> None:
    pair = Pair()
    pair.server.receive_data(frames)
    assert pair.server.finished and pair.server.error_code == code


def test_graceful_shutdown_keeps_open_streams_and_refuses_new_ones() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/e"), ("accept", "text/event-stream")])
    stream_events(stream)
    stream.start_response(200, [], upgrade=True)
    pair.server.shutdown()
    out = pair.server.data_to_send()
    assert b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" in out  # GOAWAY, NO_ERROR, last id 1
    assert not pair.server.finished
    stream.send_message("last")
    pair.send(stream)
    stream.close()
    pair.server.close_stream(stream)
    assert pair.server.finished


def _frame(
    kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None
) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


def test_a_frame_past_the_max_frame_size_is_refused_at_its_header() -> None:
    pair = Pair()
    # Only the header of a 8 MiB DATA frame: nothing of its body is waited for.
    pair.server.receive_data(_frame(0x0, 0, 1, b"", length=8 * 1024 * 1024))
    assert pair.server.finished and pair.server.error_code == ErrorCodes.FRAME_SIZE_ERROR
    assert pair.server.pending_bytes < 1024


@pytest.mark.parametrize(
    ("piece", "code"),
    [
        # Small frames: h2's bound of 64 CONTINUATION frames comes first.
        (1, ErrorCodes.PROTOCOL_ERROR),
        (100, ErrorCodes.PROTOCOL_ERROR),
        # Large ones: the block passes the header list size first.
        (16384, ErrorCodes.ENHANCE_YOUR_CALM),
    ],
)
def test_a_continuation_flood_is_refused_at_64_frames_or_the_header_list_size(
    piece: int, code: int
) -> None:
    config = sp.Config(h2_max_header_list_size=8192)
    pair = Pair(config)
    pair.server.receive_data(_frame(0x1, 0, 1, b"\x82"))  # HEADERS, no END_HEADERS
    fed = 0
    while not pair.server.finished and fed < 1024 * 1024:
        pair.server.receive_data(_frame(0x9, 0, 1, b"\x00" * piece))
        fed += piece
    assert pair.server.error_code == code
    assert fed <= max(config.h2_max_header_list_size + piece, 65 * piece)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_the_frame_guard_reads_the_same_however_the_bytes_are_split(data: st.DataObject) -> None:
    """The guard sees frame headers split anywhere, as h2 does: the verdict
    on a stream of frames does not depend on where the reads cut it."""
    frames = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([0x0, 0x1, 0x8, 0x9]), st.integers(0, 5), st.integers(0, 300)
            ),
            max_size=20,
        )
    )
    wire = sp.PREFACE + b"".join(
        _frame(kind, 0x4 if flags % 2 else 0, 1, b"\x00" * size) for kind, flags, size in frames
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    config = sp.Config(h2_max_header_list_size=500)
    whole = _FrameGuard(config).check(wire)
    guard = _FrameGuard(config)
    verdict = None
    for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        verdict = guard.check(wire[start:stop])
        if verdict is not None:
            break
    assert verdict == whole


def test_a_stream_past_the_announced_limit_is_refused_alone() -> None:
    pair = Pair(sp.Config(h2_max_concurrent_streams=2))
    a = pair.open(1, [*GET, (":path", "/a")])
    b = pair.open(3, [*GET, (":path", "/b")])
    # A third at once: h2's client would not send it, a racing one may.
    block = pair.client.encoder.encode([*GET, (":path", "/c")])
    third = HeadersFrame(5, data=block, flags=["END_HEADERS", "END_STREAM"])
    pair.server.receive_data(third.serialize())
    out = pair.server.data_to_send()
    resets = []
    while out:
        frame, length = Frame.parse_frame_header(memoryview(out[:9]))
        frame.parse_body(memoryview(out[9 : 9 + length]))
        if isinstance(frame, RstStreamFrame):
            resets.append((frame.stream_id, frame.error_code))
        out = out[9 + length :]
    assert resets == [(5, ErrorCodes.REFUSED_STREAM)]
    assert not pair.server.finished and not a.reset and not b.reset


def test_a_first_frame_that_is_not_settings_gets_goaway_protocol_error() -> None:
    server = sp.H2Connection()
    server.receive_data(sp.PREFACE + PingFrame(0, opaque_data=b"12345678").serialize())
    assert server.finished and server.error_code == ErrorCodes.PROTOCOL_ERROR


def test_an_answer_to_a_stream_the_peer_reset_goes_nowhere_without_an_error() -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/slow")])
    stream_events(stream)
    pair.client.reset_stream(1, ErrorCodes.CANCEL)
    pair.pump()
    pair.server_events()
    # The app answers late, as a slow one does: nothing is sent, nothing raised.
    assert stream.start_response(200, [("content-type", "text/plain")]) is None
    stream.send_body(b"too late")
    stream.end_response()
    assert stream.data_to_send() == b"" and stream.finished
    pair.server.close_stream(stream)
    assert not of(pair.pump(), h2.events.DataReceived)


@pytest.mark.parametrize(
    "header",
    [(":status", "500"), ("x bad", "1"), ("x-a", "one\r\ntwo"), ("x-a", "nul\x00")],
    ids=["pseudo-header", "space in name", "line break", "nul"],
)
def test_a_header_http_cannot_carry_is_refused_before_anything_is_sent(
    header: tuple[str, str],
) -> None:
    pair = Pair()
    stream = pair.open(1, [*GET, (":path", "/")])
    stream_events(stream)
    with pytest.raises(sp.LocalProtocolError):
        stream.start_response(200, [header])
    # The app's error can still be answered (the driver's 500).
    stream.respond(500, [("content-type", "text/plain")], b"error")
    pair.send(stream)
    assert of(pair.pump(), h2.events.ResponseReceived)[0].headers[0] == (b":status", b"500")
