"""Redis faults that must not lose messages silently or stall publishing:
Redis restarting under a hot publisher, and subscriptions Redis refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

import trio_push
from tests.helpers.pubsub import PushClient, RedisServer, Subscribe, connect_clients, engine, start
from tests.helpers.server import wait_for


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
        await trio.sleep(0.2)
        await settle(f"mark{n}")
        # Killed while nothing is in flight (what is in flight when a
        # connection breaks is counted in `unconfirmed`, not the point here).
        redis.kill()
        await wait_for(lambda n=n: lost("publisher") > n and lost("subscriber") > n)
        go.set()  # refused while Redis is down, hot when it comes back
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(redis.start)
        at_restart.append(len(accepted))
    await trio.sleep(0.2)
    await settle("end")

    for client in clients:
        received = [m for m in client.messages if not str(m).startswith(("mark", "end"))]
        missing = sorted(set(accepted) - set(received), key=int)
        assert not missing, f"{len(missing)} accepted, never received: {missing[:10]}"
        assert received == accepted
    assert pubsub.failed > 0 and pubsub.unconfirmed == 0
    # And publishing resumed after every restart (the race was run each time).
    assert all(b > a for a, b in zip(at_restart, [*at_restart[1:], len(accepted)], strict=True))


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
