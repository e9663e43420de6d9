"""What an idle push connection keeps: one task. A writer exists only while a
send waits for the socket, a dispatcher only while callbacks are queued.

And what it costs the server, measured with tracemalloc: thousands of
connections sit idle at once, so their size is the server's size. Everything
the server keeps for one (its task and socket, the push session, the client,
the protocol core, the env) must stay under a budget. The clients run in
another process, so that only the server's allocations are counted; the
figure is the growth of traced memory divided by the number of connections,
after a first round has warmed the caches up."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

import trio_push
from tests.helpers.server import (
    TIMEOUT,
    connect,
    http_client,
    push_app,
    read_until,
    wait_for,
    ws_handshake,
)

N = 10  # WebSocket clients, and as many SSE clients


class Subscriber:
    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe("t")


async def test_idle_connections_are_one_task_each_and_a_burst_adds_none(
    start_server: Any,
) -> None:
    server = await start_server(push_app(Subscriber()))
    # The server's own tasks (timer, flusher, pub/sub engine, read poller, acceptor's).
    baseline = len(server.conn_nursery.child_tasks)
    got: list[list[str]] = []
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(http_client())
        sockets = [
            await stack.enter_async_context(open_websocket_url(f"ws://127.0.0.1:{server.port}/"))
            for _ in range(N)
        ]
        streams = [
            await stack.enter_async_context(
                http.stream(
                    "GET",
                    f"http://127.0.0.1:{server.port}/events",
                    headers={"accept": "text/event-stream"},
                )
            )
            for _ in range(N)
        ]
        await wait_for(lambda: server.pubsub.count("t") == 2 * N)
        # on_open's dispatchers have ended: one task per connection is left.
        await wait_for(lambda: len(server.conn_nursery.child_tasks) == baseline + 2 * N)

        async def read_ws(ws: Any) -> None:
            got.append([await ws.get_message() for _ in range(100)])

        async def read_sse(response: Any) -> None:
            lines: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:])
                    if len(lines) == 100:
                        break
            got.append(lines)

        async with trio.open_nursery() as readers:
            for ws in sockets:
                readers.start_soon(read_ws, ws)
            for response in streams:
                readers.start_soon(read_sse, response)
            with trio.fail_after(TIMEOUT):
                for i in range(100):
                    trio_push.publish("t", f"m{i}")
                await wait_for(lambda: len(got) == 2 * N)
    assert got == [[f"m{i}" for i in range(100)]] * (2 * N)
    # Every socket took its burst at once: no writer task was left behind.
    await wait_for(lambda: len(server.conn_nursery.child_tasks) == baseline)


async def test_a_request_whose_bytes_come_late_and_in_pieces_is_answered_as_one_sent_at_once(
    start_server: Any,
) -> None:
    # A connection's first bytes are read at once if they are there, else
    # waited for (within idle_timeout): both give the same answer.
    server = await start_server(push_app(Idle()))
    request, _ = ws_handshake("/")
    heads = []
    for pieces, delay in (((request,), 0.0), ((request[:2], request[2:]), 0.2)):
        with trio.fail_after(TIMEOUT):
            async with await connect(server.port) as stream:
                for piece in pieces:
                    await trio.sleep(delay)  # the connection waits for its bytes
                    await stream.send_all(piece)
                heads.append(await read_until(stream, b"\r\n\r\n", bytearray()))
    assert heads[0].startswith(b"HTTP/1.1 101 ")
    assert heads[1] == heads[0]


BUDGET_CONNECTIONS = 200

#: Bytes per idle connection: what the server measured when the budget was
#: set (WebSocket 4,840, SSE 4,740), plus 5%. Issue 18's targets are 6 KiB
#: and 5 KiB (it was 7,060 and 6,690 before).
BUDGET = {"websocket": 5100, "sse": 4980}

_CLIENT = r"""
import socket, sys
port, kind, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if kind == "websocket":
    head = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
else:
    head = b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
held = []
for _ in range(n):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head)
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(4096)
    held.append(sock)
print("ready", flush=True)
sys.stdin.read()
"""


class Idle:
    def __init__(self) -> None:
        self.opened = self.closed = 0

    def on_open(self, client: trio_push.Client) -> None:
        self.opened += 1

    def on_message(self, client: trio_push.Client, data: Any) -> None:
        client.write(data)

    def on_close(self, client: trio_push.Client) -> None:
        self.closed += 1


async def _hold(port: int, kind: str, handler: Idle, measure: bool) -> int:
    """Open BUDGET_CONNECTIONS idle connections from another process; the traced bytes they
    added to this one (measured while they are open), 0 without ``measure``."""
    opened, closed = handler.opened, handler.closed
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _CLIENT, str(port), kind, str(BUDGET_CONNECTIONS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    try:
        with trio.fail_after(TIMEOUT):
            assert await process.stdout.receive_some(100) == b"ready\n"
        await wait_for(lambda: handler.opened == opened + BUDGET_CONNECTIONS)
        await trio.sleep(0.2)  # on_open's dispatchers end
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        await process.stdin.aclose()
        with trio.fail_after(TIMEOUT):
            await process.wait()
    await wait_for(lambda: handler.closed == closed + BUDGET_CONNECTIONS)
    return grown if measure else 0


@pytest.mark.parametrize("kind", ["websocket", "sse"])
async def test_an_idle_push_connection_stays_under_its_byte_budget(
    nursery: trio.Nursery, kind: str
) -> None:
    handler = Idle()

    def app(env: dict[str, Any]) -> Any:
        if env["rack.upgrade?"]:
            env["rack.upgrade"] = handler
            return 200, {}, []
        return 404, {}, []

    server = await nursery.start(trio_push.serve, app, 0)
    tracemalloc.start(1)
    try:
        await _hold(server.port, kind, handler, measure=False)  # warm-up
        per_connection = await _hold(server.port, kind, handler, measure=True) / BUDGET_CONNECTIONS
    finally:
        tracemalloc.stop()
    print(f"{kind}: {per_connection:.0f} bytes per idle connection")
    assert per_connection <= BUDGET[kind], (
        f"an idle {kind} connection costs {per_connection:.0f} bytes, over its budget of"
        f" {BUDGET[kind]}"
    )
