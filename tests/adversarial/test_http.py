"""Bad HTTP input against a running server: each gets its status, and a
second client keeps getting answers throughout."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.helpers.frames import Bystander
from tests.helpers.server import Echo, echo_app, exchange, head_lines, status_line

CLOSE = b"Connection: close\r\n"


@pytest.fixture
async def served(start_server: Any) -> Any:
    """A server with small head and body limits, and a bystander on it."""
    server = await start_server(echo_app(Echo()), max_head_size=8192, max_body_size=1000)
    bystander = await Bystander.open(server.port)
    yield server.port, bystander
    await bystander.aclose()


MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no version": b"GET /\r\nHost: x\r\n\r\n",
    "extra token": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "two spaces": b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul in method": b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
    "lf in request line": b"GET /\n HTTP/1.1\r\nHost: x\r\n\r\n",
    "binary": bytes(range(256)) + b"\r\n\r\n",
    "no host": b"GET / HTTP/1.1\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
    "nul in header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "bad content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "two content-lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ),
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_gets_400(served: Any, request_bytes: bytes) -> None:
    port, bystander = served
    response = await exchange(port, request_bytes)
    assert status_line(response) == 400, response
    # The error body names no Python internals.
    assert b"Traceback" not in response
    await bystander.check()


async def test_unknown_transfer_encoding_gets_501(served: Any) -> None:
    port, bystander = served
    response = await exchange(
        port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    )
    assert status_line(response) == 501, response
    await bystander.check()


@pytest.mark.parametrize("version", [b"2.0", b"3.0", b"0.9"])
async def test_unsupported_http_version_gets_505(served: Any, version: bytes) -> None:
    port, bystander = served
    response = await exchange(port, b"GET / HTTP/" + version + b"\r\nHost: x\r\n\r\n")
    assert status_line(response) == 505, response
    await bystander.check()


INJECTIONS = {
    "value str": [("x-ok", "a\r\nX-Injected: yes")],
    "value bytes": [(b"x-ok", b"a\r\nX-Injected: yes")],
    "value lf only": [("x-ok", "a\nX-Injected: yes")],
    "value cr only": [("x-ok", "a\rX-Injected: yes")],
    "name": [("x-ok\r\nX-Injected", "yes")],
    "set-cookie split": [("set-cookie", "a=1\r\nX-Injected: yes")],
}


def injecting_app(headers: Any) -> Any:
    def app(env: dict[str, Any]) -> Any:
        if env["PATH_INFO"] != "/inject":
            return echo_app(Echo())(env)
        if env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = Echo()
        return 200, headers, b"the body"

    return app


@pytest.mark.parametrize("headers", INJECTIONS.values(), ids=INJECTIONS.keys())
@pytest.mark.parametrize("kind", ["http", "websocket", "sse"])
async def test_header_injection_by_the_app_gets_500_and_nothing_injected(
    start_server: Any, headers: Any, kind: str
) -> None:
    server = await start_server(injecting_app(headers))
    bystander = await Bystander.open(server.port)
    extra = {
        "http": b"",
        "websocket": (
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        ),
        "sse": b"Accept: text/event-stream\r\n",
    }[kind]
    response = await exchange(
        server.port, b"GET /inject HTTP/1.1\r\nHost: x\r\n" + CLOSE + extra + b"\r\n"
    )
    assert status_line(response) == 500, response
    lines = head_lines(response)
    assert not any(line.startswith(b"x-injected") for line in lines), response
    assert b"\r\nx-injected" not in response.lower()
    assert b"the body" not in response
    await bystander.check()
    await bystander.aclose()


async def test_huge_header_gets_431(served: Any) -> None:
    port, bystander = served
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    response = await exchange(port, request)
    assert status_line(response) == 431, response[:300]
    await bystander.check()


async def test_many_headers_get_431(served: Any) -> None:
    port, bystander = served
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(300))
    response = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_line(response) == 431, response[:300]
    await bystander.check()


async def test_head_over_the_limit_in_one_read_gets_431(served: Any) -> None:
    # 10 kB: one read takes it whole, past max_head_size=8192.
    port, bystander = served
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
    response = await exchange(port, request)
    assert status_line(response) == 431, response[:300]
    await bystander.check()


async def test_huge_request_line_gets_431_or_414(served: Any) -> None:
    port, bystander = served
    response = await exchange(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_line(response) in (414, 431), response[:300]
    await bystander.check()


async def test_head_just_under_the_limit_is_served(served: Any) -> None:
    port, bystander = served
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"X-Big: " + b"a" * 7000 + b"\r\n\r\n"
    response = await exchange(port, request)
    assert status_line(response) == 200, response[:300]
    await bystander.check()


async def test_declared_body_over_the_limit_gets_413_before_it_is_sent(served: Any) -> None:
    port, bystander = served
    response = await exchange(
        port, b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    )
    assert status_line(response) == 413, response
    await bystander.check()


async def test_huge_declared_body_gets_413(served: Any) -> None:
    port, bystander = served
    response = await exchange(
        port, b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"
    )
    assert status_line(response) == 413, response
    await bystander.check()


async def test_chunked_body_over_the_limit_gets_413(served: Any) -> None:
    port, bystander = served
    chunks = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    request = b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    response = await exchange(port, request)
    assert status_line(response) == 413, response
    assert b"x" * 256 not in response
    await bystander.check()


async def test_chunked_body_under_the_limit_is_served(served: Any) -> None:
    port, bystander = served
    chunks = b"".join(b"64\r\n" + b"x" * 100 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    request = b"POST /body HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"Transfer-Encoding: chunked\r\n\r\n"
    response = await exchange(port, request + chunks)
    assert status_line(response) == 200, response
    assert b"x" * 500 in response
    await bystander.check()


BAD_CHUNKED = {
    "bad size": b"ZZ\r\nabc\r\n0\r\n\r\n",
    "negative size": b"-3\r\nabc\r\n0\r\n\r\n",
    "no crlf after data": b"3\r\nabcXY0\r\n\r\n",
    "size too short": b"2\r\nabc\r\n0\r\n\r\n",
    "size line without crlf": b"3 abc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("body", BAD_CHUNKED.values(), ids=BAD_CHUNKED.keys())
async def test_invalid_chunked_encoding_gets_400(served: Any, body: bytes) -> None:
    port, bystander = served
    request = b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    response = await exchange(port, request)
    assert status_line(response) == 400, response
    await bystander.check()


async def test_slowloris_head_is_closed_after_header_timeout(start_server: Any) -> None:
    server = await start_server(echo_app(Echo()), header_timeout=1.5, idle_timeout=30)
    bystander = await Bystander.open(server.port)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    closed_at = None
    started = trio.current_time()

    async def drip() -> None:
        for byte in request:
            try:
                await stream.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(0.25)

    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drip)
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            closed_at = trio.current_time() - started
            nursery.cancel_scope.cancel()
    await stream.aclose()
    # Closed with nothing answered, by the head bound (1.5 s), not the idle one.
    assert data == b"" or status_line(data) == 408, data
    assert 1.2 <= closed_at <= 2.8, closed_at
    await bystander.check()
    await bystander.aclose()


async def test_stalled_request_body_is_closed(start_server: Any) -> None:
    # The head is whole; the body stops coming (slowloris on the body).
    server = await start_server(echo_app(Echo()), header_timeout=1.0, idle_timeout=30)
    bystander = await Bystander.open(server.port)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
    started = trio.current_time()
    with trio.fail_after(5):
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
    assert data == b""
    assert 0.8 <= trio.current_time() - started <= 2.5
    await stream.aclose()
    await bystander.check()
    await bystander.aclose()


async def test_slow_but_steady_request_body_is_served(start_server: Any) -> None:
    # The bound is on a stall, not on the whole body: a byte every 0.3 s for
    # 1.5 s gets through with header_timeout=1.
    server = await start_server(echo_app(Echo()), header_timeout=1.0)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        b"POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
    )
    for byte in b"01234":
        await trio.sleep(0.3)
        await stream.send_all(bytes([byte]))
    with trio.fail_after(5):
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    assert status_line(data) == 200 and b"01234" in data, data
    await stream.aclose()
