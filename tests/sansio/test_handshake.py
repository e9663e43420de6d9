"""The upgrade: which requests ask for one (``rack.upgrade?``), refusing invalid
ones, accepting them, and what goes out on the 101 / SSE 200."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sansio_wire import (
    ACCEPT,
    KEY,
    OP_TEXT,
    connect_sse,
    connect_ws,
    env_of,
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

from sansio_push import EndOfRequest, Message, Rejected


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


def rejected(data: bytes) -> tuple[Rejected, bytes, bool]:
    conn = new()
    events = receive(conn, data)
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    return events[0], flush(conn), conn.finished


def test_plain_request_is_not_an_upgrade() -> None:
    assert env_of(request())["rack.upgrade?"] is None


def test_valid_websocket_request_is_a_websocket_upgrade() -> None:
    assert env_of(ws_request())["rack.upgrade?"] == "websocket"


@pytest.mark.parametrize("connection", ["upgrade", "UPGRADE", "Upgrade", "keep-alive, Upgrade"])
def test_connection_upgrade_token_matches_in_any_case(connection: str) -> None:
    assert env_of(ws_request(connection=connection))["rack.upgrade?"] == "websocket"


def test_upgrade_header_value_matches_in_any_case() -> None:
    assert env_of(ws_request(upgrade="WebSocket"))["rack.upgrade?"] == "websocket"


@pytest.mark.parametrize(
    "accept",
    [
        "text/event-stream",
        "TEXT/EVENT-STREAM",
        "text/html, text/event-stream;q=0.9",
        "application/json,text/event-stream",
    ],
)
def test_get_accepting_event_stream_is_an_sse_upgrade(accept: str) -> None:
    env = env_of(request("GET", "/", [("Accept", accept)]))
    assert env["rack.upgrade?"] == "sse"


def test_sse_request_from_helper_is_an_sse_upgrade() -> None:
    assert env_of(sse_request())["rack.upgrade?"] == "sse"


def test_post_accepting_event_stream_is_not_an_upgrade() -> None:
    env = env_of(request("POST", "/", [("Accept", "text/event-stream")], b""))
    assert env["rack.upgrade?"] is None


def test_get_accepting_other_types_is_not_an_upgrade() -> None:
    assert env_of(request("GET", "/", [("Accept", "text/html")]))["rack.upgrade?"] is None


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "not base64!!",
        "dGhlIHNhbXBsZQ==",  # 11 bytes, not 16
        "dGhlIHNhbXBsZSBub25jZSBsb25n",  # 21 bytes
    ],
)
def test_bad_websocket_key_is_answered_400(key: str | None) -> None:
    event, data, finished = rejected(ws_request(key=key))
    assert event.status == 400
    assert data.startswith(b"HTTP/1.1 400 ")
    assert finished


@pytest.mark.parametrize("second", [KEY, "AAAAAAAAAAAAAAAAAAAAAA=="], ids=["same", "other"])
def test_two_websocket_keys_are_answered_400(second: str) -> None:
    event, data, finished = rejected(ws_request([("Sec-WebSocket-Key", second)]))
    assert event.status == 400
    assert data.startswith(b"HTTP/1.1 400 ")
    assert finished


@pytest.mark.parametrize("version", ["8", "12", "14", "", None])
def test_wrong_websocket_version_is_answered_426_naming_13(version: str | None) -> None:
    event, data, finished = rejected(ws_request(version=version))
    assert event.status == 426
    head = data.split(b"\r\n\r\n")[0].lower()
    assert data.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nsec-websocket-version: 13" in head
    assert finished


def test_websocket_upgrade_without_connection_upgrade_is_answered_400() -> None:
    assert rejected(ws_request(connection="keep-alive"))[0].status == 400


def test_websocket_upgrade_with_post_is_answered_400() -> None:
    assert rejected(ws_request(method="POST"))[0].status == 400


def test_refused_upgrade_says_connection_close() -> None:
    data = rejected(ws_request(key="bad"))[1]
    assert b"\r\nconnection: close\r\n" in data.split(b"\r\n\r\n")[0].lower() + b"\r\n"


def test_refused_upgrade_is_never_upgraded() -> None:
    conn = new()
    receive(conn, ws_request(version="8"))
    assert conn.protocol == "http"
    assert not conn.open
    assert conn.send_message("x") is False
    assert receive(conn, b"more bytes") == []


def test_valid_key_with_surrounding_spaces_is_accepted() -> None:
    data = ws_request().replace(KEY.encode(), b" " + KEY.encode() + b" ")
    events = receive(new(), data)
    assert isinstance(events[-1], EndOfRequest)
