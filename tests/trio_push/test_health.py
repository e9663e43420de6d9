"""``health_path``: liveness and readiness, answered before the app, over
HTTP/1.1 and HTTP/2; readiness is 503 while a drain is under way and while
Redis is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

import trio_push
from tests.helpers.pubsub import PushClient, RedisServer, engine
from tests.helpers.server import TIMEOUT, push_app, read_all, wait_for

StartServer = Callable[..., Awaitable[trio_push.Server]]


class Idle:
    """A push handler that does nothing (its client does not answer the
    server's close either, so a drain lasts)."""


async def get(port: int, path: str, *, http2: bool = False) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", http1=not http2, http2=http2, timeout=TIMEOUT
    ) as client:
        return await client.get(path)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_liveness_and_readiness_come_before_the_app(
    start_server: StartServer, http2: bool
) -> None:
    server = await start_server(push_app(Idle()), health_path="/healthz")
    alive = await get(server.port, "/healthz", http2=http2)
    assert alive.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert (alive.status_code, alive.text) == (200, "ok\n")
    ready = await get(server.port, "/healthz/ready", http2=http2)
    assert (ready.status_code, ready.text) == (200, "ready\n")
    # Other paths, under it or not, are the app's.
    assert (await get(server.port, "/healthz/other", http2=http2)).text == "hello"
    assert (await get(server.port, "/", http2=http2)).text == "hello"


async def test_without_health_path_the_app_answers_it(start_server: StartServer) -> None:
    server = await start_server(push_app(Idle()))
    assert (await get(server.port, "/healthz")).text == "hello"


async def test_readiness_is_503_while_a_drain_is_under_way(
    nursery: trio.Nursery, serve_scope: Callable[..., Awaitable[Any]]
) -> None:
    server, _, done = await serve_scope(
        push_app(Idle()), health_path="/health", drain_timeout=3.0, close_timeout=1.0
    )
    client = await PushClient.connect(server.port, "/")
    nursery.start_soon(client.run)
    # A request whose head is under way when the stop begins is still answered.
    probe = await trio.open_tcp_stream("127.0.0.1", server.port)
    await probe.send_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\n")
    # Read by the server before the stop (an idle connection would be closed).
    await wait_for(
        lambda: any(c._http is not None and not c._http.idle for c in server.connections)
    )
    server.stop()
    with trio.fail_after(TIMEOUT):
        while not server.stopping:
            await trio.sleep(0.01)
    await probe.send_all(b"\r\n")
    with trio.fail_after(TIMEOUT):
        answer = await read_all(probe)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert answer.endswith(b"draining\n")
    assert not done.is_set()  # the push client still holds the drain
    await client.wait_for(lambda c: c.closed)


async def test_readiness_follows_redis(start_server: StartServer, redis: RedisServer) -> None:
    server = await start_server(push_app(Idle()), health_path="/health", pubsub=engine(redis))

    async def ready_is(status: int, text: str) -> None:
        with trio.fail_after(TIMEOUT):
            while True:
                answer = await get(server.port, "/health/ready")
                if answer.status_code == status:
                    assert answer.text == text
                    return
                await trio.sleep(0.05)

    await ready_is(200, "ready\n")
    redis.kill()
    await ready_is(503, "redis down\n")
    # Liveness is not readiness: the process still serves.
    assert (await get(server.port, "/health")).status_code == 200
    redis.start()
    await ready_is(200, "ready\n")
