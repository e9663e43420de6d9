"""The fast path for simple requests (sansio_push/_http_fast.py) answers exactly as
h11 would: same events, same env, same bytes, same errors; what it does not
take goes to h11 whole."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sansio_push import EndOfRequest, Request, ServerConnection
from sansio_push._http import HttpPhase
from sansio_push._http_fast import parse_simple


def http_phase(conn: ServerConnection) -> HttpPhase:
    """The phase object of a connection that has not upgraded."""
    assert isinstance(conn._state, HttpPhase)
    return conn._state


def pair() -> tuple[ServerConnection, ServerConnection]:
    """A connection as shipped, and one forced through h11 for everything."""
    fast = ServerConnection(client=("127.0.0.1", 5000), server=("127.0.0.1", 80))
    slow = ServerConnection(client=("127.0.0.1", 5000), server=("127.0.0.1", 80))
    http_phase(slow)._to_h11()
    return fast, slow


def events(conn: ServerConnection, data: bytes) -> list[Any]:
    conn.receive_data(data)
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def answer(conn: ServerConnection, status: int, headers: list[Any], body: list[bytes]) -> bytes:
    conn.start_response(status, headers)
    for piece in body:
        conn.send_body(piece)
    conn.end_response()
    data = conn.data_to_send()
    conn.sent(len(data))
    return data


SIMPLE = b"GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n"

RESPONSES = [
    (200, [("content-type", "text/plain"), ("content-length", "5")], [b"hello"]),
    (200, [("content-type", "text/plain")], [b"hel", b"", b"lo"]),  # no length: chunked
    (200, [("Content-Length", "2"), ("Connection", "close")], [b"ok"]),
    (200, [("connection", "keep-alive, close"), ("content-length", "0")], []),
    (200, [("transfer-encoding", "chunked"), ("x-a", "1")], [b"abc"]),
    (204, [], []),
    (304, [("etag", '"x"')], []),
    (404, [("content-length", "3"), ("set-cookie", "a=1"), ("set-cookie", "b=2")], [b"no\n"]),
    (200, [("x-empty", ""), ("host", "h"), ("content-length", "1")], [b"x"]),
    (599, [("content-length", "0")], []),
]


@pytest.mark.parametrize("status,headers,body", RESPONSES)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_simple_request_reads_and_answers_as_h11_does(
    status: int, headers: list[Any], body: list[bytes], method: bytes
) -> None:
    head = SIMPLE.replace(b"GET", method, 1)
    results = []
    for conn in pair():
        got = events(conn, head + head)  # pipelined: the second waits for the answer
        assert isinstance(got[0], Request) and isinstance(got[1], EndOfRequest)
        assert len(got) == 2
        first = answer(conn, status, headers, body)
        second = events(conn, b"")
        results.append((got[0].env, first, [type(e) for e in second], conn.finished))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "headers",
    [
        [("bad name", "x")],
        [("x-a", "line\r\nbreak")],
        [("content-length", "x")],
        [("content-length", "1"), ("content-length", "2")],
        [("transfer-encoding", "gzip")],
    ],
)
def test_bad_response_headers_are_refused_as_h11_refuses_them(headers: list[Any]) -> None:
    messages = []
    for conn in pair():
        events(conn, SIMPLE)
        with pytest.raises(ValueError) as info:
            conn.start_response(200, headers)
        assert conn.data_to_send() == b""
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_a_body_longer_or_shorter_than_its_length_is_refused() -> None:
    for conn in pair():
        events(conn, SIMPLE)
        conn.start_response(200, [("content-length", "3")])
        with pytest.raises(ValueError):
            conn.send_body(b"toolong")
    for conn in pair():
        events(conn, SIMPLE)
        conn.start_response(200, [("content-length", "3")])
        conn.send_body(b"ab")
        with pytest.raises(ValueError):
            conn.end_response()


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: h11's 400
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",  # obs-text
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_what_the_fast_path_does_not_take_goes_to_h11(head: bytes) -> None:
    outcomes = []
    for conn in pair():
        got = events(conn, head)
        data = conn.data_to_send()
        env = got[0].env if got and isinstance(got[0], Request) else None
        outcomes.append(([type(e).__name__ for e in got], env, data, conn.finished))
    assert outcomes[0] == outcomes[1]
    fast = ServerConnection()
    fast.receive_data(head)
    fast.next_event()
    assert http_phase(fast)._h11 is not None  # handed over


def test_the_fast_path_comes_back_after_a_request_h11_read() -> None:
    conn, _ = pair()
    events(conn, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    answer(conn, 200, [("content-length", "0")], [])
    assert http_phase(conn)._h11 is None
    got = events(conn, SIMPLE)
    assert isinstance(got[0], Request) and http_phase(conn)._h11 is None


_PIECE = st.sampled_from(
    [b"a", b"Z", b"-", b"_", b":", b" ", b"\t", b"/", b"?", b"\x80", b"\x00", b"\r", b"\n", b"9"]
)
_TEXT = st.lists(_PIECE, max_size=8).map(b"".join)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"G\x80T"]))
    target = b"/" + draw(_TEXT)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1 "]))
    lines = [method + b" " + target + b" " + version]
    if draw(st.booleans()):
        lines.append(b"Host: " + draw(_TEXT))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"X-A", b"host", b"Accept", b"Connection", b"X_B"]))
        lines.append(name + draw(st.sampled_from([b":", b": ", b" :"])) + draw(_TEXT))
    return b"\r\n".join(lines)


@given(heads())
def test_parse_simple_takes_only_what_h11_takes_the_same_way(head: bytes) -> None:
    import h11

    request = parse_simple(head)
    assert parse_simple(head) == request  # the second time from the lines remembered
    if request is None:
        return
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + b"\r\n\r\n")
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert (event.method, event.target, list(event.headers)) == (
        request.method,
        request.target,
        request.headers,
    )


_VALUE_PIECE = st.sampled_from(
    [
        "chunked",
        "CHUNKED",
        "close",
        "keep-alive",
        "gzip",
        "0",
        "12",
        "3",
        ",",
        " ",
        "\t",
        "x",
        "\x00",
        "\r\n",
        "\x80",
        "caf\xe9",
        "1 2",
        "012",
        "9" * 21,
    ]
)
_GOOD_VALUE = st.sampled_from(
    ["chunked", "Chunked", "close", "keep-alive", "keep-alive, close", "0", "5", "5, 5", "h", ""]
)
_GOOD_NAME = st.sampled_from(
    ["content-length", "Content-Length", "transfer-encoding", "connection", "Connection", "host"]
)
_RESPONSE_HEADER = st.tuples(
    st.one_of(_GOOD_NAME, _GOOD_NAME, st.sampled_from(["x-a", "bad name", "X_B", "", b"x-b"])),
    st.one_of(_GOOD_VALUE, _GOOD_VALUE, st.lists(_VALUE_PIECE, max_size=4).map("".join)),
)


def outcome(conn: ServerConnection, step: Any) -> tuple[str, bytes]:
    """What ``step`` did on ``conn``: the error it raised (if any) and the bytes queued."""
    try:
        step()
    except ValueError as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = ""
    data = conn.data_to_send()
    conn.sent(len(data))
    return error, data


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from([b"GET", b"HEAD"]),
    st.sampled_from([0, 100, 199, 200, 201, 204, 304, 404, 599, 999, 1000]),
    st.lists(_RESPONSE_HEADER, max_size=5),
    st.lists(st.sampled_from([b"", b"a", b"hello", b"x" * 40]), max_size=3),
)
def test_any_answer_to_a_simple_request_is_written_as_h11_writes_it(
    method: bytes, status: int, headers: list[Any], body: list[bytes]
) -> None:
    head = SIMPLE.replace(b"GET", method, 1)
    results = []
    # Twice the fast way (the second from the remembered heads), once h11's.
    fast, slow = pair()
    for conn in (fast, pair()[0], slow):
        events(conn, head + head)
        calls = [lambda c=conn: c.start_response(status, headers)]
        calls += [lambda c=conn, p=p: c.send_body(p) for p in body] + [conn.end_response]
        steps = []
        for call in calls:
            steps.append(outcome(conn, call))
            if steps[-1][0]:
                break  # the driver closes the connection after an error of the app's
        else:
            steps.append(("", b"".join(type(e).__name__.encode() for e in events(conn, b""))))
            steps.append(("", b"finished" if conn.finished else b""))
        results.append(steps)
    assert results[0] == results[2] and results[1] == results[2]


@pytest.mark.parametrize("cut", range(1, len(SIMPLE)))
def test_a_head_split_anywhere_reads_the_same(cut: int) -> None:
    fast, slow = pair()
    a = events(fast, SIMPLE[:cut]) + events(fast, SIMPLE[cut:])
    b = events(slow, SIMPLE)
    assert [type(e) for e in a] == [type(e) for e in b]
    assert a[0].env == b[0].env


def answered_at_once(conn: ServerConnection, status: int, headers: list[Any], body: bytes) -> Any:
    return outcome(conn, lambda: conn.answer(status, headers, body))


def answered_in_three(conn: ServerConnection, status: int, headers: list[Any], body: bytes) -> Any:
    def three() -> None:
        conn.start_response(status, headers)
        conn.send_body(body)
        conn.end_response()

    return outcome(conn, three)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([b"GET", b"HEAD"]),
    st.sampled_from([0, 199, 200, 204, 304, 404, 1000]),
    st.lists(_RESPONSE_HEADER, max_size=4),
    st.sampled_from([b"", b"a", b"hello", b"x" * 40]),
    st.booleans(),
)
def test_answer_is_start_send_and_end_in_one_call(
    method: bytes, status: int, headers: list[Any], body: bytes, through_h11: bool
) -> None:
    head = SIMPLE.replace(b"GET", method, 1)
    results = []
    for answer_it in (answered_at_once, answered_in_three):
        conn = pair()[1 if through_h11 else 0]
        events(conn, head + head)
        error, data = answer_it(conn, status, headers, body)
        after = [] if error else [type(e).__name__ for e in events(conn, b"")]
        results.append((error, data, after, conn.finished))
    assert results[0] == results[1]
