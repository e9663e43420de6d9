"""``subscriber_count(channel, cluster=True)``: the clients of every process
sharing a Redis, from per-process counts in Redis with a heartbeat; engines
in this process, and ``--workers 2 --redis`` with a worker killed."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import trio

import trio_push
from tests.apps import pubsub_app
from tests.helpers.procs import ROOT
from tests.helpers.pubsub import (
    PushClient,
    RedisServer,
    ServerProcess,
    Subscribe,
    connect_clients,
    http_get,
    start,
)
from tests.helpers.server import TIMEOUT
from trio_push._redis import HEARTBEAT_LIFETIMES

HEARTBEAT = 0.5
BOUND = HEARTBEAT * HEARTBEAT_LIFETIMES


async def app(env: dict[str, Any]) -> Any:
    """``pubsub_app``, and ``/cluster?ch=NAME``: ``pid count`` with
    ``subscriber_count(NAME, cluster=True)`` (called from a thread: on the
    event loop it would block it), ``/acluster?ch=NAME`` the same through
    ``subscriber_count_async``."""
    path = env["PATH_INFO"]
    channel = parse_qs(env.get("QUERY_STRING", "")).get("ch", [""])[0]
    if path == "/cluster":
        count = await trio.to_thread.run_sync(trio_push.subscriber_count, channel, True)
    elif path == "/acluster":
        count = await trio_push.subscriber_count_async(channel, cluster=True)
    else:
        return pubsub_app.app(env)
    return 200, {"content-type": "text/plain"}, f"{os.getpid()} {count}"


async def settles(count: Callable[[], Awaitable[int]], expected: int, bound: float) -> None:
    """Poll ``count`` until it is ``expected``, failing after ``bound`` seconds."""
    seen = None
    with trio.move_on_after(bound):
        while (seen := await count()) != expected:
            await trio.sleep(0.02)
    assert seen == expected


def redis_engine(redis: RedisServer) -> trio_push.RedisPubSub:
    return trio_push.RedisPubSub(redis.url, backoff_max=0.2, heartbeat=HEARTBEAT)


# -- engines in this process --------------------------------------------------------


async def test_two_engines_count_each_others_clients_exact_and_by_pattern(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    one = redis_engine(redis)
    two = redis_engine(redis)
    server_one = await start(nursery, Subscribe("room.1"), pubsub=one)
    server_two = await start(nursery, Subscribe("room.*"), pubsub=two)
    exact = await connect_clients(nursery, server_one.port, 3)
    by_pattern = await connect_clients(nursery, server_two.port, 2, protocol="sse")

    await settles(lambda: one.cluster_count("room.1"), 5, TIMEOUT)
    assert await two.cluster_count("room.1") == 5
    assert await one.cluster_count("room.2") == 2  # the pattern's only
    assert await one.cluster_count("lobby") == 0
    assert one.count("room.1") == 3 and two.count("room.1") == 2  # each its own
    assert one.process_id != two.process_id

    await exact[0].aclose()
    await by_pattern[0].aclose()
    await settles(lambda: two.cluster_count("room.1"), 3, TIMEOUT)
    assert await one.cluster_count("room.2") == 1


async def test_a_client_on_a_channel_and_a_pattern_counts_twice_across_processes(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    engine = redis_engine(redis)
    server = await start(nursery, Subscribe("news", "n*"), pubsub=engine)
    await connect_clients(nursery, server.port, 1)
    await settles(lambda: engine.cluster_count("news"), 2, TIMEOUT)
    assert engine.count("news") == 1  # in its process, once


async def test_a_burst_of_joins_is_one_write(nursery: trio.Nursery, redis: RedisServer) -> None:
    engine = redis_engine(redis)
    channels = [f"c{i}" for i in range(1000)]
    server = await start(nursery, Subscribe(*channels), pubsub=engine)
    await settles(lambda: engine.cluster_count("lobby"), 0, TIMEOUT)  # connected

    def hset_calls() -> int:
        stats = redis.call("INFO", "commandstats").decode()
        match = re.search(r"cmdstat_hset:calls=(\d+)", stats)
        return int(match.group(1)) if match else 0

    before = hset_calls()
    await connect_clients(nursery, server.port, 1)
    await settles(lambda: engine.cluster_count("c999"), 1, TIMEOUT)
    key = b"{tp}:c:" + (engine.process_id or "").encode()
    assert redis.call("HLEN", key) == 1000
    assert hset_calls() - before == 2  # 512 fields a command


async def test_sync_and_async_counts_from_a_thread_and_the_loop(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    engine = redis_engine(redis)
    server = await start(nursery, Subscribe("t"), pubsub=engine)
    await connect_clients(nursery, server.port, 2)
    await settles(lambda: trio_push.subscriber_count_async("t", cluster=True), 2, TIMEOUT)
    in_thread = await trio.to_thread.run_sync(trio_push.subscriber_count, "t", True)
    assert in_thread == 2
    with pytest.raises(RuntimeError, match="subscriber_count_async"):
        trio_push.subscriber_count("t", cluster=True)
    assert await trio_push.subscriber_count_async("t") == 2


async def test_the_memory_engine_counts_this_process(nursery: trio.Nursery) -> None:
    server = await start(nursery, Subscribe("m", "m*"))
    await connect_clients(nursery, server.port, 2)
    assert await trio_push.subscriber_count_async("m", cluster=True) == 2
    assert await server.pubsub.cluster_count("m") == 2  # type: ignore[attr-defined]


async def test_a_stopped_engine_takes_its_counts_with_it(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    one = redis_engine(redis)
    server = await start(nursery, Subscribe("s"), pubsub=one)
    await connect_clients(nursery, server.port, 2)
    two = redis_engine(redis)
    async with trio.open_nursery() as other:
        await start(other, Subscribe("s"), pubsub=two)
        await settles(lambda: one.cluster_count("s"), 2, TIMEOUT)
        other.cancel_scope.cancel()
    name = (two.process_id or "").encode()
    assert redis.call("ZSCORE", b"{tp}:procs", name) is None
    assert redis.call("EXISTS", b"{tp}:c:" + name) == 0
    assert await one.cluster_count("s") == 2


async def test_counts_are_written_again_when_redis_comes_back(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    engine = redis_engine(redis)
    server = await start(nursery, Subscribe("r", "r*"), pubsub=engine)
    await connect_clients(nursery, server.port, 2)
    await settles(lambda: engine.cluster_count("r"), 4, TIMEOUT)
    redis.kill()
    with trio.fail_after(TIMEOUT):
        while engine.connected:
            await trio.sleep(0.01)
    with pytest.raises(ConnectionError):
        await engine.cluster_count("r")
    redis.start()  # the same port, nothing stored

    async def count() -> int:
        try:
            return await engine.cluster_count("r")
        except ConnectionError:
            return -1  # not reconnected yet

    await settles(count, 4, TIMEOUT)


async def test_no_heartbeat_no_cluster_count(nursery: trio.Nursery, redis: RedisServer) -> None:
    engine = trio_push.RedisPubSub(redis.url, heartbeat=None)
    await start(nursery, Subscribe("x"), pubsub=engine)
    with pytest.raises(RuntimeError, match="heartbeat=None"):
        await engine.cluster_count("x")
    assert redis.call("ZCARD", b"{tp}:procs") == 0


# -- --workers 2 --redis ---------------------------------------------------------------


@pytest.fixture
def workers(redis: RedisServer) -> Iterator[ServerProcess]:
    process = ServerProcess(
        "tests.trio_push.test_cluster_count:app",
        "--workers",
        "2",
        "--redis",
        redis.url,
        "--redis-heartbeat",
        str(HEARTBEAT),
        cwd=ROOT,
    )
    try:
        yield process
    finally:
        process.stop()


async def clients_on_both_workers(
    nursery: trio.Nursery, port: int, per_worker: int
) -> dict[str, list[PushClient]]:
    """Connect (WebSocket and SSE in turn, on ``room`` or ``ro*``) until
    each of the two workers has ``per_worker`` clients: the kernel picks
    the worker of each connection. The clients, by worker pid."""
    found: dict[str, list[PushClient]] = {}
    n = 0
    with trio.fail_after(TIMEOUT):
        while len(found) < 2 or any(len(c) < per_worker for c in found.values()):
            n += 1
            path = "/sub?ch=room" if n % 3 else "/sub?ch=ro*"
            try:
                client = await PushClient.connect(port, path, "sse" if n % 2 else "websocket")
            except OSError:
                await trio.sleep(0.05)  # a worker not listening yet
                continue
            nursery.start_soon(client.run)
            (greeting,) = await client.wait_messages(1)
            mine = found.setdefault(str(greeting).split()[1], [])
            if len(mine) < per_worker:
                mine.append(client)
            else:
                await client.aclose()
    return found


async def cluster(port: int, route: str = "/cluster") -> int:
    """The count of ``room`` a worker gives; a connection the kernel gave a
    worker just killed is tried again."""
    while True:
        try:
            return int((await http_get(port, f"{route}?ch=room")).split()[1])
        except (OSError, trio.BrokenResourceError):
            await trio.sleep(0.02)


async def test_workers_count_every_client_and_forget_a_killed_worker(
    nursery: trio.Nursery, redis: RedisServer, workers: ServerProcess
) -> None:
    port = workers.port
    clients = await clients_on_both_workers(nursery, port, 4)
    first, second = clients
    await settles(lambda: cluster(port), 8, TIMEOUT)
    assert await cluster(port, "/acluster") == 8

    # Leaves on both workers: the count follows, exactly.
    for pid in (first, second):
        await clients[pid].pop().aclose()
    await settles(lambda: cluster(port), 6, TIMEOUT)
    assert await cluster(port, "/acluster") == 6

    # A worker killed without a word: its clients stop counting within
    # the heartbeat bound (the supervisor starts another meanwhile).
    killed = trio.current_time()
    os.kill(int(first), signal.SIGKILL)
    with trio.fail_after(TIMEOUT):
        for client in clients[first]:
            await client.wait_for(lambda c: c.closed)
    # (A second for the requests that poll.)
    await settles(lambda: cluster(port), 3, killed + BOUND + 1.0 - trio.current_time())
