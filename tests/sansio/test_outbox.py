"""The outbox: pending, pending_bytes and Drained, exact to the byte."""

from __future__ import annotations

import pytest
from sansio_wire import (
    connect_sse,
    connect_ws,
    new,
    receive,
    ws_request,
)

from sansio_push import Drained


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
