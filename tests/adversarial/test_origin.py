"""The Origin allow-list for WebSocket and SSE: as a Server option and as the
CLI's --allow-origin; what a refused request reaches (not the app, nor a handler)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url
from websockets.exceptions import InvalidStatus

from tests.helpers.procs import free_port, running
from tests.helpers.server import (
    TIMEOUT,
    Echo,
    Recorder,
    echo_app,
    exchange,
    http_client,
    in_thread,
    push_app,
    status_line,
    ws_connect,
    ws_handshake,
)

GOOD = "https://good.example"
ALSO = "http://also.example:8080"


def ws_request(origin: str | None) -> bytes:
    lines = [
        "GET /ws HTTP/1.1",
        "Host: x",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sse_request(origin: str | None) -> bytes:
    request = b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
    if origin is not None:
        request += f"Origin: {origin}\r\n".encode()
    return request + b"\r\n"


async def first_status(port: int, request: bytes) -> int:
    """The status of the answer (the connection may stay open after it)."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while b"\r\n" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
    return status_line(data)


@pytest.fixture
async def port(start_server: Any) -> int:
    echo = Echo()
    server = await start_server(echo_app(echo), allow_origins=(GOOD, ALSO))
    return int(server.port)


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (GOOD, 101),
        (ALSO, 101),
        (None, 101),
        ("https://evil.example", 403),
        ("null", 403),
        ("https://good.example.evil.example", 403),
        ("http://good.example", 403),  # another scheme is another origin
        ("https://good.example:444", 403),
    ],
)
async def test_websocket_origin(port: int, origin: str | None, status: int) -> None:
    assert await first_status(port, ws_request(origin)) == status


@pytest.mark.parametrize(
    ("origin", "status"), [(GOOD, 200), (None, 200), ("https://evil.example", 403)]
)
async def test_sse_origin(port: int, origin: str | None, status: int) -> None:
    assert await first_status(port, sse_request(origin)) == status


async def test_plain_http_is_not_checked(port: int) -> None:
    # Not a push request: CORS is the app's business, not the allow-list's.
    response = await exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
    )
    assert status_line(response) == 200


async def test_websockets_client_sees_403_or_is_served(port: int) -> None:
    def attempt(origin: str) -> Any:
        try:
            with ws_connect(f"ws://127.0.0.1:{port}/ws", origin=origin) as ws:
                ws.send("hi")
                return ws.recv()
        except InvalidStatus as exc:
            return exc.response.status_code

    assert await in_thread(attempt, GOOD) == "hi"
    assert await in_thread(attempt, "https://evil.example") == 403


async def test_refused_origin_never_reaches_the_app(start_server: Any) -> None:
    seen: list[str] = []

    def app(env: dict[str, Any]) -> Any:
        seen.append(env.get("HTTP_ORIGIN", "-"))
        return echo_app(Echo())(env)

    server = await start_server(app, allow_origins=(GOOD,))
    assert await first_status(server.port, ws_request("https://evil.example")) == 403
    assert await first_status(server.port, ws_request(GOOD)) == 101
    assert seen == [GOOD]


async def test_without_the_option_any_origin_is_accepted(start_server: Any) -> None:
    server = await start_server(echo_app(Echo()))
    assert await first_status(server.port, ws_request("https://evil.example")) == 101
    assert await first_status(server.port, sse_request("https://evil.example")) == 200


async def test_cli_allow_origin(tmp_path: Path) -> None:
    (tmp_path / "originapp.py").write_text(
        "class Echo:\n"
        "    def on_message(self, client, data):\n"
        "        client.write(data)\n"
        "def app(env):\n"
        "    if env['rack.upgrade?']:\n"
        "        env['rack.upgrade'] = Echo()\n"
        "        return 200, {}, b''\n"
        "    return 200, {'content-length': '2'}, b'ok'\n"
    )
    port = free_port()
    args = [sys.executable, "-m", "trio_push", "originapp:app", "--port", str(port)]
    args += ["--allow-origin", GOOD, "--allow-origin", ALSO]
    with running(args, cwd=tmp_path, port=port):
        assert await first_status(port, ws_request(GOOD)) == 101
        assert await first_status(port, ws_request(ALSO)) == 101
        assert await first_status(port, ws_request(None)) == 101
        assert await first_status(port, ws_request("https://evil.example")) == 403
        assert await first_status(port, sse_request("https://evil.example")) == 403
        assert await first_status(port, sse_request(GOOD)) == 200
        async with http_client() as http:
            response = await http.get(
                f"http://127.0.0.1:{port}/", headers={"origin": "https://evil.example"}
            )
        assert response.text == "ok"


# -- one allowed origin, and what reached the handler -------------------------------


ALLOWED = "https://good.example"


async def test_websocket_from_another_origin_gets_403(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), allow_origins=(ALLOWED,))
    request, _ = ws_handshake("/", "Origin: https://evil.example\r\nConnection: close\r\n")
    response = await exchange(server.port, request)
    assert status_line(response) == 403
    assert rec.events == []


async def test_websocket_from_an_allowed_origin_opens(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), allow_origins=(ALLOWED,))

    def client() -> int:
        with ws_connect(f"ws://127.0.0.1:{server.port}/", origin=ALLOWED) as ws:
            return ws.response.status_code  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == 101


async def test_request_without_origin_passes_the_allow_list(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), allow_origins=(ALLOWED,))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            await rec.opened.wait()


async def test_sse_from_another_origin_gets_403(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), allow_origins=(ALLOWED,))
    async with http_client() as http:
        response = await http.get(
            f"http://127.0.0.1:{server.port}/",
            headers={"accept": "text/event-stream", "origin": "https://evil.example"},
        )
    assert response.status_code == 403
    assert rec.events == []


async def test_origin_check_does_not_touch_plain_requests(start_server: Any) -> None:
    server = await start_server(push_app(Recorder()), allow_origins=(ALLOWED,))
    async with http_client() as http:
        response = await http.get(
            f"http://127.0.0.1:{server.port}/", headers={"origin": "https://evil.example"}
        )
    assert response.status_code == 200
