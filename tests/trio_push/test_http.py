"""The HTTP/1.1 request loop against a running server: keep-alive,
pipelining, request bodies, bad requests, idle connections; how responses are
framed; and the framing a proxy or an old client relies on (ambiguous or folded
heads refused, stray empty lines ignored, HEAD framed as GET, the absolute
form's host, fragments).

Raw sockets where a client would normalize the bytes away; curl and httpx
where a real client sends them.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest
import trio

from tests.helpers.server import (
    TIMEOUT,
    Echo,
    connect,
    exchange,
    head_lines,
    http_client,
    parse_responses,
    read_all,
    read_until,
    status_line,
    ws_handshake,
)

# -- the request loop: keep-alive, pipelining, bodies in, bad requests -------------


def echo_app(env: dict[str, Any]) -> Any:
    body = env["wsgi.input"].read()
    text = f"{env['REQUEST_METHOD']} {env['PATH_INFO']} {env['REMOTE_PORT']} {body.decode()}"
    return 200, [("content-type", "text/plain")], text


async def test_keep_alive_serves_several_requests_on_one_connection(start_server: Any) -> None:
    server = await start_server(echo_app)
    with trio.fail_after(TIMEOUT):
        async with http_client() as http:
            answers = [
                (await http.get(f"http://127.0.0.1:{server.port}/{i}")).text for i in range(3)
            ]
    assert [a.split()[1] for a in answers] == ["/0", "/1", "/2"]
    # One TCP connection: one client port for all three.
    assert len({a.split()[2] for a in answers}) == 1


async def test_pipelined_requests_are_answered_in_order(start_server: Any) -> None:
    async def app(env: dict[str, Any]) -> Any:
        if env["PATH_INFO"] == "/slow":
            await trio.sleep(0.05)
        return 200, {}, env["PATH_INFO"]

    server = await start_server(app)
    requests = (
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange(server.port, requests)
    responses = parse_responses(raw)
    assert [(s, b) for s, _, b in responses] == [
        (200, b"/slow"),
        (200, b"/fast"),
        (200, b"/last"),
    ]


async def test_request_body_reaches_the_app(start_server: Any) -> None:
    server = await start_server(echo_app)
    async with http_client() as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/p", content=b"payload")
    assert response.text.endswith(" payload")


async def test_one_process_says_so_in_the_env(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        return 200, {}, f"{env['wsgi.multiprocess']} {env['wsgi.multithread']}"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    # One process (--workers makes it True); threads may call the app.
    assert response.text == "False True"


async def test_malformed_request_gives_400(start_server: Any) -> None:
    server = await start_server(echo_app)
    raw = await exchange(server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


async def test_bad_header_gives_400(start_server: Any) -> None:
    server = await start_server(echo_app)
    raw = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


async def test_server_keeps_serving_after_a_malformed_request(start_server: Any) -> None:
    server = await start_server(echo_app)
    await exchange(server.port, b"\x00\x01garbage\r\n\r\n")
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/after")
    assert response.status_code == 200


async def test_idle_keep_alive_connection_is_closed(start_server: Any) -> None:
    server = await start_server(echo_app, idle_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = bytearray()
            await read_until(stream, b"\r\n\r\n", buf)
            rest = await read_all(stream)  # returns once the server closes
    assert b"GET /" in bytes(buf) + rest


async def test_http_1_0_request_is_answered_and_closed(start_server: Any) -> None:
    server = await start_server(echo_app)
    # exchange reads until EOF: it returns only because the server closes.
    raw = await exchange(server.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.partition(b"\r\n\r\n")[2].startswith(b"GET /old ")


# -- response framing ---------------------------------------------------------------


def fixed(status: int, headers: dict[str, str], body: Any) -> Any:
    def app(env: dict[str, Any]) -> Any:
        return status, headers, body

    return app


async def test_a_fixed_body_gets_content_length_not_chunks(start_server: Any) -> None:
    server = await start_server(fixed(200, {}, ["hello ", b"world"]))
    async with httpx.AsyncClient() as client:
        got = await client.get(f"http://127.0.0.1:{server.port}/")
    assert got.headers["content-length"] == "11"
    assert "transfer-encoding" not in got.headers
    assert got.text == "hello world"


async def test_a_body_on_204_is_dropped_and_the_connection_stays_usable(start_server: Any) -> None:
    server = await start_server(fixed(204, {}, [b"not allowed here"]))
    async with httpx.AsyncClient() as client:
        first = await client.get(f"http://127.0.0.1:{server.port}/")
        second = await client.get(f"http://127.0.0.1:{server.port}/")
    assert (first.status_code, first.content) == (204, b"")
    assert second.status_code == 204


async def test_a_content_length_that_lies_is_a_500(start_server: Any) -> None:
    server = await start_server(fixed(200, {"Content-Length": "99"}, [b"short"]))
    async with httpx.AsyncClient() as client:
        got = await client.get(f"http://127.0.0.1:{server.port}/")
    assert got.status_code == 500


async def test_a_413_reaches_a_client_still_sending_its_body(start_server: Any) -> None:
    server = await start_server(fixed(200, {}, b"never"), max_body_size=1000)
    body = b"x" * 1_000_000
    head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    async def send_body(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(head + body)

    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with trio.open_nursery() as nursery:
            # The server answers 413 at the head while most of the body is
            # still unread in its socket; closing then would make the kernel
            # send a reset that destroys the 413 before we read it.
            nursery.start_soon(send_body, stream)
            reply = await read_all(stream)
            nursery.cancel_scope.cancel()
    assert status_line(reply) == 413


# -- framing a proxy or an old client relies on --------------------------------------

LAST = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture
async def app_calls(start_server: Any) -> tuple[int, list[dict[str, Any]]]:
    """A server whose app answers with what it saw, as JSON; and the envs of
    its calls."""
    calls: list[dict[str, Any]] = []

    def app(env: dict[str, Any]) -> Any:
        if env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = Echo()
            return 200, {}, b""
        calls.append(env)
        keys = ("PATH_INFO", "QUERY_STRING", "HTTP_HOST", "CONTENT_LENGTH")
        seen = {k: env.get(k) for k in keys}
        seen["body"] = env["wsgi.input"].read().decode()
        return 200, {"content-type": "application/json"}, json.dumps(seen)

    server = await start_server(app)
    return server.port, calls


# -- 1. empty lines before a request line ---------------------------------------

GET_A = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
POST_A = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
STRAY = {
    "fresh, simple get": [b"\r\n" + GET_A, LAST],
    "fresh, several, bare lf": [b"\n\r\n\n" + GET_A, LAST],
    "fresh, h11": [b"\r\n" + LAST],
    "after a simple get": [GET_A + b"\r\n", LAST],
    "after a simple get, alone": [GET_A, b"\r\n", LAST],
    "after a post body": [POST_A + b"\r\n", LAST],
    "after a post body, alone": [POST_A, b"\r\n", LAST],
    "after a post body, bare lf": [POST_A + b"\n", LAST],
}


@pytest.mark.parametrize("pipelined", [False, True], ids=["one by one", "pipelined"])
@pytest.mark.parametrize("pieces", STRAY.values(), ids=STRAY.keys())
async def test_empty_lines_before_a_request_line_are_ignored(
    app_calls: Any, pieces: list[bytes], pipelined: bool
) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before a
    request line (old clients send a CRLF after a POST body); nginx and
    llhttp ignore any number of them. Both the fast path (a simple GET) and
    h11 (a POST, Connection: close) read the request after them."""
    port, _calls = app_calls
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        async with stream:
            if pipelined:
                await stream.send_all(b"".join(pieces))
            else:
                for piece in pieces:
                    await stream.send_all(piece)
                    await trio.sleep(0.05)  # a read of its own on the server's side
            data = await read_all(stream)
    answers = parse_responses(data)
    expected = ["/a"] * sum(b"/a " in p for p in pieces) + ["/last"]
    assert [status for status, _, _ in answers] == [200] * len(expected), data
    assert [json.loads(body)["PATH_INFO"] for _, _, body in answers] == expected


# -- 2. ambiguous or folded heads ----------------------------------------------

BOTH = {
    "content-length first": (
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    ),
    "transfer-encoding first": (
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
    ),
}


@pytest.mark.parametrize("head", BOTH.values(), ids=BOTH.keys())
async def test_content_length_with_transfer_encoding_gets_400_and_close(
    app_calls: Any, head: bytes
) -> None:
    """RFC 9112 6.1: a request with both may be an attempt at smuggling a
    request past a proxy that reads the other one; it is refused and the
    connection closed, so the bytes after it are never read as a request."""
    port, calls = app_calls
    response = await exchange(port, head + b"\r\n5\r\nhello\r\n0\r\n\r\n" + LAST)
    assert status_line(response) == 400, response
    assert b"connection: close" in head_lines(response)
    assert response.count(b"HTTP/1.1 ") == 1, response
    assert calls == []


FOLDED = {
    # A proxy that does not unfold sees an empty Transfer-Encoding and frames
    # the body by Content-Length; h11 would unfold it to "chunked".
    "transfer-encoding": (
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "simple get, tab": b"GET /x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    "simple get, bare lf": b"GET /x HTTP/1.1\nHost: x\nX-A: a\n  b\n\n",
    "host": b"GET /x HTTP/1.1\r\nHost:\r\n x\r\n\r\n",
}


@pytest.mark.parametrize("before", [b"", POST_A], ids=["fresh", "after a post"])
@pytest.mark.parametrize("request_bytes", FOLDED.values(), ids=FOLDED.keys())
async def test_obs_fold_gets_400(app_calls: Any, request_bytes: bytes, before: bytes) -> None:
    """RFC 9112 5.2 lets a server refuse any obs-fold with 400: unfolding it
    (as h11 does) reads the head otherwise than a proxy that does not. Also
    when it is pipelined after a request h11 read."""
    port, calls = app_calls
    response = await exchange(port, before + request_bytes + LAST)
    statuses = [status for status, _, _ in parse_responses(response)]
    assert statuses == [200] * len(calls) + [400], response
    assert len(calls) == (1 if before else 0)


# -- 3. HEAD framed as GET --------------------------------------------------------

BODIES: dict[str, Any] = {"bytes": b"hello", "str": "hello", "list": [b"hel", "lo"]}


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
@pytest.mark.parametrize("kind", BODIES.keys())
async def test_head_of_a_fixed_body_has_the_get_headers(
    start_server: Any, kind: str, connection: str
) -> None:
    """RFC 9110 9.3.2: HEAD gets the header fields GET would, so a fixed
    body's Content-Length, not chunked framing (the app returns the same
    body for both; the server drops it for HEAD). Keep-alive requests take
    the fast path, "Connection: close" ones h11."""
    body = BODIES[kind]
    server = await start_server(lambda env: (200, {"content-type": "text/plain"}, body))
    url = f"http://127.0.0.1:{server.port}/"
    async with http_client() as http:
        get = await http.get(url, headers={"connection": connection})
        head = await http.head(url, headers={"connection": connection})
    assert get.content == b"hello" and head.content == b""
    assert head.headers["content-length"] == "5"
    assert "transfer-encoding" not in head.headers
    assert head.headers.multi_items() == get.headers.multi_items()


async def test_head_keeps_the_apps_content_length_with_an_empty_body(start_server: Any) -> None:
    """An app may answer HEAD without building the body: the Content-Length
    it gives is GET's, and is kept (not checked against the empty body)."""

    def app(env: dict[str, Any]) -> Any:
        body = b"" if env["REQUEST_METHOD"] == "HEAD" else b"hello"
        return 200, {"content-length": "5"}, body

    server = await start_server(app)
    async with http_client() as http:
        head = await http.head(f"http://127.0.0.1:{server.port}/")
    assert head.status_code == 200
    assert head.headers["content-length"] == "5"


# -- 4. the absolute form ---------------------------------------------------------


async def test_absolute_form_host_wins_over_the_host_header(app_calls: Any) -> None:
    """RFC 9112 3.2.2: for an absolute-form target the server uses the
    target's authority and ignores Host. curl sends that form to a proxy."""
    port, _calls = app_calls
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [
                "curl", "-sS", "--max-time", str(TIMEOUT),
                "-x", f"http://127.0.0.1:{port}",
                "-H", "Host: other.example",
                "http://example.com:8080/x?q=1",
            ],
            capture_stdout=True,
        )  # fmt: skip
    seen = json.loads(done.stdout)
    assert seen["HTTP_HOST"] == "example.com:8080"
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/x", "q=1")


# -- 5. two WebSocket keys ----------------------------------------------------------


async def test_two_websocket_keys_get_400(app_calls: Any) -> None:
    """RFC 6455 11.3.1: Sec-WebSocket-Key must not appear more than once."""
    port, _calls = app_calls
    request, _key = ws_handshake("/", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n")
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        async with stream:
            await stream.send_all(request)
            head = await read_until(stream, b"\r\n\r\n", bytearray())
    assert status_line(head) == 400, head


# -- 6. fragments ------------------------------------------------------------------

FRAGMENTS = {
    "/a%20b#frag": ("/a b", ""),
    "/p?q=1#f": ("/p", "q=1"),
    "/p#f?q=1": ("/p", ""),
    "/p#": ("/p", ""),
}


@pytest.mark.parametrize("extra", [b"", b"Connection: close\r\n"], ids=["fast", "h11"])
@pytest.mark.parametrize("target", FRAGMENTS.keys())
async def test_fragment_is_not_part_of_path_or_query(
    app_calls: Any, target: str, extra: bytes
) -> None:
    """A fragment is the client's (RFC 9110 4.2.5): not in PATH_INFO, not in
    QUERY_STRING. Clients strip it, so a raw socket sends it."""
    port, _calls = app_calls
    head = b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (target.encode(), extra)
    response = await exchange(port, head + (b"" if extra else LAST))
    seen = json.loads(parse_responses(response)[0][2])
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == FRAGMENTS[target]
