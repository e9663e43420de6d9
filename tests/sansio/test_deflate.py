"""permessage-deflate: agreed when configured and offered, both ways, with
wsproto's gaps closed."""

from __future__ import annotations

import zlib

from sansio_wire import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    connect_ws,
    flush,
    frame,
    parse_frames,
    receive,
    sent_frames,
    split_head,
)

from sansio_push import Closed, Config, Message, prepare

DEFLATE_OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]


def test_prepared_message_on_a_compressed_connection_is_compressed() -> None:
    offer = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    conn, _ = connect_ws(Config(compression=True), headers=offer)
    assert conn.send_prepared(prepare("z" * 1000))
    [f] = parse_frames(flush(conn))
    assert f.rsv1 and len(f.payload) < 100


def test_compression_is_off_by_default() -> None:
    conn, data = connect_ws(headers=DEFLATE_OFFER)
    assert "sec-websocket-extensions" not in split_head(data)[1]
    conn.send_message("hello hello hello")
    assert parse_frames(flush(conn))[0].rsv1 is False


def test_compression_is_agreed_when_enabled_and_offered() -> None:
    _, data = connect_ws(Config(compression=True), headers=DEFLATE_OFFER)
    agreed = split_head(data)[1]["sec-websocket-extensions"]
    assert agreed.split(";")[0].strip() == "permessage-deflate"


def test_compression_is_not_agreed_unless_offered() -> None:
    _, data = connect_ws(Config(compression=True))
    assert "sec-websocket-extensions" not in split_head(data)[1]


def test_malformed_compression_offer_is_declined_not_raised() -> None:
    offer = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=abc")]
    conn, data = connect_ws(Config(compression=True), headers=offer)
    assert "sec-websocket-extensions" not in split_head(data)[1]
    assert conn.send_message("still works")


def test_compressed_messages_go_out_deflated() -> None:
    conn, _ = connect_ws(Config(compression=True), headers=DEFLATE_OFFER)
    conn.send_message("hello " * 100)
    [f] = parse_frames(flush(conn))
    assert f.rsv1 and f.opcode == OP_TEXT and len(f.payload) < 600
    inflated = zlib.decompressobj(-15).decompress(f.payload + b"\x00\x00\xff\xff")
    assert inflated == ("hello " * 100).encode()


def test_compressed_messages_from_the_peer_are_inflated() -> None:
    conn, _ = connect_ws(Config(compression=True), headers=DEFLATE_OFFER)
    deflater = zlib.compressobj(wbits=-15)
    payload = deflater.compress(b"squeeze " * 50) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff")
    assert receive(conn, frame(OP_TEXT, payload[:-4], rsv1=True)) == [Message("squeeze " * 50)]


def test_size_limit_applies_to_the_inflated_message() -> None:
    conn, _ = connect_ws(Config(compression=True, max_message_size=100), headers=DEFLATE_OFFER)
    deflater = zlib.compressobj(wbits=-15)
    payload = deflater.compress(b"\0" * 1000) + deflater.flush(zlib.Z_SYNC_FLUSH)
    [event] = receive(conn, frame(OP_BINARY, payload[:-4], rsv1=True))
    assert isinstance(event, Closed) and event.code == 1009


def deflated(data: bytes) -> bytes:
    deflater = zlib.compressobj(wbits=-15)
    return deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)


def test_ping_between_compressed_fragments_leaves_the_message_intact() -> None:
    conn, _ = connect_ws(Config(compression=True), headers=DEFLATE_OFFER)
    payload = deflated(b"fragmented and compressed")[:-4]
    data = (
        frame(OP_BINARY, payload[:5], fin=False, rsv1=True)
        + frame(OP_PING, b"mid")
        + frame(OP_CONT, payload[5:])
    )
    assert receive(conn, data) == [Message(b"fragmented and compressed")]
    assert sent_frames(conn) == [(OP_PONG, b"mid")]


def test_ping_before_a_compressed_message_leaves_it_intact() -> None:
    conn, _ = connect_ws(Config(compression=True), headers=DEFLATE_OFFER)
    data = frame(OP_PING, b"first") + frame(OP_TEXT, deflated(b"after")[:-4], rsv1=True)
    assert receive(conn, data) == [Message("after")]


def test_compressed_control_frame_closes_1002() -> None:
    conn, _ = connect_ws(Config(compression=True), headers=DEFLATE_OFFER)
    [event] = receive(conn, frame(OP_PING, b"x", rsv1=True))
    assert isinstance(event, Closed) and event.code == 1002


def test_a_message_the_drop_policy_refuses_leaves_the_compressor_untouched() -> None:
    # With context takeover each message is compressed against the ones
    # before it: a refused one must not have been compressed, or what
    # follows refers to bytes the client never got.
    config = Config(compression=True, overflow="drop", max_queue_messages=3)
    conn, _ = connect_ws(config, headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
    messages = [f"price {i} of the same instrument, again and again" for i in range(10)]
    assert conn.send_message(messages[0])
    conn.refused()  # the socket took none of it: from here the bound counts
    accepted = [messages[0]] + [m for m in messages[1:] if conn.send_message(m)]
    assert len(accepted) == 4 and conn.dropped == 6
    assert conn.send_message(messages[-1], burst=True)  # as a dropped one: a back-reference
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    got = [
        inflate.decompress(f.payload + b"\x00\x00\xff\xff").decode()
        for f in parse_frames(flush(conn))
    ]
    assert got == [*accepted, messages[-1]]
