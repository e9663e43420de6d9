"""Channel history through Redis: the positions Redis gives, pages resuming
from them on another server process or worker, what a server's subscriber
connection missed read back from history, and the gaps (trimmed, epoch,
unavailable). A real redis-server, real clients (httpx-sse, websockets)."""

from __future__ import annotations

import json
import os
import signal
from typing import Any
from urllib.parse import quote

import pytest
import trio

import trio_push
from tests.apps.history_app import Subscriber
from tests.helpers.history import EventSource, TcpProxy, open_event_source
from tests.helpers.pubsub import RedisServer, ServerProcess, http_get, start
from tests.helpers.server import TIMEOUT, in_thread, wait_for, ws_connect
from trio_push._history import History, HistoryRules, tag


def history_engine(url: str, size: int = 20000) -> trio_push.RedisPubSub:
    """A Redis engine whose channels keep ``size`` messages, quick to reconnect
    (the tests break connections by closing them: no health checks needed)."""
    pubsub = trio_push.RedisPubSub(url, backoff_max=0.2)
    pubsub.history = HistoryRules(History(size))
    return pubsub


async def running(nursery: trio.Nursery, pubsub: trio_push.RedisPubSub) -> trio_push.RedisPubSub:
    """``pubsub`` running on its own: a publisher that serves no clients."""
    await nursery.start(pubsub.run)
    return pubsub


async def serve(nursery: trio.Nursery, pubsub: trio_push.RedisPubSub, *channels: str) -> int:
    """A server in this process whose clients subscribe to ``channels``; its port."""
    size = pubsub.history.default.size if pubsub.history.default else 0
    server = await start(nursery, Subscriber(list(channels)), pubsub=pubsub, history=size)
    return server.port


def sse_url(port: int, *channels: str) -> str:
    return f"http://127.0.0.1:{port}/sub?" + "&".join(f"ch={c}" for c in channels)


def last_id(channel: str, position: trio_push.Position | str) -> str:
    """The SSE id of a page that got ``position`` on ``channel``."""
    return f"{tag(channel)}={position}"


async def publish_all(
    pubsub: trio_push.RedisPubSub, channel: str, messages: list[str]
) -> list[trio_push.Position]:
    """Publish ``messages`` at once (in bursts of 500), then wait for their positions."""
    positions = []
    for i, message in enumerate(messages):
        position = pubsub.publish(channel, message)
        assert isinstance(position, trio_push.Position), position
        positions.append(position)
        if i % 500 == 499:
            await position.wait()
    for position in positions:
        await position.wait()
    return positions


def names(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i}" for i in range(start, start + n)]


def spawn(redis: RedisServer, *args: str) -> ServerProcess:
    """``trio-push tests.apps.history_app:App --redis URL --history 20000 ARGS``."""
    app = "tests.apps.history_app:App"
    return ServerProcess(app, "--redis", redis.url, "--history", "20000", *args)


# -- positions ------------------------------------------------------------------------


async def test_positions_come_from_redis_in_order_from_any_thread(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    pubsub = history_engine(redis.url)
    port = await serve(nursery, pubsub, "pos")
    sources = [(await open_event_source(nursery, sse_url(port, "pos")))[0] for _ in range(2)]
    await wait_for(lambda: redis.numsub("pos") == 1)

    first = pubsub.publish("pos", "first")
    assert isinstance(first, trio_push.Position)
    assert await first.wait() is first and first.offset == 1 and first.epoch
    # A burst of thousands, 64 KiB messages, and publishes from a thread.
    burst = await publish_all(pubsub, "pos", names("b", 3000))
    big = [m.ljust(65536, ".") for m in names("big", 40)]
    positions = [first, *burst, *await publish_all(pubsub, "pos", big)]

    def from_thread() -> list[trio_push.Position | bool]:
        return [pubsub.publish("pos", m) for m in names("t", 500)]

    threaded = await trio.to_thread.run_sync(from_thread)
    assert all(isinstance(p, trio_push.Position) for p in threaded)
    for position in threaded:
        assert isinstance(position, trio_push.Position)
        positions.append(await position.wait())
    # publish_confirmed keeps answering how many servers Redis reached.
    assert await pubsub.publish_confirmed("pos", "confirmed") == 1
    # Anything can publish: a message without the header has no position.
    redis.call("PUBLISH", "pos", "from redis-cli")

    assert [p.offset for p in positions] == list(range(1, 3542))
    assert {p.epoch for p in positions} == {first.epoch}
    assert [p.ms for p in positions] == sorted(p.ms for p in positions)
    expected = ["first", *names("b", 3000), *big, *names("t", 500), "confirmed", "from redis-cli"]
    for source in sources:
        assert await source.wait_messages(len(expected)) == expected
        # Each message's SSE id is its position (the last one has none).
        ids = [last_id("pos", p) for p in positions]
        assert source.ids[: len(ids)] == ids
        assert source.ids[-2].endswith("-3542") and source.ids[-1] == source.ids[-2]


async def test_positions_from_two_server_processes_and_a_page_resuming_on_the_other(
    nursery: trio.Nursery, redis: RedisServer, processes: list[ServerProcess]
) -> None:
    processes += [spawn(redis), spawn(redis)]
    a, b = processes
    source, scope = await open_event_source(nursery, sse_url(a.port, "news"))
    await wait_for(lambda: redis.numsub("news") == 1)
    sent: dict[int, str] = {}

    async def publish(process: ServerProcess, prefix: str, n: int) -> None:
        answer = await http_get(process.port, f"/publish?ch=news&n={n}&prefix={prefix}")
        for i, text in enumerate(json.loads(answer)):
            position = trio_push.Position.parse("news", text)
            assert position.offset not in sent
            sent[position.offset] = f"{prefix}{i}"

    await publish(a, "a", 1000)
    assert await source.wait_messages(1000) == names("a", 1000)
    scope.cancel()  # the page goes away
    # Meanwhile both processes publish on the channel at once.
    async with trio.open_nursery() as inner:
        inner.start_soon(publish, a, "x", 2000)
        inner.start_soon(publish, b, "y", 2000)
    # Their positions: one epoch, distinct and contiguous offsets.
    assert sorted(sent) == list(range(1, 5001))
    assert source.last_id is not None
    resumed, _ = await open_event_source(nursery, sse_url(b.port, "news"), source.last_id)
    await resumed.wait_messages(4000)
    await publish(a, "z", 500)  # live, from the other process
    missed = [sent[offset] for offset in range(1001, 5501)]
    assert await resumed.wait_messages(4500) == missed
    assert resumed.gaps == [] and source.gaps == []
    assert resumed.pids == [str(await http_get(b.port, "/pid"))]


async def test_a_script_given_the_servers_history_options_publishes_into_the_history(
    nursery: trio.Nursery, redis: RedisServer, processes: list[ServerProcess]
) -> None:
    """A publisher outside the servers (a management command) with
    ``RedisPubSub(url, history=N)``: a page that was away gets its messages
    back from history; without the options they reach live pages only."""
    processes.append(spawn(redis))
    (server,) = processes
    source, scope = await open_event_source(nursery, sse_url(server.port, "ops"))
    await wait_for(lambda: redis.numsub("ops") == 1)
    script = await running(nursery, trio_push.RedisPubSub(redis.url, history=20000, heartbeat=None))
    first = await publish_all(script, "ops", ["one"])
    assert await source.wait_messages(1) == ["one"]
    scope.cancel()
    big = "x" * 65536
    positions = await publish_all(script, "ops", [*names("away", 2000), big])
    assert [p.offset for p in positions] == list(range(first[0].offset + 1, first[0].offset + 2002))
    resumed, _ = await open_event_source(nursery, sse_url(server.port, "ops"), source.last_id)
    assert await resumed.wait_messages(2001) == [*names("away", 2000), big]
    assert resumed.gaps == []
    plain = trio_push.RedisPubSub(redis.url, heartbeat=None)
    assert plain.history.get("ops") is None


async def test_a_worker_killed_mid_stream_its_pages_resume_on_any_worker(
    nursery: trio.Nursery, redis: RedisServer, processes: list[ServerProcess]
) -> None:
    processes.append(spawn(redis, "--workers", "2"))
    (workers,) = processes
    url = sse_url(workers.port, "w")
    sources: list[EventSource] = []
    with trio.fail_after(TIMEOUT):
        # Pages until both workers have some (the kernel picks the worker).
        while len(sources) < 4 or len({s.pids[0] for s in sources}) < 2:
            sources.append((await open_event_source(nursery, url, reconnect=True))[0])
    await wait_for(lambda: redis.numsub("w") == 2)
    publisher = await running(nursery, history_engine(redis.url))
    victim = int(sources[0].pids[0])
    on_victim = [s for s in sources if s.pids[0] == str(victim)]

    messages = names("m", 8000)
    positions: list[trio_push.Position] = []
    for i in range(0, len(messages), 500):
        positions += await publish_all(publisher, "w", messages[i : i + 500])
        if i == 2000:
            os.kill(victim, signal.SIGKILL)  # mid-stream, the publisher going on at full rate
    assert [p.offset for p in positions] == list(range(1, 8001))
    for source in sources:
        await source.wait_messages(8000)
        # What each page got over its connections: all of it, once, in order.
        assert source.messages == messages
        assert source.gaps == []
    for source in on_victim:
        assert len(source.pids) >= 2 and source.ended >= 1
        assert str(victim) not in source.pids[1:]
    assert "died (signal SIGKILL); restarting" in workers.log()


# -- what a server's subscriber connection misses -----------------------------------------


async def test_what_the_subscriber_connection_missed_is_read_from_history(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    proxy = TcpProxy(redis.port)
    await proxy.start(nursery)
    port = await serve(nursery, history_engine(proxy.url), "f")
    publisher = await running(nursery, history_engine(redis.url))
    sources = [(await open_event_source(nursery, sse_url(port, "f")))[0] for _ in range(3)]
    await wait_for(lambda: redis.numsub("f") == 1)

    messages = names("m", 9000)
    for round_ in range(3):
        chunk = messages[round_ * 3000 : round_ * 3000 + 3000]
        await publish_all(publisher, "f", chunk[:1000])
        # The server loses Redis (not Redis its data) while publishing goes on.
        proxy.open = False
        proxy.cut()
        await wait_for(lambda: redis.numsub("f") == 0)
        await publish_all(publisher, "f", chunk[1000:2000])
        proxy.open = True
        await publish_all(publisher, "f", chunk[2000:])
    for source in sources:
        assert await source.wait_messages(9000) == messages
        assert source.gaps == []


async def test_redis_restarted_mid_stream(nursery: trio.Nursery, redis: RedisServer) -> None:
    # The server reaches Redis through a proxy, so that it comes back later
    # than the publisher: what is published meanwhile is read from history.
    proxy = TcpProxy(redis.port)
    await proxy.start(nursery)
    pubsub = history_engine(proxy.url)
    port = await serve(nursery, pubsub, "live")
    publisher = await running(nursery, history_engine(redis.url))
    sources = [(await open_event_source(nursery, sse_url(port, "live")))[0] for _ in range(3)]
    await wait_for(lambda: redis.numsub("live") == 1)
    before = await publish_all(publisher, "live", names("a", 1000))
    for source in sources:
        await source.wait_messages(1000)
    old_id = sources[0].last_id
    assert old_id == last_id("live", before[-1])

    proxy.open = False
    redis.kill()
    await wait_for(lambda: not publisher.connected and not pubsub.connected)
    assert publisher.publish("live", "lost") is False
    assert pubsub.publish("live", "lost") is False
    await trio.to_thread.run_sync(redis.start)
    await wait_for(lambda: publisher.connected)
    during = await publish_all(publisher, "live", names("b", 1000))
    assert redis.numsub("live") == 0  # the server is not back yet
    # Redis kept nothing (no persistence): a new epoch, from offset 1.
    assert {p.epoch for p in during} != {before[0].epoch}
    assert [p.offset for p in during] == list(range(1, 1001))
    proxy.open = True
    await wait_for(lambda: pubsub.connected and redis.numsub("live") == 1)
    await publish_all(publisher, "live", names("c", 1000))

    expected = names("a", 1000) + names("b", 1000) + names("c", 1000)
    for source in sources:
        assert await source.wait_messages(3000) == expected
        # Told once that history was lost, before the new epoch's messages.
        assert source.gaps == ["gap live epoch"]
        assert source.log.index(("gap", "gap live epoch")) == source.log.index(("msg", "b0")) - 1
    assert publisher.unconfirmed == 0 and publisher.failed == 1

    # A page resuming from the old epoch: the gap, then the live messages.
    resumed, _ = await open_event_source(nursery, sse_url(port, "live"), old_id)
    await resumed.wait_for(lambda s: len(s.gaps) == 1)
    await publish_all(publisher, "live", names("d", 10))
    await resumed.wait_messages(10)
    assert resumed.log[1:] == [("gap", "gap live epoch"), *(("msg", m) for m in names("d", 10))]


async def test_what_is_in_flight_when_the_connection_breaks(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    proxy = TcpProxy(redis.port)
    await proxy.start(nursery)
    pubsub = history_engine(proxy.url)
    port = await serve(nursery, pubsub, "k")
    first, _ = await open_event_source(nursery, sse_url(port, "k"))
    await wait_for(lambda: redis.numsub("k") == 1)
    (one,) = await publish_all(pubsub, "k", ["one"])
    await first.wait_messages(1)
    proxy.paused = True  # Redis stops answering
    unanswered = pubsub.publish("k", "two")
    assert isinstance(unanswered, trio_push.Position)
    resumed, _ = await open_event_source(nursery, sse_url(port, "k"), last_id("k", one))
    await wait_for(
        lambda: len(next(iter(pubsub._links.values())).in_flight) == 2
    )  # the publish, the history load
    proxy.cut()
    proxy.paused = False
    # The load ends all the same (the page is not held forever): a gap.
    await resumed.wait_for(lambda s: len(s.gaps) == 1)
    assert resumed.gaps == ["gap k unavailable"]
    with pytest.raises(trio_push.PublishError, match="broke"):
        await unanswered.wait()
    assert pubsub.unconfirmed == 1 and not unanswered.known
    await wait_for(lambda: pubsub.connected)
    (three,) = await publish_all(pubsub, "k", ["three"])
    assert three.offset == 2  # "two" never reached Redis
    assert await resumed.wait_messages(1) == ["three"]
    assert await first.wait_messages(2) == ["one", "three"]
    assert first.gaps == []


# -- gaps -------------------------------------------------------------------------------


def ws_session(port: int, since: str, publish: Any, live: int) -> list[Any]:
    """A WebSocket page on channel ``t`` resuming from ``since`` (the JS
    helper's query): what it receives until ``live`` live messages have
    come, the first once it knows where it starts (``publish()``)."""
    query = quote(json.dumps({"t": since}))
    received: list[Any] = []
    with ws_connect(f"ws://127.0.0.1:{port}/sub?ch=t&since={query}") as ws:
        while True:
            text = ws.recv(timeout=TIMEOUT)
            message = json.loads(text) if text.startswith("{") else text
            received.append(message)
            if isinstance(message, dict) and "data" not in message:
                publish()  # the announcement: subscribed, at its position
            if (
                sum(isinstance(m, dict) and m.get("data", "")[:4] == "live" for m in received)
                == live
            ):
                return received


async def test_a_resume_from_further_back_than_history_is_a_trimmed_gap_then_live(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    pubsub = history_engine(redis.url, size=10)
    port = await serve(nursery, pubsub, "t")
    positions = await publish_all(pubsub, "t", names("m", 60))
    token = trio.lowlevel.current_trio_token()

    def publisher(prefix: str) -> Any:
        def publish() -> None:
            for m in names(prefix, 3):
                assert trio.from_thread.run_sync(pubsub.publish, "t", m, trio_token=token)

        return publish

    far = await in_thread(ws_session, port, str(positions[9]), publisher("live"), 3)
    hello, *rest = far
    assert hello.startswith("hello ")
    assert "gap t trimmed" in rest
    data = [m for m in rest if isinstance(m, dict) and "data" in m]
    assert [m["data"] for m in data] == ["live0", "live1", "live2"]
    assert [m["position"].rsplit("-")[1] for m in data] == ["61", "62", "63"]
    assert rest.index("gap t trimmed") < rest.index(data[0])
    # Five behind is within history: those five, then live, and no gap.
    near = await in_thread(ws_session, port, str(positions[54]), publisher("live"), 3)
    data = [m["data"] for m in near if isinstance(m, dict) and "data" in m]
    assert data == [*names("m", 5, 55), "live0", "live1", "live2"]
    assert not any(isinstance(m, str) and m.startswith("gap") for m in near)
    # Ahead of the top: not a position of this history.
    ahead = f"{positions[0].epoch}:{positions[-1].ms}-999"
    beyond = await in_thread(ws_session, port, ahead, publisher("live"), 3)
    assert "gap t epoch" in beyond


async def test_a_resume_while_redis_is_down_is_an_unavailable_gap(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    pubsub = history_engine(redis.url)
    port = await serve(nursery, pubsub, "u")
    (before,) = await publish_all(pubsub, "u", ["before"])
    redis.kill()
    await wait_for(lambda: not pubsub.connected)
    assert pubsub.publish("u", "lost") is False
    resumed, _ = await open_event_source(nursery, sse_url(port, "u"), last_id("u", before))
    fresh, _ = await open_event_source(nursery, sse_url(port, "u"))
    await resumed.wait_for(lambda s: len(s.gaps) == 1)
    assert resumed.gaps == ["gap u unavailable"]

    redis.start()
    await wait_for(lambda: pubsub.connected and redis.numsub("u") == 1)
    (after,) = await publish_all(pubsub, "u", ["after"])
    for source in (resumed, fresh):
        assert await source.wait_messages(1) == ["after"]
    # A new subscription missed nothing: no gap.
    assert fresh.gaps == [] and resumed.gaps == ["gap u unavailable"]
    assert after.epoch != before.epoch and after.offset == 1


async def test_redis_flushed_is_a_new_epoch_and_an_old_position_an_epoch_gap(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    pubsub = history_engine(redis.url)
    port = await serve(nursery, pubsub, "f")
    old = await publish_all(pubsub, "f", names("old", 20))
    redis.call("FLUSHALL")
    new = await publish_all(pubsub, "f", names("new", 5))
    assert new[0].epoch != old[0].epoch and [p.offset for p in new] == [1, 2, 3, 4, 5]
    # A page that had old10 resumes: its history is gone, it hears so before
    # any message, then gets what is live.
    source, _ = await open_event_source(nursery, sse_url(port, "f"), last_id("f", old[10]))
    await source.wait_for(lambda s: len(s.gaps) == 1)
    assert source.gaps == ["gap f epoch"]
    await publish_all(pubsub, "f", ["live"])
    assert await source.wait_messages(1) == ["live"]


async def test_megabyte_messages_resume_exactly_through_redis(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    pubsub = history_engine(redis.url)
    port = await serve(nursery, pubsub, "big")
    messages = [f"{i}:" + chr(ord("a") + i) * (1024 * 1024) for i in range(4)]
    (first,) = await publish_all(pubsub, "big", ["start"])
    await publish_all(pubsub, "big", messages)
    source, _ = await open_event_source(nursery, sse_url(port, "big"), last_id("big", first))
    assert await source.wait_messages(4) == messages
    assert source.gaps == []


# -- several channels ---------------------------------------------------------------------


async def test_several_channels_on_one_sse_connection_resume_exactly(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    channels = ("a", "b", "c")
    pubsub = history_engine(redis.url)
    port = await serve(nursery, pubsub, *channels)
    source, scope = await open_event_source(nursery, sse_url(port, *channels))
    await wait_for(lambda: redis.numsub("c") == 1)

    def interleaved(start: int, n: int) -> list[tuple[str, str]]:
        return [(ch, f"{ch}{i}") for i in range(start, start + n) for ch in channels]

    async def publish(pairs: list[tuple[str, str]]) -> None:
        for channel in channels:
            await publish_all(pubsub, channel, [m for ch, m in pairs if ch == channel])

    first = interleaved(0, 300)
    for channel, message in first:
        assert pubsub.publish(channel, message)
    await source.wait_messages(900)
    scope.cancel()
    assert source.last_id is not None and source.last_id.count("=") == 3
    await publish(interleaved(300, 400))
    resumed, _ = await open_event_source(nursery, sse_url(port, *channels), source.last_id)
    await resumed.wait_messages(1200)
    await publish(interleaved(700, 100))
    await resumed.wait_messages(1500)
    got = source.messages + resumed.messages
    assert len(got) == 2400
    for channel in channels:
        assert [m for m in got if m[0] == channel] == names(channel, 800)
    assert resumed.gaps == []


# -- Redis forgetting the scripts ---------------------------------------------------------


async def test_scripts_that_redis_forgot_are_loaded_again(
    nursery: trio.Nursery, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    pubsub = history_engine(redis.url)
    port = await serve(nursery, pubsub, "s")
    source, _ = await open_event_source(nursery, sse_url(port, "s"))
    await wait_for(lambda: redis.numsub("s") == 1)
    (one,) = await publish_all(pubsub, "s", ["one"])
    redis.call("SCRIPT", "FLUSH")
    # The publish that finds them gone fails (counted, logged); the next one
    # loads them again first.
    lost = pubsub.publish("s", "lost")
    assert isinstance(lost, trio_push.Position)
    with pytest.raises(trio_push.PublishError, match="NOSCRIPT"):
        await lost.wait()
    assert pubsub.failed == 1 and not lost.known
    (two,) = await publish_all(pubsub, "s", ["two"])
    assert two.offset == 2 and two.epoch == one.epoch
    # A history load that finds them gone is sent again after loading them.
    redis.call("SCRIPT", "FLUSH")
    resumed, _ = await open_event_source(nursery, sse_url(port, "s"), last_id("s", one))
    assert await resumed.wait_messages(1) == ["two"]
    assert resumed.gaps == [] and pubsub.failed == 1
    assert await source.wait_messages(2) == ["one", "two"]
    assert "publish failed: NOSCRIPT" in caplog.text
