"""A graceful shutdown loses no callback: exactly one on_close for every
on_open, with worker threads and async callbacks still running at the drain
deadline; sync bodies iterate in the pool; the bound is a bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import trio_push
from tests.helpers.server import TIMEOUT, RawWebSocket, exchange, push_app


class Counting:
    """Sync callbacks that take a while, as a database write would."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.opened: list[int] = []
        self.shut: list[int] = []
        self.closed: list[int] = []

    def on_open(self, client: trio_push.Client) -> None:
        with self.lock:
            self.opened.append(id(client))

    def on_shutdown(self, client: trio_push.Client) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.shut.append(id(client))

    def on_close(self, client: trio_push.Client) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.closed.append(id(client))


async def reader(port: int, codes: list[int | None], ready: trio.Semaphore) -> None:
    """A WebSocket client that reads until the server closes it."""
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            ready.release()
            while True:
                await ws.get_message()
    except ConnectionClosed as exc:
        codes.append(exc.reason.code)
    except OSError:
        codes.append(None)


async def stop_with_readers(
    server: trio_push.Server, done: trio.Event, n: int, opened: Callable[[], int]
) -> list[int | None]:
    """Connect ``n`` readers, stop the server once ``opened()`` counts them
    all, and wait for serve to return; the close code each reader got."""
    codes: list[int | None] = []
    ready = trio.Semaphore(0)
    async with trio.open_nursery() as clients:
        for _ in range(n):
            clients.start_soon(reader, server.port, codes, ready)
        with trio.fail_after(TIMEOUT):
            for _ in range(n):
                await ready.acquire()
            while opened() < n:
                await trio.sleep(0.01)
        server.stop()
        with trio.fail_after(TIMEOUT):
            await done.wait()
    return codes


async def test_every_on_open_gets_one_on_close_with_threads_at_the_drain_deadline(
    serve_scope: Any,
) -> None:
    # 300 x 20 ms of on_shutdown on 4 threads is 1.5 s: the 0.5 s drain
    # ends in the middle of them.
    n = 300
    handler = Counting(0.02)
    server, _, done = await serve_scope(
        push_app(handler), threads=4, drain_timeout=0.5, close_timeout=5.0
    )
    codes = await stop_with_readers(server, done, n, lambda: len(handler.opened))
    assert sorted(handler.closed) == sorted(handler.opened)
    assert len(set(handler.closed)) == n
    # The drain ended before every on_shutdown ran; those that ran, ran once.
    assert len(set(handler.shut)) == len(handler.shut) < n
    # Every client got its close frame, on time or at the deadline.
    assert codes == [1001] * n


class AsyncClose:
    def __init__(self) -> None:
        self.opened = 0
        self.finished = 0

    def on_open(self, client: trio_push.Client) -> None:
        self.opened += 1

    async def on_close(self, client: trio_push.Client) -> None:
        await trio.sleep(0.3)  # still awaiting when the drain ends
        self.finished += 1


async def test_an_async_on_close_still_awaiting_at_the_drain_deadline_finishes(
    serve_scope: Any,
) -> None:
    n = 50
    handler = AsyncClose()
    server, _, done = await serve_scope(push_app(handler), drain_timeout=0.1, close_timeout=5.0)
    await stop_with_readers(server, done, n, lambda: handler.opened)
    assert handler.finished == n


async def test_a_worker_thread_busy_past_the_bound_does_not_hold_the_exit(
    serve_scope: Any,
) -> None:
    finished = threading.Event()

    def app(env: dict[str, Any]) -> Any:
        time.sleep(2)
        finished.set()
        return 200, {"content-type": "text/plain"}, b"late answer"

    server, _, done = await serve_scope(app, threads=2, drain_timeout=0.3, close_timeout=0.3)
    async with trio.open_nursery() as nursery:
        answer: list[bytes] = []

        async def ask() -> None:
            answer.append(
                await exchange(
                    server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
            )

        nursery.start_soon(ask)
        await trio.sleep(0.2)  # the app is running in its thread
        server.stop()
        with trio.fail_after(TIMEOUT):
            await done.wait()
        # serve returned while the thread still works, and nothing it
        # answers later is sent.
        assert not finished.is_set()
    assert answer == [b""]
    await trio.to_thread.run_sync(finished.wait, TIMEOUT)
    await trio.sleep(0.1)
    assert answer == [b""]


async def test_a_websocket_opened_during_the_drain_still_gets_on_close(
    serve_scope: Any,
) -> None:
    handler = Counting(0.0)
    server, _, done = await serve_scope(push_app(handler), threads=2, drain_timeout=0.5)
    ws = await RawWebSocket.open(server.port)
    with trio.fail_after(TIMEOUT):
        while not handler.opened:
            await trio.sleep(0.01)
        server.stop()
        await ws.close_code()
        await done.wait()
    assert handler.closed == handler.opened
    await ws.aclose()
