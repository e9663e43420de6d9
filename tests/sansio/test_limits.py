"""Limits and malformed requests: 431, 413, 400, each with Connection: close."""

from __future__ import annotations

import pytest
from sansio_wire import chunked, drain, flush, new, receive, request, responses, split_head

from sansio_push import Body, Config, EndOfRequest, Event, Rejected, Request, ServerConnection


def one_by_one(conn: ServerConnection, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += receive(conn, data[i : i + 1])
    return events


def statuses(events: list[Event]) -> list[int]:
    assert all(isinstance(e, Rejected) for e in events), events
    return [e.status for e in events if isinstance(e, Rejected)]


def assert_refused(conn: ServerConnection, data: bytes, status: int) -> None:
    code, headers, _ = split_head(data)
    assert code == status
    assert headers["connection"] == "close"
    assert conn.finished


def head_of_size(size: int) -> bytes:
    """A canonical GET head of exactly ``size`` bytes."""
    base = request("GET", "/", [("X-Pad", "")])
    head = request("GET", "/", [("X-Pad", "p" * (size - len(base)))])
    assert len(head) == size
    return head


def test_default_limits() -> None:
    config = Config()
    assert config.max_head_size == 64 * 1024
    assert config.max_body_size == 1024 * 1024


@pytest.mark.parametrize("feed", ["whole", "one_by_one"])
def test_head_over_the_limit_is_answered_431(feed: str) -> None:
    conn = new(Config(max_head_size=1000))
    data = head_of_size(1001)
    events = receive(conn, data) if feed == "whole" else one_by_one(conn, data)
    assert statuses(events) == [431]
    assert_refused(conn, flush(conn), 431)


@pytest.mark.parametrize("feed", ["whole", "one_by_one"])
def test_head_at_the_limit_is_accepted(feed: str) -> None:
    conn = new(Config(max_head_size=1000))
    data = head_of_size(1000)
    events = receive(conn, data) if feed == "whole" else one_by_one(conn, data)
    assert [type(e) for e in events] == [Request, EndOfRequest]


def test_endless_head_is_refused_before_it_ends() -> None:
    conn = new(Config(max_head_size=1000))
    events = receive(conn, b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 2000)
    assert statuses(events) == [431]


def test_content_length_over_the_limit_is_answered_413_before_the_body() -> None:
    conn = new(Config(max_body_size=10))
    events = receive(conn, request("POST", "/", [("Content-Length", "11")]))
    assert statuses(events) == [413]
    assert_refused(conn, flush(conn), 413)


def test_content_length_at_the_limit_is_accepted() -> None:
    conn = new(Config(max_body_size=10))
    events = receive(conn, request("POST", "/", body=b"x" * 10))
    assert [type(e) for e in events] == [Request, Body, EndOfRequest]


def test_expect_100_continue_over_the_limit_gets_413_and_no_100() -> None:
    conn = new(Config(max_body_size=10))
    receive(conn, request("POST", "/", [("Expect", "100-continue"), ("Content-Length", "99")]))
    assert flush(conn).startswith(b"HTTP/1.1 413 ")


def test_chunked_body_over_the_limit_is_answered_413() -> None:
    conn = new(Config(max_body_size=10))
    head = request("POST", "/", [("Transfer-Encoding", "chunked")])
    events = receive(conn, head + chunked(b"x" * 6, b"y" * 6))
    assert isinstance(events[-1], Rejected) and events[-1].status == 413
    assert not any(isinstance(e, EndOfRequest) for e in events)
    assert_refused(conn, flush(conn), 413)


def test_chunked_body_at_the_limit_is_accepted() -> None:
    conn = new(Config(max_body_size=10))
    head = request("POST", "/", [("Transfer-Encoding", "chunked")])
    events = receive(conn, head + chunked(b"x" * 5, b"y" * 5))
    assert isinstance(events[-1], EndOfRequest)


def test_body_limit_applies_per_request() -> None:
    conn = new(Config(max_body_size=10))
    receive(conn, request("POST", "/", body=b"x" * 10))
    conn.respond(200, [], b"")
    events = receive(conn, request("POST", "/", body=b"y" * 10))
    assert isinstance(events[-1], EndOfRequest)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="request-line"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", id="header-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", id="no-colon"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            id="two-lengths",
        ),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", id="neg-length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad-chunk",
        ),
    ],
)
def test_malformed_request_is_answered_400(data: bytes) -> None:
    conn = new()
    events = receive(conn, data)
    assert isinstance(events[-1], Rejected) and events[-1].status == 400
    assert_refused(conn, flush(conn), 400)


def test_unsupported_transfer_encoding_is_answered_501() -> None:
    conn = new()
    [event] = receive(conn, request("POST", "/", [("Transfer-Encoding", "gzip")]))
    assert isinstance(event, Rejected) and event.status == 501
    assert_refused(conn, flush(conn), 501)


def test_error_response_is_a_complete_http_response() -> None:
    conn = new()
    receive(conn, b"GARBAGE\r\n\r\n")
    [resp] = responses(flush(conn))
    assert resp.status == 400
    assert resp.header("content-type") == "text/plain; charset=utf-8"
    assert resp.body.startswith(b"400 Bad Request")


def test_nothing_is_read_after_a_rejection() -> None:
    conn = new()
    receive(conn, b"GARBAGE\r\n\r\n")
    assert receive(conn, request()) == []
    assert drain(conn) == []
    assert receive(conn, b"") == []


def test_rejection_after_good_pipelined_requests_comes_in_order() -> None:
    conn = new()
    events = receive(conn, request("GET", "/ok") + b"GARBAGE\r\n\r\n")
    assert isinstance(events[0], Request)
    conn.respond(200, [], b"ok")
    [event] = drain(conn)
    assert isinstance(event, Rejected) and event.status == 400
    statuses = [r.status for r in responses(flush(conn), ["GET", "GET"])]
    assert statuses == [200, 400]


def test_connect_request_is_answered_501() -> None:
    conn = new()
    [event] = receive(conn, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert isinstance(event, Rejected) and event.status == 501
    assert_refused(conn, flush(conn), 501)


def test_http_2_request_line_is_answered_505() -> None:
    conn = new()
    [event] = receive(conn, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    assert isinstance(event, Rejected) and event.status == 505
    assert_refused(conn, flush(conn), 505)
