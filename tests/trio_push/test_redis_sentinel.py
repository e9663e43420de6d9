"""The Redis engine behind Sentinel (``redis+sentinel://``): the master found
from the sentinels, its ROLE checked, a failover followed; and history
across a failover, whose new master may be behind what subscribers got.
Real redis-server processes: masters, replicas, sentinels."""

from __future__ import annotations

import json
import logging
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

import trio_push
from tests.helpers.history import EventSource, TcpProxy, open_event_source
from tests.helpers.procs import free_port
from tests.helpers.pubsub import RedisServer, ServerProcess, Subscribe, connect_clients, start
from tests.helpers.sentinel import (
    SERVICE,
    SentinelGroup,
    SentinelServer,
    caught_up,
    replica_of,
    wait_until,
)
from tests.helpers.server import wait_for
from tests.trio_push.test_redis_history import (
    history_engine,
    last_id,
    names,
    publish_all,
    running,
    serve,
    sse_url,
)
from trio_push._history import History, HistoryRules
from trio_push._redis import RedisAddress
from trio_push._sentinel import SentinelAddress


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica, in sync."""
    with (
        RedisServer("--repl-diskless-sync-delay", "0", "--dir", str(tmp_path)) as master,
        replica_of(master, tmp_path) as replica,
    ):
        wait_until(lambda: SentinelGroup.synced(replica), "the replica synced")
        yield master, replica


def sentinel_url(*ports: int, service: str = SERVICE) -> str:
    return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + f"/{service}"


def quick(url: str) -> trio_push.RedisPubSub:
    return trio_push.RedisPubSub(url, backoff_max=0.2, health_interval=2.0)


async def pub_sub_works(nursery: trio.Nursery, pubsub: trio_push.RedisPubSub) -> None:
    """A server on ``pubsub``: its clients get a 64 KiB message and a burst."""
    server = await start(nursery, Subscribe("s"), pubsub=pubsub)
    clients = await connect_clients(nursery, server.port, 2, "websocket")
    clients += await connect_clients(nursery, server.port, 1, "sse")
    await wait_for(lambda: pubsub.connected)
    sent = ["x" * 65536, *names("m", 500)]
    for message in sent:
        assert trio_push.publish("s", message)
    for client in clients:
        assert await client.wait_messages(len(sent)) == sent


# -- URLs ---------------------------------------------------------------------------------


def test_sentinel_urls() -> None:
    url = "redis+sentinel://me:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:5/my%20master/2"
    address = SentinelAddress.from_url(url + "?sentinel_password=sp&sentinel_timeout=0.5", str)
    assert address.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 5)]
    assert (address.service, address.user, address.password) == ("my master", "me", "s@cret")
    assert (address.sentinel_user, address.sentinel_password, address.timeout) == (None, "sp", 0.5)
    assert str(address) == "redis+sentinel my master via 10.0.0.1:26379,10.0.0.2:26380,[::1]:5"
    # Each node is reached as a redis:// (or rediss://, with the TLS options) URL.
    tls_url = "rediss+sentinel://h/s?ssl_cert_reqs=none&sentinel_username=u"
    tls = SentinelAddress.from_url(tls_url, RedisAddress.from_url)
    (node,) = tls._nodes.values()
    assert isinstance(node, RedisAddress) and node.tls is not None and tls.sentinel_user == "u"
    assert str(tls) == "rediss+sentinel s via h:26379"
    engine = quick(sentinel_url(1, 2))
    assert str(engine.address) == "redis+sentinel mymaster via 127.0.0.1:1,127.0.0.1:2"
    errors = {
        "redis+sentinel:///mymaster": "no sentinel",
        "redis+sentinel://h:1,h:2": "no service name",
        "redis+sentinel://h:1,h:x/s": "bad port 'h:x'",
        "redis+sentinel://h/s/x": "bad database number",
        "redis+sentinel://h/s?sentinel_timeout=soon": "sentinel_timeout must be",
        "rediss+sentinel://h/s?ssl_cert_reqs=maybe": "ssl_cert_reqs must be",
        "redis+sentinels://h/s": "expected a redis://",
    }
    for bad, error in errors.items():
        with pytest.raises(ValueError, match=error):
            trio_push.RedisPubSub(bad)


# -- finding the master -------------------------------------------------------------------


async def test_all_sentinels_down_is_one_clear_line_and_publishes_refused(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "trio_push")
    ports = [free_port(), free_port()]
    pubsub = await running(nursery, quick(sentinel_url(*ports)))
    # What each sentinel answered, on one line.
    where = ",".join(f"127.0.0.1:{p}" for p in ports)
    each = [rf"sentinel 127\.0\.0\.1:{p}: [^;]*Connection refused" for p in ports]
    line = re.compile(
        re.escape(f"redis publisher: cannot connect to redis+sentinel mymaster via {where} (")
        + "; ".join(each)
        + re.escape("); retrying")
    )
    await wait_for(lambda: line.search(caplog.text) is not None)
    assert not pubsub.connected
    assert pubsub.publish("s", "nobody hears this") is False
    assert "redis unreachable: publish() returns False" in caplog.text
    # The watcher says it too.
    await wait_for(lambda: f"redis sentinel 127.0.0.1:{ports[1]}: not watched" in caplog.text)
    # Once at WARNING, however long it lasts (then at DEBUG).
    await wait_for(lambda: caplog.text.count("redis publisher: cannot connect") >= 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("redis publisher: cannot connect" in m for m in warnings) == 1


async def test_a_sentinel_that_does_not_know_the_service_is_passed_over(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "trio_push")
    with (
        RedisServer() as redis,
        SentinelServer(tmp_path, {"other": redis.port}, quorum=1) as stranger,
        SentinelServer(tmp_path, {SERVICE: redis.port}, quorum=1) as knows,
    ):
        alone = await running(nursery, quick(sentinel_url(stranger.port)))
        told = f"sentinel 127.0.0.1:{stranger.port} does not know 'mymaster'"
        await wait_for(lambda: told in caplog.text)
        assert not alone.connected and alone.publish("s", "lost") is False
        # Listed first, it is asked first, and the next one answers.
        pubsub = quick(sentinel_url(stranger.port, knows.port))
        await pub_sub_works(nursery, pubsub)
        assert redis.numsub("s") == 1
        assert str(pubsub.address) == f"redis+sentinel mymaster at 127.0.0.1:{redis.port}"


async def test_a_sentinel_that_hangs_is_passed_over_after_sentinel_timeout(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_push")
    with (
        RedisServer() as redis,
        SentinelServer(tmp_path, {SERVICE: redis.port}, quorum=1) as hung,
        SentinelServer(tmp_path, {SERVICE: redis.port}, quorum=1) as other,
    ):
        assert hung.process is not None
        hung.process.send_signal(signal.SIGSTOP)  # it accepts connections, answers nothing
        try:
            url = sentinel_url(hung.port, other.port) + "?sentinel_timeout=0.3"
            await pub_sub_works(nursery, quick(url))
            passed_over = (
                f"redis sentinel 127.0.0.1:{other.port} named the master of 'mymaster',"
                f" after: sentinel 127.0.0.1:{hung.port}: no answer in time"
            )
            assert passed_over in caplog.text
            # The watcher asks the one that answered first.
            await wait_for(lambda: f"sentinel 127.0.0.1:{other.port}: watching" in caplog.text)
            assert f"sentinel 127.0.0.1:{hung.port}: not watched" not in caplog.text
        finally:
            hung.process.send_signal(signal.SIGCONT)


async def test_the_masters_password_and_the_sentinels_own(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "trio_push")
    with RedisServer("--requirepass", "m p", password="m p") as master:
        sentinel = SentinelServer(
            tmp_path,
            {SERVICE: master.port},
            1,
            "requirepass s3",
            f'sentinel auth-pass {SERVICE} "m p"',
        )
        sentinel.password = "s3"  # for its PING on starting
        with sentinel:
            url = f"redis+sentinel://:m%20p@127.0.0.1:{sentinel.port}/{SERVICE}"
            await pub_sub_works(nursery, quick(url + "?sentinel_password=s3"))
            assert master.numsub("s") == 1
            # Without the sentinel's password, or with a wrong one for the master: said.
            await running(nursery, quick(url))
            await running(nursery, quick(url.replace("m%20p", "wrong") + "?sentinel_password=s3"))
            refused = f"sentinel 127.0.0.1:{sentinel.port}: NOAUTH"
            await wait_for(lambda: refused in caplog.text and "AUTH refused: " in caplog.text)


async def test_a_node_that_is_a_replica_is_not_used_until_it_is_a_master(
    nursery: trio.Nursery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    replicated: tuple[RedisServer, RedisServer],
) -> None:
    # A sentinel naming a replica: as one that has not seen a switch yet
    # names an old master come back as a replica.
    caplog.set_level(logging.WARNING, "trio_push")
    master, old = replicated
    with SentinelServer(tmp_path, {SERVICE: old.port}, quorum=1) as sentinel:
        pubsub = quick(sentinel_url(sentinel.port))
        server = await start(nursery, Subscribe("s"), pubsub=pubsub)
        expected = f"master 127.0.0.1:{old.port} (from sentinel 127.0.0.1:{sentinel.port}):"
        await wait_for(lambda: f"{expected} it is a slave, not a master" in caplog.text)
        assert not pubsub.connected and pubsub.publish("s", "lost") is False
        assert master.numsub("s") == old.numsub("s") == 0
        old.call("REPLICAOF", "NO", "ONE")
        await wait_for(lambda: pubsub.connected)
        clients = await connect_clients(nursery, server.port, 2, "sse")
        await wait_for(lambda: old.numsub("s") == 1)
        assert trio_push.publish("s", "now")
        for client in clients:
            assert await client.wait_messages(1) == ["now"]


async def test_sentinels_and_master_over_tls(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    files = {"cert": "cert.pem", "key": "key.pem", "ca-cert": "ca.pem"}
    tls = [f"tls-{name}-file {tmp_path / file}" for name, file in files.items()]
    tls.append("tls-auth-clients no")
    master_port, sentinel_port = free_port(), free_port()
    options = [x for line in tls for x in ("--" + line.split()[0], line.split()[1])]
    # Plain ports too, for the test's own commands.
    with (
        RedisServer("--tls-port", str(master_port), *options) as master,
        SentinelServer(
            tmp_path,
            {SERVICE: master_port},
            1,
            f"tls-port {sentinel_port}",
            "tls-replication yes",  # it reaches the master over TLS too
            *tls,
        ),
    ):
        query = f"ssl_ca_certs={tmp_path / 'ca.pem'}"
        pubsub = quick(f"rediss+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}?{query}")
        await pub_sub_works(nursery, pubsub)
        assert master.numsub("s") == 1
        assert str(pubsub.address) == f"rediss+sentinel mymaster at 127.0.0.1:{master_port}"
        # A CA that did not sign their certificates: refused, with the reason.
        other = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        caplog.set_level(logging.WARNING, "trio_push")
        wrong = f"rediss+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}?ssl_ca_certs={other}"
        refused = await running(nursery, quick(wrong))
        await wait_for(lambda: "certificate verify failed" in caplog.text)
        assert f"sentinel 127.0.0.1:{sentinel_port}: " in caplog.text
        assert not refused.connected


# -- following a failover -----------------------------------------------------------------


async def test_a_switch_moves_every_connection_to_the_new_master(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # SENTINEL FAILOVER: the old master stays up (and becomes a replica); the
    # engine's connections to it end on +switch-master.
    caplog.set_level(logging.INFO, "trio_push")
    with SentinelGroup(tmp_path) as group:
        pubsub = quick(group.url)
        server = await start(nursery, Subscribe("s"), pubsub=pubsub)
        clients = await connect_clients(nursery, server.port, 3, "websocket")
        await wait_for(lambda: group.master.numsub("s") == 1)
        assert trio_push.publish("s", "before")
        group.sentinels[0].call("SENTINEL", "FAILOVER", SERVICE)
        await trio.to_thread.run_sync(group.wait_failover)
        await wait_for(lambda: group.replica.numsub("s") == 1 and pubsub.connected)
        assert group.master.numsub("s") == 0
        assert "redis subscriber: the master moved; reconnecting to the new one" in caplog.text
        assert trio_push.publish("s", "after")
        for client in clients:
            assert await client.wait_messages(2) == ["before", "after"]
        assert str(pubsub.address).endswith(f" at 127.0.0.1:{group.replica.port}")

        # A sentinel that missed the switch, naming a node that says it is a
        # master (as an old master restarted empty says, until the sentinels
        # make it a replica), listed first: the most recent configuration wins.
        with (
            RedisServer() as old,
            SentinelServer(tmp_path, {SERVICE: old.port}, quorum=1) as stale,
        ):
            ports = [stale.port, *(s.port for s in group.sentinels)]
            late = quick(sentinel_url(*ports))
            await late_server_works(nursery, late, group.replica)
            assert old.numsub("s") == 0


async def late_server_works(
    nursery: trio.Nursery, pubsub: trio_push.RedisPubSub, master: RedisServer
) -> None:
    """A second server on ``pubsub``, subscribed on ``master``, its client reached."""
    server = await start(nursery, Subscribe("s"), pubsub=pubsub)
    (client,) = await connect_clients(nursery, server.port, 1, "sse")
    await wait_for(lambda: pubsub.connected and master.numsub("s") == 2)
    assert pubsub.publish("s", "late")  # (trio_push.publish: once per engine here)
    assert await client.wait_messages(1) == ["late"]


# -- history across a failover ------------------------------------------------------------


async def test_a_new_master_behind_what_subscribers_got_loses_nothing_silently(
    nursery: trio.Nursery, replicated: tuple[RedisServer, RedisServer]
) -> None:
    # Replication is asynchronous: the replica promoted may not have the last
    # messages that the subscribers got from the old master. Its next
    # publishes must not be taken for those (same epoch, same offsets).
    master, replica = replicated
    proxy = TcpProxy(master.port)  # the servers reach "the master" through it
    await proxy.start(nursery)
    pubsub = history_engine(proxy.url)
    port = await serve(nursery, pubsub, "h")
    publisher = await running(nursery, history_engine(proxy.url))
    sources = [(await open_event_source(nursery, sse_url(port, "h")))[0] for _ in range(2)]
    await wait_for(lambda: master.numsub("h") == 1)
    first = await publish_all(publisher, "h", names("a", 100))
    wait_until(lambda: caught_up(master, replica), "the replica has a0..a99")
    replica.call("REPLICAOF", "NO", "ONE")  # and no more: it is the master to come
    await publish_all(publisher, "h", names("b", 10))  # the old master's last
    for source in sources:
        await source.wait_messages(110)
    beyond = sources[0].last_id
    master.kill()
    await wait_for(lambda: not (publisher.connected or pubsub.connected))
    proxy.target = replica.port  # from now on (what they connect to until then is dead)
    proxy.cut()
    await wait_for(lambda: publisher.connected and pubsub.connected)
    assert replica.numsub("h") == 1
    after = await publish_all(publisher, "h", names("c", 20))
    # A new epoch, going on from the new master's history.
    assert after[0].epoch != first[0].epoch
    assert [p.offset for p in after] == list(range(101, 121))
    everything = names("a", 100) + names("b", 10) + names("c", 20)
    for source in sources:
        assert await source.wait_messages(130) == everything
        # What they had beyond the new master's history: told it is gone.
        assert source.gaps == ["gap h epoch"]
    # A page resuming from a position the new master has: the rest, no gap.
    middle = last_id("h", first[49])
    resumed, _ = await open_event_source(nursery, sse_url(port, "h"), middle)
    assert await resumed.wait_messages(70) == names("a", 50, 50) + names("c", 20)
    assert resumed.gaps == []
    # From one only the old master had: the gap, then live.
    lost, _ = await open_event_source(nursery, sse_url(port, "h"), beyond)
    await lost.wait_for(lambda s: len(s.gaps) == 1)
    await publish_all(publisher, "h", ["live"])
    assert await lost.wait_messages(1) == ["live"] and lost.gaps == ["gap h epoch"]


# -- a master killed mid-stream -----------------------------------------------------------


def number(message: str | bytes) -> int | None:
    """A numbered message's number (through the envelope, if it is in one);
    None for anything else (hello, gap)."""
    text = message if isinstance(message, str) else message.decode()
    if text.startswith("{"):
        text = json.loads(text).get("data", "")
    head, _, _ = text.partition(":")
    return int(head) if head.isdigit() else None


class SteadyPublisher:
    """Publishes ``<n>:`` messages on ``channel`` every few milliseconds, one
    in ``BIG_EVERY`` padded to 64 KiB, and keeps what each publish returned."""

    BIG_EVERY = 50

    def __init__(self, pubsub: trio_push.RedisPubSub, channel: str) -> None:
        self.pubsub = pubsub
        self.channel = channel
        self.results: list[trio_push.Position | bool] = []
        self.stop = trio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            n = len(self.results)
            message = f"{n}:" + ("." * 65536 if n % self.BIG_EVERY == 0 else "")
            self.results.append(self.pubsub.publish(self.channel, message))
            await trio.sleep(0.004)

    async def settled(self) -> set[int]:
        """The numbers whose publish Redis confirmed (with history: whose position settled)."""
        confirmed = set()
        for n, result in enumerate(self.results):
            if isinstance(result, trio_push.Position):
                try:
                    await result.wait()
                except trio_push.PublishError:
                    continue
            if result:
                confirmed.add(n)
        return confirmed


async def resume(nursery: trio.Nursery, page: EventSource, port: int) -> EventSource:
    """``page`` opened again on the server at ``port`` from its last event id,
    once it has got everything up to the end."""
    again, _ = await open_event_source(nursery, sse_url(port, "f"), page.last_id)
    await again.wait_for(lambda s: any("end" in m for m in s.messages))
    return again


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
async def test_the_master_killed_mid_stream(
    nursery: trio.Nursery,
    tmp_path: Path,
    processes: list[ServerProcess],
    caplog: pytest.LogCaptureFixture,
    history: bool,
) -> None:
    caplog.set_level(logging.WARNING, "trio_push.redis")
    with SentinelGroup(tmp_path) as group, trio.fail_after(90):
        args = ["tests.apps.history_app:App", "--redis", group.url]
        processes += [ServerProcess(*args, *(["--history", "20000"] if history else []))]
        processes += [ServerProcess(*args, *(["--history", "20000"] if history else []))]
        clients = []
        for process in processes:
            for protocol in ("websocket", "sse"):
                clients += await connect_clients(nursery, process.port, 60, protocol, "/sub?ch=f")
        for client in clients:
            await client.wait_messages(1)  # hello: subscribed
        # With history, pages (httpx-sse) that go away before the failover
        # and resume after it, on the other server.
        pages = [
            await open_event_source(nursery, sse_url(processes[0].port, "f")) for _ in range(10)
        ]
        pages = pages if history else []
        await wait_for(lambda: group.master.numsub("f") == 2)
        publisher = quick(group.url)
        if history:
            publisher.history = HistoryRules(History(20000))
        await running(nursery, publisher)
        await wait_for(lambda: publisher.connected)
        steady = SteadyPublisher(publisher, "f")
        nursery.start_soon(steady.run)

        await trio.sleep(0.8)
        group.sentinels[0].kill()  # the one asked and watched first: the next ones take over
        await trio.sleep(0.2)
        for _, scope in pages:
            scope.cancel()
        killed_at = len(steady.results)
        group.kill_master()
        began = trio.current_time()
        await trio.to_thread.run_sync(group.wait_failover)
        switched = trio.current_time() - began
        await wait_for(lambda: group.replica.numsub("f") == 2)
        resubscribed_at = len(steady.results)
        back = trio.current_time() - began
        await trio.sleep(0.8)
        steady.stop.set()
        settled = await steady.settled()
        # The end: once every client has it, nothing else is on its way.
        await wait_for(lambda: publisher.connected)
        assert await publisher.publish_confirmed("f", f"{len(steady.results)}:end") == 2
        for client in clients:
            await client.wait_for(lambda c: bool(c.messages) and "end" in str(c.messages[-1]))
        resumed = [await resume(nursery, page, processes[1].port) for page, _ in pages]

    refused = [n for n, r in enumerate(steady.results) if r is False]
    accepted = len(steady.results) - len(refused)
    losses = []
    for client in clients:
        got = [n for n in map(number, client.messages) if n is not None]
        assert got == sorted(set(got)), "each once, in order"
        assert not set(refused) & set(got), "a refused publish reached nobody"
        losses.append(sorted(settled - set(got)))
    lost = max(len(x) for x in losses)
    settled_too = f" ({len(settled)} with their position settled)" if history else ""
    print(
        f"\n{'history' if history else 'no history'}: {len(steady.results)} published,"
        f" {len(refused)} refused (False), {accepted} accepted{settled_too},"
        f" {publisher.unconfirmed} unconfirmed; the sentinels switched in {switched:.1f} s,"
        f" both servers were subscribed to the new master in {back:.1f} s; lost by the worst"
        f" of {len(clients)} clients: {lost}"
    )
    # Refused: while the switch made them impossible, and only then.
    assert refused and min(refused) >= killed_at and publisher.failed == len(refused)
    assert f"redis: {len(refused)} publishes failed while Redis was unreachable" in caplog.text
    # Unconfirmed: counted, and said.
    unconfirmed = [m for m in caplog.messages if "unconfirmed when the connection broke" in m]
    assert sum(int(m.split()[2]) for m in unconfirmed) == publisher.unconfirmed
    if history:
        # What the servers missed while resubscribing is read from history.
        assert lost == 0
        # A page that resumes across the failover misses nothing, or (when it
        # had got further than the replica when the master died) is told so.
        for (page, _), again in zip(pages, resumed, strict=True):
            got = [n for n in map(number, page.messages + again.messages) if n is not None]
            assert got == sorted(set(got))
            assert again.gaps == [] and not settled - set(got) or again.gaps == ["gap f epoch"]
        told = sum(bool(a.gaps) for a in resumed)
        print(f"pages resumed on the other server: {len(pages)}, told of an epoch gap: {told}")
    else:
        # Only what was published while a server was not subscribed yet: after
        # the master died (and the few in flight then, counted as unconfirmed),
        # before both servers were subscribed to the new master.
        for missing in losses:
            assert sum(n < killed_at for n in missing) <= publisher.unconfirmed
            assert all(n < resubscribed_at for n in missing)
    moved = (
        f"redis subscriber: connected to redis+sentinel mymaster at 127.0.0.1:{group.replica.port}"
    )
    assert all(moved in p.log() for p in processes)
    watching = [f"redis sentinel 127.0.0.1:{s.port}: watching" for s in group.sentinels[1:]]
    assert all(any(w in p.log() for w in watching) for p in processes)


async def test_history_written_before_replication_ids_were_kept_goes_on_in_its_epoch(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    # As an earlier version left it: the meta without "r".
    pubsub = await running(nursery, history_engine(redis.url))
    (one,) = await publish_all(pubsub, "u", ["one"])
    redis.call("HDEL", "tp:m:{u}", "r")
    (two,) = await publish_all(pubsub, "u", ["two"])
    assert (two.epoch, two.offset) == (one.epoch, 2)
    assert redis.call("HGET", "tp:m:{u}", "r") is not None  # taken from now on
