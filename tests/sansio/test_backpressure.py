"""Backpressure accounting, queue bounds, and encoding a message once."""

from __future__ import annotations

import pytest
from sansio_wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    connect_sse,
    connect_ws,
    dechunk,
    flush,
    new,
    parse_frames,
    receive,
    request,
    sse_body,
    ws_request,
)

import sansio_push._prepared
import sansio_push._sse_stream
import sansio_push._websocket
from sansio_push import Config, Drained, Prepared, ServerConnection, prepare


def test_pending_counts_queued_messages_and_pending_bytes_their_bytes() -> None:
    conn, _ = connect_ws()
    assert (conn.pending, conn.pending_bytes) == (0, 0)
    conn.send_message("abc")  # 2-byte header + 3
    conn.send_message(b"\x00" * 200)  # 4-byte header + 200
    assert conn.pending == 2
    assert conn.pending_bytes == 5 + 204 == len(conn.data_to_send())


def test_handshake_bytes_count_in_pending_bytes_but_not_in_pending() -> None:
    conn = new()
    receive(conn, ws_request())
    conn.start_response(0, [], upgrade=True)
    assert conn.pending == 0
    assert conn.pending_bytes == len(conn.data_to_send()) > 0


def test_data_to_send_peeks_without_taking() -> None:
    conn, _ = connect_ws()
    conn.send_message("x")
    assert conn.data_to_send() == conn.data_to_send()
    assert conn.pending == 1


def test_sent_takes_bytes_from_the_front() -> None:
    conn, _ = connect_ws()
    conn.send_message("hello")
    data = conn.data_to_send()
    conn.sent(3)
    assert conn.data_to_send() == data[3:]
    assert conn.pending_bytes == len(data) - 3


def test_partly_sent_message_stays_pending() -> None:
    conn, _ = connect_ws()
    conn.send_message("hello")
    assert conn.sent(conn.pending_bytes - 1) is None
    assert conn.pending == 1 and conn.pending_bytes == 1


def test_drained_when_the_last_byte_of_the_last_message_is_taken() -> None:
    conn, _ = connect_ws()
    conn.send_message("a")
    conn.send_message("b")
    assert conn.sent(3) is None  # the first message: one still pending
    assert conn.pending == 1
    assert conn.sent(3) == Drained()
    assert (conn.pending, conn.pending_bytes) == (0, 0)


def test_drained_only_once_per_transition() -> None:
    conn, _ = connect_ws()
    conn.send_message("a")
    assert conn.sent(conn.pending_bytes) == Drained()
    assert conn.sent(0) is None


def test_drained_again_after_new_messages_drain() -> None:
    conn, _ = connect_ws()
    conn.send_message("a")
    assert conn.sent(conn.pending_bytes) == Drained()
    conn.send_message("b")
    assert conn.sent(conn.pending_bytes) == Drained()


def test_taking_only_protocol_bytes_is_not_drained() -> None:
    conn, _ = connect_ws()
    conn.send_keepalive(b"ping")
    assert conn.pending == 0 and conn.pending_bytes > 0
    assert conn.sent(conn.pending_bytes) is None


def test_drained_with_protocol_bytes_still_queued_behind_the_message() -> None:
    conn, _ = connect_ws()
    conn.send_message("a")
    conn.send_keepalive(b"p")
    assert conn.sent(3) == Drained()
    assert conn.pending == 0 and conn.pending_bytes == 3


def test_taking_more_bytes_than_queued_raises_value_error() -> None:
    conn, _ = connect_ws()
    conn.send_message("a")
    with pytest.raises(ValueError):
        conn.sent(4)
    with pytest.raises(ValueError):
        conn.sent(-1)


def test_sse_messages_are_counted_the_same_way() -> None:
    conn, _ = connect_sse()
    conn.send_message("a")
    conn.send_keepalive()
    assert conn.pending == 1
    assert conn.pending_bytes == len(conn.data_to_send())
    assert conn.sent(conn.pending_bytes) == Drained()


def refusing(conn: ServerConnection) -> ServerConnection:
    """``conn`` with one message queued that its socket refused to take."""
    assert conn.send_message("0")
    conn.refused()
    assert conn.refusing
    return conn


def test_a_burst_before_the_socket_refuses_is_queued_whatever_its_size() -> None:
    conn, _ = connect_ws(Config(max_queue_messages=10, max_queue_bytes=1000))
    assert all(conn.send_message(f"m{i}") for i in range(5000))
    assert conn.send_message(b"x" * 100_000)
    assert conn.open and conn.pending == 5001


def test_one_message_larger_than_the_byte_bound_goes_out() -> None:
    conn, _ = connect_ws(Config(max_queue_bytes=1000))
    assert conn.send_message(b"x" * 16 * 1024 * 1024)
    # The socket takes part of it: a small message behind it is still in bounds.
    head = conn.data_to_send()[:65536]
    conn.sent(65536)
    conn.refused()
    assert conn.send_message("after")
    frames = parse_frames(head + flush(conn))
    assert [len(f.payload) for f in frames] == [16 * 1024 * 1024, 5]


def test_refused_with_nothing_queued_changes_nothing() -> None:
    conn, _ = connect_ws(Config(max_queue_messages=1))
    flush(conn)
    conn.refused()
    assert not conn.refusing
    assert conn.send_message("1") and conn.send_message("2")


def test_message_queue_bound_closes_1008_with_a_clear_reason() -> None:
    conn = refusing(connect_ws(Config(max_queue_messages=2))[0])
    assert conn.send_message("1") and conn.send_message("2")
    assert conn.send_message("3") is False
    assert not conn.open
    frames = parse_frames(flush(conn))
    assert [f.opcode for f in frames] == [OP_TEXT, OP_TEXT, OP_TEXT, OP_CLOSE]
    assert frames[-1].close_code == 1008
    assert "queue" in frames[-1].close_reason


def test_byte_queue_bound_closes_1008() -> None:
    conn = refusing(connect_ws(Config(max_queue_bytes=100))[0])
    assert conn.send_message(b"x" * 90)
    assert conn.send_message(b"x" * 10) is False
    frames = parse_frames(flush(conn))
    assert [f.opcode for f in frames] == [OP_TEXT, OP_BINARY, OP_CLOSE]
    assert frames[-1].close_code == 1008


def test_message_exactly_filling_the_byte_bound_is_queued() -> None:
    conn = refusing(connect_ws(Config(max_queue_bytes=100))[0])
    assert conn.send_message(b"x" * 98)  # 2-byte header
    assert conn.open


def test_the_bound_counts_what_was_queued_after_the_refusal_and_not_taken() -> None:
    conn = refusing(connect_ws(Config(max_queue_messages=1))[0])
    assert conn.send_message("1")
    assert conn.send_message("2") is False
    conn = refusing(connect_ws(Config(max_queue_messages=1))[0])
    assert conn.send_message("1")
    # Everything taken: the socket refuses nothing any more.
    conn.sent(conn.pending_bytes)
    assert not conn.refusing
    assert conn.send_message("2") and conn.send_message("3")


def test_sse_queue_overflow_ends_the_stream() -> None:
    conn = refusing(connect_sse(Config(max_queue_messages=1))[0])
    assert conn.send_message("1")
    assert conn.send_message("2") is False
    assert conn.finished and not conn.open
    assert dechunk(flush(conn), complete=True) == b"event: msg\ndata: 0\n\nevent: msg\ndata: 1\n\n"


def test_drop_overflow_refuses_the_message_and_counts_it() -> None:
    conn = refusing(connect_ws(Config(max_queue_messages=1, overflow="drop"))[0])
    assert conn.send_message("1")
    assert conn.send_message("2") is False
    assert conn.send_message("3") is False
    assert conn.dropped == 2
    assert conn.open and conn.pending == 2
    assert [f.payload for f in parse_frames(flush(conn))] == [b"0", b"1"]
    assert conn.send_message("4")


def test_writes_on_a_plain_http_connection_return_false() -> None:
    conn = new()
    receive(conn, request())
    assert conn.send_message("x") is False
    assert conn.send_prepared(prepare("x")) is False
    assert conn.data_to_send() == b""


def test_prepared_message_is_queued_as_the_same_bytes_on_many_connections() -> None:
    p = prepare("broadcast")
    conns = [connect_ws()[0] for _ in range(5)]
    for conn in conns:
        assert conn.send_prepared(p)
    datas = [conn.data_to_send() for conn in conns]
    assert all(d == datas[0] for d in datas)
    assert [f.payload for f in parse_frames(datas[0])] == [b"broadcast"]
    assert all(conn.pending == 1 for conn in conns)


def test_prepared_message_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"ws": 0, "sse": 0}
    real_ws, real_sse = sansio_push._prepared.encode_message, sansio_push._prepared.encode_event

    def count_ws(msg: str | bytes) -> bytes:
        calls["ws"] += 1
        return real_ws(msg)

    def count_sse(*args: object, **kwargs: object) -> bytes:
        calls["sse"] += 1
        return real_sse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sansio_push._prepared, "encode_message", count_ws)
    monkeypatch.setattr(sansio_push._websocket, "encode_message", count_ws)
    p = Prepared("news")
    monkeypatch.setattr(sansio_push._prepared, "encode_event", count_sse)
    monkeypatch.setattr(sansio_push._sse_stream, "encode_event", count_sse)
    ws_conns = [connect_ws()[0] for _ in range(10)]
    sse_conns = [connect_sse()[0] for _ in range(10)]
    for conn in ws_conns + sse_conns:
        assert conn.send_prepared(p)
    assert calls == {"ws": 1, "sse": 1}


def test_prepared_sse_block_uses_each_connection_default_event() -> None:
    p = prepare("x")
    a, _ = connect_sse()
    b, _ = connect_sse(Config(sse_event=None))
    a.send_prepared(p)
    b.send_prepared(p)
    assert sse_body(a) == b"event: msg\ndata: x\n\n"
    assert sse_body(b) == b"data: x\n\n"


def test_prepared_explicit_fields_are_written() -> None:
    conn, _ = connect_sse()
    conn.send_prepared(prepare("x", event="e", id="1", retry=5))
    assert sse_body(conn) == b"event: e\nid: 1\nretry: 5\ndata: x\n\n"


def test_prepare_with_a_bad_field_raises_value_error_at_once() -> None:
    with pytest.raises(ValueError):
        prepare("x", id="a\nb")
    with pytest.raises(ValueError):
        prepare("x", event="a\rb")


def test_prepared_message_respects_the_queue_bound() -> None:
    conn = refusing(connect_ws(Config(max_queue_messages=1, overflow="drop"))[0])
    p = prepare("x")
    assert conn.send_prepared(p)
    assert conn.send_prepared(p) is False
    assert conn.dropped == 1


def test_prepared_message_after_close_returns_false() -> None:
    conn, _ = connect_ws()
    conn.close()
    assert conn.send_prepared(prepare("x")) is False


def test_prepared_message_on_a_compressed_connection_is_compressed() -> None:
    offer = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    conn, _ = connect_ws(Config(compression=True), headers=offer)
    assert conn.send_prepared(prepare("z" * 1000))
    [f] = parse_frames(flush(conn))
    assert f.rsv1 and len(f.payload) < 100
