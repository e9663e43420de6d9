"""Pub/sub with the in-process engine, against a real server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import sansio_push as sp
import trio_push
from tests.helpers.pubsub import Subscribe, connect_clients, start
from tests.helpers.server import TIMEOUT, wait_for
from trio_push._glob import glob_match
from trio_push._pubsub import LAG_FACTOR, TRIM_BYTES, Subscriptions


async def test_fanout_500_websocket_and_500_sse_clients_get_100_messages_in_order(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, Subscribe("news"))
    clients = await connect_clients(nursery, server.port, 500, "websocket")
    clients += await connect_clients(nursery, server.port, 500, "sse")
    await wait_for(lambda: trio_push.subscriber_count("news") == 1000)

    expected = [f"message {i:03d} " + "x" * 40 for i in range(100)]
    for i, message in enumerate(expected):
        assert trio_push.publish("news", message)
        if i % 10 == 9:
            await trio.sleep(0)  # let some go out while others are published

    with trio.fail_after(TIMEOUT):
        for client in clients:
            assert await client.wait_messages(100) == expected
    assert all(len(c.messages) == 100 for c in clients)


async def test_a_message_is_encoded_once_for_every_subscriber(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start(nursery, Subscribe("once"))
    clients = await connect_clients(nursery, server.port, 3)
    await wait_for(lambda: server.pubsub.count("once") == 3)
    queued: list[bytes] = []
    original = sp.ServerConnection._queue
    original_run = sp.ServerConnection.send_run

    def spy(self: sp.ServerConnection, data: bytes, burst: bool = False) -> bool:
        queued.append(data)
        return original(self, data, burst)

    def spy_run(self: sp.ServerConnection, run: sp.PreparedRun, *, burst: bool = False) -> bool:
        if not original_run(self, run, burst=burst):
            return False
        queued.append(run.ws_frames()[0])  # the run queued in one piece
        return True

    monkeypatch.setattr(sp.ServerConnection, "_queue", spy)
    monkeypatch.setattr(sp.ServerConnection, "send_run", spy_run)
    trio_push.publish("once", "the same bytes")
    for client in clients:
        assert await client.wait_messages(1) == ["the same bytes"]
    assert len(queued) == 3
    assert queued[0] is queued[1] is queued[2]


async def test_pattern_subscriptions_match_as_redis_psubscribe(nursery: trio.Nursery) -> None:
    server = await start(nursery, Subscribe())
    patterns = ["chat.*", "room.?", "[ab]", "news"]
    clients = await connect_clients(nursery, server.port, len(patterns))
    for client, pattern in zip(clients, patterns, strict=True):
        await client.send_text(f"sub {pattern}")
        await client.wait_messages(1)
    channels = ["chat.1", "chat.", "chatx", "room.1", "room.12", "a", "b", "c", "ab", "news"]
    for channel in channels:
        trio_push.publish(channel, channel)
    for client, pattern in zip(clients, patterns, strict=True):
        # Queued after the publishes above: everything before it has arrived.
        await client.send_text("ping")
        await client.wait_for(lambda c: "ok ping" in c.messages)
        expected = [c for c in channels if glob_match(pattern, c)]
        assert client.messages == [f"ok sub {pattern}", *expected, "ok ping"]
    assert [c for c in channels if glob_match("chat.*", c)] == ["chat.1", "chat."]
    assert [c for c in channels if glob_match("room.?", c)] == ["room.1"]
    assert [c for c in channels if glob_match("[ab]", c)] == ["a", "b"]


async def test_a_channel_and_a_pattern_that_match_deliver_once_each(nursery: trio.Nursery) -> None:
    # As Redis does: one delivery per matching subscription.
    server = await start(nursery, Subscribe("chat.1", "chat.*"))
    (client,) = await connect_clients(nursery, server.port, 1)
    await wait_for(lambda: server.pubsub.count("chat.1") == 1)
    trio_push.publish("chat.1", "twice")
    trio_push.publish("chat.2", "once")
    assert await client.wait_messages(3) == ["twice", "twice", "once"]


class Announce:
    """Subscribes on open, then publishes its own arrival to the channel."""

    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe("room")
        client.publish("room", f"joined {client.env['QUERY_STRING']}")


async def test_a_subscription_made_while_the_writer_sleeps_still_wakes_it(
    nursery: trio.Nursery,
) -> None:
    # Each visitor's writer may be asleep before on_open subscribes it: the
    # publish that follows must still wake it (examples/chat's join).
    server = await start(nursery, Announce())
    for n in range(4):
        (client,) = await connect_clients(nursery, server.port, 1, path=f"/?{n}")
        with trio.fail_after(TIMEOUT):
            await client.wait_for(lambda c, n=n: f"joined {n}" in c.messages)
        await client.aclose()


async def test_unsubscribe_stops_delivery(nursery: trio.Nursery) -> None:
    server = await start(nursery, Subscribe("a", "b", "p.*"))
    (client,) = await connect_clients(nursery, server.port, 1)
    await wait_for(lambda: server.pubsub.count("a") == 1)
    trio_push.publish("a", "a1")
    await client.send_text("unsub a")
    await client.send_text("unsub p.*")
    await client.wait_for(lambda c: "ok unsub p.*" in c.messages)
    trio_push.publish("a", "a2")
    trio_push.publish("p.x", "p2")
    trio_push.publish("b", "b2")
    await client.wait_for(lambda c: "b2" in c.messages)
    assert client.messages == ["a1", "ok unsub a", "ok unsub p.*", "b2"]
    assert server.pubsub.count("a") == 0
    assert server.pubsub.count("b") == 1


async def test_publish_from_foreign_threads_keeps_each_threads_order(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, Subscribe("t"))
    clients = await connect_clients(nursery, server.port, 5)
    await wait_for(lambda: server.pubsub.count("t") == 5)

    def publisher(name: str) -> None:
        for i in range(300):
            assert trio_push.publish("t", f"{name} {i}")

    threads = [threading.Thread(target=publisher, args=(n,)) for n in ("x", "y")]
    for thread in threads:
        thread.start()
    await trio.to_thread.run_sync(publisher, "z")
    for thread in threads:
        await trio.to_thread.run_sync(thread.join)
    for client in clients:
        messages = await client.wait_messages(900)
        for name in ("x", "y", "z"):
            mine = [m for m in messages if isinstance(m, str) and m.startswith(name + " ")]
            assert mine == [f"{name} {i}" for i in range(300)]


async def test_subscribe_from_a_worker_thread_callback(nursery: trio.Nursery) -> None:
    # With threads=2 plain callbacks run in worker threads: subscribe hops
    # to the event loop and is applied before a later publish.
    server = await start(nursery, Subscribe(), threads=2)
    (client,) = await connect_clients(nursery, server.port, 1)
    await client.send_text("sub w")
    await client.send_text("pub w hello")
    assert await client.wait_messages(3) == ["ok sub w", "hello", "ok pub w hello"]


async def test_a_closed_client_is_unsubscribed_from_everything(nursery: trio.Nursery) -> None:
    handler = Subscribe(*(f"c{i}" for i in range(50)), "p.*")
    server = await start(nursery, handler)
    clients = await connect_clients(nursery, server.port, 2)
    await wait_for(lambda: server.pubsub.count("c7") == 2)
    subs = server.pubsub.subscriptions  # type: ignore[attr-defined]
    assert [len(session.cursors) for session in server.push_connections] == [51, 51]
    await clients[0].aclose()
    await wait_for(lambda: len(handler.closed) == 1)
    assert server.pubsub.count("c7") == 1
    assert server.pubsub.count("p.q") == 1
    await clients[1].aclose()
    await wait_for(lambda: len(handler.closed) == 2)
    assert subs.exact == {} and subs.patterns == {}


async def test_subscriber_count(nursery: trio.Nursery) -> None:
    server = await start(nursery, Subscribe())
    clients = await connect_clients(nursery, server.port, 3)
    for client, channels in zip(clients, (["x.1"], ["x.*"], ["x.1", "x.?"]), strict=True):
        for channel in channels:
            await client.send_text(f"sub {channel}")
        await client.wait_messages(len(channels))
    assert trio_push.subscriber_count("x.1") == 3
    assert trio_push.subscriber_count("x.22") == 1
    assert trio_push.subscriber_count("y") == 0
    assert await trio.to_thread.run_sync(trio_push.subscriber_count, "x.1") == 3


async def test_binary_messages_and_text_that_sse_cannot_carry(nursery: trio.Nursery) -> None:
    server = await start(nursery, Subscribe("bin"))
    (ws,) = await connect_clients(nursery, server.port, 1, "websocket")
    (sse,) = await connect_clients(nursery, server.port, 1, "sse")
    await wait_for(lambda: server.pubsub.count("bin") == 2)
    trio_push.publish("bin", b"\xff\x00")  # not UTF-8: binary frame; SSE skips it
    trio_push.publish("bin", "after")
    assert await ws.wait_messages(2) == [b"\xff\x00", "after"]
    assert await sse.wait_messages(1) == ["after"]


async def test_publish_with_no_server_running_returns_false() -> None:
    assert trio_push.publish("nobody", "x") is False


async def test_a_client_that_never_reads_is_closed_and_does_not_slow_the_others(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    bound = 256 * 1024
    # write_timeout far longer than the test: if the stuck client is closed,
    # the queue bound closed it, not the write timeout.
    write_timeout = 30.0
    close_timeout = 2.0

    class TimedSubscribe(Subscribe):
        def __init__(self, *channels: str) -> None:
            super().__init__(*channels)
            self.closed_at: list[float] = []

        def on_close(self, client: trio_push.Client) -> None:
            self.closed_at.append(time.monotonic())
            super().on_close(client)

    handler = TimedSubscribe("flood")
    caplog.set_level(logging.WARNING, logger="trio_push")
    server = await start(
        nursery,
        handler,
        max_queue_bytes=bound,
        max_queue_messages=10_000,
        write_timeout=write_timeout,
        close_timeout=close_timeout,
    )
    readers = await connect_clients(nursery, server.port, 10)

    # The stuck client: a tiny receive window, a handshake, then no reading.
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", server.port))
    stuck = trio.SocketStream(sock)
    await stuck.send_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    await wait_for(lambda: server.pubsub.count("flood") == 11)
    stuck_conn = next(
        c for c in server.push_connections if c.core.client[1] == sock.getsockname()[1]
    )

    payload = "y" * 2000
    n = 4000  # 8 MB: more than the kernel's buffers and the queue bound hold
    topic = server.pubsub.subscriptions.exact["flood"]  # type: ignore[attr-defined]
    stuck_cursor = stuck_conn.cursors[0]
    peak = stuck_lag = 0
    slowest_publish = 0.0
    flood_started = time.monotonic()
    for i in range(n):
        before = trio.current_time()
        assert trio_push.publish("flood", f"{i} {payload}")
        slowest_publish = max(slowest_publish, trio.current_time() - before)
        peak = max(peak, stuck_conn.core.pending_bytes)
        if stuck_conn.cursors:
            stuck_lag = max(stuck_lag, topic.bytes_from(stuck_cursor.pos - topic.base))
        if i % 20 == 19:
            await trio.sleep(0)
    # Memory stays bounded: the queue never holds more than its bound.
    assert peak <= bound + 2100
    # And so does what it holds in the channel's shared log (the readers'
    # part of it is what they have not read yet, theirs to take).
    assert stuck_lag <= TRIM_BYTES + LAG_FACTOR * bound
    assert slowest_publish < 0.05
    # The others get every message, in order.
    for reader in readers:
        messages = await reader.wait_messages(n, timeout=30)
        assert messages[0] == f"0 {payload}" and messages[-1] == f"{n - 1} {payload}"
        assert len(messages) == n
    # The stuck one was closed by the queue policy, and on_close ran.
    assert not stuck_conn.core.open
    full = [r for r in caplog.records if "send queue full" in r.getMessage()]
    assert len(full) == 1, caplog.text
    assert "no write progress" not in caplog.text
    # on_close comes within close_timeout (plus margin) of the 1008 close, far
    # sooner than write_timeout; bounded so that a failure does not wait 30 s.
    limit = 4 * close_timeout + 2
    with contextlib.suppress(trio.TooSlowError):
        await wait_for(lambda: len(handler.closed) == 1, timeout=limit)
    since_full = time.time() - full[0].created
    assert handler.closed_at, (
        f"BUG (trio_push/_connection.py, _write/_send): the queue bound closed the stuck"
        f" client (1008, 'send queue full') {since_full:.1f} s ago, but its on_close has"
        f" not run: the 1008 close frame is queued behind the data the client never reads,"
        f" the writer stays blocked in _send, and close_timeout ({close_timeout} s) is not"
        f" applied while it is; only write_timeout ({write_timeout} s) ends the connection"
    )
    assert handler.closed_at[0] - flood_started < write_timeout / 3
    assert server.pubsub.count("flood") == 10
    await stuck.aclose()


async def test_a_subscriber_of_several_channels_gets_them_in_publish_order(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, Subscribe("a", "b", "c.*"))
    (client,) = await connect_clients(nursery, server.port, 1)
    await wait_for(lambda: server.pubsub.count("c.x") == 1)
    expected = []
    for i in range(300):
        channel = ("a", "b", "c.x")[i % 3]
        trio_push.publish(channel, f"{channel} {i}")
        expected.append(f"{channel} {i}")
        if i % 7 == 0:
            await trio.sleep(0)
    assert await client.wait_messages(300) == expected


async def test_a_write_after_a_publish_arrives_after_it(nursery: trio.Nursery) -> None:
    class WriteAfterPublish(Subscribe):
        def on_message(self, client: trio_push.Client, data: str) -> None:
            for i in range(3):
                trio_push.publish("p", f"published {i}")
                client.write(f"written {i}")
            client.close()

    server = await start(nursery, WriteAfterPublish("p"))
    (client,) = await connect_clients(nursery, server.port, 1)
    await wait_for(lambda: server.pubsub.count("p") == 1)
    await client.send_text("go")
    await client.wait_for(lambda c: c.closed)
    assert client.messages == [
        "published 0",
        "written 0",
        "published 1",
        "written 1",
        "published 2",
        "written 2",
    ]


class _Subscriber:
    """Only what the subscription tables use (pull, on a remove, takes
    nothing while a history load is under way: there is nothing to take)."""

    def __init__(self) -> None:
        self.cursors: list[object] = []
        self.loading = 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "remove_all"]),
            st.integers(0, 2),
            st.sampled_from(["a", "b", "a.*", "?"]),
        ),
        max_size=40,
    )
)
def test_subscriptions_answer_as_a_set_of_channels_per_subscriber_would(
    steps: list[tuple[str, int, str]],
) -> None:
    subs = Subscriptions()
    clients = [_Subscriber() for _ in range(3)]
    model: list[set[str]] = [set(), set(), set()]
    for op, who, channel in steps:
        client: Any = clients[who]
        if op == "add":
            first = not any(channel in mine for mine in model)
            assert subs.add(client, channel) == (first and channel not in model[who])
            model[who].add(channel)
        elif op == "remove":
            was = channel in model[who]
            model[who].discard(channel)
            last = was and not any(channel in mine for mine in model)
            assert subs.remove(client, channel) == last
        else:
            left = model[who]
            model[who] = set()
            emptied = {c for c in left if not any(c in mine for mine in model)}
            assert sorted(subs.remove_all(client)) == sorted(emptied)
        for mine, client in zip(model, clients, strict=True):
            assert {c.topic.key for c in client.cursors} == mine  # type: ignore[attr-defined]
    assert set(subs.exact) | set(subs.patterns) == set().union(*model)


def test_many_idle_subscribers_leave_in_linear_time() -> None:
    # Every subscriber's writer asleep (registered in the topic's idle
    # set), then all of them leave: each leaves in O(its subscriptions).
    class Subscriber:
        def __init__(self) -> None:
            self.cursors: list[object] = []

    subs = Subscriptions()
    clients = [Subscriber() for _ in range(30_000)]
    for client in clients:
        subs.add(client, "everyone")  # type: ignore[arg-type]
    topic = subs.exact["everyone"]
    for cursor in topic.cursors.values():
        cursor.idle = True
        topic.idle[cursor] = None
    started = time.perf_counter()
    for client in clients:
        subs.remove_all(client)  # type: ignore[arg-type]
    assert time.perf_counter() - started < 2.0
    assert subs.exact == {} and all(not client.cursors for client in clients)
