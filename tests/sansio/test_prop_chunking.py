"""Property: however a valid byte stream is cut into reads, the events are the same."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sansio_wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    chunked,
    close_payload,
    new,
    request,
    ws_request,
)
from sansio_wire import frame as ws_frame

from sansio_push import Body, Closed, Config, EndOfRequest, Event, Message, Request

SETTINGS = settings(
    max_examples=int(os.environ.get("SANSIO_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CONFIG = Config(max_message_size=4096)


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Several pipelined requests, and (path, body) for each."""
    stream = b""
    expected = []
    for i in range(draw(st.integers(1, 4))):
        path = f"/r{i}/" + draw(st.text("abcxyz-_.~", max_size=8))
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        body = b"" if method == "GET" else draw(st.binary(max_size=300))
        if method != "GET" and draw(st.booleans()):
            cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
            pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
            head = request(method, path, [("Transfer-Encoding", "chunked")])
            stream += head + chunked(*pieces)
        else:
            stream += request(method, path, body=body if method != "GET" else None)
        expected.append((path, body))
    return stream, expected


@st.composite
def ws_streams(draw: st.DrawFn) -> tuple[bytes, list[str | bytes], int]:
    """An upgrade request then client frames; the messages, and the close code."""
    stream = ws_request()
    messages: list[str | bytes] = []
    mask = st.binary(min_size=4, max_size=4)
    for _ in range(draw(st.integers(0, 5))):
        msg: str | bytes
        if draw(st.booleans()):
            msg = draw(st.text(max_size=200))
            payload, opcode = msg.encode(), OP_TEXT
        else:
            msg = draw(st.binary(max_size=300))
            payload, opcode = msg, OP_BINARY
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            op = opcode if i == 0 else OP_CONT
            stream += ws_frame(op, piece, fin=i == len(pieces) - 1, mask=draw(mask))
            if draw(st.integers(0, 4)) == 0:
                stream += ws_frame(OP_PING, draw(st.binary(max_size=20)), mask=draw(mask))
        messages.append(msg)
    code = draw(st.sampled_from([1000, 1001, 4000, 1006]))
    if code != 1006:
        stream += ws_frame(OP_CLOSE, close_payload(code, "bye"), mask=draw(mask))
    return stream, messages, code


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted(p % (len(data) + 1) for p in points)
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [p for p in pieces if p]  # b"" would mean EOF


def run(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    """Drive a connection as a simple app would: echo request bodies and
    WebSocket messages, accept WebSocket upgrades. Returns the events (with
    adjacent bodies joined, since a body may come in any number of pieces)
    and every byte sent."""
    conn = new(CONFIG)
    events: list[Event] = []
    out = b""
    state: dict[str, object] = {}

    def pump() -> bytes:
        while (event := conn.next_event()) is not None:
            if isinstance(event, Body):
                if events and isinstance(events[-1], Body):
                    events[-1] = Body(events[-1].data + event.data)
                else:
                    events.append(event)
                continue
            events.append(event)
            if isinstance(event, Request):
                state["env"] = event.env
            elif isinstance(event, EndOfRequest):
                env = state["env"]
                assert isinstance(env, dict)
                if env["rack.upgrade?"] == "websocket":
                    assert conn.start_response(0, [], upgrade=True) == "websocket"
                else:
                    body = events[-2].data if isinstance(events[-2], Body) else b""
                    conn.respond(200, [], env["PATH_INFO"].encode() + b":" + body)
            elif isinstance(event, Message):
                assert conn.send_message(event.data)
        data = conn.data_to_send()
        conn.sent(len(data))
        return data

    for chunk in chunks:
        conn.receive_data(chunk)
        out += pump()
    conn.receive_data(b"")
    out += pump()
    assert conn.finished
    return events, out


@SETTINGS
@given(http_requests(), st.lists(st.integers(0, 10_000), max_size=30))
def test_pipelined_requests_give_the_same_events_however_cut(
    case: tuple[bytes, list[tuple[str, bytes]]], points: list[int]
) -> None:
    stream, expected = case
    whole = run([stream])
    assert run(cut(stream, points)) == whole
    assert run([stream[i : i + 1] for i in range(len(stream))]) == whole
    events, _ = whole
    got = []
    for event in events:
        if isinstance(event, Request):
            got.append((event.env["PATH_INFO"], b""))
        elif isinstance(event, Body):
            got[-1] = (got[-1][0], event.data)
        else:
            assert isinstance(event, EndOfRequest)
    assert got == expected


@SETTINGS
@given(ws_streams(), st.lists(st.integers(0, 10_000), max_size=30))
def test_websocket_stream_gives_the_same_events_however_cut(
    case: tuple[bytes, list[str | bytes], int], points: list[int]
) -> None:
    stream, messages, code = case
    whole = run([stream])
    assert run(cut(stream, points)) == whole
    events, _ = whole
    assert [type(e) for e in events[:2]] == [Request, EndOfRequest]
    assert events[2:] == [Message(m) for m in messages] + [
        Closed(code, "" if code == 1006 else "bye")
    ]


@settings(max_examples=10, deadline=None)
@given(ws_streams())
def test_websocket_stream_fed_byte_by_byte_gives_the_same_events(
    case: tuple[bytes, list[str | bytes], int],
) -> None:
    stream = case[0]
    assert run([stream[i : i + 1] for i in range(len(stream))]) == run([stream])
