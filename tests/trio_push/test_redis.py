"""Pub/sub through a real redis-server: engines in this process, servers in
subprocesses, Redis going away and coming back, and ``--workers``; and the
faults that must not lose messages silently or stall publishing: Redis
restarting under a hot publisher, subscriptions Redis refuses."""

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
from trio_push._glob import glob_match
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

    # publish() returns once queued, so two servers' publishes made one after
    # the other may reach Redis in either order: each server's keep theirs.
    for client in clients:
        received = (await client.wait_messages(11))[1:]
        assert sorted(received, key=lambda m: int(str(m)[1:])) == [f"m{i}" for i in range(10)]
        for first in (0, 1):
            own = [m for m in received if int(str(m)[1:]) % 2 == first]
            assert own == [f"m{i}" for i in range(first, 10, 2)]
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


# -- Redis restarting under a hot publisher ---------------------------------------------


@pytest.fixture
def acl_redis() -> Iterator[RedisServer]:
    # Its only user may use the channels (and patterns) starting with "allowed".
    acl = ("--user", "app", "on", ">secret", "~*", "&allowed*", "+@all", "--user", "default", "off")
    with RedisServer(*acl, user="app", password="secret") as server:
        yield server


async def test_after_a_restart_publish_is_accepted_only_once_resubscribed(
    nursery: trio.Nursery, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The publisher connection often comes back before the subscriber has
    # resubscribed (thousands of channels make that take a while): a
    # publish accepted then would reach Redis while this server listens to
    # nothing. Every restart is a new chance for that race.
    pubsub = engine(redis)
    channels = [f"idle.{i}" for i in range(3000)] + ["stream"]
    server = await start(nursery, Subscribe(*channels), pubsub=pubsub)
    clients = await connect_clients(nursery, server.port, 2, "websocket")
    clients += await connect_clients(nursery, server.port, 2, "sse")
    await wait_for(lambda: redis.numsub("stream") == 1)

    accepted: list[str] = []
    go = trio.Event()
    go.set()

    async def publisher() -> None:
        i = 0
        while True:
            # Checked right before publishing: nothing goes out once paused.
            if not go.is_set():
                await go.wait()
                continue
            i += 1
            if pubsub.publish("stream", str(i)):
                accepted.append(str(i))
            await trio.sleep(0.001)

    async def settle(mark: str) -> None:
        """Pause the publisher; once Redis confirmed a mark that every
        client received, whatever was accepted before it has arrived."""
        nonlocal go
        go = trio.Event()
        await wait_for(lambda: pubsub.connected and redis.numsub("stream") == 1)
        await pubsub.publish_confirmed("stream", mark)
        for client in clients:
            await client.wait_for(lambda c: mark in c.messages)

    def lost(name: str) -> int:
        return sum(f"redis {name}: connection lost" in m for m in caplog.messages)

    nursery.start_soon(publisher)
    restarts = 6
    # How many were accepted as Redis came back each time.
    at_restart: list[int] = []
    for n in range(restarts):
        # Until publishing resumed after the restart (the race was run).
        await wait_for(
            lambda: len(accepted) > (at_restart[-1] if at_restart else 0), timeout=TIMEOUT
        )
        await settle(f"mark{n}")
        # Killed while nothing is in flight (what is in flight when a
        # connection breaks is counted in `unconfirmed`, not the point here).
        redis.kill()
        await wait_for(lambda n=n: lost("publisher") > n and lost("subscriber") > n)
        go.set()  # refused while Redis is down, hot when it comes back
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(redis.start)
        at_restart.append(len(accepted))
    await wait_for(lambda: len(accepted) > at_restart[-1], timeout=TIMEOUT)
    await settle("end")

    for client in clients:
        received = [m for m in client.messages if not str(m).startswith(("mark", "end"))]
        missing = sorted(set(accepted) - set(received), key=int)
        assert not missing, f"{len(missing)} accepted, never received: {missing[:10]}"
        assert received == accepted
    assert pubsub.failed > 0 and pubsub.unconfirmed == 0


# -- subscriptions Redis refuses ------------------------------------------------------


class Refusals(Subscribe):
    """Subscribe, telling the client when Redis refuses a subscription."""

    def __init__(self, *channels: str) -> None:
        super().__init__(*channels)
        self.refused: list[tuple[trio_push.Client, str, str]] = []

    def on_subscribe_error(self, client: trio_push.Client, channel: str, reason: str) -> None:
        self.refused.append((client, channel, reason))
        client.write(f"refused {channel}")


async def test_a_refused_subscription_is_dropped_and_everything_else_goes_on(
    nursery: trio.Nursery, acl_redis: RedisServer
) -> None:
    redis = acl_redis
    pubsub = engine(redis)
    handler = Refusals("allowed.all")
    server = await start(nursery, handler, pubsub=pubsub)
    bad, good = await connect_clients(nursery, server.port, 2)
    (sse,) = await connect_clients(nursery, server.port, 1, "sse")
    await wait_for(lambda: redis.numsub("allowed.all") == 1)

    async def command(client: PushClient, text: str) -> None:
        await client.send_text(text)
        await client.wait_for(lambda c: f"ok {text}" in c.messages)

    async def delivered(message: str) -> None:
        # Promptly, and confirmed by Redis: nothing waits for an
        # acknowledgement that will never come.
        with trio.fail_after(3):
            assert await pubsub.publish_confirmed("allowed.all", message) == 1
            for client in (bad, good, sse):
                await client.wait_for(lambda c: message in c.messages)

    await command(bad, "sub forbidden")
    await command(bad, "sub forbidden.*")  # a pattern: PSUBSCRIBE
    await command(good, "sub allowed.x")
    # Right behind the refused subscriptions, which the publisher waits for.
    assert pubsub.publish("allowed.all", "one")
    await delivered("two")
    assert all("one" in c.messages for c in (bad, good, sse))
    await bad.wait_for(lambda c: {"refused forbidden", "refused forbidden.*"} <= set(c.messages))
    assert [channel for _, channel, _ in handler.refused] == ["forbidden", "forbidden.*"]
    assert len({client for client, _, _ in handler.refused}) == 1
    assert all(reason.startswith("NOPERM") for _, _, reason in handler.refused)
    assert pubsub.subscribe_errors == 2
    assert pubsub.count("forbidden") == 0 and pubsub.count("forbidden.x") == 0
    assert pubsub.count("allowed.x") == 1 and pubsub.count("allowed.all") == 3
    assert "refused" not in str(good.messages + sse.messages)
    assert pubsub.publish("allowed.x", "x")
    await good.wait_for(lambda c: "x" in c.messages)

    # Resubscribing after a restart sends what is in use in one command,
    # which Redis refuses whole for one channel it refuses: only that one
    # is dropped (the refused ones above are not sent again).
    redis.kill()
    await wait_for(lambda: not pubsub.connected)
    await command(bad, "sub forbidden.late")
    redis.start()
    await bad.wait_for(lambda c: "refused forbidden.late" in c.messages)
    await wait_for(lambda: pubsub.connected)
    await delivered("three")
    assert pubsub.subscribe_errors == 3
    assert redis.numsub("allowed.x") == 1
    assert [m for m in bad.messages if str(m).startswith("refused")] == [
        "refused forbidden",
        "refused forbidden.*",
        "refused forbidden.late",
    ]
