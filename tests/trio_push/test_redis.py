"""Pub/sub through a real redis-server: engines in this process, servers in
subprocesses, Redis going away and coming back, and ``--workers``."""

from __future__ import annotations

import functools
import random
import socket
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import trio

import trio_push
from tests.helpers.pubsub import (
    PushClient,
    RedisServer,
    ServerProcess,
    Subscribe,
    connect_clients,
    engine,
    http_get,
    start,
)
from tests.helpers.server import TIMEOUT, wait_for
from trio_push._pubsub import glob_match
from trio_push._redis import command, parse_url

# -- matching -------------------------------------------------------------------------


def test_glob_patterns_match_exactly_what_redis_matches(redis: RedisServer) -> None:
    rng = random.Random(4)
    patterns = {"chat.*", "room.?", "[ab]", "[^a]", "[a-c]x", "a\\*", "*", "[]", "[a"}
    while len(patterns) < 150:
        patterns.add("".join(rng.choice("ab.-^]\\[*?") for _ in range(rng.randint(1, 6))))
    channels = {"", "chat.1", "chat.", "room.1", "room.12", "a", "b", "c", "ax", "a*", "é"}
    while len(channels) < 150:
        channels.add("".join(rng.choice("ab.-^]\\[") for _ in range(rng.randint(0, 5))))

    def read(sock: socket.socket, reader: Any) -> Any:
        while (reply := reader.gets()) is False:
            reader.feed(sock.recv(65536))
        return reply

    with (
        socket.create_connection(("127.0.0.1", redis.port)) as sub,
        socket.create_connection(("127.0.0.1", redis.port)) as pub,
    ):
        rs, rp = hiredis.Reader(), hiredis.Reader()
        sub.sendall(b"".join(command(b"PSUBSCRIBE", p.encode()) for p in sorted(patterns)))
        for _ in patterns:
            read(sub, rs)
        for channel in sorted(channels):
            pub.sendall(command(b"PUBLISH", channel.encode(), b"x"))
            n = read(pub, rp)
            by_redis = {read(sub, rs)[1].decode() for _ in range(n)}
            ours = {p for p in patterns if glob_match(p, channel)}
            assert ours == by_redis, channel


def test_redis_urls() -> None:
    assert parse_url("redis://10.1.2.3:7000/2") == ("10.1.2.3", 7000, None, None)
    assert parse_url("redis://:s%40cret@h") == ("h", 6379, None, "s@cret")
    assert parse_url("redis://me:pw@h:1/0") == ("h", 1, "me", "pw")
    for bad in ("http://h", "redis://h/x", "redis://h:port"):
        with pytest.raises(ValueError):
            parse_url(bad)


# -- engines in this process ------------------------------------------------------------


async def test_a_publish_reaches_local_subscribers_once_through_redis(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    server = await start(nursery, Subscribe("r", "s.*"), pubsub=engine(redis))
    clients = await connect_clients(nursery, server.port, 2, "websocket")
    clients += await connect_clients(nursery, server.port, 1, "sse")
    await wait_for(lambda: redis.numsub("r") == 1 and redis.numpat() == 1)
    assert trio_push.subscriber_count("r") == 3
    assert trio_push.publish("r", "one")
    assert trio_push.publish("s.1", "two")
    for client in clients:
        await client.wait_messages(2)
    # Any program can publish to trio-push's subscribers.
    redis.call("PUBLISH", "r", "from another program")
    for client in clients:
        assert await client.wait_messages(3) == ["one", "two", "from another program"]


async def test_publish_right_after_subscribe_is_received(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    # SUBSCRIBE and PUBLISH go on different connections: the publisher
    # waits for subscriptions made before it to be in place.
    server = await start(nursery, Subscribe(), pubsub=engine(redis))
    (client,) = await connect_clients(nursery, server.port, 1)
    for i in range(20):
        await client.send_text(f"sub fresh{i}")
        await client.send_text(f"pub fresh{i} m{i}")
    await client.wait_messages(60)
    assert [m for m in client.messages if m.startswith("m")] == [f"m{i}" for i in range(20)]


async def test_order_per_publisher_through_redis(nursery: trio.Nursery, redis: RedisServer) -> None:
    a = await start(nursery, Subscribe("o"), pubsub=engine(redis))
    b = await start(nursery, Subscribe("o"), pubsub=engine(redis))
    clients = await connect_clients(nursery, a.port, 3) + await connect_clients(nursery, b.port, 3)
    await wait_for(lambda: redis.numsub("o") == 2)

    def from_thread() -> None:
        for i in range(500):
            assert b.pubsub.publish("o", f"b{i}")

    thread = trio.to_thread.run_sync(from_thread)
    async with trio.open_nursery() as inner:
        inner.start_soon(lambda: thread)
        for i in range(500):
            assert a.pubsub.publish("o", f"a{i}")
            if i % 50 == 0:
                await trio.sleep(0)
    for client in clients:
        messages = await client.wait_messages(1000)
        assert [m for m in messages if m[0] == "a"] == [f"a{i}" for i in range(500)]
        assert [m for m in messages if m[0] == "b"] == [f"b{i}" for i in range(500)]


async def test_while_redis_is_down_publish_fails_then_resubscribes(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    pubsub = engine(redis)
    server = await start(nursery, Subscribe("d", "d.*"), pubsub=pubsub)
    (client,) = await connect_clients(nursery, server.port, 1)
    await wait_for(lambda: redis.numsub("d") == 1)
    assert await pubsub.publish_confirmed("d", "before") == 1

    redis.kill()
    await wait_for(lambda: not pubsub.connected)
    assert trio_push.publish("d", "lost") is False
    assert pubsub.publish("d", "lost") is False
    with pytest.raises(trio_push.PublishError):
        await pubsub.publish_confirmed("d", "lost")
    assert pubsub.failed == 3

    redis.start()
    await wait_for(lambda: pubsub.connected, timeout=TIMEOUT)
    await wait_for(lambda: redis.numsub("d") == 1 and redis.numpat() == 1)
    assert trio_push.publish("d.x", "after")
    assert await client.wait_messages(2) == ["before", "after"]


# -- servers in subprocesses -------------------------------------------------------------


def spawn(*args: str) -> ServerProcess:
    return ServerProcess("pubsub_app:app", "--log-level", "info", *args)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


async def subscriber(
    nursery: trio.Nursery, port: int, channel: str, protocol: str = "websocket"
) -> tuple[PushClient, str]:
    client = await PushClient.connect(port, f"/sub?ch={channel}", protocol)
    nursery.start_soon(client.run)
    (greeting,) = await client.wait_messages(1)
    assert isinstance(greeting, str) and greeting.startswith("hello ")
    return client, greeting.split()[1]


async def test_two_server_processes_a_publish_on_one_reaches_both(
    nursery: trio.Nursery, redis: RedisServer, processes: list[ServerProcess]
) -> None:
    processes += [spawn("--redis", redis.url), spawn("--redis", redis.url)]
    one, two = processes
    a, _ = await subscriber(nursery, one.port, "news")
    b, _ = await subscriber(nursery, two.port, "news", "sse")
    await wait_for(lambda: redis.numsub("news") == 2)
    assert await http_get(one.port, "/publish?ch=news&msg=from+one") == "True"
    assert await http_get(two.port, "/publish?ch=news&msg=from+two") == "True"
    for client in (a, b):
        assert (await client.wait_messages(3))[1:] == ["from one", "from two"]
    assert await http_get(one.port, "/count?ch=news") == "1"


async def test_redis_killed_and_restarted_mid_stream(
    nursery: trio.Nursery, redis: RedisServer, processes: list[ServerProcess]
) -> None:
    processes += [spawn("--redis", redis.url), spawn("--redis", redis.url)]
    one, two = processes
    clients = [
        (await subscriber(nursery, one.port, "live"))[0],
        (await subscriber(nursery, two.port, "liv?", "sse"))[0],
    ]
    await wait_for(lambda: redis.numsub("live") == 1 and redis.numpat() == 1)
    for i in range(5):
        port = (one, two)[i % 2].port
        assert await http_get(port, f"/publish?ch=live&msg=m{i}") == "True"
    for client in clients:
        await client.wait_messages(6)

    redis.kill()
    # Publishing now is reported as failed, on both servers; nobody dies.
    for process in (one, two):
        await wait_for(lambda p=process: "redis publisher: connection lost" in p.log())
        assert await http_get(process.port, "/publish?ch=live&msg=lost") == "False"
    await trio.sleep(0.5)  # a few failed reconnections
    redis.start()
    # Both come back and resubscribe (Redis kept nothing).
    await wait_for(lambda: redis.numsub("live") == 1 and redis.numpat() == 1)
    for process in (one, two):
        await wait_for(lambda p=process: p.log().count("redis publisher: connected") >= 2)
    for i in range(5, 10):
        process = (one, two)[i % 2]
        published = await http_get(process.port, f"/publish?ch=live&msg=m{i}")
        assert published == "True", process.log()

    for client in clients:
        assert (await client.wait_messages(11))[1:] == [f"m{i}" for i in range(10)]
    assert one.alive() and two.alive()
    for process in (one, two):
        log = process.log()
        assert "redis subscriber: connection lost" in log
        assert "redis subscriber: connected" in log
        assert "publishes failed while Redis was unreachable" in log


async def test_a_redis_that_drops_every_connection_is_not_hammered(
    nursery: trio.Nursery,
) -> None:
    # Accepts and closes at once (as Redis does past maxclients): the
    # engine backs off as if the connection had failed.
    accepted = 0

    async def drop(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, drop, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    pubsub = trio_push.RedisPubSub(f"redis://127.0.0.1:{port}", backoff_max=0.4)
    await nursery.start(pubsub.run)
    await trio.sleep(1.5)
    assert 2 <= accepted < 40
