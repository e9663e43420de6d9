"""Redis faults that must not lose messages silently or stall publishing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from pubsub_util import RedisServer, wait_until
from test_pubsub import Subscribe, connect, start

import trio_push


def engine(redis: RedisServer) -> trio_push.RedisPubSub:
    # Quick reconnects, so the tests take little time.
    return trio_push.RedisPubSub(redis.url, backoff_max=0.2, health_interval=2.0)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


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
    clients = await connect(nursery, server.port, 2, "websocket")
    clients += await connect(nursery, server.port, 2, "sse")
    await wait_until(lambda: redis.numsub("stream") == 1)

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
        await wait_until(lambda: pubsub.connected and redis.numsub("stream") == 1)
        await pubsub.publish_confirmed("stream", mark)
        for client in clients:
            await client.wait_for(lambda c: mark in c.messages)

    def lost(name: str) -> int:
        return sum(f"redis {name}: connection lost" in m for m in caplog.messages)

    nursery.start_soon(publisher)
    restarts = 6
    for n in range(restarts):
        await trio.sleep(0.2)
        await settle(f"mark{n}")
        # Killed while nothing is in flight (what is in flight when a
        # connection breaks is counted in `unconfirmed`, not the point here).
        redis.kill()
        await wait_until(lambda n=n: lost("publisher") > n and lost("subscriber") > n)
        go.set()  # refused while Redis is down, hot when it comes back
        await trio.sleep(0.3)
        await trio.to_thread.run_sync(redis.start)
    await trio.sleep(0.2)
    await settle("end")

    for client in clients:
        received = [m for m in client.messages if not str(m).startswith(("mark", "end"))]
        missing = sorted(set(accepted) - set(received), key=int)
        assert not missing, f"{len(missing)} accepted, never received: {missing[:10]}"
        assert received == accepted
    assert pubsub.failed > 0 and pubsub.unconfirmed == 0
    assert len(accepted) > 20 * restarts
