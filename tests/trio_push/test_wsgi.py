"""WSGI (PEP 3333) apps: conformance through wsgiref.validate, streaming, push."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

import trio_push
from tests.helpers.server import TIMEOUT, connect, parse_responses, read_all, read_until

StartResponse = Callable[..., Any]


def conformant(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Reads the body in every way PEP 3333 allows, then echoes what it saw."""
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    if path == "/readline":
        lines = [inp.readline(), inp.readline(4)] + list(inp)
        body = b"|".join(lines)
    elif path == "/readlines":
        body = b"|".join(inp.readlines())
    else:
        body = inp.read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REQUEST_METHOD"].encode(), b":", body]


@pytest.fixture
async def wsgi_server(nursery: trio.Nursery) -> AsyncIterator[str]:
    server = await nursery.start(trio_push.serve, validator(conformant), 0)
    assert server.interface == "wsgi"
    yield f"http://127.0.0.1:{server.port}"


async def test_env_and_start_response_pass_wsgiref_validate(wsgi_server: str) -> None:
    async with httpx.AsyncClient() as client:
        got = await client.get(wsgi_server + "/x?a=1")
        assert got.status_code == 200, got.text
        assert got.text == "GET:"
        got = await client.post(wsgi_server + "/x", content=b"hello body")
        assert got.text == "POST:hello body"


async def test_input_readline_and_iteration(wsgi_server: str) -> None:
    async with httpx.AsyncClient() as client:
        got = await client.post(wsgi_server + "/readline", content=b"one\ntwo-long\nthree\n")
        assert got.text == "POST:one\n|two-|long\n|three\n"
        got = await client.post(wsgi_server + "/readlines", content=b"a\nb\nc")
        assert got.text == "POST:a\n|b\n|c"


async def test_input_streams_a_chunked_body_as_it_arrives(nursery: trio.Nursery) -> None:
    first_chunk_seen = threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        first = environ["wsgi.input"].read(5)
        first_chunk_seen.set()
        rest = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [first, b"+", rest]

    server = await nursery.start(trio_push.serve, app, 0)

    async def body() -> AsyncIterator[bytes]:
        yield b"early"
        # The app reads the first piece before the client sends the rest.
        with trio.fail_after(5):
            while not first_chunk_seen.is_set():
                await trio.sleep(0.01)
        yield b"late"

    async with httpx.AsyncClient() as client:
        got = await client.post(f"http://127.0.0.1:{server.port}/", content=body())
    assert got.text == "early+late"


async def test_write_callable_and_generator_stream_in_order(nursery: trio.Nursery) -> None:
    closed = threading.Event()

    class Body:
        def __iter__(self) -> Iterable[bytes]:
            yield b"b"
            yield b""
            yield b"c"

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"a")
        return Body()

    server = await nursery.start(trio_push.serve, app, 0)
    async with httpx.AsyncClient() as client:
        got = await client.get(f"http://127.0.0.1:{server.port}/")
    assert got.text == "abc"
    assert got.headers["transfer-encoding"] == "chunked"
    assert closed.is_set()


async def test_wsgi_iterable_is_sent_as_produced(start_server: Any) -> None:
    """The twin of test_app's test_streamed_body_is_flushed_as_produced
    for a WSGI generator: its second chunk is produced only once the client
    has received the first one over the socket."""
    received = threading.Event()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            yield b"first"
            if received.wait(5):
                yield b"second"
            else:
                yield b"|the client never got the first chunk"

        return body()

    server = await start_server(app)
    try:
        with trio.fail_after(TIMEOUT):
            stream = await connect(server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            buf = bytearray()
            head = b""
            with trio.move_on_after(3):
                head = await read_until(stream, b"first", buf)
            got_first = head.endswith(b"first")
            received.set()
            with trio.fail_after(TIMEOUT):
                data = head + bytes(buf) + await read_all(stream)
    finally:
        received.set()  # never leave the app's thread waiting
    assert got_first, f"the first chunk did not arrive before the app produced more: {data!r}"
    ((status, headers, content),) = parse_responses(data)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert content == b"firstsecond"


async def test_error_in_wsgi_app_is_a_500_and_the_server_goes_on(nursery: trio.Nursery) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("200 OK", [])
        return [b"fine"]

    server = await nursery.start(trio_push.serve, app, 0)
    async with httpx.AsyncClient() as client:
        bad = await client.get(f"http://127.0.0.1:{server.port}/boom")
        assert bad.status_code == 500
        assert "boom" not in bad.text
        good = await client.get(f"http://127.0.0.1:{server.port}/ok")
        assert good.text == "fine"


async def test_wsgi_view_accepts_sse_and_resumes_from_last_event_id(nursery: trio.Nursery) -> None:
    """The docs' resume recipe: events carry ids; a reconnecting client's
    Last-Event-ID (HTTP_LAST_EVENT_ID) says where to go on from."""
    events = [(str(i), f"event {i}") for i in range(1, 6)]

    class Replay:
        def __init__(self, after: str | None) -> None:
            self.after = int(after) if after else 0

        def on_open(self, client: trio_push.Client) -> None:
            for event_id, data in events:
                if int(event_id) > self.after:
                    client.write(data, id=event_id)
            client.close()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ["rack.upgrade"] = Replay(environ.get("HTTP_LAST_EVENT_ID"))
        start_response("200 OK", [])
        return []

    server = await nursery.start(trio_push.serve, app, 0)
    url = f"http://127.0.0.1:{server.port}/events"
    async with httpx.AsyncClient() as client:
        async with aconnect_sse(client, "GET", url) as source:
            first = [(e.id, e.data) async for e in source.aiter_sse()]
        assert first == events
        headers = {"Last-Event-ID": "3"}
        async with aconnect_sse(client, "GET", url, headers=headers) as source:
            resumed = [(e.id, e.event, e.data) async for e in source.aiter_sse()]
    assert resumed == [("4", "msg", "event 4"), ("5", "msg", "event 5")]
