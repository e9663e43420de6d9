"""The WebSocket phase: messages, pings, the close handshake and limits, with
frames written and read by hand."""

from __future__ import annotations

import pytest
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
    receive,
    sent_frames,
)

from sansio_push import Closed, Config, Message, Pong, ServerConnection


def close_of(conn: ServerConnection) -> tuple[int | None, str]:
    [f] = [f for f in parse_frames(flush(conn)) if f.opcode == OP_CLOSE]
    return f.close_code, f.close_reason


def test_text_message_is_received_as_str() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_TEXT, "héllo".encode())) == [Message("héllo")]


def test_binary_message_is_received_as_bytes() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_BINARY, b"\x00\xff")) == [Message(b"\x00\xff")]


def test_empty_messages_are_received() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_TEXT) + frame(OP_BINARY)) == [Message(""), Message(b"")]


def test_several_messages_in_one_read_are_received_in_order() -> None:
    conn, _ = connect_ws()
    data = frame(OP_TEXT, b"a") + frame(OP_BINARY, b"b") + frame(OP_TEXT, b"c")
    assert receive(conn, data) == [Message("a"), Message(b"b"), Message("c")]


def test_message_arriving_byte_by_byte_is_received_once_whole() -> None:
    conn, _ = connect_ws()
    data = frame(OP_TEXT, "x€".encode() * 50)
    events = []
    for i in range(len(data)):
        events += receive(conn, data[i : i + 1])
    assert events == [Message("x€" * 50)]


def test_fragmented_text_message_is_reassembled() -> None:
    conn, _ = connect_ws()
    data = (
        frame(OP_TEXT, b"frag", fin=False)
        + frame(OP_CONT, b"men", fin=False)
        + frame(OP_CONT, b"ted")
    )
    assert receive(conn, data) == [Message("fragmented")]


def test_fragmented_binary_message_is_reassembled() -> None:
    conn, _ = connect_ws()
    data = frame(OP_BINARY, b"\x01", fin=False) + frame(OP_CONT, b"\x02")
    assert receive(conn, data) == [Message(b"\x01\x02")]


def test_utf8_character_split_across_fragments_is_reassembled() -> None:
    conn, _ = connect_ws()
    euro = "€".encode()
    data = frame(OP_TEXT, euro[:1], fin=False) + frame(OP_CONT, euro[1:])
    assert receive(conn, data) == [Message("€")]


def test_ping_between_fragments_is_answered_and_the_message_reassembled() -> None:
    conn, _ = connect_ws()
    data = frame(OP_TEXT, b"ab", fin=False) + frame(OP_PING, b"p") + frame(OP_CONT, b"cd")
    assert receive(conn, data) == [Message("abcd")]
    assert sent_frames(conn) == [(OP_PONG, b"p")]


def test_ping_is_answered_with_a_pong_echoing_the_payload() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_PING, b"are you there")) == []
    assert sent_frames(conn) == [(OP_PONG, b"are you there")]


def test_pong_from_the_peer_is_reported() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_PONG, b"tick")) == [Pong(b"tick")]


def test_keepalive_sends_a_ping_with_the_payload() -> None:
    conn, _ = connect_ws()
    conn.send_keepalive(b"ka")
    assert sent_frames(conn) == [(OP_PING, b"ka")]


def test_keepalive_payload_over_125_bytes_raises_value_error() -> None:
    conn, _ = connect_ws()
    with pytest.raises(ValueError):
        conn.send_keepalive(b"x" * 126)


def test_peer_close_is_echoed_with_its_code_and_reported() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_CLOSE, close_payload(1001, "leaving"))) == [
        Closed(1001, "leaving")
    ]
    assert close_of(conn)[0] == 1001
    assert conn.finished and not conn.open


def test_peer_close_with_an_application_code_is_echoed() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_CLOSE, close_payload(4000))) == [Closed(4000, "")]
    assert close_of(conn)[0] == 4000


def test_peer_close_without_a_code_is_reported_1005_and_echoed_empty() -> None:
    conn, _ = connect_ws()
    assert receive(conn, frame(OP_CLOSE)) == [Closed(1005, "")]
    assert sent_frames(conn) == [(OP_CLOSE, b"")]


def test_our_close_sends_code_and_reason() -> None:
    conn, _ = connect_ws()
    conn.close(4001, "bye now")
    assert not conn.open and not conn.finished
    assert close_of(conn) == (4001, "bye now")


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_our_close_with_a_code_endpoints_may_not_send_is_a_value_error(code: int) -> None:
    conn, _ = connect_ws()
    with pytest.raises(ValueError):
        conn.close(code)
    assert conn.open


def test_our_close_then_the_peer_reply_reports_closed_and_finishes() -> None:
    conn, _ = connect_ws()
    conn.close(1000, "done")
    flush(conn)
    assert receive(conn, frame(OP_CLOSE, close_payload(1000))) == [Closed(1000, "")]
    assert conn.finished and conn.data_to_send() == b""


def test_messages_arriving_after_our_close_are_still_received() -> None:
    conn, _ = connect_ws()
    conn.close()
    assert receive(conn, frame(OP_TEXT, b"late")) == [Message("late")]


def test_close_is_idempotent() -> None:
    conn, _ = connect_ws()
    conn.close(1000)
    conn.close(1001)
    assert len(parse_frames(flush(conn))) == 1


def test_writes_after_close_return_false_and_queue_nothing() -> None:
    conn, _ = connect_ws()
    conn.close()
    flush(conn)
    assert conn.send_message("x") is False
    conn.send_keepalive()
    assert conn.data_to_send() == b""


def test_writes_after_the_peer_closed_return_false() -> None:
    conn, _ = connect_ws()
    receive(conn, frame(OP_CLOSE, close_payload(1000)))
    assert conn.send_message("x") is False


def test_peer_eof_without_close_is_reported_1006() -> None:
    conn, _ = connect_ws()
    assert receive(conn, b"") == [Closed(1006, "")]
    assert conn.finished


def test_frames_received_before_eof_come_before_closed() -> None:
    conn, _ = connect_ws()
    conn.receive_data(frame(OP_TEXT, b"last words") + frame(OP_CLOSE, close_payload(1000)))
    conn.receive_data(b"")
    assert drain(conn) == [Message("last words"), Closed(1000, "")]


def test_partial_frame_before_eof_is_dropped_with_1006() -> None:
    conn, _ = connect_ws()
    conn.receive_data(frame(OP_TEXT, b"abc")[:-1])
    conn.receive_data(b"")
    assert drain(conn) == [Closed(1006, "")]


def test_no_event_after_closed() -> None:
    conn, _ = connect_ws()
    receive(conn, frame(OP_CLOSE, close_payload(1000)))
    assert receive(conn, frame(OP_TEXT, b"ignored")) == []
    assert receive(conn, b"") == []


def test_message_at_the_size_limit_is_received() -> None:
    conn, _ = connect_ws(Config(max_message_size=10))
    assert receive(conn, frame(OP_BINARY, b"x" * 10)) == [Message(b"x" * 10)]


def test_message_over_the_size_limit_closes_1009() -> None:
    conn, _ = connect_ws(Config(max_message_size=10))
    [event] = receive(conn, frame(OP_BINARY, b"x" * 11))
    assert isinstance(event, Closed) and event.code == 1009
    assert close_of(conn)[0] == 1009
    assert conn.finished and not conn.open


def test_fragments_over_the_size_limit_together_close_1009() -> None:
    conn, _ = connect_ws(Config(max_message_size=10))
    data = frame(OP_TEXT, b"x" * 6, fin=False) + frame(OP_CONT, b"x" * 6)
    [event] = receive(conn, data)
    assert isinstance(event, Closed) and event.code == 1009


def test_size_limit_counts_text_in_utf8_bytes() -> None:
    conn, _ = connect_ws(Config(max_message_size=10))
    [event] = receive(conn, frame(OP_TEXT, "é".encode() * 6))  # 6 chars, 12 bytes
    assert isinstance(event, Closed) and event.code == 1009


def test_size_limit_applies_per_message() -> None:
    conn, _ = connect_ws(Config(max_message_size=10))
    data = frame(OP_BINARY, b"x" * 10) + frame(OP_BINARY, b"y" * 10)
    assert receive(conn, data) == [Message(b"x" * 10), Message(b"y" * 10)]


def test_invalid_utf8_text_closes_1007() -> None:
    conn, _ = connect_ws()
    [event] = receive(conn, frame(OP_TEXT, b"ok \xff\xfe"))
    assert isinstance(event, Closed) and event.code == 1007
    assert close_of(conn)[0] == 1007
    assert conn.finished


def test_invalid_utf8_in_a_close_reason_closes_1007() -> None:
    conn, _ = connect_ws()
    [event] = receive(conn, frame(OP_CLOSE, close_payload(1000) + b"\xff"))
    assert isinstance(event, Closed) and event.code == 1007


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(OP_TEXT, b"x", mask=None), id="unmasked"),
        pytest.param(frame(OP_TEXT, b"x", rsv1=True), id="rsv1-without-extension"),
        pytest.param(frame(0x3, b"x"), id="reserved-opcode"),
        pytest.param(frame(OP_CONT, b"x"), id="continuation-without-start"),
        pytest.param(frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), id="new-before-end"),
        pytest.param(frame(OP_PING, b"x" * 126), id="long-control"),
        pytest.param(frame(OP_PING, b"x", fin=False), id="fragmented-control"),
        pytest.param(frame(OP_CLOSE, b"\x03"), id="one-byte-close"),
        pytest.param(frame(OP_CLOSE, close_payload(999)), id="invalid-close-code"),
    ],
)
def test_protocol_error_closes_1002(data: bytes) -> None:
    conn, _ = connect_ws()
    [event] = receive(conn, data)
    assert isinstance(event, Closed) and event.code == 1002
    assert close_of(conn)[0] == 1002
    assert conn.finished and not conn.open
