"""The HTTP phase: framing, keep-alive, pipelining, 100-continue, HEAD, and the
limits and malformed requests we answer ourselves (431, 413, 400, 501, 505),
each with Connection: close."""

from __future__ import annotations

import pytest
from sansio_wire import chunked, drain, flush, new, receive, request, responses, split_head

from sansio_push import Body, Config, EndOfRequest, Event, Rejected, Request, ServerConnection


def body_of(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Body))


def test_get_request_produces_request_then_end_of_request() -> None:
    conn = new()
    events = receive(conn, request("GET", "/hello"))
    assert [type(e) for e in events] == [Request, EndOfRequest]
    assert events[0].env["PATH_INFO"] == "/hello"


def test_incomplete_head_produces_no_event() -> None:
    conn = new()
    assert receive(conn, b"GET / HTTP/1.1\r\nHost: x\r\n") == []
    assert [type(e) for e in receive(conn, b"\r\n")] == [Request, EndOfRequest]


def test_respond_sends_status_headers_and_content_length_body() -> None:
    conn = new()
    receive(conn, request())
    conn.respond(200, [("Content-Type", "text/plain")], b"hello")
    [resp] = responses(flush(conn))
    assert resp.status == 200
    assert resp.header("content-type") == "text/plain"
    assert resp.header("content-length") == "5"
    assert resp.body == b"hello"


def test_streamed_response_without_length_is_chunked() -> None:
    conn = new()
    receive(conn, request())
    conn.start_response(200, [("Content-Type", "text/plain")])
    conn.send_body(b"hel")
    conn.send_body(b"lo")
    conn.end_response()
    data = flush(conn)
    assert split_head(data)[1]["transfer-encoding"] == "chunked"
    assert responses(data)[0].body == b"hello"


def test_keep_alive_serves_a_second_request_on_the_same_connection() -> None:
    conn = new()
    receive(conn, request("GET", "/a"))
    conn.respond(200, [], b"a")
    assert not conn.finished
    events = receive(conn, request("GET", "/b"))
    assert events[0].env["PATH_INFO"] == "/b"
    conn.respond(200, [], b"b")
    assert [r.body for r in responses(flush(conn), ["GET", "GET"])] == [b"a", b"b"]
    assert not conn.finished


def test_pipelined_requests_are_answered_in_order() -> None:
    conn = new()
    conn.receive_data(
        request("GET", "/1") + request("POST", "/2", body=b"xy") + request("GET", "/3")
    )
    paths = []
    while True:
        events = drain(conn)
        if not events:
            break
        assert isinstance(events[0], Request) and isinstance(events[-1], EndOfRequest)
        path = events[0].env["PATH_INFO"]
        paths.append(path)
        conn.respond(200, [], path.encode() + body_of(events))
    assert paths == ["/1", "/2", "/3"]
    bodies = [r.body for r in responses(flush(conn), ["GET", "POST", "GET"])]
    assert bodies == [b"/1", b"/2xy", b"/3"]


def test_pipelined_request_waits_until_the_previous_response_ends() -> None:
    conn = new()
    events = receive(conn, request("GET", "/1") + request("GET", "/2"))
    assert [type(e) for e in events] == [Request, EndOfRequest]
    conn.start_response(200, [("Content-Length", "0")])
    assert drain(conn) == []
    conn.end_response()
    assert drain(conn)[0].env["PATH_INFO"] == "/2"


@pytest.mark.parametrize("empty", [b"\r\n", b"\n", b"\r\n\n\r\n"])
@pytest.mark.parametrize(
    "first", [request("GET", "/1"), request("POST", "/1", body=b"xy")], ids=["fast", "h11"]
)
def test_empty_lines_before_a_request_line_are_skipped(empty: bytes, first: bytes) -> None:
    conn = new()
    conn.receive_data(empty + first + empty + request("GET", "/2", [("Connection", "close")]))
    paths = []
    while events := drain(conn):
        paths.append(events[0].env["PATH_INFO"])
        conn.respond(200, [], b"")
    assert paths == ["/1", "/2"]
    assert [r.status for r in responses(flush(conn), ["GET", "GET"])] == [200, 200]


def test_peer_eof_after_only_empty_lines_closes_without_an_answer() -> None:
    conn = new()
    assert receive(conn, b"\r\n\r\n") == []
    assert receive(conn, b"") == []
    assert conn.finished and flush(conn) == b""


@pytest.mark.parametrize(
    "before", [b"", request("POST", "/1", body=b"xy")], ids=["fresh", "after h11's request"]
)
@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\nX: a\n\tb\n\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_obs_fold_is_rejected_with_400(before: bytes, head: bytes) -> None:
    """h11 would unfold it; both paths refuse it first (RFC 9112 5.2)."""
    conn = new()
    events = receive(conn, before + head)
    if before:
        conn.respond(200, [], b"")
        events = drain(conn)
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    assert events[0].status == 400 and conn.finished


def test_a_space_in_the_body_is_not_an_obs_fold() -> None:
    events = receive(new(), request("POST", "/", body=b"a\r\n b\n\tc"))
    assert body_of(events) == b"a\r\n b\n\tc"


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
    ],
)
def test_content_length_with_transfer_encoding_is_rejected_and_closes(
    headers: list[tuple[str, str]],
) -> None:
    conn = new()
    events = receive(conn, request("POST", "/", headers) + chunked(b"abc") + request("GET", "/2"))
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    assert events[0].status == 400 and conn.finished
    assert [r.status for r in responses(flush(conn))] == [400]


def test_content_length_body_is_delivered() -> None:
    conn = new()
    events = receive(conn, request("POST", "/", body=b"0123456789"))
    assert body_of(events) == b"0123456789"
    assert isinstance(events[-1], EndOfRequest)
    assert events[0].env["CONTENT_LENGTH"] == "10"


def test_content_length_body_arriving_in_pieces_is_delivered() -> None:
    conn = new()
    data = request("POST", "/", body=b"0123456789")
    events = []
    for i in range(len(data)):
        events += receive(conn, data[i : i + 1])
    assert body_of(events) == b"0123456789"
    assert isinstance(events[-1], EndOfRequest)


def test_chunked_body_is_delivered() -> None:
    conn = new()
    head = request("POST", "/", [("Transfer-Encoding", "chunked")])
    events = receive(conn, head + chunked(b"hello ", b"chunked ", b"world"))
    assert body_of(events) == b"hello chunked world"
    assert isinstance(events[-1], EndOfRequest)


def test_expect_100_continue_is_answered_before_the_body() -> None:
    conn = new()
    head = request("POST", "/", [("Expect", "100-continue"), ("Content-Length", "3")])
    events = receive(conn, head)
    assert [type(e) for e in events] == [Request]
    assert flush(conn).startswith(b"HTTP/1.1 100 ")
    events = receive(conn, b"abc")
    assert body_of(events) == b"abc" and isinstance(events[-1], EndOfRequest)


def test_no_100_continue_without_expect() -> None:
    conn = new()
    receive(conn, request("POST", "/", [("Content-Length", "3")]))
    assert conn.data_to_send() == b""


def test_head_response_to_respond_has_length_but_no_body() -> None:
    conn = new()
    receive(conn, request("HEAD", "/"))
    conn.respond(200, [], b"hello")
    data = flush(conn)
    status, headers, rest = split_head(data)
    assert status == 200 and headers["content-length"] == "5"
    assert rest == b""


def test_head_response_drops_streamed_body() -> None:
    conn = new()
    receive(conn, request("HEAD", "/"))
    conn.start_response(200, [("Content-Length", "5")])
    conn.send_body(b"hello")
    conn.end_response()
    assert split_head(flush(conn))[2] == b""
    assert not conn.finished


def test_request_with_connection_close_finishes_after_the_response() -> None:
    conn = new()
    receive(conn, request("GET", "/", [("Connection", "close")]))
    assert not conn.finished
    conn.respond(200, [], b"bye")
    assert conn.finished
    assert split_head(flush(conn))[1]["connection"] == "close"


def test_http_1_0_request_finishes_after_the_response() -> None:
    conn = new()
    receive(conn, request("GET", "/", version="1.0", host=False))
    conn.respond(200, [], b"x")
    assert conn.finished


def test_answer_before_the_body_is_read_finishes_the_connection() -> None:
    conn = new()
    events = receive(conn, request("POST", "/", [("Content-Length", "10")]) + b"01234")
    assert [type(e) for e in events] == [Request, Body]
    conn.respond(200, [], b"early")
    assert conn.finished


def test_peer_eof_between_requests_finishes_quietly() -> None:
    conn = new()
    receive(conn, request())
    conn.respond(200, [], b"")
    assert receive(conn, b"") == []
    assert conn.finished


def test_peer_eof_after_the_request_leaves_the_answer_possible() -> None:
    conn = new()
    receive(conn, request())
    assert receive(conn, b"") == []
    assert not conn.finished
    conn.respond(200, [], b"late")
    assert conn.finished
    assert responses(flush(conn))[0].body == b"late"


def test_peer_eof_in_the_middle_of_a_head_is_rejected() -> None:
    conn = new()
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    events = receive(conn, b"")
    assert len(events) == 1 and isinstance(events[0], Rejected)
    assert conn.finished


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\x00b"])
def test_header_value_the_app_cannot_send_raises_value_error_and_queues_nothing(
    value: str,
) -> None:
    conn = new()
    receive(conn, request())
    with pytest.raises(ValueError):
        conn.start_response(200, [("X-Bad", value)])
    assert conn.data_to_send() == b""


# Django's WSGI handler sends each Set-Cookie as c.output(header=""): " name=value; ...".
@pytest.mark.parametrize("req", [request(), request("POST", "/", body=b"x")], ids=["fast", "h11"])
def test_spaces_around_a_header_value_are_dropped(req: bytes) -> None:
    conn = new()
    receive(conn, req)
    conn.respond(200, [("Set-Cookie", " csrftoken=abc; Path=/"), ("X-Tab", "\tv\t")], b"ok")
    [resp] = responses(flush(conn))
    assert resp.header("set-cookie") == "csrftoken=abc; Path=/"
    assert resp.header("x-tab") == "v"
    assert resp.body == b"ok"


def test_status_0_means_200_for_a_normal_response() -> None:
    conn = new()
    receive(conn, request())
    conn.respond(0, [], b"")
    assert responses(flush(conn))[0].status == 200


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
