"""Push over HTTP/2, with the h2-based client of tests/helpers/h2client.py.

WebSocket over HTTP/2 (RFC 8441: echo, fragments, pings, close codes both
ways, 1 MiB messages), SSE streams side by side on one connection, each
stream's own send queue (pending, on_drained, bounds, write timeout: a stream
whose window is shut does not hold up the others), graceful shutdown (GOAWAY,
on_shutdown, 1001 and END_STREAM), and pub/sub reaching HTTP/2 streams and
HTTP/1.1 connections alike. The same handlers as over HTTP/1.1.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trustme

import trio_push
from tests.helpers.h2client import (
    CANCEL,
    NO_ERROR,
    REFUSED_STREAM,
    H2Client,
    H2WebSocket,
    SSEReader,
    Stream,
    h2_connect,
    tls_context,
)
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    Recorder,
    echo_app,
    fill_until_refused,
    push_app,
    wait_for,
)

MIB = 1024 * 1024


class Handler(Recorder):
    """Records its callbacks (per client too); echoes messages; ``close <code>``
    closes with that code; on_shutdown says goodbye."""

    def __init__(self) -> None:
        super().__init__()
        self.drained: dict[Any, int] = {}
        self.shutdowns: list[Any] = []
        self.closed_clients: list[Any] = []

    def on_message(self, client: Any, data: Any) -> None:
        super().on_message(client, data)
        if isinstance(data, str) and data.startswith("close "):
            client.close(int(data.split()[1]), "asked to")
        else:
            client.write(data)

    def on_drained(self, client: Any) -> None:
        super().on_drained(client)
        self.drained[client] = self.drained.get(client, 0) + 1

    def on_shutdown(self, client: Any) -> None:
        self.shutdowns.append(client)
        client.write("server going down")

    def on_close(self, client: Any) -> None:
        self.closed_clients.append(client)
        super().on_close(client)

    def callbacks(self) -> list[str]:
        return [name for name in self.names() if name not in ("drained", "message")]


async def h2c_server(start_server: Any, **options: Any) -> tuple[Handler, trio_push.Server]:
    handler = Handler()
    return handler, await start_server(push_app(handler), **options)


# -- WebSocket over HTTP/2 ---------------------------------------------------------


async def test_websocket_over_h2c_echoes_and_closes_1000(start_server: Any) -> None:
    handler, server = await h2c_server(start_server)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/chat?room=1")
            await ws.send("hello")
            await ws.send(b"\x00\x01\xff")
            assert await ws.messages(2) == ["hello", b"\x00\x01\xff"]
            assert await ws.close_and_wait(1000) == 1000
            assert ws.stream.ended and ws.stream.reset is None
            await handler.closed.wait()
    (client,) = handler.clients
    assert client.env["SERVER_PROTOCOL"] == "HTTP/2"
    assert client.env["rack.upgrade?"] == "websocket"
    assert (client.env["PATH_INFO"], client.env["QUERY_STRING"]) == ("/chat", "room=1")
    assert client.close_code == 1000
    assert handler.callbacks() == ["open", "close"]


async def test_websocket_over_h2_with_tls_and_alpn(
    start_server: Any, server_context: ssl.SSLContext, ca: trustme.CA
) -> None:
    handler, server = await h2c_server(start_server, ssl_context=server_context)
    with trio.fail_after(TIMEOUT):
        # h2_connect asserts that ALPN chose h2.
        async with h2_connect(server.port, tls=tls_context(ca)) as h2:
            ws = await h2.websocket("/")
            await ws.send("over tls")
            assert await ws.receive() == "over tls"
            assert await ws.close_and_wait(1000) == 1000
            await handler.closed.wait()
    (client,) = handler.clients
    assert client.env["SERVER_PROTOCOL"] == "HTTP/2"
    assert client.env["wsgi.url_scheme"] == "https"
    assert handler.callbacks() == ["open", "close"]


async def test_fragmented_messages_are_reassembled(start_server: Any) -> None:
    handler, server = await h2c_server(start_server)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/")
            await ws.send_fragments(["frag", "ment", "ed ", "text"])
            await ws.send_fragments([b"\x01" * 10, b"\x02" * 70_000, b"\x03"])
            got = await ws.messages(2)
            await ws.close_and_wait()
    assert got == ["fragmented text", b"\x01" * 10 + b"\x02" * 70_000 + b"\x03"]
    assert [d for n, d in handler.events if n == "message"] == got


async def test_pings_both_ways(start_server: Any) -> None:
    handler, server = await h2c_server(start_server, ping_interval=0.05, pong_timeout=1.0)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/")
            await ws.ping(b"are you there")
            # The server's pings come while it is idle; they are answered
            # as the client reads.
            while not (ws.pongs and len(ws.pings) >= 3):
                await trio.sleep(0.2)
                await ws.send("tick")
                assert await ws.receive() == "tick"
            assert handler.clients[0].open
            await ws.close_and_wait()
    assert ws.pongs[0] == b"are you there"
    assert handler.callbacks() == ["open", "close"]


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
async def test_a_1_mib_message_each_way(
    start_server: Any, server_context: ssl.SSLContext, ca: trustme.CA, tls: bool
) -> None:
    context = server_context if tls else None
    handler, server = await h2c_server(start_server, ssl_context=context)
    text = "".join(chr(0x41 + i % 26) for i in range(MIB))
    binary = bytes(i % 251 for i in range(MIB))
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port, tls=tls_context(ca) if tls else None) as h2:
            ws = await h2.websocket("/")
            await ws.send(text)
            await ws.send(binary)
            got = await ws.messages(2)
            await ws.close_and_wait()
    assert got[0] == text and got[1] == binary
    assert [d for n, d in handler.events if n == "message"] == [text, binary]


async def test_a_message_over_max_message_size_closes_1009(start_server: Any) -> None:
    handler, server = await h2c_server(start_server, max_message_size=64 * 1024)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/")
            await ws.send(b"ok" * 1000)
            assert await ws.receive() == b"ok" * 1000
            await ws.send(b"x" * (64 * 1024 + 1))
            assert await ws.close_code() == 1009
            await ws.stream.wait_done()
            await handler.closed.wait()
            # The connection stays: another stream on it is served.
            again = await h2.websocket("/")
            await again.send("still here")
            assert await again.receive() == "still here"
    assert handler.clients[0].close_code == 1009
    assert ws.stream.ended


async def test_close_codes_from_either_side(start_server: Any) -> None:
    handler, server = await h2c_server(start_server)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ours = await h2.websocket("/ours")
            theirs = await h2.websocket("/theirs")
            assert await ours.close_and_wait(4001) == 4001
            await theirs.send("close 4002")
            assert await theirs.close_code() == 4002
            await theirs.stream.wait_done()
            await wait_for(lambda: len(handler.closed_clients) == 2)
    assert theirs.close == (4002, "asked to")
    codes = {c.env["PATH_INFO"]: c.close_code for c in handler.closed_clients}
    assert codes == {"/ours": 4001, "/theirs": 4002}
    assert handler.callbacks() == ["open", "open", "close", "close"]


class Burst:
    """Writes ``n`` messages in on_open, in one go, then closes."""

    def __init__(self, n: int) -> None:
        self.messages = [f"row {i:05d} " + "b" * 100 for i in range(n)]
        self.accepted: list[bool] = []

    def on_open(self, client: Any) -> None:
        self.accepted = [client.write(m) for m in self.messages]
        client.close()


async def test_a_burst_of_writes_reaches_websocket_and_sse_streams_complete(
    start_server: Any,
) -> None:
    handler = Burst(5000)
    server = await start_server(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/")
            sse = await h2.sse("/")
            got_ws: list[str | bytes] = []
            while len(got_ws) < 5000:
                got_ws.append(await ws.receive())
            assert await ws.close_code() == 1000
            events = await sse.rest()
    assert handler.accepted == [True] * 5000
    assert got_ws == handler.messages
    assert [e.data for e in events] == handler.messages
    assert {e.type for e in events} == {"msg"}
    assert sse.stream.ended and sse.stream.reset is None


# -- each stream its own queue -----------------------------------------------------


async def open_pair(h2: H2Client, handler: Handler, protocol: str) -> tuple[Stream, Reader]:
    """Two push streams on ``h2``: the first never opens its window, the
    second reads. Their clients are the last two of ``handler.clients``."""
    before = len(handler.clients)
    shut: H2WebSocket | SSEReader
    reading: H2WebSocket | SSEReader
    if protocol == "websocket":
        shut = await h2.websocket("/shut", open_window=False)
        reading = await h2.websocket("/reading")
    else:
        shut = await h2.sse("/shut", open_window=False)
        reading = await h2.sse("/reading")
    await wait_for(lambda: len(handler.clients) == before + 2)
    return shut.stream, Reader(reading)


class Reader:
    """The messages of a WebSocket or SSE stream, alike."""

    def __init__(self, source: H2WebSocket | SSEReader) -> None:
        self.source = source
        self.stream = source.stream

    async def messages(self, n: int) -> list[Any]:
        if isinstance(self.source, H2WebSocket):
            return await self.source.messages(n)
        return [event.data for event in await self.source.next(n)]


async def test_pending_and_on_drained_are_per_stream(start_server: Any) -> None:
    handler, server = await h2c_server(start_server)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws_shut = await h2.websocket("/shut", open_window=False)
            ws_reading = await h2.websocket("/reading")
            await wait_for(lambda: len(handler.clients) == 2)
            shut, reading = handler.clients
            filled = await fill_until_refused(shut)
            assert shut.pending > 0
            # The other stream on the connection is not held up.
            for i in range(20):
                assert reading.write(f"r{i}")
            assert await ws_reading.messages(20) == [f"r{i}" for i in range(20)]
            await wait_for(lambda: reading.pending == 0)
            assert shut.pending > 0 and handler.drained.get(shut, 0) == 0
            # Opened, the shut stream gets all, and its on_drained runs.
            await ws_shut.stream.open()
            got = await ws_shut.messages(filled)
            await wait_for(lambda: handler.drained.get(shut, 0) >= 1)
            assert shut.pending == 0
    assert [len(m) for m in got] == [65536] * filled
    assert shut.open or shut.close_code is not None


async def test_a_shut_stream_past_its_queue_bound_closes_1008_alone(start_server: Any) -> None:
    handler, server = await h2c_server(start_server, max_queue_messages=10)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws_shut = await h2.websocket("/shut", open_window=False)
            ws_reading = await h2.websocket("/reading")
            await wait_for(lambda: len(handler.clients) == 2)
            shut, reading = handler.clients
            filled = await fill_until_refused(shut)
            accepted = [shut.write(f"m{i}") for i in range(20)]
            assert not shut.open
            assert reading.open and reading.write("still served")
            assert await ws_reading.receive() == "still served"
            # It reads now: what was accepted, then the 1008.
            await ws_shut.stream.open()
            assert len(await ws_shut.messages(filled)) == filled
            assert await ws_shut.close_code() == 1008
            assert reading.open
    assert 0 < accepted.count(True) <= 10 and accepted[-1] is False
    assert shut.close_code == 1008


async def test_a_stream_that_gets_no_window_is_reset_while_the_others_are_served(
    start_server: Any,
) -> None:
    handler, server = await h2c_server(start_server, write_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            for protocol in ("sse", "websocket"):
                shut_stream, reader = await open_pair(h2, handler, protocol)
                shut, reading = handler.clients[-2:]
                await fill_until_refused(shut)
                # The reading stream keeps being served while the shut one waits.
                served = 0
                while shut_stream.reset is None:
                    assert reading.write(f"tick {served}")
                    assert await reader.messages(1) == [f"tick {served}"]
                    served += 1
                    await trio.sleep(0.02)
                assert shut_stream.reset == CANCEL
                assert served >= 1
                await wait_for(lambda: shut in handler.closed_clients)  # noqa: B023
                assert reading.open and reading.write("after the reset")
                assert await reader.messages(1) == ["after the reset"]
                assert not h2.closed and h2.goaway is None
                await h2.ping()  # the connection itself answers too


# -- SSE over HTTP/2 ------------------------------------------------------------


class Channel:
    """Subscribes each push client to ``news``."""

    def __init__(self) -> None:
        self.clients: list[Any] = []

    def on_open(self, client: Any) -> None:
        client.subscribe("news")
        self.clients.append(client)


async def test_a_hundred_sse_streams_on_one_connection_each_get_every_publish(
    start_server: Any,
) -> None:
    # 100 is the default h2_max_concurrent_streams: all on one connection.
    handler = Channel()
    server = await start_server(push_app(handler))
    streams, n = 100, 200
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            await h2.wait(lambda: 0x3 in h2.settings)  # SETTINGS_MAX_CONCURRENT_STREAMS
            assert h2.settings[0x3] == streams
            readers = [await h2.sse(f"/events/{i}") for i in range(streams)]
            await wait_for(lambda: trio_push.subscriber_count("news") == streams)
            for i in range(n):
                assert trio_push.publish("news", f"{i:04d} " + "n" * 200)
            got = [[e.data[:4] for e in await reader.next(n)] for reader in readers]
    assert got == [[f"{i:04d}" for i in range(n)]] * streams
    for reader in readers:
        assert reader.stream.status == 200
        assert (reader.stream.header("content-type") or "").startswith("text/event-stream")
        assert reader.stream.header("connection") is None
    assert len({id(c) for c in handler.clients}) == streams
    assert {c.env["SERVER_PROTOCOL"] for c in handler.clients} == {"HTTP/2"}
    assert {c.env["rack.upgrade?"] for c in handler.clients} == {"sse"}


async def test_idle_sse_stream_gets_keepalive_comments(start_server: Any) -> None:
    _, server = await h2c_server(start_server, sse_keepalive=0.05)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            reader = await h2.sse("/")
            data = b""
            while data.count(b":\n") < 2:
                data += await reader.stream.read_some()
            assert not reader.stream.done
    assert set(data.splitlines()) == {b":"}, data


async def test_pubsub_reaches_h2_streams_and_http1_connections_alike(
    start_server: Any,
) -> None:
    handler = Channel()
    server = await start_server(push_app(handler))
    n, size = 50, 64 * 1024
    with trio.fail_after(TIMEOUT):
        old_ws = await RawWebSocket.open(server.port)
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/")
            sse = await h2.sse("/")
            await wait_for(lambda: trio_push.subscriber_count("news") == 3)
            got: dict[str, list[Any]] = {}

            async def read(name: str, source: Any) -> None:
                got[name] = await source.messages(n)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, "h2", ws)
                nursery.start_soon(read, "sse", Reader(sse))
                nursery.start_soon(read, "h1", old_ws)
                for i in range(n):
                    assert trio_push.publish("news", f"{i:03d}" + "p" * size)
        await old_ws.aclose()
    expected = [f"{i:03d}" + "p" * size for i in range(n)]
    assert got == {"h2": expected, "sse": expected, "h1": expected}
    protocols = sorted(c.env["SERVER_PROTOCOL"] for c in handler.clients)
    assert protocols == ["HTTP/1.1", "HTTP/2", "HTTP/2"]


# -- graceful shutdown ------------------------------------------------------------


async def test_graceful_shutdown_goaway_then_1001_and_end_stream(serve_scope: Any) -> None:
    handler = Handler()
    server, scope, done = await serve_scope(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            sockets = [await h2.websocket(f"/ws/{i}") for i in range(2)]
            readers = [await h2.sse(f"/sse/{i}") for i in range(2)]
            await wait_for(lambda: len(handler.clients) == 4)
            scope.cancel()
            code, last_stream_id = await h2.wait_goaway()
            # A stream opened after the GOAWAY (while the others finish) is refused.
            late = await h2.request("GET", "/late")
            for ws in sockets:
                assert await ws.receive() == "server going down"
                assert await ws.close_code() == 1001
            events = [await reader.rest() for reader in readers]
            for stream in [ws.stream for ws in sockets] + [r.stream for r in readers]:
                await stream.wait_done()
            await late.wait_done()
            await h2.wait(lambda: h2.closed)
        await done.wait()
    assert code == NO_ERROR
    assert last_stream_id >= max(r.stream.id for r in readers)
    assert [[e.data for e in got] for got in events] == [["server going down"]] * 2
    assert all(r.stream.ended and r.stream.reset is None for r in readers)
    assert all(ws.stream.ended for ws in sockets)
    assert late.reset == REFUSED_STREAM and late.headers is None
    assert sorted(handler.shutdowns, key=id) == sorted(handler.clients, key=id)
    assert sorted(handler.closed_clients, key=id) == sorted(handler.clients, key=id)
    codes = {c.env["PATH_INFO"]: c.close_code for c in handler.clients}
    assert codes == {"/ws/0": 1001, "/ws/1": 1001, "/sse/0": None, "/sse/1": None}


# -- the client ends streams: reset, or gone --------------------------------------


async def test_a_push_stream_the_client_resets_closes_alone(start_server: Any) -> None:
    handler, server = await h2c_server(start_server)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/ws")
            sse = await h2.sse("/sse")
            kept = await h2.websocket("/kept")
            await wait_for(lambda: len(handler.clients) == 3)
            await ws.stream.cancel()
            await sse.stream.cancel()
            await wait_for(lambda: len(handler.closed_clients) == 2)
            # The connection and its other stream go on.
            await kept.send("still here")
            assert await kept.receive() == "still here"
            status, _, body = await h2.fetch("GET", "/")
            assert (status, body) == (200, b"hello")
            assert handler.clients[2].open
    closed = sorted(c.env["PATH_INFO"] for c in handler.closed_clients[:2])
    assert closed == ["/sse", "/ws"]
    await wait_for(lambda: len(handler.closed_clients) == 3)
    assert handler.callbacks() == ["open"] * 3 + ["close"] * 3


async def test_a_connection_that_drops_closes_each_of_its_streams_once(start_server: Any) -> None:
    handler, server = await h2c_server(start_server)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            for i in range(5):
                await h2.websocket(f"/ws/{i}")
                await h2.sse(f"/sse/{i}")
            await wait_for(lambda: len(handler.clients) == 10)
        # Closed without a word (no GOAWAY, no RST_STREAM).
        await wait_for(lambda: len(handler.closed_clients) == 10)
    assert sorted(map(id, handler.closed_clients)) == sorted(map(id, handler.clients))
    assert {c.close_code for c in handler.clients if c.protocol == "websocket"} == {1006}
    await trio.sleep(0.1)
    assert handler.callbacks() == ["open"] * 10 + ["close"] * 10


async def test_a_burst_from_a_worker_thread_callback_reaches_an_h2_stream(
    start_server: Any,
) -> None:
    handler = Burst(3000)
    server = await start_server(push_app(handler), threads=2, max_queue_messages=100)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            sse = await h2.sse("/")
            events = await sse.rest()
    assert handler.accepted == [True] * 3000
    assert [e.data for e in events] == handler.messages


async def test_request_bodies_with_and_without_content_length(start_server: Any) -> None:
    server = await start_server(echo_app(Recorder()))
    body = bytes(range(256)) * 3000  # 750 KiB, past the 64 KiB default window we open
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            status, _, got = await h2.fetch("POST", "/body", body=body)
            assert (status, got) == (200, body)
            # No content-length: the body ends with the stream (END_STREAM).
            stream = await h2.request("POST", "/body", end_stream=False)
            await stream.send(body[:100_000])
            await stream.send(body[100_000:], end_stream=True)
            await stream.response()
            assert (stream.status, await stream.read_all()) == (200, body)
            status, head, got = await h2.fetch("HEAD", "/")
            assert (status, got) == (200, b"")
            assert head.header("content-length") == "5"


async def test_a_response_behind_a_shut_window_holds_up_no_other_stream(
    start_server: Any,
) -> None:
    server = await start_server(echo_app(Recorder()), write_timeout=1.0)
    body = bytes(range(256)) * 4096  # 1 MiB
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            waiting = await h2.request("POST", "/body", body=body, open_window=False)
            stuck = await h2.request("POST", "/body", body=body, open_window=False)
            await waiting.response()
            for _ in range(20):
                status, _, got = await h2.fetch("GET", "/")
                assert (status, got) == (200, b"hello")
            assert waiting.received == stuck.received == 65535
            # Opened, one gets its whole body; the other, never opened, is reset.
            await waiting.open()
            assert await waiting.read_all() == body
            await stuck.wait_done()
            assert stuck.reset == CANCEL
            assert not h2.closed


async def test_shutdown_aborts_a_stream_that_cannot_take_its_1001_at_the_drain_bound(
    serve_scope: Any,
) -> None:
    handler = Handler()
    server, scope, done = await serve_scope(push_app(handler), drain_timeout=1.0)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            shut = await h2.websocket("/shut", open_window=False)
            reading = await h2.websocket("/reading")
            await wait_for(lambda: len(handler.clients) == 2)
            await fill_until_refused(handler.clients[0])
            scope.cancel()
            assert await reading.receive() == "server going down"
            assert await reading.close_code() == 1001
            await done.wait()
            await shut.stream.wait_done()
            await h2.wait(lambda: h2.closed)
    assert len(handler.shutdowns) == 2
    assert handler.clients[1].close_code == 1001
    # on_close for each, the one aborted at the drain bound too.
    assert sorted(c.env["PATH_INFO"] for c in handler.closed_clients) == ["/reading", "/shut"]


async def test_a_websocket_stream_that_never_pongs_is_ended_alone(start_server: Any) -> None:
    handler, server = await h2c_server(start_server, ping_interval=0.05, pong_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            silent = await h2.websocket("/silent")
            silent.auto_pong = False
            answering = await h2.websocket("/answering")
            await wait_for(lambda: len(handler.clients) == 2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answering.close_code)  # reads, and so pongs
                await silent.close_code()
                await silent.stream.wait_done()
                assert handler.clients[1].open
                nursery.cancel_scope.cancel()
            await answering.send("still here")
            assert await answering.receive() == "still here"
            assert [c.env["PATH_INFO"] for c in handler.closed_clients] == ["/silent"]
    assert silent.pings and not silent.pongs


async def test_an_idle_connection_gets_goaway_after_idle_timeout_and_one_with_a_stream_does_not(
    start_server: Any,
) -> None:
    handler, server = await h2c_server(start_server, idle_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as idle, h2_connect(server.port) as busy:
            status, _, _ = await idle.fetch("GET", "/plain")
            assert status == 200
            events = await busy.sse("/events")
            started = trio.current_time()
            assert await idle.wait_goaway() == (0, 1)  # NO_ERROR, last stream 1
            await idle.wait(lambda: idle.closed)
            assert trio.current_time() - started >= 0.4
            # The connection with an event stream open stays, well past the bound.
            await trio.sleep(1.0)
            assert not busy.closed and busy.goaway is None
            handler.clients[-1].write("still here")
            assert [e.data for e in await events.next()] == ["still here"]


async def test_a_slow_answer_to_a_stream_the_client_reset_is_dropped_without_an_error(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    answered = trio.Event()

    async def app(env: dict[str, Any]) -> Any:
        await trio.sleep(0.2)
        answered.set()
        return 200, {"content-type": "text/plain"}, [b"too late"]

    server = await start_server(app)
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            stream = await h2.request("GET", "/slow")
            await stream.cancel(CANCEL)
            await answered.wait()
            status, _, body = await h2.fetch("GET", "/next")  # the connection is fine
            assert (status, body) == (200, b"too late")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_paced_drain_shuts_an_h2_connections_streams_down_together_spread_over_the_window(
    serve_scope: Any,
) -> None:
    """--drain-spread over HTTP/2: each connection's push streams go in one
    batch (its client reconnects once), the connections across the window."""
    handler = Handler()
    server, scope, done = await serve_scope(push_app(handler), drain_spread=1.0)
    ended_at: dict[tuple[int, int], float] = {}

    async def watch(conn: int, i: int, reader: SSEReader) -> None:
        assert [e.data for e in await reader.rest()] == ["server going down"]
        ended_at[conn, i] = trio.current_time()

    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(h2_connect(server.port)) for _ in range(10)]
            readers = [
                [await h2.sse(f"/sse/{c}/{i}") for i in range(5)] for c, h2 in enumerate(conns)
            ]
            await wait_for(lambda: len(handler.clients) == 50)
            started = trio.current_time()
            scope.cancel()
            async with trio.open_nursery() as watchers:
                for c, streams in enumerate(readers):
                    for i, reader in enumerate(streams):
                        watchers.start_soon(watch, c, i, reader)
        await done.wait()
    assert sorted(handler.shutdowns, key=id) == sorted(handler.clients, key=id)
    by_conn = [[ended_at[c, i] for i in range(5)] for c in range(10)]
    # A connection's five streams end together; the connections do not.
    assert all(max(times) - min(times) < 0.2 for times in by_conn)
    firsts = sorted(min(times) for times in by_conn)
    assert firsts[-1] - firsts[0] >= 0.5 and firsts[-1] - started < 1.0 + TIMEOUT
