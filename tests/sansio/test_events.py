"""Closed carries the code to the driver: the peer's, 1006 when the transport
ended without a close frame, ours when we closed for a protocol error or a limit."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import pytest
from sansio_wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_TEXT,
    close_payload,
    connect_sse,
    connect_ws,
    drain,
    flush,
    frame,
    parse_frames,
    receive,
)

from sansio_push import Closed, Config, ServerConnection

OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate")]


def ws(config: Config | None = None) -> ServerConnection:
    return connect_ws(config)[0]


def deflated(data: bytes) -> bytes:
    deflater = zlib.compressobj(wbits=-15)
    return (deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]


def overflowed(conn: ServerConnection) -> ServerConnection:
    """Past the queue bound of one message while the socket refuses: the
    'close' policy sends our 1008, and the peer's answer is what follows."""
    conn.send_message("0")
    conn.refused()
    assert conn.send_message("1") and not conn.send_message("past the bound")
    assert not conn.open and not conn.finished
    flush(conn)
    return conn


PATHS: list[tuple[str, Callable[[], ServerConnection], bytes, int]] = [
    ("the peer's close", ws, frame(OP_CLOSE, close_payload(1001)), 1001),
    ("the peer's own code", ws, frame(OP_CLOSE, close_payload(4321)), 4321),
    ("the peer's close without a code", ws, frame(OP_CLOSE), 1005),
    ("the transport's end", ws, b"", 1006),
    ("the transport's end mid-frame", ws, frame(OP_TEXT, b"abc")[:-1], 1006),
    (
        "a message over the limit",
        lambda: ws(Config(max_message_size=4)),
        frame(OP_BINARY, b"x" * 5),
        1009,
    ),
    (
        "fragments over the limit",
        lambda: ws(Config(max_message_size=4)),
        frame(OP_BINARY, b"xxx", fin=False) + frame(OP_CONT, b"xx"),
        1009,
    ),
    ("text that is not UTF-8", ws, frame(OP_TEXT, b"\xff"), 1007),
    ("an unmasked frame", ws, frame(OP_TEXT, b"x", mask=None), 1002),
    (
        "a compressed message over the limit",
        lambda: connect_ws(Config(compression=True, max_message_size=10), headers=OFFER)[0],
        frame(OP_BINARY, deflated(b"\0" * 100), rsv1=True),
        1009,
    ),
    (
        "the answer to our overflow close",
        lambda: overflowed(ws(Config(max_queue_messages=1))),
        frame(OP_CLOSE, close_payload(1008)),
        1008,
    ),
    ("the end of an event stream", lambda: connect_sse()[0], b"", 1006),
]


@pytest.mark.parametrize("make,data,code", [p[1:] for p in PATHS], ids=[p[0] for p in PATHS])
def test_closed_carries_the_code_of_each_way_a_push_connection_ends(
    make: Callable[[], ServerConnection], data: bytes, code: int
) -> None:
    conn = make()
    conn.receive_data(data)
    if data:
        conn.receive_data(b"")  # an end after it changes nothing
    closed = [e for e in drain(conn) if isinstance(e, Closed)]
    assert [e.code for e in closed] == [code]
    assert conn.finished


@pytest.mark.parametrize(
    "data,code",
    [
        (frame(OP_TEXT, b"x", mask=None), 1002),
        (frame(OP_TEXT, b"\xff"), 1007),
        (frame(OP_BINARY, b"x" * 5), 1009),
    ],
    ids=["protocol error", "invalid data", "too big"],
)
def test_the_code_we_close_with_is_the_one_closed_carries(data: bytes, code: int) -> None:
    conn = ws(Config(max_message_size=4))
    [event] = receive(conn, data)
    [sent] = [f for f in parse_frames(flush(conn)) if f.opcode == OP_CLOSE]
    assert isinstance(event, Closed) and event.code == sent.close_code == code
