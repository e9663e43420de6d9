"""Bounded send queues, keepalives, and frames that arrive early or too big."""

from __future__ import annotations

from typing import Any

import trio
from websockets.exceptions import ConnectionClosed as WSClosed

from tests.helpers.frames import TEXT, frame
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    Recorder,
    connect,
    in_thread,
    push_app,
    read_until,
    wait_for,
    ws_connect,
    ws_handshake,
)


async def test_idle_websocket_gets_pings(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), ping_interval=0.05)
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        with trio.move_on_after(0.4):
            while True:
                await ws._pump()
    assert ws.pings >= 2
    assert rec.names() == ["open"]  # answered pings keep it open
    await ws.aclose()


async def test_peer_that_never_pongs_is_aborted_and_on_close_runs(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), ping_interval=0.05, pong_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        ws.auto_pong = False
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while await ws._pump():
                    pass

            nursery.start_soon(read)
            await rec.closed.wait()
    assert ws.pings >= 1
    assert rec.names() == ["open", "close"]
    await ws.aclose()


async def test_server_answers_client_pings(start_server: Any) -> None:
    server = await start_server(push_app(Recorder()))

    def client() -> bool:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            return ws.ping(b"are you there").wait(TIMEOUT)  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) is True


async def test_idle_sse_stream_gets_keepalive_comments(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), sse_keepalive=0.05)
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(
                b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
            )
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
            # Two comment lines, each its own chunk.
            await read_until(stream, b"2\r\n:\n\r\n", buf)
            await read_until(stream, b"2\r\n:\n\r\n", buf)
    assert head.startswith(b"HTTP/1.1 200 ")


async def test_frame_sent_with_the_handshake_is_not_lost(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    request, _key = ws_handshake("/")
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(request + frame(TEXT, b"eager"))
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
            await wait_for(lambda: "message" in rec.names())
    assert head.startswith(b"HTTP/1.1 101 ")
    assert [d for n, d in rec.events if n == "message"] == ["eager"]


async def test_message_over_the_size_limit_closes_1009(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), max_message_size=1000)

    def client() -> int | None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("x" * 2000)
            try:
                ws.recv(timeout=TIMEOUT)
            except WSClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == 1009
        await rec.closed.wait()
    assert "message" not in rec.names()
