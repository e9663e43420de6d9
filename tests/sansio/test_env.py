"""The PEP 3333 environ and ``rack.upgrade?``, and refusing invalid upgrades."""

from __future__ import annotations

import pytest
from sansio_wire import KEY, flush, new, receive, request, sse_request, ws_request

from sansio_push import Config, EndOfRequest, Rejected, Request


def env_of(data: bytes, config: Config | None = None) -> dict[str, object]:
    events = receive(new(config), data)
    assert isinstance(events[0], Request), events
    return events[0].env


def rejected(data: bytes) -> tuple[Rejected, bytes, bool]:
    conn = new()
    events = receive(conn, data)
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    return events[0], flush(conn), conn.finished


def test_env_has_the_pep_3333_keys() -> None:
    env = env_of(request("POST", "/a/b?x=1&y=2", [("Content-Type", "text/plain")], b"hi"))
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "9292"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "5000"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "2"
    assert env["HTTP_HOST"] == "example.com"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multiprocess"] is False and env["wsgi.run_once"] is False
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_env_values_are_native_strings() -> None:
    env = env_of(request("GET", "/x", [("X-Thing", "v")]))
    for key, value in env.items():
        if key.isupper():
            assert isinstance(value, str), key


def test_path_info_is_percent_decoded_as_latin_1() -> None:
    env = env_of(request("GET", "/caf%C3%A9%20x?q=%20"))
    assert env["PATH_INFO"] == "/caf\xc3\xa9 x"
    assert env["QUERY_STRING"] == "q=%20"


def test_absolute_form_target_keeps_only_the_path() -> None:
    env = env_of(request("GET", "http://example.com/p/q?z=1"))
    assert env["PATH_INFO"] == "/p/q" and env["QUERY_STRING"] == "z=1"


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a%20b#frag", "/a b", ""),
        ("/p?q=1#f", "/p", "q=1"),
        ("/p#f?q=1", "/p", ""),
        ("http://h/p?q#f", "/p", "q"),
    ],
)
def test_fragment_is_not_part_of_path_or_query(target: str, path: str, query: str) -> None:
    env = env_of(request("GET", target))
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["RAW_URI"]) == (path, query, target)


@pytest.mark.parametrize(
    ("target", "host", "path", "query"),
    [
        ("http://other.example:8080/p?z=1", "other.example:8080", "/p", "z=1"),
        ("https://other.example", "other.example", "/", ""),
        ("http://other.example?z=1", "other.example", "/", "z=1"),
    ],
)
def test_absolute_form_host_wins_over_the_host_header(
    target: str, host: str, path: str, query: str
) -> None:
    env = env_of(request("GET", target))  # Host: example.com
    assert (env["HTTP_HOST"], env["PATH_INFO"], env["QUERY_STRING"]) == (host, path, query)


def test_url_scheme_comes_from_config() -> None:
    assert env_of(request(), Config(scheme="https"))["wsgi.url_scheme"] == "https"


def test_repeated_headers_are_joined_with_commas() -> None:
    env = env_of(request("GET", "/", [("X-A", "1"), ("X-A", "2")]))
    assert env["HTTP_X_A"] == "1, 2"


def test_headers_with_underscores_are_dropped_so_they_cannot_pass_for_dashed_ones() -> None:
    env = env_of(request("GET", "/", [("X_Forwarded_For", "6.6.6.6"), ("X-Real", "1")]))
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["HTTP_X_REAL"] == "1"


def test_repeated_cookie_headers_are_joined_with_semicolons() -> None:
    env = env_of(request("GET", "/", [("Cookie", "a=1"), ("Cookie", "b=2")]))
    assert env["HTTP_COOKIE"] == "a=1; b=2"


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
