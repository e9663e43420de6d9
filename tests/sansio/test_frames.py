"""WebSocket frames: those we send, and the small ones read without wsproto
(sansio_push/_frames.py), which give exactly what wsproto gives: the same
events, the same bytes back, the same close codes; whatever that reader does
not take, wsproto reads from that byte on."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sansio_wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    connect_ws,
    drain,
    flush,
    frame,
    parse_frames,
    sent_frames,
)

from sansio_push import INVALID_DATA, Closed, Config, Message, Pong, ServerConnection
from sansio_push._websocket import WebSocketPhase

SETTINGS = settings(
    max_examples=int(os.environ.get("SANSIO_EXAMPLES", "50")) * 4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MASK = b"\x37\xfa\x21\x3d"


def ws_phase(conn: ServerConnection) -> WebSocketPhase:
    """The phase object of an upgraded WebSocket connection."""
    assert isinstance(conn._state, WebSocketPhase)
    return conn._state


def pair(config: Config | None = None) -> tuple[ServerConnection, ServerConnection]:
    """A connection as shipped, and one that wsproto reads from the start."""
    fast, _ = connect_ws(config)
    slow, _ = connect_ws(config)
    ws_phase(slow)._to_wsproto()
    assert ws_phase(fast)._ws is None and ws_phase(slow)._ws is not None
    return fast, slow


def step(conn: ServerConnection, data: bytes) -> tuple[list[Any], bytes]:
    conn.receive_data(data)
    events = drain(conn)
    out = conn.data_to_send()
    conn.sent(len(out))
    return events, out


def same(fast: tuple[list[Any], bytes], slow: tuple[list[Any], bytes]) -> bool:
    """Equal, but for the reason of a 1007: it is the UTF-8 decoder's message,
    whose byte position depends on how the bad text was fed to it."""

    def reasonless(result: tuple[list[Any], bytes]) -> tuple[list[Any], list[Any]]:
        events, out = result
        events = [
            Closed(INVALID_DATA, "") if isinstance(e, Closed) and e.code == INVALID_DATA else e
            for e in events
        ]
        frames = [
            (f.opcode, b"1007") if f.opcode == OP_CLOSE and f.close_code == INVALID_DATA else f
            for f in parse_frames(out)
        ]
        return events, frames

    return reasonless(fast) == reasonless(slow)


def long_form(opcode: int, payload: bytes) -> bytes:
    """A masked frame whose short length is written in the 16-bit form."""
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload)) + MASK + masked


frames = st.one_of(
    st.text(max_size=200).map(lambda t: frame(OP_TEXT, t.encode())),
    st.binary(max_size=200).map(lambda b: frame(OP_BINARY, b)),
    st.integers(120, 70_000).map(lambda n: frame(OP_BINARY, b"\xa5" * n)),
    st.binary(max_size=130).map(lambda b: frame(OP_PING, b)),
    st.binary(max_size=130).map(lambda b: frame(OP_PONG, b)),
    st.binary(max_size=40).map(lambda b: frame(OP_TEXT, b)),  # maybe not UTF-8
    st.binary(max_size=40).map(lambda b: frame(OP_TEXT, b, fin=False)),
    st.binary(max_size=40).map(lambda b: frame(OP_CONT, b)),
    st.binary(max_size=40).map(lambda b: frame(OP_BINARY, b, rsv1=True)),
    st.binary(max_size=40).map(lambda b: frame(OP_BINARY, b, mask=None)),
    st.sampled_from([3, 7, 0xB, 0xF]).map(lambda op: frame(op, b"x")),
    st.binary(max_size=125).map(lambda b: long_form(OP_BINARY, b)),
    st.sampled_from([1000, 1001, 1005, 3000, 999]).map(
        lambda code: frame(OP_CLOSE, close_payload(code))
    ),
    st.binary(min_size=1, max_size=20),
)


@SETTINGS
@given(
    st.lists(frames, max_size=8),
    st.lists(st.integers(0, 100_000), max_size=6),
    st.sampled_from([100, 4096, 1024 * 1024]),
    st.booleans(),
)
def test_the_same_events_and_bytes_as_wsproto(
    sent: list[bytes], cuts: list[int], limit: int, eof: bool
) -> None:
    fast, slow = pair(Config(max_message_size=limit))
    data = b"".join(sent)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        assert same(step(fast, data[start:end]), step(slow, data[start:end]))
    if eof:
        assert same(step(fast, b""), step(slow, b""))
    assert (fast.open, fast.finished) == (slow.open, slow.finished)
    # What each connection sends after it reads all that is the same too.
    for conn in (fast, slow):
        conn.send_message("after")
        conn.send_keepalive(b"k")
        conn.close(1000, "bye")
    assert same(([], fast.data_to_send()), ([], slow.data_to_send()))


def test_messages_pings_and_pongs_do_not_need_wsproto() -> None:
    conn, _ = connect_ws()
    data = frame(OP_TEXT, "héllo".encode()) + frame(OP_PING, b"p") + frame(OP_PONG, b"k")
    data += frame(OP_BINARY, b"\x00" * 300)
    events, out = step(conn, data)
    assert events == [Message("héllo"), Pong(b"k"), Message(b"\x00" * 300)]
    assert out == bytes((0x80 | OP_PONG, 1)) + b"p"
    conn.send_keepalive()
    assert ws_phase(conn)._ws is None
    # Nothing that was read is held on to.
    assert ws_phase(conn)._in == b""


def test_a_binary_frame_split_anywhere_waits_for_its_end() -> None:
    conn, _ = connect_ws()
    data = frame(OP_BINARY, b"x" * 200)
    for i in range(len(data) - 1):
        assert step(conn, data[i : i + 1]) == ([], b"")
    assert step(conn, data[-1:]) == ([Message(b"x" * 200)], b"")
    assert ws_phase(conn)._ws is None


def test_text_that_comes_in_pieces_is_left_to_wsproto() -> None:
    # wsproto fails bad UTF-8 at the first bad byte, before the frame ends.
    conn, _ = connect_ws()
    data = frame(OP_TEXT, "é".encode() * 50)
    assert step(conn, data[:10]) == ([], b"")
    assert ws_phase(conn)._ws is not None
    assert step(conn, data[10:]) == ([Message("é" * 50)], b"")


def test_from_a_fragment_on_wsproto_reads_the_connection() -> None:
    conn, _ = connect_ws()
    data = frame(OP_TEXT, b"a", fin=False) + frame(OP_CONT, b"b") + frame(OP_TEXT, b"c")
    assert step(conn, data) == ([Message("ab"), Message("c")], b"")
    assert ws_phase(conn)._ws is not None and ws_phase(conn)._in == b""


def test_text_and_binary_messages_go_out_as_unmasked_frames() -> None:
    conn, _ = connect_ws()
    assert conn.send_message("tëxt") and conn.send_message(b"\x00bin")
    frames = parse_frames(flush(conn))
    assert [(f.fin, f.rsv1, f.opcode, f.payload) for f in frames] == [
        (True, False, OP_TEXT, "tëxt".encode()),
        (True, False, OP_BINARY, b"\x00bin"),
    ]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70000])
def test_messages_of_every_length_encoding_go_out_whole(size: int) -> None:
    conn, _ = connect_ws()
    conn.send_message(b"z" * size)
    assert sent_frames(conn) == [(OP_BINARY, b"z" * size)]
