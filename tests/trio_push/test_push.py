"""A push session: its send queue, keepalives and deadlines, and the frames it reads.

The send queue measures the peer, not the app. A client that reads is never
cut off, whatever the app writes in one go: a burst of thousands of writes, one
message larger than the bound, a burst of large publishes. A client that does
not read is still closed (or its writes dropped), with memory bounded.

Idle WebSockets get pings and idle streams comments; a peer that never pongs is
aborted; a close after a burst waits for a slow reader to read it; a frame that
comes with the handshake is kept, one over the size limit
closes with 1009. Real clients on 127.0.0.1.
"""

from __future__ import annotations

import socket
from typing import Any

import trio
from httpx_sse import aconnect_sse
from websockets.exceptions import ConnectionClosed as WSClosed

import trio_push
from tests.helpers.frames import TEXT, frame
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    Recorder,
    connect,
    fill_until_refused,
    http_client,
    in_thread,
    push_app,
    read_until,
    wait_for,
    ws_connect,
    ws_handshake,
)

BURST = 2000
BIG = 8 * 1024 * 1024  # twice the default max_queue_bytes


class Snapshot:
    """Writes a page's initial snapshot in on_open, then closes."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        self.accepted: list[bool] = []
        self.closed = 0

    def on_open(self, client: trio_push.Client) -> None:
        self.accepted = [client.write(m) for m in self.messages]
        client.close()

    def on_close(self, client: trio_push.Client) -> None:
        self.closed += 1


def ws_read_all(port: int) -> tuple[list[Any], int | None]:
    """Every message until the close, with the websockets client; and the code."""
    from websockets.exceptions import ConnectionClosed

    got: list[Any] = []
    with ws_connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        try:
            while True:
                got.append(ws.recv(timeout=TIMEOUT))
        except ConnectionClosed as exc:
            return got, exc.rcvd.code if exc.rcvd else None


async def sse_read_all(port: int) -> list[str]:
    """Every event's data until the stream ends, with httpx-sse."""
    got = []
    async with http_client() as http, aconnect_sse(http, "GET", f"http://127.0.0.1:{port}/") as es:
        async for event in es.aiter_sse():
            got.append(event.data)
    return got


async def test_a_burst_of_writes_then_close_reaches_a_websocket_reader(start_server: Any) -> None:
    handler = Snapshot([f"row {i} " + "x" * 100 for i in range(BURST)])
    server = await start_server(push_app(handler))
    got, code = await in_thread(ws_read_all, server.port)
    assert got == handler.messages
    assert code == 1000
    assert handler.accepted == [True] * BURST
    await wait_for(lambda: handler.closed == 1)


async def test_a_burst_of_writes_then_close_reaches_an_sse_reader(start_server: Any) -> None:
    handler = Snapshot([f"row {i} " + "x" * 100 for i in range(BURST)])
    server = await start_server(push_app(handler))
    with trio.fail_after(TIMEOUT):
        got = await sse_read_all(server.port)
    assert got == handler.messages
    await wait_for(lambda: handler.closed == 1)


async def test_one_message_larger_than_the_queue_bound_is_delivered(start_server: Any) -> None:
    big = "y" * BIG
    handler = Snapshot([big, "after"])
    server = await start_server(push_app(handler))
    got, code = await in_thread(ws_read_all, server.port)
    assert [len(m) for m in got] == [BIG, 5] and got[0] == big
    assert code == 1000
    with trio.fail_after(TIMEOUT):
        events = await sse_read_all(server.port)
    assert [len(m) for m in events] == [BIG, 5]


async def test_a_burst_from_a_callback_in_a_worker_thread_reaches_a_slow_reader(
    start_server: Any,
) -> None:
    # The thread's writes reach the event loop while it sends, and the socket
    # refuses them (a small window, read slowly): they are still one
    # callback's burst, not held against a bound of 100.
    handler = Snapshot([f"row {i} " + "x" * 100 for i in range(BURST)])
    server = await start_server(push_app(handler), threads=2, max_queue_messages=100)
    stream = await connect(server.port, rcvbuf=4096)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    data = b""
    with trio.fail_after(TIMEOUT * 2):
        while chunk := await stream.receive_some(4096):
            data += chunk
            await trio.sleep(0.001)
    assert data.count(b"data: row ") == BURST
    assert handler.accepted == [True] * BURST
    await stream.aclose()


class Subscriber:
    def __init__(self) -> None:
        self.clients: list[trio_push.Client] = []

    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe("prices")
        self.clients.append(client)


async def test_a_burst_of_large_publishes_reaches_every_reader(start_server: Any) -> None:
    handler = Subscriber()
    server = await start_server(push_app(handler))
    n, size, readers = 200, 64 * 1024, 8  # 12.5 MiB a reader, 3x the default bound
    results: list[Any] = []

    def read(ws: Any) -> None:
        results.append([ws.recv(timeout=TIMEOUT) for _ in range(n)])

    def open_one() -> Any:
        return ws_connect(f"ws://127.0.0.1:{server.port}/", max_size=None).__enter__()

    sockets = [await in_thread(open_one) for _ in range(readers)]
    await wait_for(lambda: trio_push.subscriber_count("prices") == readers)
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            nursery.start_soon(in_thread, read, ws)
        # From the event loop in one go, then from a thread in a loop.
        accepted = [trio_push.publish("prices", f"{i:05d}" + "p" * size) for i in range(n // 2)]

        def publish_rest() -> list[bool]:
            return [trio_push.publish("prices", f"{i:05d}" + "p" * size) for i in range(n // 2, n)]

        accepted += await in_thread(publish_rest)
    assert accepted == [True] * n
    for got in results:
        assert [m[:5] for m in got] == [f"{i:05d}" for i in range(n)]
    assert all(c.open for c in handler.clients)
    for ws in sockets:
        await in_thread(ws.close)


async def test_a_burst_of_small_publishes_reaches_a_reader_behind_a_small_window(
    start_server: Any,
) -> None:
    # 20,000 publishes of 100 bytes: more messages than the bound (1000) in
    # each 256 KiB that one send takes from the log. The reader's window is
    # small, so the socket refuses at first; what waits must stay in the log
    # until the socket has taken what is queued, not be counted against the
    # bound while it refuses (that closed it with 1008).
    handler = Subscriber()
    server = await start_server(push_app(handler))
    ws = await RawWebSocket.open(server.port, rcvbuf=65536)
    await wait_for(lambda: trio_push.subscriber_count("prices") == 1)
    n = 20_000
    for i in range(n):
        assert trio_push.publish("prices", f"{i:06d}" + "s" * 94)
    with trio.fail_after(TIMEOUT):
        got = await ws.messages(n)
    assert [m[:6] for m in got] == [f"{i:06d}" for i in range(n)]
    assert handler.clients[0].open
    await ws.aclose()


async def nonreader(port: int) -> RawWebSocket:
    """A WebSocket client with a tiny receive window that does not read."""
    return await RawWebSocket.open(port, rcvbuf=4096)


class Writer:
    def __init__(self) -> None:
        self.client: trio_push.Client | None = None
        self.opened = trio.Event()

    def on_open(self, client: trio_push.Client) -> None:
        self.client = client
        self.opened.set()


async def refusing_client(
    start_server: Any, **options: Any
) -> tuple[RawWebSocket, trio_push.Client, int]:
    """A non-reader, its client, and how many 64 KiB messages filled its
    socket (from then on the bounds count what is written)."""
    handler = Writer()
    server = await start_server(push_app(handler), **options)
    ws = await nonreader(server.port)
    await handler.opened.wait()
    assert handler.client is not None
    return ws, handler.client, await fill_until_refused(handler.client)


async def test_a_client_that_does_not_read_is_closed_past_the_bound(start_server: Any) -> None:
    with trio.fail_after(TIMEOUT):
        ws, client, filled = await refusing_client(start_server, max_queue_messages=10)
        accepted = [client.write(f"m{i}") for i in range(20)]
        assert not client.open
        # It reads now: what was accepted, then the 1008.
        ws.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        messages = await ws.messages(filled)
        code = await ws.close_code()
    assert len(messages) == filled
    assert 0 < accepted.count(True) <= 10 and accepted[-1] is False
    assert code == 1008
    await ws.aclose()


async def test_the_byte_bound_counts_what_waits_behind_a_refusing_socket(
    start_server: Any,
) -> None:
    with trio.fail_after(TIMEOUT):
        ws, client, _ = await refusing_client(start_server, max_queue_bytes=200_000)
        assert [client.write(b"x" * 60_000) for _ in range(4)] == [True, True, True, False]
        assert await ws.close_code() == 1008
    await ws.aclose()


async def test_drop_policy_refuses_writes_but_keeps_the_client(start_server: Any) -> None:
    with trio.fail_after(TIMEOUT):
        ws, client, filled = await refusing_client(
            start_server, max_queue_messages=3, overflow="drop"
        )
        accepted = [client.write(f"m{i}") for i in range(5)]
        assert client.open and client.dropped == 2
        messages = await ws.messages(filled + 3)
        await wait_for(lambda: client.pending == 0)
        assert client.write("after") is True
        assert await ws.messages(1) == ["after"]
    assert accepted == [True, True, True, False, False]
    assert messages[filled:] == ["m0", "m1", "m2"]
    await ws.aclose()


class KeepsTheQueueFull:
    """The documented pattern: write more whenever the queue drains."""

    def __init__(self, per_drain: int) -> None:
        self.per_drain = per_drain
        self.sent = 0
        self.closed = trio.Event()

    def _more(self, client: trio_push.Client) -> None:
        for _ in range(self.per_drain):
            client.write(f"{self.sent:08d}" + "d" * 65528)
            self.sent += 1

    def on_open(self, client: trio_push.Client) -> None:
        self._more(client)

    def on_drained(self, client: trio_push.Client) -> None:
        self._more(client)

    def on_close(self, client: trio_push.Client) -> None:
        self.closed.set()


async def test_a_slow_reader_behind_a_full_queue_is_not_taken_for_half_open(
    start_server: Any,
) -> None:
    # 2 MiB queued ahead of each ping, read at about 320 KB/s: a ping waits
    # about 6 s behind it, longer than pong_timeout.
    handler = KeepsTheQueueFull(per_drain=32)
    server = await start_server(push_app(handler), ping_interval=0.5, pong_timeout=2.0)
    ws = await RawWebSocket.open(server.port, rcvbuf=32 * 1024)
    got: list[Any] = []
    with trio.move_on_after(9):
        while True:
            data = await ws.stream.receive_some(32 * 1024)
            assert data, f"the server closed a reading client after {len(got)} messages"
            ws.ws.receive_data(data)
            for event in ws.ws.events():
                if type(event).__name__ == "Ping":
                    ws.pings += 1
                    await ws.stream.send_all(ws.ws.send(event.response()))
                elif getattr(event, "message_finished", False):
                    got.append(event)
            await trio.sleep(0.1)
    assert not handler.closed.is_set()
    assert ws.pings >= 2
    assert len(got) > 32
    await ws.aclose()


class SlowHandler:
    """An on_message far slower than the client sends."""

    def __init__(self) -> None:
        self.got = 0

    async def on_message(self, client: trio_push.Client, data: Any) -> None:
        self.got += 1
        await trio.sleep(0.5)


async def test_reading_stops_while_a_slow_handler_has_a_megabyte_waiting(
    start_server: Any,
) -> None:
    handler = SlowHandler()
    server = await start_server(push_app(handler))
    ws = await RawWebSocket.open(server.port)
    sent = 0
    # 1 MiB messages as fast as the server takes them, for a second: the
    # server stops reading once about 1 MiB waits for on_message, so the
    # sends stall after a few (kernel buffers hold a few MiB more), not 64.
    with trio.move_on_after(1):
        while sent < 64:
            await ws.send(b"m" * (1024 * 1024 - 16))
            sent += 1
    assert sent <= 16, f"{sent} MiB taken while on_message had handled {handler.got}"
    await ws.aclose()


# -- keepalives, and frames that arrive early or too big -------------------------


async def test_idle_websocket_gets_pings(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), ping_interval=0.05)
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        with trio.move_on_after(0.4):
            while True:
                await ws._pump()
    assert ws.pings >= 2
    assert rec.names() == ["open"]  # answered pings keep it open
    await ws.aclose()


async def test_peer_that_never_pongs_is_aborted_and_on_close_runs(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), ping_interval=0.05, pong_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        ws.auto_pong = False
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while await ws._pump():
                    pass

            nursery.start_soon(read)
            await rec.closed.wait()
    assert ws.pings >= 1
    assert rec.names() == ["open", "close"]
    await ws.aclose()


async def test_server_answers_client_pings(start_server: Any) -> None:
    server = await start_server(push_app(Recorder()))

    def client() -> bool:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            return ws.ping(b"are you there").wait(TIMEOUT)  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) is True


async def test_idle_sse_stream_gets_keepalive_comments(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), sse_keepalive=0.05)
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(
                b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
            )
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
            # Two comment lines, each its own chunk.
            await read_until(stream, b"2\r\n:\n\r\n", buf)
            await read_until(stream, b"2\r\n:\n\r\n", buf)
    assert head.startswith(b"HTTP/1.1 200 ")


async def test_frame_sent_with_the_handshake_is_not_lost(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    request, _key = ws_handshake("/")
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(request + frame(TEXT, b"eager"))
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
            await wait_for(lambda: "message" in rec.names())
    assert head.startswith(b"HTTP/1.1 101 ")
    assert [d for n, d in rec.events if n == "message"] == ["eager"]


async def test_message_over_the_size_limit_closes_1009(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), max_message_size=1000)

    def client() -> int | None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("x" * 2000)
            try:
                ws.recv(timeout=TIMEOUT)
            except WSClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == 1009
        await rec.closed.wait()
    assert "message" not in rec.names()


async def slow_read(stream: trio.SocketStream, ws: Any, size: int) -> tuple[bytes, list[Any]]:
    """Read ``size`` bytes every 50 ms (16 KiB: about 320 KB/s) until the
    server closes; the bytes, and with ``ws`` the WebSocket events they made."""
    data, events = b"", []
    with trio.fail_after(TIMEOUT * 2):
        while chunk := await stream.receive_some(size):
            data += chunk
            if ws is not None:
                ws.receive_data(chunk)
                events += ws.events()
            await trio.sleep(0.05)
    return data, events


def texts_and_closes(events: list[Any]) -> tuple[list[str], list[int]]:
    texts, part = [], ""
    for e in events:
        if type(e).__name__ == "TextMessage":
            part += e.data
            if e.message_finished:
                texts.append(part)
                part = ""
    return texts, [e.code for e in events if type(e).__name__ == "CloseConnection"]


async def read_a_snapshot_slowly(
    start_server: Any, rows: list[str], window: int, size: int
) -> None:
    """``rows`` written in on_open, then a close, read with a ``window``
    byte receive buffer ``size`` bytes every 50 ms, over WebSocket and SSE:
    every row comes, then the close (not an abort), and on_close runs."""
    handler = Snapshot(rows)
    server = await start_server(push_app(handler), close_timeout=0.5)
    ws = await RawWebSocket.open(server.port, rcvbuf=window)
    _, events = await slow_read(ws.stream, ws.ws, size)
    texts, closes = texts_and_closes(ws.events + events)
    assert len(texts) == len(rows) and texts == rows
    assert closes == [1000]
    await wait_for(lambda: handler.closed == 1)

    handler = Snapshot(rows)
    server = await start_server(push_app(handler), close_timeout=0.5)
    stream = await connect(server.port, rcvbuf=window)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    data, _ = await slow_read(stream, None, size)
    assert data.count(b"data: row ") == len(rows)
    assert data.endswith(b"\r\n0\r\n\r\n")  # the stream's end, not an abort
    await wait_for(lambda: handler.closed == 1)


async def test_close_waits_for_a_reader_slower_than_a_send_piece_per_close_timeout(
    start_server: Any,
) -> None:
    # 1,000 rows (200 KB) and the close, read at about 80 KB/s by a reader
    # with a 4 KiB window: two and a half seconds, five close timeouts, and
    # less than 64 KiB per close timeout. The wait for the close restarts
    # each time the socket takes bytes; when the writer counted those only
    # per 64 KiB piece, this reader was cut off and lost the rest.
    rows = [f"row {i} " + "x" * 200 for i in range(1000)]
    await read_a_snapshot_slowly(start_server, rows, window=4096, size=4096)


async def test_close_after_a_queue_the_reader_needs_seconds_for_loses_nothing(
    start_server: Any,
) -> None:
    # 600 KiB queued ahead of the close frame, read in about 2 s: the close
    # timeout (0.5 s) counts from when the close frame is out, not from the
    # close() call, so the slow reader is not cut off and gets every message.
    rows = [f"row {i} " + "x" * 1024 for i in range(600)]
    await read_a_snapshot_slowly(start_server, rows, window=16384, size=16384)
