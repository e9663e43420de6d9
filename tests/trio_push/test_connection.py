"""What an idle push connection keeps: one task. A writer exists only while a
send waits for the socket, a dispatcher only while callbacks are queued."""

from __future__ import annotations

import contextlib
from typing import Any

import trio
from trio_websocket import open_websocket_url

import trio_push
from tests.helpers.server import TIMEOUT, http_client, push_app, wait_for

N = 10  # WebSocket clients, and as many SSE clients


class Subscriber:
    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe("t")


async def test_idle_connections_are_one_task_each_and_a_burst_adds_none(
    start_server: Any,
) -> None:
    server = await start_server(push_app(Subscriber()))
    # The server's own tasks (timer, flusher, pub/sub engine, acceptor's).
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
