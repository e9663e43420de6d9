"""Accepting or refusing an upgrade: status, headers, subprotocols."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url
from websockets.exceptions import InvalidStatus

from tests.helpers.server import (
    TIMEOUT,
    Recorder,
    connect,
    exchange,
    http_client,
    in_thread,
    parse_responses,
    push_app,
    read_until,
    ws_connect,
    ws_handshake,
)


def choose_subprotocol(handler: Any) -> Any:
    def app(env: dict[str, Any]) -> Any:
        offered = [p.strip() for p in env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")]
        env["rack.upgrade"] = handler
        headers = {"Sec-WebSocket-Protocol": "chat"} if "chat" in offered else {}
        return 200, headers, b""

    return app


async def test_subprotocol_chosen_by_the_app_header(start_server: Any) -> None:
    server = await start_server(choose_subprotocol(Recorder()))

    def client() -> str | None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["superchat", "chat"]) as ws:
            return ws.subprotocol  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == "chat"


async def test_subprotocol_with_trio_websocket(start_server: Any) -> None:
    server = await start_server(choose_subprotocol(Recorder()))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/", subprotocols=["chat"]
        ) as ws:
            assert ws.subprotocol == "chat"


async def test_app_headers_go_out_on_the_101(start_server: Any) -> None:
    server = await start_server(
        push_app(Recorder(), headers=[("Set-Cookie", "session=abc"), ("X-App", "yes")])
    )

    def client() -> Any:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            return ws.response

    with trio.fail_after(TIMEOUT):
        response = await in_thread(client)
    assert response.status_code == 101
    assert response.headers["Set-Cookie"] == "session=abc"
    assert response.headers["X-App"] == "yes"


async def test_app_headers_go_out_on_the_sse_200(start_server: Any) -> None:
    server = await start_server(push_app(Recorder(), headers={"Set-Cookie": "session=abc"}))
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            headers = es.response.headers
            status = es.response.status_code
    assert status == 200
    assert headers["set-cookie"] == "session=abc"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"


def refusing(handler: Any, status: int) -> Any:
    def app(env: dict[str, Any]) -> Any:
        env["rack.upgrade"] = handler
        return status, {"content-type": "text/plain"}, b"go away"

    return app


async def test_status_300_or_more_with_a_handler_is_a_normal_response_for_websocket(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(refusing(rec, 403))

    def client() -> None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/"):
            pass

    with trio.fail_after(TIMEOUT), pytest.raises(InvalidStatus) as info:
        await in_thread(client)
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"go away"
    assert rec.events == []


async def test_status_300_or_more_with_a_handler_is_a_normal_response_for_sse(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(refusing(rec, 401))
    async with http_client() as http:
        response = await http.get(
            f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"}
        )
    assert response.status_code == 401
    assert response.text == "go away"
    assert rec.events == []


async def test_no_handler_gives_a_normal_response_to_a_websocket_request(
    start_server: Any,
) -> None:
    def app(env: dict[str, Any]) -> Any:
        assert env["rack.upgrade?"] == "websocket"
        return 200, {"content-type": "text/plain"}, b"no push here"

    server = await start_server(app)
    # A second Connection header (the tokens add up): close after answering.
    request, _key = ws_handshake("/", "Connection: close\r\n")
    [(status, _headers, body)] = parse_responses(await exchange(server.port, request))
    assert status == 200
    assert body == b"no push here"


async def test_no_handler_gives_a_normal_response_to_an_sse_request(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        assert env["rack.upgrade?"] == "sse"
        return 200, {"content-type": "text/plain"}, b"no stream here"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(
            f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"}
        )
    assert response.status_code == 200
    assert response.text == "no stream here"


async def test_status_0_with_a_handler_upgrades(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec, status=0))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            rec.clients[0].write("upgraded")
            assert await ws.get_message() == "upgraded"
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            status = es.response.status_code
    assert status == 200
    assert [c.protocol for c in rec.clients] == ["websocket", "sse"]


async def test_upgrade_query_is_none_for_plain_requests(start_server: Any) -> None:
    seen: list[Any] = []

    def app(env: dict[str, Any]) -> Any:
        seen.append(env["rack.upgrade?"])
        return 200, {}, b"ok"

    server = await start_server(app)
    async with http_client() as http:
        await http.get(f"http://127.0.0.1:{server.port}/")
        await http.post(f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"})
    assert seen == [None, None]


async def test_handler_on_a_plain_request_is_ignored(start_server: Any) -> None:
    rec = Recorder()

    def app(env: dict[str, Any]) -> Any:
        env["rack.upgrade"] = rec
        return 200, {"content-type": "text/plain"}, b"just a page"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert (response.status_code, response.text) == (200, "just a page")
    assert rec.events == []


async def test_upgrade_pipelined_after_a_plain_request(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    handshake, _key = ws_handshake("/ws")
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n" + handshake)
            buf = bytearray()
            received = await read_until(stream, b"HTTP/1.1 101 ", buf)
            await read_until(stream, b"\r\n\r\n", buf)
            await rec.opened.wait()
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"hello" in received
    assert rec.clients[0].env["PATH_INFO"] == "/ws"
