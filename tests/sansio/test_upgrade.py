"""Accepting or refusing a push upgrade, and what goes out on the 101 / SSE 200."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sansio_wire import (
    ACCEPT,
    OP_TEXT,
    connect_sse,
    connect_ws,
    flush,
    frame,
    new,
    parse_frames,
    receive,
    request,
    responses,
    split_head,
    sse_request,
    ws_request,
)

from sansio_push import Message


@pytest.mark.parametrize("status", [0, 101, 200, 299])
def test_websocket_handler_with_status_below_300_upgrades(status: int) -> None:
    conn = new()
    receive(conn, ws_request())
    assert conn.start_response(status, [], upgrade=True) == "websocket"
    assert conn.protocol == "websocket" and conn.open
    status_line, headers, rest = split_head(flush(conn))
    assert status_line == 101
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["sec-websocket-accept"] == ACCEPT
    assert rest == b""


@pytest.mark.parametrize("status", [0, 200, 299])
def test_sse_handler_with_status_below_300_upgrades(status: int) -> None:
    conn = new()
    receive(conn, sse_request())
    assert conn.start_response(status, [], upgrade=True) == "sse"
    assert conn.protocol == "sse" and conn.open
    code, headers, rest = split_head(flush(conn))
    assert code == 200  # an event stream is a 200, whatever 2xx the app chose
    assert headers["content-type"] == "text/event-stream"
    assert rest == b""


@pytest.mark.parametrize("make", [ws_request, sse_request])
@pytest.mark.parametrize("status", [300, 401, 403, 500])
def test_status_300_or_more_gives_a_normal_response(make: Callable[[], bytes], status: int) -> None:
    conn = new()
    receive(conn, make())
    assert conn.start_response(status, [("Content-Length", "2")], upgrade=True) is None
    conn.send_body(b"no")
    conn.end_response()
    assert conn.protocol == "http" and not conn.open
    [resp] = responses(flush(conn))
    assert (resp.status, resp.body) == (status, b"no")


@pytest.mark.parametrize("make", [ws_request, sse_request])
def test_no_handler_gives_a_normal_response(make: Callable[[], bytes]) -> None:
    conn = new()
    receive(conn, make())
    conn.respond(200, [], b"plain")
    assert conn.protocol == "http"
    assert responses(flush(conn))[0].body == b"plain"


def test_refused_websocket_keeps_the_connection_alive_for_the_next_request() -> None:
    conn = new()
    receive(conn, ws_request())
    conn.respond(403, [], b"")
    events = receive(conn, request("GET", "/next"))
    assert events[0].env["PATH_INFO"] == "/next"


def test_handler_on_a_plain_request_gives_a_normal_response() -> None:
    conn = new()
    receive(conn, request())
    assert conn.start_response(200, [("Content-Length", "0")], upgrade=True) is None
    conn.end_response()
    assert conn.protocol == "http"
    assert responses(flush(conn))[0].status == 200


def test_app_headers_go_out_on_the_101() -> None:
    _, data = connect_ws(app_headers=[("X-Server", "push"), ("Set-Cookie", "a=1")])
    _, headers, _ = split_head(data)
    assert headers["x-server"] == "push" and headers["set-cookie"] == "a=1"


def test_body_headers_of_the_app_are_not_sent_on_the_101() -> None:
    app_headers = [("Content-Type", "text/html"), ("Content-Length", "0"), ("X-Kept", "1")]
    _, data = connect_ws(app_headers=app_headers)
    _, headers, _ = split_head(data)
    assert "content-type" not in headers and "content-length" not in headers
    assert headers["x-kept"] == "1"


def test_app_cannot_override_the_handshake_headers() -> None:
    _, data = connect_ws(app_headers=[("Sec-WebSocket-Accept", "forged"), ("Upgrade", "h2c")])
    _, headers, _ = split_head(data)
    assert headers["sec-websocket-accept"] == ACCEPT
    assert headers["upgrade"] == "websocket"


def test_app_headers_go_out_on_the_sse_200() -> None:
    _, data = connect_sse(app_headers=[("X-Server", "push")])
    _, headers, _ = split_head(data)
    assert headers["x-server"] == "push"


def test_sse_response_keeps_the_app_cache_control() -> None:
    _, data = connect_sse(app_headers=[("Cache-Control", "private")])
    assert split_head(data)[1]["cache-control"] == "private"


def test_sse_response_content_type_is_always_event_stream() -> None:
    _, data = connect_sse(app_headers=[("Content-Type", "text/html")])
    assert split_head(data)[1]["content-type"] == "text/event-stream"


def test_sse_response_to_http_1_1_is_chunked() -> None:
    _, data = connect_sse(app_headers=[("Content-Length", "5")])
    _, headers, _ = split_head(data)
    assert headers["transfer-encoding"] == "chunked"
    assert headers["connection"] == "close"
    assert "content-length" not in headers
    assert headers["cache-control"] == "no-cache"


def test_sse_response_to_http_1_0_is_close_delimited() -> None:
    conn = new()
    receive(conn, request("GET", "/", [("Accept", "text/event-stream")], version="1.0"))
    assert conn.start_response(200, [], upgrade=True) == "sse"
    conn.send_message("x")
    _, headers, body = split_head(flush(conn))
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert body == b"event: msg\ndata: x\n\n"


def test_subprotocol_chosen_by_the_app_from_the_offer() -> None:
    _, data = connect_ws(
        headers=[("Sec-WebSocket-Protocol", "chat, superchat")],
        app_headers=[("Sec-WebSocket-Protocol", "superchat")],
    )
    assert split_head(data)[1]["sec-websocket-protocol"] == "superchat"


def test_subprotocol_offered_in_several_headers() -> None:
    _, data = connect_ws(
        headers=[("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b")],
        app_headers=[("Sec-WebSocket-Protocol", "b")],
    )
    assert split_head(data)[1]["sec-websocket-protocol"] == "b"


def test_no_subprotocol_unless_the_app_chooses_one() -> None:
    _, data = connect_ws(headers=[("Sec-WebSocket-Protocol", "chat")])
    assert "sec-websocket-protocol" not in split_head(data)[1]


def test_subprotocol_not_offered_raises_value_error_and_queues_nothing() -> None:
    conn = new()
    receive(conn, ws_request([("Sec-WebSocket-Protocol", "chat")]))
    with pytest.raises(ValueError):
        conn.start_response(0, [("Sec-WebSocket-Protocol", "other")], upgrade=True)
    assert conn.data_to_send() == b"" and conn.protocol == "http"


def test_frames_pipelined_behind_the_upgrade_request_are_received() -> None:
    conn = new()
    receive(conn, ws_request() + frame(OP_TEXT, b"early"))
    conn.start_response(0, [], upgrade=True)
    assert [e for e in receive(conn, b"") if isinstance(e, Message)] == [Message("early")]


def test_start_response_after_upgrade_raises_runtime_error() -> None:
    conn, _ = connect_ws()
    with pytest.raises(RuntimeError):
        conn.start_response(200, [])


def test_messages_follow_the_101_on_the_wire() -> None:
    conn = new()
    receive(conn, ws_request())
    conn.start_response(0, [], upgrade=True)
    conn.send_message("hi")
    _, _, rest = split_head(flush(conn))
    assert [(f.opcode, f.payload) for f in parse_frames(rest)] == [(OP_TEXT, b"hi")]
