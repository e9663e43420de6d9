"""Channel history with the in-process engine, against a real server on
127.0.0.1 and real clients (httpx + httpx-sse, websockets, raw sockets for a
client that stops reading): resuming from a position over many reconnects,
several channels on one SSE id, the gap signal and its order on the wire,
history bounds (size, ttl, per pattern), publish's positions, and
``overflow='resync'``. Last, a property: pub/sub's fast path queues what its
general path would."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from hashlib import blake2b
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
import wsproto.events as wse
from httpx_sse import aconnect_sse
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

import sansio_push as sp
import trio_push
from tests.helpers.pubsub import PushClient, connect_clients
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    http_client,
    in_thread,
    push_app,
    wait_for,
    ws_connect,
)
from trio_push._history import History, HistoryRules, MemoryHistory
from trio_push._pubsub import (
    LAG_FACTOR,
    PULL_BYTES,
    TRIM_BYTES,
    Cursor,
    Subscriptions,
    _pull_views,
    pull,
)

StartServer = Callable[..., Awaitable[trio_push.Server]]

CHANNEL = "feed"
#: Messages published at full rate while the stream is dropped DROPS times.
N = 10_000
DROPS = 20
EVERY = N // DROPS
#: A position's text form, epoch:ms-offset.
POSITION = re.compile(r"[0-9a-z]+:[0-9]+-[0-9]+")


class Feed:
    """Subscribes every client to ``channels`` when it opens, and keeps the
    clients: an SSE one resumes from its Last-Event-ID by itself; a
    WebSocket one from the ``since`` its page sent, in the envelope."""

    def __init__(self, *channels: str) -> None:
        self.channels = channels or (CHANNEL,)
        self.clients: list[trio_push.Client] = []

    def on_open(self, client: trio_push.Client) -> None:
        self.clients.append(client)
        for channel in self.channels:
            if client.protocol == "websocket":
                client.subscribe(channel, since=client.since(channel), envelope=True)
            else:
                client.subscribe(channel)


class GapFeed(Feed):
    """A :class:`Feed` whose ``on_gap`` records the gap and writes a notice
    (SSE event ``gap``) before anything more from pub/sub goes out."""

    def __init__(self, *channels: str) -> None:
        super().__init__(*channels)
        self.gaps: list[tuple[str, str]] = []

    def on_gap(self, client: trio_push.Client, channel: str, reason: str) -> None:
        self.gaps.append((channel, reason))
        client.write(f"gap {channel} {reason}", event="gap")


def session_of(server: trio_push.Server, client: trio_push.Client) -> Any:
    """The push session behind ``client`` (None once it has left)."""
    return next((s for s in server.push_connections if s.client is client), None)


def abort(server: trio_push.Server, client: trio_push.Client) -> None:
    """Give up on ``client``'s transport at once, as the server's timer does
    past a write or pong deadline: what is queued is never sent, the socket
    is closed without the end of the stream. Event loop only."""
    session = session_of(server, client)
    if session is None:
        return
    if session._writer_scope is not None:
        # Its send stops at once (its cancel alone is lost if the send
        # finishes without waiting again).
        session._writer_scope.cancel()
    session.end()


class Drops:
    """Drops the stream every EVERY messages, once the client is back: the
    server closes it (``client.close()``), aborts it, or (``'client'``) the
    client drops it itself and the publisher only waits for it to be back.
    Call :meth:`after` from the publisher after each message."""

    def __init__(self, server: trio_push.Server, handler: Feed, how: str) -> None:
        self.server = server
        self.handler = handler
        self.how = how

    def _back(self, k: int) -> bool:
        return len(self.handler.clients) > k

    def _drop(self) -> None:
        client = self.handler.clients[-1]
        if self.how == "close":
            client.close()
        elif self.how == "abort":
            self.server.loop.call(abort, self.server, client)

    def after_blocking(self, i: int) -> None:
        """From a thread."""
        if i % EVERY == EVERY - 1:
            deadline = time.monotonic() + TIMEOUT
            while not self._back(i // EVERY):
                assert time.monotonic() < deadline, "the client did not come back"
                time.sleep(0.001)
            self._drop()

    async def after(self, i: int) -> None:
        """From a task of the server's run."""
        if i % 50 == 49:
            await trio.sleep(0)  # full rate, but let the server send now and then
        if i % EVERY == EVERY - 1:
            await wait_for(lambda: self._back(i // EVERY))
            self._drop()


class SseReader:
    """An httpx-sse client that reads ``event: msg`` messages, and whenever
    the stream ends or breaks reconnects with ``Last-Event-ID`` set to the
    last id it saw; with ``drop_every`` it also drops the stream itself
    after that many messages on it."""

    def __init__(self, url: str, drop_every: int = 0) -> None:
        self.url = url
        self.drop_every = drop_every
        self.messages: list[str] = []
        #: Every event: (event, data), an id-only block as ("announce", its id).
        self.events: list[tuple[str, str]] = []
        self.ids: list[str] = []
        self.last_id = ""
        self.connections = 0
        #: Streams that broke off (not ended by the server's last chunk).
        self.broken = 0

    async def read(self, n: int, *, connections: int = 200) -> list[str]:
        """Until ``n`` messages have come (at most ``connections`` connections)."""
        async with http_client() as http:
            while len(self.messages) < n:
                assert self.connections < connections, "too many reconnects"
                await self.read_once(http, n)
        return self.messages

    async def read_once(self, http: httpx.AsyncClient, n: int) -> None:
        """One connection, until it ends, breaks, or ``n`` messages have come."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        self.connections += 1
        on_this = 0
        try:
            async with aconnect_sse(http, "GET", self.url, headers=headers) as source:
                async for event in source.aiter_sse():
                    if event.id and event.id != self.last_id:
                        self.last_id = event.id
                        self.ids.append(event.id)
                    if event.event == "message" and not event.data:
                        # The id-only block: where the subscriptions start.
                        self.events.append(("announce", event.id))
                        continue
                    self.events.append((event.event, event.data))
                    if event.event == "msg":
                        self.messages.append(event.data)
                        on_this += 1
                    if len(self.messages) >= n or on_this == self.drop_every > 0:
                        return
        except httpx.TransportError:
            self.broken += 1  # aborted: the stream broke off


def assert_resumed(reader: SseReader, how: str) -> None:
    """Every message exactly once, in order, over DROPS drops made ``how``."""
    assert reader.messages == sequence(N)
    assert reader.connections >= DROPS
    # An abort breaks the stream off; a close (by either side) ends it.
    if how == "abort":
        assert reader.broken >= DROPS - 1
    else:
        assert reader.broken == 0


def sequence(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def trio_push_tag(channel: str) -> str:
    """A channel's tag in an SSE id: 8 hex digits of blake2b (docs/pubsub.md)."""
    return blake2b(channel.encode(), digest_size=4).hexdigest()


def assert_contiguous(positions: list[Any], first: int = 1) -> None:
    """``positions`` are Positions of one epoch, offsets ``first``, ``first+1``..."""
    assert all(isinstance(p, trio_push.Position) for p in positions)
    assert len({p.epoch for p in positions}) == 1
    assert [p.offset for p in positions] == list(range(first, first + len(positions)))


# -- SSE: resume over 20 drops while 10,000 messages are published -------------------


@pytest.mark.parametrize("how", ["close", "abort", "client"])
async def test_sse_resumes_exactly_over_20_drops_while_a_thread_publishes(
    start_server: StartServer, how: str
) -> None:
    handler = Feed()
    server = await start_server(push_app(handler), history=N)
    reader = SseReader(f"http://127.0.0.1:{server.port}/", EVERY if how == "client" else 0)
    drops = Drops(server, handler, how)

    def publisher() -> list[Any]:
        positions = []
        for i in range(N):
            positions.append(trio_push.publish(CHANNEL, f"m{i}"))
            drops.after_blocking(i)
        return positions

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read, N)
            await wait_for(lambda: handler.clients)
            positions = await in_thread(publisher)
    assert_resumed(reader, how)
    assert_contiguous(positions)


@pytest.mark.parametrize("how", ["close", "abort", "client"])
async def test_sse_resumes_exactly_over_20_drops_while_a_task_publishes(
    start_server: StartServer, how: str
) -> None:
    handler = Feed()
    server = await start_server(push_app(handler), history=N)
    reader = SseReader(f"http://127.0.0.1:{server.port}/", EVERY if how == "client" else 0)
    drops = Drops(server, handler, how)
    positions = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read, N)
            await wait_for(lambda: handler.clients)
            for i in range(N):
                positions.append(trio_push.publish(CHANNEL, f"m{i}"))
                await drops.after(i)
    assert_resumed(reader, how)
    assert_contiguous(positions)


async def test_sse_resumes_from_a_last_event_id_query_parameter(start_server: StartServer) -> None:
    # A page that reopens its EventSource itself cannot set the header.
    handler = Feed("a", "b")
    server = await start_server(push_app(handler), history=100)
    reader = SseReader(f"http://127.0.0.1:{server.port}/")
    with trio.fail_after(TIMEOUT):
        async with http_client() as http, trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_once, http, 2)
            await wait_for(lambda: handler.clients)
            trio_push.publish("a", "a0")
            trio_push.publish("b", "b0")
    for message in ("a1", "b1", "a2"):
        trio_push.publish(message[0], message)
    reader.url += f"?lastEventId={quote(reader.last_id)}"
    reader.last_id = ""  # no header
    with trio.fail_after(TIMEOUT):
        async with http_client() as http:
            await reader.read_once(http, 5)
    assert reader.messages == ["a0", "b0", "a1", "a2", "b1"]


# -- WebSocket: the envelope, resumed with ``since`` over 20 reconnects -----------------


def unwrap(frame: str | bytes) -> tuple[dict[str, Any], str | bytes | None]:
    """An envelope's head and data (None: an announcement, which has no data)."""
    if isinstance(frame, bytes):
        head, _, data = frame.partition(b"\n")
        return json.loads(head), data
    head = json.loads(frame)
    return head, head.pop("data", None)


class WsReader:
    """A ``websockets`` client (in a thread) that reads enveloped messages
    and, whenever the server closes, reconnects with ``since`` (the query
    parameter the shipped helper sends: JSON, channel -> position) set to
    the last position it saw on each channel."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, str | bytes]] = []  # (channel, data)
        self.since: dict[str, str] = {}
        self.connections = 0
        #: Each connection's first frame.
        self.firsts: list[str | bytes] = []
        self.frames: list[str | bytes] = []  # everything, announcements and notices too

    def url(self) -> str:
        query = f"?since={quote(json.dumps(self.since))}" if self.since else ""
        return f"ws://127.0.0.1:{self.port}/{query}"

    def read(self, n: int, connections: int = 200) -> None:
        while len(self.messages) < n:
            assert self.connections < connections, "too many reconnects"
            self.connections += 1
            with ws_connect(self.url(), max_size=None) as ws:
                first = True
                try:
                    while len(self.messages) < n:
                        frame = ws.recv(timeout=TIMEOUT)
                        self.frames.append(frame)
                        if isinstance(frame, str) and not frame.startswith("{"):
                            continue  # the app's own writes (a gap notice)
                        if first:
                            self.firsts.append(frame)
                            first = False
                        head, data = unwrap(frame)
                        self.since[head["channel"]] = head["position"]
                        if data is not None:
                            self.messages.append((head["channel"], data))
                except ConnectionClosed:
                    pass


def mixed(i: int) -> str | bytes:
    """Message ``i``: every third one binary (not UTF-8)."""
    return f"m{i}" if i % 3 else b"\xff\x00 m%d" % i


async def test_websocket_resumes_exactly_with_since_over_20_reconnects(
    start_server: StartServer,
) -> None:
    handler = Feed()
    server = await start_server(push_app(handler), history=N)
    reader = WsReader(server.port)
    drops = Drops(server, handler, "close")

    def publisher() -> None:
        for i in range(N):
            assert trio_push.publish(CHANNEL, mixed(i))
            drops.after_blocking(i)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, reader.read, N)
            await wait_for(lambda: handler.clients)
            await in_thread(publisher)
    assert reader.messages == [(CHANNEL, mixed(i)) for i in range(N)]
    assert reader.connections >= DROPS
    # Each connection starts with its position: a text envelope without data.
    assert len(reader.firsts) == reader.connections
    for first in reader.firsts:
        assert isinstance(first, str)
        assert set(json.loads(first)) == {"channel", "position"}
    # A binary message: the JSON head, a newline, the bytes, in a binary frame.
    binary = [f for f in reader.frames if isinstance(f, bytes)]
    assert len(binary) == len([i for i in range(N) if i % 3 == 0])
    head, data = unwrap(binary[0])
    assert set(head) == {"channel", "position"} and data == b"\xff\x00 m0"
    assert POSITION.fullmatch(head["position"])


# -- several channels on one SSE connection -------------------------------------------


async def test_several_channels_on_one_sse_connection_resume_exactly(
    start_server: StartServer,
) -> None:
    channels = [f"c{k}" for k in range(5)]
    handler = Feed(*channels)
    server = await start_server(push_app(handler), history=N)
    reader = SseReader(f"http://127.0.0.1:{server.port}/")
    drops = Drops(server, handler, "close")

    def publisher() -> None:
        for i in range(N):
            trio_push.publish(channels[i % 5], f"{channels[i % 5]} {i}")
            drops.after_blocking(i)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read, N)
            await wait_for(lambda: handler.clients)
            await in_thread(publisher)
    assert reader.connections >= DROPS
    # Each channel exactly, in its order (after a reconnect each channel's
    # history comes in turn, so the channels interleave differently).
    for k, channel in enumerate(channels):
        mine = [m for m in reader.messages if m.startswith(channel + " ")]
        assert mine == [f"{channel} {i}" for i in range(k, N, 5)]
    assert len(reader.messages) == N
    # The id names every channel once, each a position of its own.
    entries = [entry.split("=") for entry in reader.last_id.split(",")]
    assert len(entries) == 5
    assert {t for t, _ in entries} == {trio_push_tag(c) for c in channels}
    assert all(POSITION.fullmatch(p) for _, p in entries)


async def test_an_sse_id_names_at_most_32_channels_and_the_rest_get_unknown(
    start_server: StartServer,
) -> None:
    channels = [f"c{k:02d}" for k in range(33)]
    handler = GapFeed(*channels)
    server = await start_server(push_app(handler), history=100)
    url = f"http://127.0.0.1:{server.port}/"
    reader = SseReader(url)
    with trio.fail_after(TIMEOUT):
        async with http_client() as http, trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_once, http, 33)
            await wait_for(lambda: handler.clients)
            for channel in channels:
                trio_push.publish(channel, f"{channel} first")
    assert reader.messages == [f"{c} first" for c in channels]
    assert all(len(i.split(",")) <= 32 for i in reader.ids)
    # The first 32 subscribed channels, each at its first message.
    named = dict(entry.split("=") for entry in reader.last_id.split(","))
    assert set(named) == {trio_push_tag(c) for c in channels[:32]}
    # Away: one more message on each. Back with the id: the 32 it names
    # resume, the 33rd cannot say (on_gap "unknown") and goes on live.
    for channel in channels:
        trio_push.publish(channel, f"{channel} away")
    with trio.fail_after(TIMEOUT):
        async with http_client() as http, trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_once, http, 33 + 32 + 1)
            await wait_for(lambda: len(handler.clients) == 2)
            await wait_for(lambda: ("msg", f"{channels[31]} away") in reader.events)
            trio_push.publish(channels[32], "c32 live")
    assert handler.gaps == [("c32", "unknown")]
    assert reader.messages[33:] == [f"{c} away" for c in channels[:32]] + ["c32 live"]
    notice = reader.events.index(("gap", "gap c32 unknown"))
    assert notice < reader.events.index(("msg", "c32 live"))


# -- the gap signal --------------------------------------------------------------------


class HeldGap(GapFeed):
    """A :class:`GapFeed` whose ``on_gap`` waits for :attr:`release` before it
    writes its notice: whatever is published meanwhile must wait too."""

    def __init__(self, *channels: str) -> None:
        super().__init__(*channels)
        self.release = trio.Event()

    async def on_gap(self, client: trio_push.Client, channel: str, reason: str) -> None:
        self.gaps.append((channel, reason))
        await self.release.wait()
        client.write(f"gap {channel} {reason}", event="gap")


async def resume_with_gap(
    server: trio_push.Server, handler: HeldGap, protocol: str, since: str, live: list[str]
) -> list[tuple[str, str]]:
    """Connect ``protocol`` resuming from ``since`` (an SSE id, or a
    position on CHANNEL); once on_gap has started, publish ``live``, then let
    on_gap go on. What the connection received: (kind, text), kind
    ``announce`` for the start position, ``gap`` for the notice, ``msg``
    for a message (its data)."""
    n = len(handler.clients)
    got: list[tuple[str, str]] = []

    async def publish_live() -> None:
        await wait_for(lambda: len(handler.clients) > n and handler.gaps)
        for message in live:
            trio_push.publish(CHANNEL, message)
        handler.release.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_live)
            if protocol == "sse":
                sse = SseReader(f"http://127.0.0.1:{server.port}/")
                sse.last_id = since
                async with http_client() as http:
                    await sse.read_once(http, len(live))
                got = sse.events
            else:
                ws = WsReader(server.port)
                ws.since = {CHANNEL: since}
                await in_thread(ws.read, len(live), 1)
                for frame in ws.frames:
                    assert isinstance(frame, str)
                    if frame.startswith("gap "):
                        got.append(("gap", frame))
                        continue
                    head, data = unwrap(frame)
                    assert head["channel"] == CHANNEL
                    if data is None:
                        got.append(("announce", head["position"]))
                    else:
                        got.append(("msg", str(data)))
    return got


def announced_top(got: list[tuple[str, str]], protocol: str, top: Any) -> list[tuple[str, str]]:
    """``got`` without its announcement, which must give ``top`` (a Position
    on CHANNEL) as the start, before any message and after the gap notice:
    a page that left in between would resume past the gap, never told."""
    kinds = [kind for kind, _ in got]
    assert kinds.count("announce") == 1
    i = kinds.index("announce")
    assert "msg" not in kinds[:i] and "gap" not in kinds[i:]
    assert got[i][1] == (f"{trio_push_tag(CHANNEL)}={top}" if protocol == "sse" else str(top))
    return got[:i] + got[i + 1 :]


@pytest.mark.parametrize("protocol", ["sse", "websocket"])
async def test_resuming_behind_what_history_holds_is_a_gap_told_before_live_messages(
    start_server: StartServer, protocol: str
) -> None:
    handler = HeldGap()
    server = await start_server(push_app(handler), history=10)
    first = trio_push.publish(CHANNEL, "m0")
    positions = [trio_push.publish(CHANNEL, f"m{i}") for i in range(1, 51)]
    assert isinstance(first, trio_push.Position)
    assert_contiguous([first, *positions])
    since = f"{trio_push_tag(CHANNEL)}={first}" if protocol == "sse" else str(first)
    live = sequence(5, "live")
    got = await resume_with_gap(server, handler, protocol, since, live)
    assert handler.gaps == [(CHANNEL, "trimmed")]
    # Where it starts (the top), the notice, though the live messages were
    # published before it was written; then the live ones, none of what
    # history still held.
    got = announced_top(got, protocol, positions[-1])
    assert got == [("gap", f"gap {CHANNEL} trimmed")] + [("msg", m) for m in live]


async def test_a_position_from_a_server_since_restarted_is_an_epoch_gap(
    serve_scope: Callable[..., Awaitable[Any]],
) -> None:
    handler = HeldGap()
    server, scope, done = await serve_scope(push_app(handler), history=10)
    old = trio_push.publish(CHANNEL, "before the restart")
    assert isinstance(old, trio_push.Position)
    scope.cancel()
    with trio.fail_after(TIMEOUT):
        await done.wait()
    server, _, _ = await serve_scope(push_app(handler), history=10)
    now = trio_push.publish(CHANNEL, "after")
    assert isinstance(now, trio_push.Position) and now.epoch != old.epoch
    got = await resume_with_gap(server, handler, "websocket", str(old), ["live"])
    assert handler.gaps == [(CHANNEL, "epoch")]
    got = announced_top(got, "websocket", now)
    assert got == [("gap", f"gap {CHANNEL} epoch"), ("msg", "live")]
    # So is an offset past the channel's last one, in its current epoch.
    handler.release = trio.Event()
    now = trio_push.publish(CHANNEL, "now")
    assert isinstance(now, trio_push.Position)
    ahead = f"{trio_push_tag(CHANNEL)}={now.epoch}:{now.ms}-{now.offset + 5}"
    got = await resume_with_gap(server, handler, "sse", ahead, ["l"])
    assert handler.gaps[1:] == [(CHANNEL, "epoch")]
    assert announced_top(got, "sse", now) == [("gap", f"gap {CHANNEL} epoch"), ("msg", "l")]


async def test_since_on_a_channel_without_history_is_a_no_history_gap(
    start_server: StartServer,
) -> None:
    handler = HeldGap()
    server = await start_server(push_app(handler), history=10, history_for={CHANNEL: None})
    assert trio_push.publish(CHANNEL, "no position") is True
    got = await resume_with_gap(server, handler, "websocket", "abc:1-1", ["live"])
    assert handler.gaps == [(CHANNEL, "no-history")]
    # No announcement (no position to give); the notice, then live, in the
    # envelope with no position.
    assert got == [("gap", f"gap {CHANNEL} no-history"), ("msg", "live")]


async def test_a_foreign_last_event_id_is_an_unknown_gap(start_server: StartServer) -> None:
    handler = HeldGap()
    server = await start_server(push_app(handler), history=10)
    before = trio_push.publish(CHANNEL, "before")
    live = sequence(3, "live")
    got = await resume_with_gap(server, handler, "sse", "42", live)
    assert handler.gaps == [(CHANNEL, "unknown")]
    got = announced_top(got, "sse", before)
    assert got == [("gap", f"gap {CHANNEL} unknown")] + [("msg", m) for m in live]


@pytest.mark.parametrize("since", ["garbage", "abc:1-1 ", "5"])
async def test_a_websocket_since_that_is_not_a_position_is_an_unknown_gap(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, since: str
) -> None:
    # What the page sends is not the app's mistake: client.since() gives
    # None for it, and on_gap hears "unknown", as for a foreign SSE id.
    caplog.set_level(logging.WARNING, logger="trio_push")
    handler = HeldGap()
    server = await start_server(push_app(handler), history=10)
    before = trio_push.publish(CHANNEL, "before")
    got = await resume_with_gap(
        server, handler, "websocket", json.loads(since) if since == "5" else since, ["live"]
    )
    assert handler.gaps == [(CHANNEL, "unknown")]
    assert announced_top(got, "websocket", before) == [
        ("gap", f"gap {CHANNEL} unknown"),
        ("msg", "live"),
    ]
    assert "error in" not in caplog.text


async def test_a_gap_without_on_gap_is_logged_and_live_messages_go_on(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_push")
    handler = Feed()
    server = await start_server(push_app(handler), history=10)
    first = trio_push.publish(CHANNEL, "m0")
    for i in range(1, 51):
        trio_push.publish(CHANNEL, f"m{i}")
    reader = SseReader(f"http://127.0.0.1:{server.port}/")
    reader.last_id = f"{trio_push_tag(CHANNEL)}={first}"
    with trio.fail_after(TIMEOUT):
        async with http_client() as http, trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_once, http, 1)
            await wait_for(lambda: handler.clients)
            trio_push.publish(CHANNEL, "live")
    assert [kind for kind, _ in reader.events] == ["announce", "msg"]
    assert reader.events[1] == ("msg", "live")
    warnings = [r.getMessage() for r in caplog.records if "missed messages" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{CHANNEL!r} (trimmed)" in warnings[0] and "Feed has no on_gap" in warnings[0]


class Greeting(HeldGap):
    """A :class:`HeldGap` that writes ``hello`` (SSE event ``hello``) in
    on_open, after subscribing."""

    def on_open(self, client: trio_push.Client) -> None:
        super().on_open(client)
        client.write("hello", event="hello")


async def test_a_page_that_leaves_before_the_gap_notice_gets_the_gap_again(
    start_server: StartServer,
) -> None:
    # The start position must not reach the page before what on_gap writes:
    # a page that has the new position but not the notice would resume
    # from there, and never hear of what it missed.
    handler = Greeting()
    server = await start_server(push_app(handler), history=10)
    first = trio_push.publish(CHANNEL, "m0")
    for i in range(1, 51):
        trio_push.publish(CHANNEL, f"m{i}")
    last_id = f"{trio_push_tag(CHANNEL)}={first}"
    reader = SseReader(f"http://127.0.0.1:{server.port}/")
    with trio.fail_after(TIMEOUT):
        async with http_client() as http:
            # Gone after "hello", while on_gap is still busy.
            headers = {"Last-Event-ID": last_id}
            async with aconnect_sse(http, "GET", reader.url, headers=headers) as source:
                async for event in source.aiter_sse():
                    last_id = event.id or last_id
                    if event.event == "hello":
                        break
            await wait_for(lambda: handler.gaps)
            handler.release.set()  # its notice goes to a page that has gone
            # Back, with the id the page has.
            reader.last_id = last_id
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.read_once, http, 1)
                await wait_for(lambda: len(handler.clients) == 2)
                trio_push.publish(CHANNEL, "live")
    assert handler.gaps == [(CHANNEL, "trimmed")] * 2
    kinds = [kind for kind, _ in reader.events]
    assert kinds == ["hello", "gap", "announce", "msg"]


# -- history bounds: ttl, per pattern ---------------------------------------------------


async def replay_since(
    server: trio_push.Server, handler: Feed, since: dict[str, str], live: str, n: int
) -> list[Any]:
    """What a WebSocket resuming from ``since`` (channel -> position) gets,
    ``n`` messages in all, the last one ``live``, published on its channel
    once it is subscribed: ("gap", reason) for on_gap's notice, else each
    message's data."""
    ws = WsReader(server.port)
    ws.since = dict(since)
    opened = len(handler.clients)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, ws.read, n, 1)
            await wait_for(lambda: len(handler.clients) > opened)
            trio_push.publish(next(iter(since)), live)
    got: list[Any] = []
    for frame in ws.frames:
        if isinstance(frame, str) and frame.startswith("gap "):
            got.append(("gap", frame.split()[-1]))
        elif (data := unwrap(frame)[1]) is not None:
            got.append(data)
    return got


async def test_history_ttl_replays_only_what_is_younger_than_the_ttl(
    start_server: StartServer,
) -> None:
    ttl = 0.3
    handler = GapFeed()
    server = await start_server(push_app(handler), history_ttl=ttl)
    old = [trio_push.publish(CHANNEL, f"old {i}") for i in range(5)]
    # Within the ttl: all after the position.
    got = await replay_since(server, handler, {CHANNEL: str(old[1])}, "live 0", 4)
    assert got == ["old 2", "old 3", "old 4", "live 0"]
    await trio.sleep(ttl + 0.05)
    new = [trio_push.publish(CHANNEL, f"new {i}") for i in range(3)]
    # The offsets go on (6 was "live 0"), whatever is kept.
    assert_contiguous(new, first=7)
    # What is older than the ttl is not replayed: behind it, a gap.
    got = await replay_since(server, handler, {CHANNEL: str(old[1])}, "live 1", 1)
    assert got == [("gap", "trimmed"), "live 1"]
    # From a message still kept, the rest.
    got = await replay_since(server, handler, {CHANNEL: str(new[0])}, "live 2", 4)
    assert got == ["new 1", "new 2", "live 1", "live 2"]
    assert handler.gaps == [(CHANNEL, "trimmed")]


async def test_history_for_overrides_the_default_per_pattern(start_server: StartServer) -> None:
    handler = GapFeed("small.1", "none.1", "other")
    server = await start_server(
        push_app(handler),
        history=100,
        history_for={"small.*": trio_push.History(size=3), "none.*": None},
    )
    assert trio_push.publish("none.1", "x") is True
    small = [trio_push.publish("small.1", f"s{i}") for i in range(6)]
    other = [trio_push.publish("other", f"o{i}") for i in range(6)]
    assert_contiguous(small)
    assert_contiguous(other)
    # small.*: the last 3 only.
    got = await replay_since(server, handler, {"small.1": str(small[2])}, "s live", 4)
    assert got == ["s3", "s4", "s5", "s live"]
    got = await replay_since(server, handler, {"small.1": str(small[1])}, "s live 2", 1)
    assert got == [("gap", "trimmed"), "s live 2"]
    # The default (100) for the rest.
    got = await replay_since(server, handler, {"other": str(other[0])}, "o live", 6)
    assert got == ["o1", "o2", "o3", "o4", "o5", "o live"]
    # none.*: no history, no position; since there is a gap.
    got = await replay_since(server, handler, {"none.1": "abc:1-1"}, "n live", 1)
    assert got == [("gap", "no-history"), "n live"]
    assert handler.gaps == [("small.1", "trimmed"), ("none.1", "no-history")]


# -- publish's positions ----------------------------------------------------------------


async def test_publish_returns_a_position_on_a_history_channel_true_elsewhere(
    start_server: StartServer,
) -> None:
    await start_server(push_app(Feed()), history=10, history_for={"plain.*": None})
    position = trio_push.publish(CHANNEL, "one")
    assert isinstance(position, trio_push.Position) and position
    assert position.channel == CHANNEL and position.known and position.offset == 1
    assert POSITION.fullmatch(str(position))
    assert str(position) == f"{position.epoch}:{position.ms}-{position.offset}"
    assert abs(position.ms / 1000 - time.time()) < 60
    assert trio_push.Position.parse(CHANNEL, str(position)) == position
    assert await position.wait() is position
    assert trio_push.publish("plain.x", "two") is True


def test_publish_with_no_server_running_returns_false_on_a_history_channel() -> None:
    server = trio_push.Server(push_app(Feed()), 0, history=10)
    server.start()
    try:
        assert isinstance(trio_push.publish(CHANNEL, "while it runs"), trio_push.Position)
    finally:
        server.stop()
        server.join(TIMEOUT)
    assert trio_push.publish(CHANNEL, "after") is False
    assert server.pubsub.publish(CHANNEL, "after") is False


async def test_positions_from_concurrent_threads_are_contiguous_and_arrive_in_order(
    start_server: StartServer,
) -> None:
    handler = Feed()
    server = await start_server(push_app(handler), history=100_000)
    readers = [WsReader(server.port) for _ in range(3)]
    threads, per_thread = 4, 2000
    results: list[list[Any]] = [[] for _ in range(threads)]

    def publisher(k: int) -> None:
        for i in range(per_thread):
            results[k].append(trio_push.publish(CHANNEL, f"t{k} {i}"))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for reader in readers:
                nursery.start_soon(in_thread, reader.read, threads * per_thread)
            await wait_for(lambda: len(handler.clients) == len(readers))
            async with trio.open_nursery() as publishers:
                for k in range(threads):
                    publishers.start_soon(in_thread, publisher, k)
    everything = [p for mine in results for p in mine]
    # One channel's offsets: 1..N, no hole, none twice, one epoch.
    assert sorted(p.offset for p in everything) == list(range(1, threads * per_thread + 1))
    assert len({p.epoch for p in everything}) == 1
    for mine in results:  # each thread's in its own order
        assert [p.offset for p in mine] == sorted(p.offset for p in mine)
    # Every subscriber gets them in offset order.
    by_offset = {
        p.offset: f"t{k} {i}" for k, mine in enumerate(results) for i, p in enumerate(mine)
    }
    expected = [(CHANNEL, by_offset[o]) for o in range(1, threads * per_thread + 1)]
    for reader in readers:
        assert reader.messages == expected


# -- subscriptions -----------------------------------------------------------------------


async def test_since_on_a_pattern_or_malformed_raises_value_error_in_the_caller(
    start_server: StartServer,
) -> None:
    handler = Feed()
    server = await start_server(push_app(handler), history=10)
    ws = WsReader(server.port)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, ws.read, 2, 1)
            await wait_for(lambda: handler.clients)
            client = handler.clients[0]
            position = trio_push.publish(CHANNEL, "first")
            assert isinstance(position, trio_push.Position)
            for bad in ("", "nope", "abc:1", "ABC:1-1", "abc:1-1-1", "abc:x-1", "abc:1-1\n"):
                with pytest.raises(ValueError):
                    client.subscribe(CHANNEL, since=bad)
            with pytest.raises(ValueError, match="pattern"):
                client.subscribe("feed.*", since=position)
            with pytest.raises(ValueError, match="pattern"):
                client.subscribe("feed.*", since=str(position))
            # Nothing of that reached the server; the client is still served.
            assert client.open
            trio_push.publish(CHANNEL, "second")
    assert ws.messages == [(CHANNEL, "first"), (CHANNEL, "second")]


async def test_subscribing_twice_keeps_one_subscription(start_server: StartServer) -> None:
    class Twice(Feed):
        def on_open(self, client: trio_push.Client) -> None:
            super().on_open(client)
            super().on_open(client)

    handler = Twice()
    server = await start_server(push_app(handler), history=10)
    ws = WsReader(server.port)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, ws.read, 3, 1)
            await wait_for(lambda: handler.clients)
            assert len(session_of(server, handler.clients[0]).cursors) == 1
            assert server.pubsub.count(CHANNEL) == 1
            for i in range(3):
                trio_push.publish(CHANNEL, f"m{i}")
    assert ws.messages == [(CHANNEL, f"m{i}") for i in range(3)]
    announcements = [f for f in ws.frames if "data" not in json.loads(f)]
    assert len(announcements) == 1


# -- overflow='resync' --------------------------------------------------------------------

BIG = 65536
#: 64 KiB messages: far more than the kernel's buffers and the queue bounds hold.
FLOOD = 300
QUEUE_BYTES = 256 * 1024


class Plain(GapFeed):
    """A :class:`GapFeed` that subscribes without the envelope: the log's
    own bytes go out (the fan-out fast path)."""

    def on_open(self, client: trio_push.Client) -> None:
        self.clients.append(client)
        for channel in self.channels:
            client.subscribe(channel)


def big(i: int, channel: str = CHANNEL) -> str:
    head = f"{channel} {i:06d} "
    return head + "x" * (BIG - len(head))


class Flood:
    """A server with ``overflow='resync'`` and small queue bounds, readers
    that keep reading, and one WebSocket that stops reading (a small
    receive buffer, then no reads) while 64 KiB messages are published."""

    def __init__(self, server: trio_push.Server, handler: Plain, stuck: RawWebSocket) -> None:
        self.server = server
        self.handler = handler
        self.stuck = stuck
        port = stuck.stream.socket.getsockname()[1]
        self.session = next(s for s in server.push_connections if s.core.client[1] == port)
        self.peak_pending = 0  # the stuck one's queue, in bytes
        self.peak_held = 0  # what its cursors hold in the channels' logs, in bytes
        self.detached = False

    @classmethod
    async def start(
        cls,
        start_server: StartServer,
        nursery: trio.Nursery,
        history: int,
        *channels: str,
        readers: int = 4,
    ) -> tuple[Flood, list[PushClient]]:
        handler = Plain(*channels)
        server = await start_server(
            push_app(handler),
            history=history,
            overflow="resync",
            max_queue_messages=8,
            max_queue_bytes=QUEUE_BYTES,
            # Far longer than the test: the stuck one is not cut by a deadline.
            write_timeout=60,
            pong_timeout=60,
        )
        clients = await connect_clients(nursery, server.port, readers) if readers else []
        with trio.fail_after(TIMEOUT):
            stuck = await RawWebSocket.open(server.port, rcvbuf=4096)
        await wait_for(lambda: len(handler.clients) == readers + 1)
        return cls(server, handler, stuck), clients

    def watch(self) -> None:
        session = self.session
        self.peak_pending = max(self.peak_pending, session.core.pending_bytes)
        held = 0
        for cursor in session.cursors:
            topic = cursor.topic
            held += topic.bytes_from(cursor.pos - topic.base)
            self.detached = self.detached or cursor.detached is not None
        self.peak_held = max(self.peak_held, held)

    async def publish(self, messages: list[str]) -> None:
        """Publish at full rate, letting the server send every few messages."""
        for i, message in enumerate(messages):
            trio_push.publish(message.split(" ", 1)[0], message)
            self.watch()
            if i % 4 == 3:
                await trio.sleep(0)
                self.watch()

    def assert_bounded(self) -> None:
        """While it did not read, the server held little for it, and kept it."""
        assert self.detached  # it did fall behind
        # Its queue: what one pull takes from the logs (PULL_BYTES and the
        # message that passes it, however many channels), twice: the
        # flush's, then the writer's before its first wait.
        assert self.peak_pending <= 2 * (PULL_BYTES + BIG + 16)
        channels = len(self.session.cursors)
        # The logs: a trim's worth in each channel's, and the lag bound.
        assert self.peak_held <= channels * (TRIM_BYTES + BIG) + LAG_FACTOR * QUEUE_BYTES
        assert self.session.core.open and self.session in self.server.push_connections
        assert self.session.core.dropped == 0


async def test_resync_a_client_that_stopped_reading_gets_every_message_from_history(
    start_server: StartServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_push")
    flood, readers = await Flood.start(start_server, nursery, 1000)
    expected = [big(i) for i in range(FLOOD)]
    await flood.publish(expected)
    flood.assert_bounded()
    # Those that read got everything, in order, and were neither cut nor slowed.
    for reader in readers:
        assert await reader.wait_messages(FLOOD) == expected
        assert not reader.closed
    # Now it reads: every message, exactly, in order, read on from history.
    with trio.fail_after(TIMEOUT):
        assert await flood.stuck.messages(FLOOD) == expected
        trio_push.publish(CHANNEL, "live")
        assert await flood.stuck.messages(1) == ["live"]
    assert flood.handler.gaps == []
    assert "too far behind; reading on from history" in caplog.text
    assert "send queue full" not in caplog.text


async def test_resync_live_messages_behind_what_history_brought_arrive_unprompted(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    # After a resync, the log holds again what history brought (published
    # while it was detached, after its last trim): those are skipped, and
    # one pull may skip a whole PULL_BYTES of them and queue nothing. The
    # writer must go on to the messages behind them without waiting for
    # another publish.
    flood, _ = await Flood.start(start_server, nursery, 1000, readers=0)
    (cursor,) = flood.session.cursors
    sent: list[str] = []
    with trio.fail_after(TIMEOUT):
        while cursor.detached is None:  # it stopped reading, and fell behind
            sent.append(big(len(sent)))
            trio_push.publish(CHANNEL, sent[-1])
            await trio.sleep(0)
        more = [big(len(sent) + i) for i in range(10)]  # 640 KB: no trim
        for message in more:
            trio_push.publish(CHANNEL, message)
        sent += more
        # It reads until it resyncs (history's messages start coming), and
        # stops again: only then are these published, behind the seam.
        got: list[Any] = []
        while cursor.replay is None:
            got += await flood.stuck.messages(1)
        after = ["after 1", "after 2"]
        for message in after:
            trio_push.publish(CHANNEL, message)
        got += await flood.stuck.messages(len(sent) + len(after) - len(got))
    assert got == sent + after
    assert 10 * BIG > PULL_BYTES


async def test_resync_when_only_pongs_were_queued_as_it_fell_behind(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    # It pings and does not read: its queue holds pongs, no message, when it
    # falls behind and lets go of the log. Once it reads, it must read on
    # from history, though no message of its queue was left to drain.
    flood, _ = await Flood.start(start_server, nursery, 1000, readers=0)
    stuck, session = flood.stuck, flood.session
    (cursor,) = session.cursors
    sent: list[str] = []
    with trio.fail_after(TIMEOUT):
        while not session.core.refusing:
            await stuck.stream.send_all(stuck.ws.send(wse.Ping(b"p" * 125)) * 50)
            await trio.sleep(0.001)
        assert session.core.pending == 0
        while cursor.detached is None:
            sent.append(big(len(sent)))
            trio_push.publish(CHANNEL, sent[-1])
            await trio.sleep(0)
        assert session.core.pending == 0
        got = await stuck.messages(len(sent))
        trio_push.publish(CHANNEL, "live")
        got += await stuck.messages(1)
    assert got == [*sent, "live"]


def assert_told(got: list[Any], expected: list[str], reason: str = "trimmed") -> None:
    """``got`` is ``expected`` in order, none twice, and wherever it skips
    some, the gap notice comes first."""
    index = {m: i for i, m in enumerate(expected)}
    nxt, told = 0, False
    for message in got:
        if message == f"gap {CHANNEL} {reason}":
            told = True
            continue
        i = index[message]
        assert i == nxt or (told and i > nxt), f"message {i} after {nxt - 1}, untold"
        nxt, told = i + 1, False


async def test_resync_behind_what_history_holds_is_a_gap_then_live(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    flood, readers = await Flood.start(start_server, nursery, 10)
    expected = [big(i) for i in range(FLOOD)]
    await flood.publish(expected)
    flood.assert_bounded()
    live = sequence(3, "live")
    with trio.fail_after(TIMEOUT):
        got: list[Any] = []
        while f"gap {CHANNEL} trimmed" not in got:
            got += await flood.stuck.messages(1)
        # Before the notice: the start of the sequence, exactly.
        assert got[:-1] == expected[: len(got) - 1] and len(got) < FLOOD
        # After it, what is published from now on.
        for message in live:
            trio_push.publish(CHANNEL, message)
        assert await flood.stuck.messages(3) == live
    assert flood.handler.gaps[-1] == (CHANNEL, "trimmed")
    assert flood.session.core.open
    # Readers that fell behind too, reading at their pace, were told where
    # they skipped (so little history holds little for them either).
    for reader in readers:
        await reader.wait_for(lambda r: r.messages[-3:] == live)
        assert_told(reader.messages[:-3], expected)
        assert not reader.closed


def by_channel(messages: list[Any]) -> dict[str, list[Any]]:
    """Messages (``big``'s) by channel, each in the order it came."""
    found: dict[str, list[Any]] = {}
    for message in messages:
        found.setdefault(message.split(" ", 1)[0], []).append(message)
    return found


async def test_resync_on_a_channel_without_history_tells_the_gap_once_it_can_hear_it(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    # Without history, what it missed is lost: on_gap 'overflow'. What
    # on_gap writes must reach it (not be refused by the bounds it is past),
    # before anything published after what it missed.
    flood, _ = await Flood.start(start_server, nursery, 0, readers=0)
    expected = [big(i) for i in range(FLOOD)]
    await flood.publish(expected)
    assert flood.session.core.open and flood.session.core.dropped == 0
    notice = f"gap {CHANNEL} overflow"
    with trio.fail_after(TIMEOUT):
        got: list[Any] = []
        while notice not in got:
            got += await flood.stuck.messages(1)
        trio_push.publish(CHANNEL, "live")
        while got[-1] != "live":
            got += await flood.stuck.messages(1)
    assert_told(got[:-1], expected, "overflow")
    assert got.count(notice) == len(flood.handler.gaps) == 1
    assert flood.handler.gaps == [(CHANNEL, "overflow")]


async def test_resync_on_two_history_channels_gets_each_exactly_once(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    # The fast path (no envelope, several channels) must note where each
    # history subscription is, or a resync reads on from where it started.
    flood, readers = await Flood.start(start_server, nursery, 1000, "a", "b")
    expected = [big(i, "ab"[i % 2]) for i in range(FLOOD)]
    await flood.publish(expected)
    flood.assert_bounded()
    # Each channel exactly once, in its order (after a resync each
    # channel's history comes in turn: the channels interleave otherwise).
    for reader in readers:
        await reader.wait_messages(FLOOD)
        assert by_channel(reader.messages) == by_channel(expected)
    with trio.fail_after(TIMEOUT):
        got = await flood.stuck.messages(FLOOD)
        trio_push.publish("a", "a live")
        got += await flood.stuck.messages(1)
    assert by_channel(got) == by_channel([*expected, "a live"])
    assert flood.handler.gaps == []


async def test_resync_what_one_pull_takes_is_bounded_for_the_connection_not_per_channel(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    # One pull takes about PULL_BYTES in all (at least a message), however
    # many channels the messages are on: not PULL_BYTES from each.
    channels = [f"c{k}" for k in range(8)]
    flood, readers = await Flood.start(start_server, nursery, 1000, *channels)
    expected = [big(i, channels[i % 8]) for i in range(FLOOD)]
    await flood.publish(expected)
    flood.assert_bounded()
    for reader in readers:
        await reader.wait_messages(FLOOD)
        assert by_channel(reader.messages) == by_channel(expected)
    with trio.fail_after(TIMEOUT):
        got = await flood.stuck.messages(FLOOD)
    assert by_channel(got) == by_channel(expected)


# -- the fast path queues what the general path would -------------------------------------


class Core:
    """What pull reads of a protocol core."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.config = sp.Config()
        self.refusing = False


class Subscriber:
    """A subscriber (the Subscriber protocol) that keeps what it is handed."""

    def __init__(self, protocol: str) -> None:
        self.cursors: list[Cursor] = []
        self.loading = 0
        self.core = Core(protocol)
        self.batches: list[list[sp.Prepared]] = []
        self.gaps: list[tuple[str, str]] = []

    def flush_soon(self) -> None:
        pass

    def take_published(self, batch: list[sp.Prepared], run: sp.PreparedRun | None = None) -> None:
        self.batches.append(list(batch))

    def overflow(self) -> None:
        raise AssertionError("its socket never refuses")

    def subscribe_refused(self, channel: str, reason: str) -> None:
        raise AssertionError("never refused")

    def gap(self, channel: str, reason: str) -> None:
        self.gaps.append((channel, reason))

    def announce(self, cursor: Cursor) -> None:
        pass


def wire(protocol: str, batch: list[sp.Prepared]) -> list[bytes]:
    """The bytes a batch becomes on the wire."""
    if protocol == "websocket":
        return [p.ws_frame for p in batch]
    return [p.sse_block("msg", True) for p in batch]


def cursor_state(subscriber: Subscriber) -> list[tuple[Any, ...]]:
    return [(c.topic.key, c.pos, c.last, c.seam, c.replay) for c in subscriber.cursors]


#: Two channels with history, one without, and patterns over them.
KEYS = ["h1", "h2", "plain", "h*", "*"]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(KEYS[:3]), st.integers(0, 3000)),
        st.tuples(st.just("pull"), st.none() | st.integers(1, 8000), st.none()),
        st.tuples(st.just("subscribe"), st.sampled_from(KEYS), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    protocol=st.sampled_from(["websocket", "sse"]),
    first=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3),
    steps=STEPS,
)
def test_the_fast_path_of_pull_queues_what_the_general_path_would(
    protocol: str, first: list[str], steps: list[tuple[str, Any, Any]]
) -> None:
    # Two identical subscribers, one pulled by pull (its fast path where it
    # applies), the other by the general path, _pull_views, always; the same
    # messages (one history, one publish each) reach both.
    rules = HistoryRules(None, {"h*": History(size=50)})
    store = MemoryHistory(rules)
    fast, slow = Subscriber(protocol), Subscriber(protocol)
    worlds = [(Subscriptions(rules), fast), (Subscriptions(rules), slow)]

    def subscribe(key: str) -> None:
        for subscriptions, subscriber in worlds:
            cursor = subscriptions.join(subscriber, key)  # type: ignore[arg-type]
            if cursor is not None and cursor.topic.history:
                subscriptions.loaded(cursor, None, [], store.top(key))

    for key in first:
        subscribe(key)
    for n, (step, arg, size) in enumerate(steps):
        if step == "publish":
            published = store.append(arg, f"{n} " + "x" * size)
            for subscriptions, _ in worlds:
                subscriptions.publish(arg, published)
        elif step == "subscribe":
            subscribe(arg)
        else:
            taken = len(fast.batches)
            pull(fast, arg)  # type: ignore[arg-type]
            _pull_views(slow, arg)  # type: ignore[arg-type]
            assert [wire(protocol, b) for b in fast.batches] == [
                wire(protocol, b) for b in slow.batches
            ]
            assert cursor_state(fast) == cursor_state(slow)
            # A limit is for the subscriber, whatever its number of channels:
            # about that many bytes, past it by the one message that reaches it.
            if arg is not None and len(fast.batches) > taken:
                sizes = [len(p.message) for p in fast.batches[-1]]
                assert sum(sizes[:-1]) < arg


def test_a_publish_after_the_server_stopped_is_not_kept_in_history() -> None:
    engine = trio_push.MemoryPubSub()
    engine.history = HistoryRules(History(10))
    trio.run(engine.run)
    # From another thread the finished run refuses the message: history must
    # not keep what no subscriber got, nor give its offset away.
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(engine.publish("ch", "lost")))
    worker.start()
    worker.join()
    assert results == [False]
    top = engine._store.top("ch")
    assert top is not None and top.offset == 0
