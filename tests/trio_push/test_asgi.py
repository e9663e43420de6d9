"""ASGI 3 apps: the http, websocket and lifespan scopes, on both app loops.

The apps here are raw ASGI callables that record what they see; the
frameworks (FastAPI, Starlette) are in tests/e2e/test_asgi_frameworks.py.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
import trio
import trio_websocket

import trio_push
from tests.helpers.h2client import WSClosed, h2_connect
from tests.helpers.server import (
    FAST,
    TIMEOUT,
    connect,
    http_client,
    read_all,
    read_until,
    wait_for,
)

LOOPS = ["asyncio", "trio"]

App = Callable[..., Any]


async def start(nursery: trio.Nursery, app: App, loop: str = "asyncio", **kwargs: Any) -> Any:
    """Serve the ASGI ``app`` on 127.0.0.1:0 in ``nursery``."""
    kwargs = {**FAST, **kwargs}
    with trio.fail_after(TIMEOUT):
        return await nursery.start(
            functools.partial(trio_push.serve, app, 0, asgi_loop=loop, **kwargs)
        )


def url(server: Any, path: str = "/", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


def ws_request(path: str, extra: str = "") -> bytes:
    """A WebSocket handshake request, as raw bytes."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def handshake(
    port: int, path: str, extra: str = "", until: bytes = b""
) -> tuple[bytes, bytes]:
    """Send a WebSocket handshake on a raw connection: the answer's head, and
    what came after it until ``until`` (if given)."""
    with trio.fail_after(TIMEOUT):
        stream = await connect(port)
        async with stream:
            await stream.send_all(ws_request(path, extra))
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
            while until not in buf:
                buf += await stream.receive_some(65536)
    return head, bytes(buf)


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Any, status: int, body: bytes, headers: Any = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


# -- detection ------------------------------------------------------------------


async def plain_asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await respond(send, 200, b"ok")


class CallableASGI:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await plain_asgi(scope, receive, send)


def test_auto_detects_asgi_apps() -> None:
    def wsgi(environ: Any, start_response: Any) -> Any:
        return []

    async def push(env: Any) -> Any:
        return 200, {}, b""

    async def with_default(scope: Any, receive: Any, send: Any, extra: Any = None) -> None:
        await plain_asgi(scope, receive, send)

    class PushWithCall(CallableASGI):
        def call(self, env: Any) -> Any:
            return 200, {}, b""

    assert trio_push.Server(with_default).interface == "asgi"
    assert trio_push.Server(PushWithCall()).interface == "push"
    assert trio_push.Server(plain_asgi).interface == "asgi"
    assert trio_push.Server(CallableASGI()).interface == "asgi"
    assert trio_push.Server(wsgi).interface == "wsgi"
    assert trio_push.Server(push).interface == "push"
    with pytest.raises(ValueError, match="asgi_loop"):
        trio_push.Server(plain_asgi, asgi_loop="curio")


# -- the http scope -------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
async def test_http_scope(nursery: trio.Nursery, loop: str) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            scope["state"]["db"] = "ready"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(scope)
        await respond(send, 200, b"ok")

    server = await start(nursery, app, loop, root_path="/mnt")
    async with http_client() as http:
        response = await http.get(
            url(server, "/a%20b/%C3%A9?x=1&y=%20"), headers=[("X-One", "1"), ("X-Two", "2")]
        )
    assert response.status_code == 200
    scope = seen[0]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/mnt"
    assert scope["path"] == "/mnt/a b/é"
    assert scope["raw_path"] == b"/mnt/a%20b/%C3%A9"
    assert scope["query_string"] == b"x=1&y=%20"
    headers = scope["headers"]
    assert (b"x-one", b"1") in headers and (b"x-two", b"2") in headers
    assert all(isinstance(n, bytes) and n == n.lower() for n, _ in headers)
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"] == {"db": "ready"}
    assert "trio_push.upgrade" not in scope["extensions"]


@pytest.mark.parametrize("loop", LOOPS)
async def test_request_body_streams_in(nursery: trio.Nursery, loop: str) -> None:
    """A chunked upload reaches the app in pieces (more_body), as they come."""
    events: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            events.append(message)
            if not message.get("more_body"):
                break
        total = sum(len(m["body"]) for m in events)
        await respond(send, 200, str(total).encode())

    server = await start(nursery, app, loop)
    piece = b"p" * 65536
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(
                b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(8):
                await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
                await trio.sleep(0.02)
            await stream.send_all(b"0\r\n\r\n")
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
    assert head.startswith(b"HTTP/1.1 200")
    assert sum(len(m["body"]) for m in events) == 8 * 65536
    assert sum(1 for m in events if m["body"]) >= 2  # streamed, not gathered
    assert all(m["type"] == "http.request" for m in events)
    assert events[-1]["more_body"] is False


@pytest.mark.parametrize("loop", LOOPS)
async def test_response_streams_out(nursery: trio.Nursery, loop: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(200):
            chunk = bytes([65 + i % 26]) * 65536
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    server = await start(nursery, app, loop)
    async with http_client() as http, http.stream("GET", url(server)) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        data = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert len(data) == 200 * 65536 + 3
    assert data[:1] == b"A" and data[65536 * 25 : 65536 * 25 + 1] == b"Z"
    assert data.endswith(b"end")


async def test_whole_body_gets_content_length(nursery: trio.Nursery) -> None:
    server = await start(nursery, plain_asgi)
    async with http_client() as http:
        response = await http.get(url(server))
        head = await http.head(url(server))
    assert response.headers["content-length"] == "2"
    assert response.text == "ok"
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("loop", LOOPS)
async def test_disconnect_when_the_client_goes(nursery: trio.Nursery, loop: str) -> None:
    """An app streaming a response hears http.disconnect once the client has
    gone, and its next send raises ClientDisconnected (an OSError)."""
    outcome: list[Any] = []
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        outcome.append(await receive())
        try:
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except OSError as exc:
            outcome.append(exc)
        token.run_sync_soon(done.set)

    server = await start(nursery, app, loop)
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_until(stream, b"first", bytearray())
        await stream.aclose()
        await done.wait()
    assert outcome[0] == {"type": "http.disconnect"}
    assert isinstance(outcome[1], trio_push.ClientDisconnected)


@pytest.mark.parametrize("loop", LOOPS)
async def test_disconnect_when_an_http2_stream_is_reset(nursery: trio.Nursery, loop: str) -> None:
    """On HTTP/2 the client's going is the stream's reset; the connection
    and its other streams live on."""
    heard: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        if scope["path"] == "/short":
            await send({"type": "http.response.body", "body": b" and last"})
            return
        heard.append(await receive())

    server = await start(nursery, app, loop)
    async with h2_connect(server.port) as h2:
        stream = await h2.request("GET", "/long")
        await stream.response()
        assert await stream.read_some() == b"first"
        await stream.cancel()
        await wait_for(lambda: bool(heard))
        status, _, body = await h2.fetch("GET", "/short")
    assert heard == [{"type": "http.disconnect"}]
    assert (status, body) == (200, b"first and last")


async def test_a_stalled_body_is_a_disconnect(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that stops coming (slowloris) past header_timeout: the app
    hears http.disconnect, the connection is closed, nothing internal."""
    heard: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            heard.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    server = await start(nursery, app, header_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            await trio.sleep(0.05)
            await stream.send_all(b"0123456789")
            assert await read_all(stream) == b""
    await wait_for(lambda: heard[-1:] == ["http.disconnect"])
    assert "internal error" not in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_receive_waiting_when_the_response_ends_gets_disconnect(
    nursery: trio.Nursery, loop: str
) -> None:
    """One task of the app waits in receive (for the client's end) while
    another completes the response: the waiting one hears http.disconnect."""
    heard: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)

        async def listen() -> None:
            heard.append(await receive())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listen)
            await anyio.sleep(0.05)
            await respond(send, 200, b"done")

    server = await start(nursery, app, loop)
    async with http_client() as http:
        assert (await http.get(url(server))).text == "done"
        await wait_for(lambda: bool(heard))
    assert heard == [{"type": "http.disconnect"}]


async def test_receive_after_the_response_is_disconnect(nursery: trio.Nursery) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await respond(send, 200, b"ok")
        seen.append(await receive())
        try:
            await send({"type": "http.response.body", "body": b"again"})
        except RuntimeError as exc:
            seen.append(exc)

    server = await start(nursery, app)
    async with http_client() as http:
        assert (await http.get(url(server))).text == "ok"
        await wait_for(lambda: len(seen) == 2)
        assert (await http.get(url(server))).text == "ok"  # the connection lives on
    assert seen[0] == {"type": "http.disconnect"}
    assert isinstance(seen[1], RuntimeError)


@pytest.mark.parametrize("loop", LOOPS)
async def test_http2_streams(nursery: trio.Nursery, loop: str) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        seen.append(scope["http_version"])
        await respond(send, 200, b"got %d" % len(body))

    server = await start(nursery, app, loop)
    async with http_client(http1=False, http2=True) as http:
        responses = [
            await http.post(url(server, f"/{i}"), content=b"b" * (100_000 * i)) for i in range(3)
        ]
    assert [r.http_version for r in responses] == ["HTTP/2"] * 3
    assert [r.text for r in responses] == ["got 0", "got 100000", "got 200000"]
    assert seen == ["2", "2", "2"]


@pytest.mark.parametrize("loop", LOOPS)
async def test_an_exception_is_a_500_and_a_logged_traceback(
    nursery: trio.Nursery, loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/boom":
            raise ZeroDivisionError("boom")
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise KeyError("late")
        if scope["path"] == "/nothing":
            return
        await respond(send, 200, b"fine")

    server = await start(nursery, app, loop)
    async with http_client() as http:
        assert (await http.get(url(server, "/boom"))).status_code == 500
        assert (await http.get(url(server, "/nothing"))).status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(url(server, "/late"))
        assert (await http.get(url(server, "/"))).text == "fine"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in errors)
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in errors)
    assert any("without a response" in r.getMessage() for r in errors)


async def test_an_exception_after_the_response_is_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette answers 500 itself, then raises: that traceback is logged
    too (it came while the response's last piece was being sent)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await respond(send, 500, b"handled")
        raise LookupError("after the response")

    server = await start(nursery, app)
    async with http_client() as http:
        for _ in range(5):
            assert (await http.get(url(server))).text == "handled"
    await wait_for(
        lambda: sum(1 for r in caplog.records if r.exc_info and r.exc_info[0] is LookupError) == 5
    )


@pytest.mark.parametrize("path", ["/bad-header", "/bad-accept"])
async def test_headers_http_cannot_carry_are_a_500(nursery: trio.Nursery, path: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send, 200, b"x", [(b"x-bad", b"line\r\nbreak")])
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", "headers": [(b"x-bad", b"a\nb")]})

    server = await start(nursery, app)
    if path == "/bad-header":
        async with http_client() as http:
            assert (await http.get(url(server, path))).status_code == 500
        return
    head, _ = await handshake(server.port, "/")
    assert head.startswith(b"HTTP/1.1 500")


async def test_invalid_messages_raise_in_the_app(nursery: trio.Nursery) -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await send({"type": "http.response.body", "body": b"no head"})
        except RuntimeError as exc:
            raised.append(exc)
        await respond(send, 204, b"")

    server = await start(nursery, app)
    async with http_client() as http:
        assert (await http.get(url(server))).status_code == 204
    assert "before the response started" in str(raised[0])


# -- the websocket scope -------------------------------------------------------------------


def disconnects(record: list[Any]) -> list[Any]:
    return [r for r in record if r.get("type") == "websocket.disconnect"]


def ws_app(record: list[Any]) -> App:
    """Accepts (with the first subprotocol offered and a header), echoes,
    closes 4001 on "close"; records the scope and the disconnect."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        record.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/deny":
            headers = [(b"content-type", b"text/plain"), (b"x-why", b"nope")]
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"entry"})
            record.append(await receive())
            return
        if scope["path"] == "/refuse":
            await send({"type": "websocket.close"})
            return
        if scope["path"] == "/crash-early":
            raise ValueError("before the accept")
        offered = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": offered[0] if offered else None,
                "headers": [(b"x-accepted", b"yes")],
            }
        )
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                record.append(message)
                return
            if message.get("text") == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "bye now"})
            elif message.get("text") == "crash":
                raise RuntimeError("after the accept")
            else:
                data = {"text": message.get("text"), "bytes": message.get("bytes")}
                await send({"type": "websocket.send", **data})

    return app


@pytest.mark.parametrize("loop", LOOPS)
async def test_websocket_echo_subprotocol_and_close_codes(nursery: trio.Nursery, loop: str) -> None:
    record: list[Any] = []
    server = await start(nursery, ws_app(record), loop)
    with trio.fail_after(TIMEOUT):
        async with trio_websocket.open_websocket_url(
            url(server, "/chat?room=1", "ws"), subprotocols=["v2.chat", "v1.chat"]
        ) as ws:
            assert ws.subprotocol == "v2.chat"
            assert ws.handshake_headers and (b"x-accepted", b"yes") in ws.handshake_headers
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\xff" * 32768)
            assert await ws.get_message() == b"\x00\xff" * 32768
            await ws.send_message("close")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason.code == 4001
        assert closed.value.reason.reason == "bye now"
        # The client closes with its own code: the app hears it.
        async with trio_websocket.open_websocket_url(url(server, "/two", "ws")) as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
            await ws.aclose(code=4002, reason="client leaves")
        await wait_for(
            lambda: sum(1 for r in record if r.get("type") == "websocket.disconnect") == 2
        )
    scope = record[0]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/chat" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["v2.chat", "v1.chat"]
    assert "websocket.http.response" in scope["extensions"]
    disconnects = [r for r in record if r.get("type") == "websocket.disconnect"]
    assert disconnects[0]["code"] == 4001
    assert disconnects[1] == {
        "type": "websocket.disconnect",
        "code": 4002,
        "reason": "client leaves",
    }


@pytest.mark.parametrize("loop", LOOPS)
async def test_websocket_over_http2(nursery: trio.Nursery, loop: str) -> None:
    """RFC 8441: the same ASGI app, its scope's http_version "2"."""
    record: list[Any] = []
    server = await start(nursery, ws_app(record), loop)
    async with h2_connect(server.port) as h2:
        ws = await h2.websocket("/over-h2", headers=[("sec-websocket-protocol", "p1")])
        assert ws.stream.header("sec-websocket-protocol") == "p1"
        await ws.send("one")
        assert await ws.receive() == "one"
        await ws.send(b"\x02" * 65536)
        assert await ws.receive() == b"\x02" * 65536
        await ws.send("close")
        with pytest.raises(WSClosed) as closed:
            await ws.receive()
    assert (closed.value.code, closed.value.reason) == (4001, "bye now")
    assert record[0]["http_version"] == "2" and record[0]["path"] == "/over-h2"


@pytest.mark.parametrize("loop", LOOPS)
async def test_websocket_denial_and_refusal(
    nursery: trio.Nursery, loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    record: list[Any] = []
    server = await start(nursery, ws_app(record), loop)
    with trio.fail_after(TIMEOUT):
        for path, status, body in (
            ("/deny", 401, True),
            ("/refuse", 403, False),
            ("/crash-early", 500, False),
        ):
            head, rest = await handshake(server.port, path, until=b"entry" if body else b"")
            assert head.startswith(b"HTTP/1.1 %d" % status), head
            if body:
                assert b"x-why: nope" in head
                assert b"no " in rest  # chunked: "no " then "entry"
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)
    await wait_for(lambda: bool(disconnects(record)))
    assert disconnects(record)[0]["code"] == 1006  # after the denial


@pytest.mark.parametrize("loop", LOOPS)
async def test_websocket_app_error_closes_1011(nursery: trio.Nursery, loop: str) -> None:
    server = await start(nursery, ws_app([]), loop)
    with trio.fail_after(TIMEOUT):
        async with trio_websocket.open_websocket_url(url(server, "/x", "ws")) as ws:
            await ws.send_message("crash")
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
        assert closed.value.reason.code == 1011
        # The server serves on.
        async with trio_websocket.open_websocket_url(url(server, "/y", "ws")) as ws:
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_client_that_never_reads_is_bounded_and_closed(
    nursery: trio.Nursery, loop: str
) -> None:
    """The app sends 64 KiB messages as fast as it may to a client that never
    reads: its sends wait (the queue stays within max_queue_bytes plus a
    message), the write timeout closes the connection, and the app's next
    send raises ClientDisconnected."""
    outcome: list[Any] = []
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        sent = 0
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"x" * 65536})
                sent += 1
        except OSError as exc:
            outcome.extend([sent, exc])
        token.run_sync_soon(done.set)

    bound = 1024 * 1024
    server = await start(nursery, app, loop, write_timeout=1.0, max_queue_bytes=bound)
    most = 0
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port, rcvbuf=4096)
        await stream.send_all(ws_request("/"))
        while not done.is_set():
            for session in list(server.push_connections):
                most = max(most, session.core.pending_bytes)
            await trio.sleep(0.002)
        await stream.aclose()
    assert isinstance(outcome[1], trio_push.ClientDisconnected)
    # The window, the message that crossed it, and their frames' headers.
    assert 0 < most <= bound + 65536 + 1024, most
    # What the app could send is what the queue and the sockets' buffers hold.
    assert outcome[0] * 65536 < bound + 16 * 1024 * 1024


@pytest.mark.parametrize(("loop", "threads"), [("asyncio", 0), ("trio", 0), ("asyncio", 2)])
async def test_a_burst_reaches_a_slow_app_in_order(
    nursery: trio.Nursery, loop: str, threads: int
) -> None:
    """2,000 messages sent at once to an app that reads late: reading waits
    for it (64 behind), nothing is lost or reordered."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await anyio.sleep(0.2)  # the burst comes meanwhile
        first = await receive()
        assert first["text"] == "0"
        expected = 1
        while expected < 2000:
            message = await receive()
            assert message["text"] == str(expected), message
            expected += 1
        await send({"type": "websocket.send", "text": f"got {expected}"})

    server = await start(nursery, app, loop, threads=threads)
    with trio.fail_after(TIMEOUT):
        async with trio_websocket.open_websocket_url(url(server, "/", "ws")) as ws:
            for i in range(2000):
                await ws.send_message(str(i))
            assert await ws.get_message() == "got 2000"


async def test_a_client_gone_while_the_app_is_behind_is_told(nursery: trio.Nursery) -> None:
    """An app that stops reading, a client that floods it and leaves: the
    paused reader cannot see the end, but the pong deadline does, and the
    session ends (on_close runs though the backlog's wait is before it);
    once the app reads on, it gets what came and then the disconnect."""
    carry_on = trio.Event()
    got: list[Any] = []
    token = trio.lowlevel.current_trio_token()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await carry_on.wait()
        while (message := await receive())["type"] == "websocket.receive":
            got.append(message["text"])
        got.append(message)

    server = await start(nursery, app, "trio", ping_interval=0.2, pong_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with trio_websocket.open_websocket_url(url(server, "/", "ws")) as ws:
            for i in range(500):
                await ws.send_message(str(i))
            await wait_for(lambda: len(server.push_connections) == 1)
        await wait_for(lambda: not server.push_connections)
        token.run_sync_soon(carry_on.set)
        await wait_for(lambda: bool(got) and isinstance(got[-1], dict))
    assert got[:-1] == [str(i) for i in range(len(got) - 1)]
    assert got[-1]["type"] == "websocket.disconnect"


# -- push from ASGI ---------------------------------------------------------------------


class Subscriber:
    def __init__(self, channel: str) -> None:
        self.channel = channel

    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe(self.channel)
        client.write("subscribed")


AFTER_UPGRADE: list[Any] = []


async def push_asgi(scope: Any, receive: Any, send: Any) -> None:
    """Push requests go to a Subscriber; POST /publish publishes its body."""
    if scope["type"] == "lifespan":
        return
    if "trio_push.upgrade" in scope["extensions"]:
        if scope["type"] == "websocket":
            await receive()
        channel = scope["path"].strip("/")
        await send({"type": "trio_push.upgrade", "handler": Subscriber(channel)})
        AFTER_UPGRADE.append((scope["type"], (await receive())["type"]))
        return
    body = await read_body(receive)
    ok = trio_push.publish("news", body.decode())
    await respond(send, 200, b"published" if ok else b"not published")


@pytest.mark.parametrize("loop", LOOPS)
async def test_push_through_the_extension(nursery: trio.Nursery, loop: str) -> None:
    from httpx_sse import aconnect_sse

    server = await start(nursery, push_asgi, loop)
    with trio.fail_after(TIMEOUT):
        async with (
            trio_websocket.open_websocket_url(url(server, "/news", "ws")) as ws,
            http_client() as http,
            aconnect_sse(http, "GET", url(server, "/news")) as sse,
        ):
            assert await ws.get_message() == "subscribed"
            events = sse.aiter_sse()
            assert (await events.__anext__()).data == "subscribed"
            await wait_for(lambda: len(server.push_connections) == 2)
            for i in range(3):
                response = await http.post(url(server, "/publish"), content=f"item {i}")
                assert response.text == "published"
            assert [await ws.get_message() for _ in range(3)] == ["item 0", "item 1", "item 2"]
            assert [(await events.__anext__()).data for _ in range(3)] == [
                "item 0",
                "item 1",
                "item 2",
            ]
    # After the upgrade the connection is the handler's: receive says so.
    assert ("websocket", "websocket.disconnect") in AFTER_UPGRADE
    assert ("http", "http.disconnect") in AFTER_UPGRADE


async def test_push_through_the_extension_over_http2(nursery: trio.Nursery) -> None:
    server = await start(nursery, push_asgi)
    async with h2_connect(server.port) as h2:
        events = await h2.sse("/news")
        assert [e.data for e in await events.next()] == ["subscribed"]
        ws = await h2.websocket("/news")
        assert await ws.receive() == "subscribed"
        status, _, body = await h2.fetch("POST", "/publish", body=b"over h2")
        assert (status, body) == (200, b"published")
        assert [e.data for e in await events.next()] == ["over h2"]
        assert await ws.receive() == "over h2"


async def test_allow_origins_refuses_before_the_app(nursery: trio.Nursery) -> None:
    record: list[Any] = []
    server = await start(nursery, ws_app(record), allow_origins=("https://ok.example",))
    with trio.fail_after(TIMEOUT):
        head, _ = await handshake(server.port, "/evil", "Origin: https://evil\r\n")
        assert head.startswith(b"HTTP/1.1 403")
        async with trio_websocket.open_websocket_url(
            url(server, "/", "ws"), extra_headers=[(b"origin", b"https://ok.example")]
        ) as ws:
            await ws.send_message("let in")
            assert await ws.get_message() == "let in"
    assert [scope["path"] for scope in record if "path" in scope] == ["/"]


async def test_asgi_push_helper_refuses_plain_requests(nursery: trio.Nursery) -> None:
    server = await start(nursery, trio_push.ASGIPush(lambda scope: None))
    async with http_client() as http:
        plain = await http.get(url(server, "/"))
        refused = await http.get(url(server, "/"), headers={"accept": "text/event-stream"})
    assert plain.status_code == 400
    assert refused.status_code == 403


# -- lifespan and the server's life --------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
async def test_lifespan_failure_stops_the_start(loop: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with trio.fail_after(TIMEOUT), pytest.raises(trio_push.LifespanFailed, match="no database"):
        await trio_push.Server(app, 0, asgi_loop=loop).serve()


async def test_an_app_without_lifespan_is_served(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"unknown scope {scope['type']}")
        await respond(send, 200, b"served")

    caplog.set_level(logging.INFO, "trio_push")
    server = await start(nursery, app)
    async with http_client() as http:
        assert (await http.get(url(server))).text == "served"
    assert any("lifespan' protocol appears unsupported" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("loop", LOOPS)
async def test_graceful_stop_closes_websockets_1001_then_lifespan_shutdown(loop: str) -> None:
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            order.append("lifespan.shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        while message["type"] != "websocket.disconnect":
            message = await receive()
        order.append(f"disconnect {message['code']}")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start(nursery, app, loop)
            async with trio_websocket.open_websocket_url(url(server, "/", "ws")) as ws:
                await wait_for(lambda: len(server.push_connections) == 1)
                server.stop()
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == 1001
    assert order == ["disconnect 1001", "lifespan.shutdown"]


@pytest.mark.parametrize("loop", LOOPS)
async def test_graceful_stop_ends_a_streamed_response(loop: str) -> None:
    """An endless event stream (sse-starlette's kind) is ended as a complete
    response at a graceful stop, and the app hears http.disconnect."""
    heard: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        heard.append(await receive())

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start(nursery, app, loop, drain_timeout=10.0)
            async with http_client() as http, http.stream("GET", url(server)) as response:
                lines = response.aiter_lines()
                assert await lines.__anext__() == "data: one"
                server.stop()
                rest = [line async for line in lines]  # ends: the response is complete
            assert rest == [""]
    assert heard == [{"type": "http.disconnect"}]


async def test_tls_and_wss(nursery: trio.Nursery) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    record: list[Any] = []
    server = await start(nursery, ws_app(record), ssl_context=context)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with trio.fail_after(TIMEOUT):
        async with trio_websocket.open_websocket_url(
            url(server, "/secure", "wss"), ssl_context=client
        ) as ws:
            await ws.send_message("over tls")
            assert await ws.get_message() == "over tls"
    assert record[0]["scheme"] == "wss"
