"""The Origin allow-list for push requests, and TLS (https, wss, SSE over TLS).

(Connection caps and slow heads are in test_hardening_http.py.)"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url
from websockets.exceptions import InvalidStatus

from tests.helpers.server import (
    TIMEOUT,
    Recorder,
    exchange,
    http_client,
    in_thread,
    push_app,
    status_line,
    ws_connect,
    ws_handshake,
)

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


# -- TLS ----------------------------------------------------------------------------


@pytest.fixture
async def tls_server(start_server: Any, server_context: ssl.SSLContext) -> Any:
    class Echo(Recorder):
        def on_message(self, client: Any, data: Any) -> None:
            client.write(data)

    handler = Echo()
    server = await start_server(push_app(handler), ssl_context=server_context)
    server.handler = handler  # for the tests to reach the clients
    return server


async def test_https_request(tls_server: Any, client_context: ssl.SSLContext) -> None:
    async with http_client(verify=client_context) as http:
        response = await http.get(f"https://127.0.0.1:{tls_server.port}/")
    assert (response.status_code, response.text) == (200, "hello")


async def test_wss_echo_with_websockets(tls_server: Any, client_context: ssl.SSLContext) -> None:
    def client() -> str:
        with ws_connect(f"wss://127.0.0.1:{tls_server.port}/", ssl=client_context) as ws:
            ws.send("secure")
            return ws.recv(timeout=TIMEOUT)  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == "secure"


async def test_https_sse(tls_server: Any, client_context: ssl.SSLContext) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            http_client(verify=client_context) as http,
            aconnect_sse(http, "GET", f"https://127.0.0.1:{tls_server.port}/") as es,
        ):
            await tls_server.handler.opened.wait()
            env = tls_server.handler.clients[0].env
            tls_server.handler.clients[0].write("over tls")
            event = await es.aiter_sse().__anext__()
    assert event.data == "over tls"
    assert env["wsgi.url_scheme"] == "https"


async def test_plain_http_to_a_tls_port_does_not_hurt_the_server(
    tls_server: Any, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(TIMEOUT):
        await exchange(tls_server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with http_client(verify=client_context) as http:
            response = await http.get(f"https://127.0.0.1:{tls_server.port}/")
    assert response.status_code == 200


async def test_wss_refused_upgrade_is_a_normal_response(
    start_server: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def app(env: dict[str, Any]) -> Any:
        return 401, {}, b"who are you"

    server = await start_server(app, ssl_context=server_context)

    def client() -> None:
        with ws_connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context):
            pass

    with trio.fail_after(TIMEOUT), pytest.raises(InvalidStatus) as info:
        await in_thread(client)
    assert info.value.response.status_code == 401
