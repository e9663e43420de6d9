"""A closed connection is freed by reference counting, not by the cyclic
garbage collector.

With ``tune_gc`` (on by default) the collector runs rarely, so any reference
cycle a closed connection is left in waits, with everything it holds (its
core, wsproto's state, the socket objects, the env), and a server that many
clients connect to and leave grows. The first tests churn every kind of
connection with the collector off and count what is left; the last one churns
WebSocket connections through a server in a subprocess, as deployed, and
watches its RSS.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import wsproto.events as wse
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url
from wsproto.frame_protocol import FrameProtocol

import sansio_push
from tests.helpers.procs import vm_rss_kib
from tests.helpers.pubsub import ServerProcess
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    http_client,
    in_thread,
    push_app,
    wait_for,
    ws_connect,
)
from trio_push import Client
from trio_push._connection import Connection

# Connections of each kind per test: enough that one left per connection
# shows, few enough to stay quick.
N = 60


class Echo:
    """Echoes messages; on SSE, writes one event on open."""

    def on_open(self, client: Any) -> None:
        if client.protocol == "sse":
            client.write("hello")

    def on_message(self, client: Any, data: Any) -> None:
        client.write(data)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def left_alive() -> dict[str, int]:
    """The connections' objects alive, by type (only reference counting has
    freed anything since collector_off started)."""
    counts = dict.fromkeys(("Connection", "Client", "ServerConnection", "FrameProtocol"), 0)
    for o in gc.get_objects():
        # type(), not isinstance(): the latter raises on a dead weak proxy.
        kind = type(o)
        if kind in (Connection, Client, sansio_push.ServerConnection):
            counts[kind.__name__] += 1
        elif kind is FrameProtocol and not o.client:  # the test's clients have theirs
            counts["FrameProtocol"] += 1
    return counts


async def websocket(port: int) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send_message("hi")
        assert await ws.get_message() == "hi"


async def websocket_fragmented(port: int) -> None:
    # A fragment hands the connection to wsproto, which reads it to the end.
    ws = await RawWebSocket.open(port, "/ws")
    await ws.stream.send_all(
        ws.ws.send(wse.TextMessage(data="h", message_finished=False))
        + ws.ws.send(wse.TextMessage(data="i", message_finished=True))
    )
    assert await ws.messages(1) == ["hi"]
    await ws.stream.send_all(ws.ws.send(wse.CloseConnection(code=1000)))
    assert await ws.close_code() == 1000
    await ws.aclose()


async def websocket_dropped(port: int) -> None:
    # The peer goes away in the middle of a message: no close frame.
    ws = await RawWebSocket.open(port, "/ws")
    await ws.stream.send_all(ws.ws.send(wse.TextMessage(data="h", message_finished=False)))
    await ws.aclose()


def _deflate_round_trip(port: int) -> None:
    with ws_connect(f"ws://127.0.0.1:{port}/ws", compression="deflate") as ws:
        ws.send("hi" * 100)
        assert ws.recv() == "hi" * 100


async def websocket_deflate(port: int) -> None:
    await in_thread(_deflate_round_trip, port)


async def sse(port: int) -> None:
    async with (
        http_client() as http,
        aconnect_sse(http, "GET", f"http://127.0.0.1:{port}/sse") as source,
    ):
        async for event in source.aiter_sse():
            assert event.data == "hello"
            break


async def http_keep_alive(port: int) -> None:
    async with http_client() as http:
        for _ in range(3):
            response = await http.get(f"http://127.0.0.1:{port}/")
            assert response.text == "hello"


@pytest.mark.parametrize(
    ("client", "options"),
    [
        (websocket, {}),
        (websocket_fragmented, {}),
        (websocket_dropped, {}),
        (websocket_deflate, {"compression": True}),
        (sse, {}),
        (http_keep_alive, {}),
    ],
    ids=lambda p: getattr(p, "__name__", "-"),
)
async def test_a_closed_connection_is_freed_by_reference_counting(
    start_server: Any, client: Callable[[int], Awaitable[None]], options: dict[str, Any]
) -> None:
    server = await start_server(push_app(Echo()), **options)
    await client(server.port)  # what is made once (imports, caches) is not counted
    await wait_for(lambda: not server.connections)
    with collector_off():
        before = left_alive()
        with trio.fail_after(TIMEOUT):
            for _ in range(N):
                await client(server.port)
        await wait_for(lambda: not server.connections)
        after = left_alive()
    assert after == before, f"left alive after {N} connections: {after}, before: {before}"


class Keeper(Echo):
    """Keeps every client after on_close, as an app may."""

    def __init__(self) -> None:
        self.closed: list[Any] = []

    def on_close(self, client: Any) -> None:
        self.closed.append(client)


@pytest.mark.parametrize("client", [websocket, sse], ids=lambda c: c.__name__)
async def test_a_client_kept_after_on_close_still_answers(
    start_server: Any, client: Callable[[int], Awaitable[None]]
) -> None:
    keeper = Keeper()
    server = await start_server(push_app(keeper))
    await client(server.port)
    await wait_for(lambda: len(keeper.closed) == 1 and not server.connections)
    kept = keeper.closed[0]
    assert kept.write("late") is False
    assert kept.open is False
    assert kept.env["PATH_INFO"] in ("/ws", "/sse")
    assert "closed" in repr(kept)
    kept.close()  # idempotent, closed or not


# -- churn, as deployed ------------------------------------------------------------

_UPGRADE = (
    b"GET /sub?ch=churn HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
# A masked close frame, code 1000 (a zero mask leaves the payload as is).
_CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"
# Connections open at once in each wave: many are open whenever the collector
# runs, so that a cycle it finds alive is promoted and waits much longer.
_WAVE = 500
_WAVES = 20
# RSS growth allowed past the warm-up waves. Before closed connections were
# freed by reference counting, 20 waves added about 18 MB; now well under 1.
_MAX_GROWTH_MB = 4.0


async def _open_websocket(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_UPGRADE)
    received = b""
    while b"hello" not in received:  # pubsub_app's first message
        data = await stream.receive_some(65536)
        assert data, f"closed before the first message: {received!r}"
        received += data
    return stream


async def _close_websocket(stream: trio.SocketStream) -> None:
    await stream.send_all(_CLOSE)
    while await stream.receive_some(65536):
        pass
    await stream.aclose()


async def _wave(port: int) -> None:
    """Open _WAVE WebSocket connections (ten at a time), then close them all."""
    streams: list[trio.SocketStream] = []

    async def opener() -> None:
        for _ in range(_WAVE // 10):
            streams.append(await _open_websocket(port))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(opener)
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(_close_websocket, stream)


async def test_churned_websocket_connections_leave_the_rss_flat() -> None:
    # The CLI's server, tune_gc on as by default; it subscribes each
    # connection to a channel, so closing also leaves pub/sub.
    server = ServerProcess("pubsub_app:app", "--no-access-log")
    try:
        port = server.port
        started = time.monotonic()
        with trio.fail_after(60):
            for _ in range(2):  # warm-up: what _WAVE open connections need
                await _wave(port)
            warm = vm_rss_kib(server.process.pid) / 1024
            for _ in range(_WAVES):
                await _wave(port)
        end = vm_rss_kib(server.process.pid) / 1024
    finally:
        server.stop()
    assert end - warm < _MAX_GROWTH_MB, (
        f"RSS {warm:.1f} MB after the warm-up, {end:.1f} MB after "
        f"{_WAVES * _WAVE} more connections ({time.monotonic() - started:.1f}s)"
    )
