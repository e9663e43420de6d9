"""RedisPubSub on a Redis Cluster (``redis+cluster://``): sharded pub/sub
(``SSUBSCRIBE``/``SPUBLISH`` on each channel's master), channels spread
over every shard, a slot migrated mid-stream (with history: nothing lost),
a master killed and its replica promoted, ``MOVED``/``ASK`` on publish,
patterns, counts. Real redis-server processes (tests/helpers/redis_cluster.py),
trio-push servers in subprocesses and in this process, raw clients."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

import trio_push
from tests.helpers.frames import TEXT, frame
from tests.helpers.pubsub import (
    PushClient,
    RedisServer,
    ServerProcess,
    Subscribe,
    connect_clients,
    start,
)
from tests.helpers.redis_cluster import RedisCluster
from tests.helpers.server import TIMEOUT, in_thread, wait_for
from trio_push._history import History, HistoryRules
from trio_push._redis_cluster import ClusterURL, UnkeyableChannel, history_key, key_slot

BIG = 65536
# Each test's bound (seconds).
LIMIT = 60


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """Three masters, no replicas."""
    with RedisCluster(tmp_path) as nodes:
        yield nodes


def engine(url: str, history: int = 0) -> trio_push.RedisPubSub:
    pubsub = trio_push.RedisPubSub(url, backoff_max=0.2, health_interval=2.0)
    if history:
        pubsub.history = HistoryRules(History(history))
    return pubsub


def spread(cluster: RedisCluster, n: int, prefix: str = "ch") -> list[str]:
    """``n`` channel names, one on each master in turn (so every shard has some)."""
    masters = cluster.master_ports()
    names: list[str] = []
    i = 0
    while len(names) < n:
        name = f"{prefix}{i}"
        if cluster.owner_of(name).port == masters[len(names) % len(masters)]:
            names.append(name)
        i += 1
    return names


def spawn(cluster: RedisCluster, *args: str) -> ServerProcess:
    return ServerProcess("pubsub_app:app", "--log-level", "info", "--redis", cluster.url(), *args)


def numbered(channel: str, n: int, big: bool = False) -> str:
    text = f"{channel} {n}"
    return text.ljust(BIG, ".") if big else text


async def subscribed(cluster: RedisCluster, channels: list[str], n: int) -> None:
    """Wait until each channel has ``n`` subscriber connections on its master."""

    def ready() -> bool:
        for channel in channels:
            reply = cluster.owner_of(channel).call("PUBSUB", "SHARDNUMSUB", channel)
            if int(reply[1]) != n:
                return False
        return True

    with trio.fail_after(TIMEOUT):
        while not await in_thread(ready):
            await trio.sleep(0.05)


async def clients_of(
    nursery: trio.Nursery, processes: list[ServerProcess], channels: list[str], n: int
) -> list[PushClient]:
    """``n`` clients on each process, half WebSocket, half SSE, each on
    every channel; each past its ``hello``."""
    path = "/sub?" + "&".join(f"ch={c}" for c in channels)
    clients = []
    for process in processes:
        for protocol in ("websocket", "sse"):
            clients += await connect_clients(nursery, process.port, n // 2, protocol, path)
    for client in clients:
        await client.wait_messages(1)
    return clients


def per_channel(client: PushClient, channels: list[str], skip: int = 1) -> dict[str, list[str]]:
    """What ``client`` got past its hello (``skip``), by channel, in order."""
    got: dict[str, list[str]] = {c: [] for c in channels}
    for message in client.messages[skip:]:
        assert isinstance(message, str)
        channel, _, rest = message.partition(" ")
        got[channel].append(f"{channel} {rest}")
    return got


# -- slots -----------------------------------------------------------------------------


def test_slots_and_history_keys_hash_as_redis_computes(cluster: RedisCluster) -> None:
    node = cluster.live()[0]
    names = ["foo", "{user1000}.following", "a{b}c", "{}x", "a{", "x{}{y}", "ü", "{a}{b}", "a{b"]
    names += [f"room:{i}" for i in range(40)]
    for name in names:
        slot = int(node.call("CLUSTER", "KEYSLOT", name))
        assert key_slot(name.encode()) == slot, name
        for kind in (b"m", b"s"):
            try:
                key = history_key(kind, name.encode(), cluster=True)
            except UnkeyableChannel:
                assert name in ("{}x", "x{}{y}")
                continue
            assert int(node.call("CLUSTER", "KEYSLOT", key)) == slot, (name, key)
    # The forms never collide: "x" and "{x}" keep apart.
    assert history_key(b"m", b"x", True) != history_key(b"m", b"{x}", True)
    with pytest.raises(UnkeyableChannel, match="hash tag"):
        history_key(b"m", b"a}b", cluster=True)
    assert history_key(b"m", b"a}b", cluster=False) == b"tp:m:{a}b}"


def test_cluster_urls_name_seeds_credentials_and_patterns() -> None:
    url = ClusterURL("redis+cluster://me:p%40ss@10.0.0.1:7000,10.0.0.2:7001?patterns=1")
    assert url.seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (url.user, url.password, url.patterns) == ("me", "p@ss", True)
    assert ClusterURL("redis+cluster://h").seeds == [("h", 6379)]
    assert not ClusterURL("redis+cluster://h:1").patterns
    secure = ClusterURL("rediss+cluster://h:1?ssl_cert_reqs=none&patterns=1")
    assert secure.tls and secure.patterns and secure.query["ssl_cert_reqs"] == ["none"]
    for bad, why in [
        ("redis+cluster://", "bad node"),
        ("redis+cluster://h:x", "bad node"),
        ("redis+cluster://h:1,:2", "bad node"),
        ("redis+cluster://h:1?pattern=1", "unknown option"),
        ("redis+cluster://h:1?patterns=maybe", "patterns must be"),
        ("redis+cluster://h:1?ssl_ca_certs=x", "unknown option"),  # TLS options: rediss only
        ("rediss+cluster://h:1?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
    ]:
        with pytest.raises(ValueError, match=why):
            trio_push.RedisPubSub(bad)
    # The CLI says so and stops.
    process = ServerProcess("pubsub_app:app", "--redis", "redis+cluster://h:99999")
    assert process.process.wait(TIMEOUT) != 0
    process.stop()
    assert "--redis: bad node 'h:99999'" in process.log()


async def test_a_cluster_over_tls(nursery: trio.Nursery, tmp_path: Path) -> None:
    # rediss+cluster://: every node is reached on its TLS port, from the map.
    with trio.fail_after(LIMIT), RedisCluster(tmp_path, tls=trustme.CA()) as cluster:
        channels = spread(cluster, 3, "tls")
        pubsub = engine(cluster.url("patterns=1"), history=10)
        server = await start(nursery, Subscribe(*channels, "tls*"), pubsub=pubsub, history=10)
        (client,) = await connect_clients(nursery, server.port, 1)
        await wait_for(lambda: pubsub.connected)
        await subscribed(cluster, channels, 1)
        assert {link.address.tls is not None for link in pubsub._links.values()} == {True}
        assert sorted(link.address.port for link in pubsub._links.values()) == sorted(
            cluster.tls_ports[port] for port in cluster.master_ports()
        )
        for channel in channels:
            assert await pubsub.publish_confirmed(channel, numbered(channel, 0, big=True)) == 1
        await client.wait_messages(6)
        got = per_channel(client, channels, skip=0)
        assert got == {c: [numbered(c, 0, big=True)] * 2 for c in channels}


async def test_a_cluster_url_to_a_redis_that_is_not_one(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT), RedisServer() as redis:
        pubsub = engine(f"redis+cluster://127.0.0.1:{redis.port}")
        await nursery.start(pubsub.run)
        await wait_for(lambda: any("needs a Redis Cluster" in m for m in caplog.messages))
        assert "cluster support disabled" in caplog.text
        assert not pubsub.connected
        assert pubsub.publish("x", "y") is False
        await trio.sleep(0.5)  # asked again with the backoff: said once
        assert caplog.text.count("needs a Redis Cluster") == 1

    # A node that answers what is no map is said, and the engine goes on.
    async def garbage(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            await stream.send_all(b"*1\r\n$3\r\nfoo\r\n")

    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), garbage, 0)
    port = listeners[0].socket.getsockname()[1]
    odd = engine(f"redis+cluster://127.0.0.1:{port}")
    await nursery.start(odd.run)
    await wait_for(lambda: "gave what is not a map" in caplog.text)
    assert not odd.connected and odd.publish("x", "y") is False
    # A wrong password says so too.
    with trio.fail_after(LIMIT), RedisServer("--requirepass", "right", password="right") as redis:
        wrong = engine(f"redis+cluster://:wrong@127.0.0.1:{redis.port}")
        await nursery.start(wrong.run)
        await wait_for(lambda: "AUTH refused" in caplog.text)


async def test_history_of_channels_with_their_own_hash_tag(
    nursery: trio.Nursery, cluster: RedisCluster
) -> None:
    # Both channels share the slot of "room1", and so do their history keys.
    with trio.fail_after(LIMIT):
        channels = ["{room1}.chat", "{room1}.news"]
        pubsub = engine(cluster.url(), history=100)
        server = await start(nursery, Subscribe(*channels), pubsub=pubsub, history=100)
        (client,) = await connect_clients(nursery, server.port, 1, "sse")
        await wait_for(lambda: pubsub.connected)
        await subscribed(cluster, channels, 1)
        for n in range(3):
            for channel in channels:
                position = pubsub.publish(channel, f"{channel} {n}")
                assert isinstance(position, trio_push.Position)
                assert (await position.wait()).offset == n + 1
        await client.wait_messages(6)
        assert per_channel(client, channels, skip=0) == {
            c: [f"{c} {n}" for n in range(3)] for c in channels
        }
        owner = cluster.owner(key_slot(b"room1"))
        for channel in channels:
            assert int(owner.call("XLEN", f"tp:s:{channel}:t")) == 3
            assert owner.call("HGET", f"tp:m:{channel}:t", "o") == b"3"


# -- fan-out -----------------------------------------------------------------------------


async def test_a_thousand_subscribers_on_two_processes_get_every_shard(
    nursery: trio.Nursery, cluster: RedisCluster, processes: list[ServerProcess]
) -> None:
    with trio.fail_after(LIMIT):
        channels = spread(cluster, 6)
        assert {cluster.owner_of(c).port for c in channels} == set(cluster.master_ports())
        processes += [spawn(cluster), spawn(cluster)]
        clients = await clients_of(nursery, processes, channels, 500)
        assert len(clients) == 1000
        await subscribed(cluster, channels, 2)
        # Published from a third process's engine, as sharded publishes.
        publisher = engine(cluster.url())
        await nursery.start(publisher.run)
        await wait_for(lambda: publisher.connected)
        # 64 KiB messages on three channels, one on each shard.
        big = {(10, channels[0]), (12, channels[1]), (14, channels[2])}
        for n in range(20):
            for channel in channels:
                message = numbered(channel, n, big=(n, channel) in big)
                assert await publisher.publish_confirmed(channel, message) == 2
        expected = {c: [numbered(c, n, (n, c) in big) for n in range(20)] for c in channels}
        for client in clients:
            await client.wait_messages(1 + 20 * len(channels), timeout=60)
            assert per_channel(client, channels) == expected
        # Each channel's traffic stayed on its shard: no classic publish anywhere.
        for node in cluster.live():
            assert b"cmdstat_publish:" not in node.call("INFO", "commandstats")
        assert publisher.failed == 0


# -- a slot's migration -------------------------------------------------------------------


async def migrate_while_publishing(
    cluster: RedisCluster, publisher: trio_push.RedisPubSub, channel: str, before: int
) -> tuple[int, int]:
    """Publish numbered messages on ``channel`` (each confirmed) while its slot
    moves to another master; ``before`` of them first. Returns how many were
    published in all, and how many of them after the move was complete."""
    slot = key_slot(channel.encode())
    target = next(n for n in cluster.live() if n.port != cluster.owner(slot).port)
    done = trio.Event()
    n = 0

    async def publish_one() -> None:
        nonlocal n
        await publisher.publish_confirmed(channel, numbered(channel, n, big=n % 50 == 7))
        n += 1

    for _ in range(before):
        await publish_one()

    async def move() -> None:
        source = await in_thread(cluster.begin_migration, slot, target)
        await trio.sleep(0.05)
        await in_thread(cluster.move_keys, slot, source, target)
        await trio.sleep(0.05)
        await in_thread(cluster.end_migration, slot, target)
        done.set()

    async with trio.open_nursery() as inner:
        inner.start_soon(move)
        while not done.is_set():
            await publish_one()
            await trio.sleep(0.002)
    moved_at = n
    return moved_at, target.port


async def test_a_slot_migrated_mid_stream_with_history_loses_nothing(
    nursery: trio.Nursery, cluster: RedisCluster, processes: list[ServerProcess]
) -> None:
    with trio.fail_after(LIMIT):
        (channel, other) = spread(cluster, 2, "mig")
        processes += [spawn(cluster, "--history", "1000"), spawn(cluster, "--history", "1000")]
        clients = await clients_of(nursery, processes, [channel, other], 100)
        await subscribed(cluster, [channel, other], 2)
        publisher = engine(cluster.url(), history=1000)
        await nursery.start(publisher.run)
        await wait_for(lambda: publisher.connected)
        with trio.fail_after(TIMEOUT):
            moved_at, target = await migrate_while_publishing(cluster, publisher, channel, 100)
            assert cluster.owner_of(channel).port == target
            for n in range(moved_at, moved_at + 50):
                await publisher.publish_confirmed(channel, numbered(channel, n, n % 50 == 7))
            await publisher.publish_confirmed(other, numbered(other, 0))
        total = moved_at + 50
        expected = [numbered(channel, n, n % 50 == 7) for n in range(total)]
        for client in clients:
            await client.wait_for(lambda c: f"{channel} {total - 1}" in c.messages, 30)
            await client.wait_for(lambda c: numbered(other, 0) in c.messages)
            got = per_channel(client, [channel, other])
            assert got == {channel: expected, other: [numbered(other, 0)]}
        assert publisher.failed == 0
        for process in processes:
            assert "is read from history" in process.log()


async def test_a_slot_migrated_mid_stream_without_history_keeps_order(
    nursery: trio.Nursery, cluster: RedisCluster, processes: list[ServerProcess]
) -> None:
    with trio.fail_after(LIMIT):
        # Without history, what is published on the slot's channels between the
        # move and the resubscription on the new master is not delivered (the
        # docs say so); everything before and after is, in order, once.
        (channel,) = spread(cluster, 1, "plain")
        processes += [spawn(cluster), spawn(cluster)]
        clients = await clients_of(nursery, processes, [channel], 100)
        await subscribed(cluster, [channel], 2)
        publisher = engine(cluster.url())
        await nursery.start(publisher.run)
        await wait_for(lambda: publisher.connected)
        with trio.fail_after(TIMEOUT):
            moved_at, target = await migrate_while_publishing(cluster, publisher, channel, 100)
        await subscribed(cluster, [channel], 2)  # on the new master now
        assert cluster.owner_of(channel).port == target
        for n in range(moved_at, moved_at + 50):
            await publisher.publish_confirmed(channel, numbered(channel, n))
        total = moved_at + 50
        for client in clients:
            await client.wait_for(lambda c: f"{channel} {total - 1}" in c.messages, 30)
            got = per_channel(client, [channel])[channel]
            numbers = [int(m.split(" ")[1].rstrip(".")) for m in got]
            assert numbers == sorted(set(numbers))  # in order, once each
            assert set(range(100)) <= set(numbers)  # all before the move
            assert set(range(moved_at, total)) <= set(numbers)  # all after it
        assert publisher.failed == 0  # MOVED publishes were sent again, not lost
        # What the subscribers may have missed is said, in both processes.
        for process in processes:
            assert "1 of them keep no history: what was published" in process.log()


# -- MOVED and ASK ------------------------------------------------------------------------


async def test_publishes_follow_ask_and_moved(nursery: trio.Nursery, cluster: RedisCluster) -> None:
    with trio.fail_after(LIMIT):
        # A channel with history: once its keys are migrated the source answers
        # ASK (the script runs on the target after ASKING); once the slot is the
        # target's, MOVED. Every publish is confirmed; the subscriber here gets
        # all of them (what the target published while it subscribed on the
        # source comes from history once it is resubscribed).
        channel = "asked"
        slot = key_slot(channel.encode())
        pubsub = engine(cluster.url(), history=100)
        server = await start(nursery, Subscribe(channel), pubsub=pubsub, history=100)
        (client,) = await connect_clients(nursery, server.port, 1)
        await wait_for(lambda: pubsub.connected)
        await subscribed(cluster, [channel], 1)
        positions = []

        async def publish(n: int) -> None:
            position = pubsub.publish(channel, f"m{n}")
            assert isinstance(position, trio_push.Position)
            await position.wait()
            assert position.error is None
            positions.append(position.offset)

        target = next(n for n in cluster.live() if n.port != cluster.owner(slot).port)
        await publish(0)
        source = await in_thread(cluster.begin_migration, slot, target)
        await publish(1)  # the keys are still on the source: it runs there
        assert await in_thread(cluster.move_keys, slot, source, target) == 2
        await publish(2)  # ASK
        await publish(3)
        assert int(target.call("INFO", "commandstats").count(b"cmdstat_asking:")) == 1
        await in_thread(cluster.end_migration, slot, target)
        await publish(4)  # MOVED, then the new owner
        await publish(5)
        assert positions == [1, 2, 3, 4, 5, 6]
        assert pubsub.failed == 0
        await client.wait_for(lambda c: len(c.messages) >= 6)
        assert client.messages == [f"m{n}" for n in range(6)]


async def test_a_plain_url_to_a_cluster_node_says_to_use_redis_cluster(
    nursery: trio.Nursery, cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT):
        node = cluster.live()[0]
        elsewhere = next(c for c in spread(cluster, 3, "plain") if cluster.owner_of(c) is not node)
        pubsub = engine(f"redis://127.0.0.1:{node.port}", history=10)
        await nursery.start(pubsub.run)
        await wait_for(lambda: pubsub.connected)
        position = pubsub.publish(elsewhere, "x")
        assert isinstance(position, trio_push.Position)
        with pytest.raises(trio_push.PublishError, match="MOVED"):
            await position.wait()
        assert any("use a redis+cluster:// URL" in m for m in caplog.messages)
        # Without history it is classic pub/sub, which any node serves.
        plain = engine(f"redis://127.0.0.1:{node.port}")
        server = await start(nursery, Subscribe(elsewhere), pubsub=plain)
        (client,) = await connect_clients(nursery, server.port, 1)
        await wait_for(lambda: plain.connected and int(node.numsub(elsewhere)) == 1)
        assert await plain.publish_confirmed(elsewhere, "classic") == 1
        assert await client.wait_messages(1) == ["classic"]


# -- patterns -----------------------------------------------------------------------------


class Refused(Subscribe):
    def __init__(self, *channels: str) -> None:
        super().__init__(*channels)
        self.refused: list[tuple[str, str]] = []

    def on_subscribe_error(self, client: trio_push.Client, channel: str, reason: str) -> None:
        self.refused.append((channel, reason))
        client.write(f"refused {channel}")


async def test_patterns_are_refused_unless_the_url_asks_for_them(
    nursery: trio.Nursery, cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(LIMIT):
        channels = spread(cluster, 3, "p.")
        off = engine(cluster.url())
        handler = Refused("p.*", channels[0])
        server = await start(nursery, handler, pubsub=off)
        (client,) = await connect_clients(nursery, server.port, 1)
        await client.wait_for(lambda c: "refused p.*" in c.messages)
        ((pattern, reason),) = handler.refused
        assert pattern == "p.*" and "?patterns=1" in reason
        assert off.subscribe_errors == 1
        assert any("patterns=1" in m for m in caplog.messages)
        await wait_for(lambda: off.connected)
        await subscribed(cluster, channels[:1], 1)
        assert off.publish(channels[0], "exact still works")
        await client.wait_for(lambda c: "exact still works" in c.messages)

        # With ?patterns=1: one classic PSUBSCRIBE, and publishes go out twice
        # (sharded, and classic for the patterns), with history too.
        on = engine(cluster.url("patterns=1"), history=10)
        handler = Refused("p.*", channels[1], "bad}name")
        server = await start(nursery, handler, pubsub=on, history=10)
        clients = await connect_clients(nursery, server.port, 3, "sse")
        # A channel with history must be keyable in its own slot.
        for each in clients:
            await each.wait_for(lambda c: "refused bad}name" in c.messages)
            each.messages.remove("refused bad}name")
        assert {c for c, _ in handler.refused} == {"bad}name"} and "hash tag" in handler.refused[0][
            1
        ]
        assert on.publish("bad}name", "x") is False
        await wait_for(lambda: on.connected)
        await subscribed(cluster, channels[1:2], 1)
        numpat = [int(n.call("PUBSUB", "NUMPAT")) for n in cluster.live()]
        assert sorted(numpat) == [0, 0, 1]  # on one node only: no duplicates
        for channel in channels:
            for n in range(3):
                message = f"{channel} {n}"
                # Reached: the exact subscriptions of this shard (the copy's are not counted).
                reached = await on.publish_confirmed(
                    channel, message.ljust(BIG if n == 1 else 0, ".")
                )
                assert reached == (1 if channel in channels[:2] else 0)  # off and on
        for each in clients:
            await each.wait_messages(9 + 3)
            got = per_channel(each, channels, skip=0)
            # Every channel through the pattern; channels[1] also as itself.
            for channel in channels:
                times = 2 if channel == channels[1] else 1
                expected = [f"{channel} {n}".ljust(BIG if n == 1 else 0, ".") for n in range(3)]
                assert sorted(got[channel]) == sorted(expected * times)
        assert on.failed == 1  # bad}name

        # A publish right after a pattern subscription (on another node than
        # the channel's) waits for it: the client gets it.
        (late,) = await connect_clients(nursery, server.port, 1)
        for n, channel in enumerate(channels):
            # Both in one read: the publish goes out as the PSUBSCRIBE does.
            await late.stream.send_all(
                frame(TEXT, f"sub q{n}.*".encode())
                + frame(TEXT, f"pub q{n}.{channel} right after {n}".encode())
            )
            await late.wait_for(
                lambda c, n=n, ch=channel: f"ok pub q{n}.{ch} right after {n}" in c.messages
            )
        # (From three shards over the cluster bus: in any order between them.)
        right = [f"right after {n}" for n in range(3)]
        await late.wait_for(lambda c: set(right) <= set(c.messages))
        assert sorted(m for m in late.messages if m.startswith("right")) == right


# -- counts ---------------------------------------------------------------------------------


async def test_cluster_counts_over_two_engines(
    nursery: trio.Nursery, cluster: RedisCluster
) -> None:
    with trio.fail_after(LIMIT):
        one, two = engine(cluster.url("patterns=1")), engine(cluster.url("patterns=1"))
        first = await start(nursery, Subscribe("room", "ro*"), pubsub=one)
        second = await start(nursery, Subscribe("room"), pubsub=two)
        await connect_clients(nursery, first.port, 3)
        await connect_clients(nursery, second.port, 2)
        with trio.fail_after(TIMEOUT):
            while await one.cluster_count("room") != 3 + 3 + 2:
                await trio.sleep(0.05)
        assert await two.cluster_count("roof") == 3
        # Every key of the counts is in one slot, on one master.
        owner = cluster.owner(key_slot(b"{tp}"))
        assert int(owner.call("ZCARD", "{tp}:procs")) == 2


# -- failover --------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
async def test_a_master_killed_and_its_replica_promoted(
    nursery: trio.Nursery, tmp_path: Path, processes: list[ServerProcess], history: bool
) -> None:
    # Publishes on the failed shard made while it has no master are refused
    # (an error here, False from publish), those in flight when it died are
    # unconfirmed: each counted. With history, every publish that Redis
    # confirmed reaches every subscriber, those of the failed shard included
    # (filled from the promoted replica's copy of the history). Without, the
    # failed shard's subscribers miss what was confirmed between the
    # promotion and their resubscription; the other shards lose nothing.
    with trio.fail_after(LIMIT), RedisCluster(tmp_path, masters=3, replicas=1) as cluster:
        channels = spread(cluster, 3, "f")
        options = ["--history", "1000"] if history else []
        processes += [spawn(cluster, *options), spawn(cluster, *options)]
        clients = await clients_of(nursery, processes, channels, 100)
        await subscribed(cluster, channels, 2)
        publisher = engine(cluster.url(), history=1000 if history else 0)
        await nursery.start(publisher.run)
        await wait_for(lambda: publisher.connected)
        confirmed: dict[str, list[str]] = {c: [] for c in channels}
        unconfirmed: list[str] = []
        refused = 0
        n = 0

        async def round_of_publishes() -> None:
            nonlocal n, refused
            for channel in channels:
                message = numbered(channel, n, big=n % 40 == 3)
                failed = publisher.failed
                try:
                    await publisher.publish_confirmed(channel, message)
                except trio_push.PublishError:
                    if publisher.failed > failed:
                        refused += 1
                    else:
                        unconfirmed.append(message)  # the master died first
                else:
                    confirmed[channel].append(message)
            n += 1
            await trio.sleep(0.005)

        for _ in range(30):
            await round_of_publishes()
        before = len(confirmed[channels[0]])
        victim = cluster.owner_of(channels[0])
        killed = trio.Event()

        async def kill() -> None:
            await in_thread(cluster.kill_master, victim)
            killed.set()

        nursery.start_soon(kill)
        while not killed.is_set():
            await round_of_publishes()
        assert cluster.owner_of(channels[0]).port != victim.port
        await subscribed(cluster, channels, 2)
        while not publisher.connected:
            await round_of_publishes()
        after = len(confirmed[channels[0]])
        for _ in range(30):
            await round_of_publishes()
        assert refused > 0 and publisher.failed >= refused
        assert publisher.unconfirmed == len(unconfirmed)
        for client in clients:
            for channel in channels:
                last = confirmed[channel][-1]
                await client.wait_for(lambda c, last=last: last in c.messages, 30)
            got = per_channel(client, channels)
            for channel in channels:
                mine = [m for m in got[channel] if m in confirmed[channel]]
                assert len(got[channel]) == len(set(got[channel]))
                if history or channel != channels[0]:
                    assert mine == confirmed[channel]
                else:
                    expected = confirmed[channel]
                    assert mine == sorted(mine, key=expected.index)  # in order
                    assert set(expected[:before]) | set(expected[after:]) <= set(mine)
        for process in processes:
            assert "redis cluster: 3 masters" in process.log()
