"""Response framing: lengths, bodiless statuses, and a close that keeps the last answer."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import trio

from tests.helpers.server import TIMEOUT, connect, read_all, status_line


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
