"""The SSE phase: default event names, keepalives, the end of the stream."""

from __future__ import annotations

import pytest
from sansio_wire import connect_sse, dechunk, drain, flush, receive, sse_body

from sansio_push import Closed, Config, Request, ServerConnection


def test_default_event_name_is_msg() -> None:
    conn, _ = connect_sse()
    conn.send_message("hello")
    assert sse_body(conn) == b"event: msg\ndata: hello\n\n"


def test_configured_default_event_name_is_used() -> None:
    conn, _ = connect_sse(Config(sse_event="tick"))
    conn.send_message("hello")
    assert sse_body(conn) == b"event: tick\ndata: hello\n\n"


def test_no_default_event_name_leaves_out_the_event_field() -> None:
    conn, _ = connect_sse(Config(sse_event=None))
    conn.send_message("hello")
    assert sse_body(conn) == b"data: hello\n\n"


def test_explicit_event_name_overrides_the_default() -> None:
    conn, _ = connect_sse()
    conn.send_message("hello", event="update")
    assert sse_body(conn) == b"event: update\ndata: hello\n\n"


def test_explicit_event_none_leaves_out_the_event_field() -> None:
    conn, _ = connect_sse()
    conn.send_message("hello", event=None)
    assert sse_body(conn) == b"data: hello\n\n"


def test_id_and_retry_are_written_by_send_message() -> None:
    conn, _ = connect_sse(Config(sse_event=None))
    assert conn.send_message("x", id="7", retry=3000)
    assert sse_body(conn) == b"id: 7\nretry: 3000\ndata: x\n\n"


def test_bad_field_raises_value_error_and_queues_nothing() -> None:
    conn, _ = connect_sse()
    with pytest.raises(ValueError):
        conn.send_message("x", id="a\nb")
    assert conn.pending == 0 and conn.data_to_send() == b""


def test_bad_default_event_name_raises_value_error() -> None:
    conn, _ = connect_sse(Config(sse_event="a\nb"))
    with pytest.raises(ValueError):
        conn.send_message("x")


def test_keepalive_sends_a_comment() -> None:
    conn, _ = connect_sse()
    conn.send_keepalive()
    assert sse_body(conn) == b":\n"
    assert conn.pending == 0


def test_bytes_from_the_peer_are_ignored() -> None:
    conn, _ = connect_sse()
    assert receive(conn, b"anything at all\r\n\r\n") == []
    assert conn.open and not conn.finished


def test_peer_eof_reports_closed_1006_and_finishes() -> None:
    conn, _ = connect_sse()
    assert receive(conn, b"") == [Closed(1006, "peer closed")]
    assert conn.finished and not conn.open
    assert drain(conn) == []


def test_writes_after_the_peer_closed_return_false() -> None:
    conn, _ = connect_sse()
    receive(conn, b"")
    assert conn.send_message("x") is False


def test_close_ends_the_stream_and_finishes() -> None:
    conn, _ = connect_sse()
    conn.send_message("last")
    conn.close()
    assert conn.finished and not conn.open
    assert dechunk(flush(conn), complete=True) == b"event: msg\ndata: last\n\n"


def test_writes_after_close_return_false_and_queue_nothing() -> None:
    conn, _ = connect_sse()
    conn.close()
    sse_body(conn)
    assert conn.send_message("x") is False
    conn.send_keepalive()
    assert conn.data_to_send() == b""


def test_a_204_accepting_sse_still_streams_as_200() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET /e HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    assert conn.start_response(204, [], upgrade=True) == "sse"
    assert conn.data_to_send().startswith(b"HTTP/1.1 200 OK\r\n")
