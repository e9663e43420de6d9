"""Clients that misbehave at the transport: never read, reset, vanish; and
the send-queue bound's two policies."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys
import textwrap
from typing import Any

import pytest
import trio

from tests.helpers.frames import BINARY, PING, TEXT, Bystander, RawWS, frame
from tests.helpers.procs import free_port, running, vm_rss_kib
from tests.helpers.server import (
    connect,
    echo_app,
    exchange,
    fill_until_refused,
    read_until,
    wait_for,
    ws_handshake,
)

MB = 1024 * 1024


class Tracker:
    """Records its clients and when each callback ran."""

    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.opened_at: list[float] = []
        self.closed_at: list[float] = []
        self.messages: list[Any] = []

    def on_open(self, client: Any) -> None:
        self.clients.append(client)
        self.opened_at.append(trio.current_time())

    def on_message(self, client: Any, data: Any) -> None:
        self.messages.append(data)
        client.write(data)

    def on_close(self, client: Any) -> None:
        self.closed_at.append(trio.current_time())


def reset(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER 0: the kernel sends a RST, not a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


# -- a client that never reads ---------------------------------------------------


@pytest.mark.parametrize("overflow", ["close", "drop"])
async def test_client_that_never_reads_100_mb_bounded_memory_and_time(
    start_server: Any, overflow: str
) -> None:
    write_timeout = 1.0
    tracker = Tracker()
    server = await start_server(echo_app(tracker), write_timeout=write_timeout, overflow=overflow)
    bystander = await Bystander.open(server.port)
    ws = await RawWS.open(server.port, "/sink", rcvbuf=16384)
    await wait_for(lambda: len(tracker.clients) == 2)
    client = tracker.clients[1]
    baseline = vm_rss_kib()
    peak = baseline
    refused_at: float | None = None
    accepted = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, vm_rss_kib())
            await trio.sleep(0.005)

    chunk = b"\xab" * MB
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        with trio.fail_after(write_timeout + 5):
            for _ in range(100):
                if client.write(chunk):
                    accepted += 1
                elif refused_at is None:
                    refused_at = trio.current_time()
                await trio.sleep(0.005)
            # The socket takes nothing: the write timeout aborts it.
            while len(tracker.closed_at) < 1:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert refused_at is not None
    closed_after = tracker.closed_at[0] - refused_at
    # The bound: at most the queue (4 MiB) plus what the sockets hold.
    assert accepted * MB <= server.options.protocol.max_queue_bytes + 4 * MB, accepted
    assert not client.open
    assert client.write(b"late") is False
    if overflow == "drop":
        assert client.dropped >= 100 - accepted - 5, (client.dropped, accepted)
    assert closed_after <= write_timeout + 1.0, closed_after
    assert (peak - baseline) < 64 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    # The client sees the end of the connection once it reads.
    await ws.wait_eof()
    await ws.aclose()
    await bystander.check()
    await bystander.aclose()


async def test_slow_but_steady_reader_is_not_cut_off_by_the_write_timeout(
    start_server: Any,
) -> None:
    # write_timeout bounds a stall (no bytes taken), not the whole write: a
    # reader taking 3 MiB at ~1 MiB/s outlasts write_timeout=0.5 and still
    # gets all of it.
    tracker = Tracker()
    server = await start_server(echo_app(tracker), write_timeout=0.5)
    ws = await RawWS.open(server.port, "/slow", rcvbuf=16384)
    await wait_for(lambda: len(tracker.clients) == 1)
    client = tracker.clients[0]
    for i in range(3):
        assert client.write(bytes([i]) * MB)
    started = trio.current_time()
    got = bytearray()
    with trio.fail_after(15):
        while len(got) < 3 * (MB + 10):
            got += await ws.stream.receive_some(16384)
            await trio.sleep(0.015)
    assert trio.current_time() - started > 1.0  # longer than write_timeout
    assert not tracker.closed_at and client.open
    ws.buf += got
    for i in range(3):
        assert await ws.message() == (BINARY, bytes([i]) * MB)
    await ws.aclose()


async def test_never_reading_client_in_a_subprocess_server_keeps_its_rss(tmp_path: Any) -> None:
    # The same with the server alone in its process, its RSS read from /proc.
    (tmp_path / "sink.py").write_text(
        textwrap.dedent(
            """
            import sys, trio, trio_push

            closed = []

            class Flood:
                async def on_open(self, client):
                    chunk = b"x" * (1024 * 1024)
                    for _ in range(100):
                        client.write(chunk)
                        await trio.sleep(0.002)

                def on_close(self, client):
                    closed.append(trio.current_time())

            def app(env):
                if env["rack.upgrade?"]:
                    env["rack.upgrade"] = Flood()
                    return 200, {}, b""
                return 200, {"content-length": "1"}, str(len(closed)).encode()

            trio.run(lambda: trio_push.serve(app, int(sys.argv[1]), write_timeout=1.0))
            """
        )
    )
    port = free_port()
    with running([sys.executable, "sink.py", str(port)], cwd=tmp_path, port=port) as proc:
        baseline = vm_rss_kib(proc.pid)
        peak = baseline
        ws = await RawWS.open(port, rcvbuf=16384)
        started = trio.current_time()
        with trio.fail_after(10):
            while True:
                peak = max(peak, vm_rss_kib(proc.pid))
                answer = await exchange(
                    port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                if answer.endswith(b"\r\n\r\n1"):
                    break
                await trio.sleep(0.02)
        elapsed = trio.current_time() - started
        await ws.wait_eof()
        await ws.aclose()
    assert (peak - baseline) < 64 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"
    # 100 writes take 0.2 s or more; the write timeout is 1 s.
    assert elapsed < 3.0, elapsed


async def test_ping_flood_from_a_client_that_never_reads_is_bounded(start_server: Any) -> None:
    # Pongs are not messages, so no queue bound refuses them: the server must
    # stop reading instead, and the write timeout ends the connection.
    tracker = Tracker()
    server = await start_server(echo_app(tracker), write_timeout=1.0)
    bystander = await Bystander.open(server.port)
    ws = await RawWS.open(server.port, "/flood", rcvbuf=16384)
    await wait_for(lambda: len(server.push_connections) == 2)
    conn = next(c for c in server.push_connections if c.client.env["PATH_INFO"] == "/flood")
    bound = server.options.protocol.max_queue_bytes
    most = 0
    sent = 0
    pings = frame(PING, b"p" * 125) * 1000
    with trio.move_on_after(4):
        with contextlib.suppress(trio.BrokenResourceError):
            while sent < 100 * MB:
                await ws.send(pings)
                sent += len(pings)
                most = max(most, conn.core.pending_bytes)
    with trio.fail_after(3):
        while len(tracker.closed_at) < 1:
            await trio.sleep(0.01)
    assert most <= bound + 64 * 1024, most
    # The client could not push the whole flood: the server stopped reading.
    assert sent < 50 * MB, sent
    await ws.aclose()
    await bystander.check()
    await bystander.aclose()


# -- resets ---------------------------------------------------------------------


async def test_client_resets_in_the_middle_of_its_frame(start_server: Any) -> None:
    tracker = Tracker()
    server = await start_server(echo_app(tracker))
    bystander = await Bystander.open(server.port)
    ws = await RawWS.open(server.port, "/reset")
    await ws.send(frame(TEXT, b"whole"))
    assert await ws.message() == (TEXT, b"whole")
    # Half a frame, then a reset.
    await ws.send(frame(BINARY, b"\0" * 1000)[:300])
    await trio.sleep(0.05)
    reset(ws.stream)
    with trio.fail_after(3):
        while not tracker.closed_at:
            await trio.sleep(0.01)
    # Only the whole message was delivered.
    assert tracker.messages.count(b"whole") + tracker.messages.count("whole") == 1
    assert len(tracker.messages) == 2  # the bystander's first check, and "whole"
    await bystander.check()
    await bystander.aclose()


async def test_client_resets_while_the_server_writes_a_big_frame(start_server: Any) -> None:
    tracker = Tracker()
    server = await start_server(echo_app(tracker))  # default write_timeout: 30 s
    bystander = await Bystander.open(server.port)
    ws = await RawWS.open(server.port, "/reset", rcvbuf=16384)
    await wait_for(lambda: len(tracker.clients) == 2)
    client = tracker.clients[1]
    assert client.write(b"\1" * (3 * MB))
    # Read part of the frame, then reset.
    with trio.fail_after(5):
        got = 0
        while got < 100_000:
            got += len(await ws.stream.receive_some(65536))
    reset(ws.stream)
    started = trio.current_time()
    with trio.fail_after(3):
        while not tracker.closed_at:
            await trio.sleep(0.01)
    # Noticed at once from the failed send, not by a timeout.
    assert tracker.closed_at[-1] - started < 2.0
    assert not client.open
    assert client.write(b"after") is False
    await bystander.check()
    await bystander.aclose()


async def test_reset_during_the_handshake(start_server: Any) -> None:
    tracker = Tracker()
    server = await start_server(echo_app(tracker))
    bystander = await Bystander.open(server.port)
    for cut in (10, 60, 120):
        stream = await connect(server.port)
        await stream.send_all(ws_handshake()[0][:cut])
        await trio.sleep(0.02)
        reset(stream)
    await trio.sleep(0.1)
    await bystander.check()
    # None of them was opened, so none is closed.
    assert len(tracker.clients) == 1 and not tracker.closed_at


# -- a half-open client ------------------------------------------------------------


async def test_keepalive_finds_a_peer_that_stopped_reading_while_data_is_queued(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer is stuck in a send (the peer's buffers are full), yet the
    ping is queued on time and the pong deadline, counted from then, ends it:
    long before the write timeout would."""
    tracker = Tracker()
    ping_interval, pong_timeout = 0.3, 0.6
    server = await start_server(
        echo_app(tracker),
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        write_timeout=30.0,
        max_queue_bytes=64 * 1024 * 1024,
    )
    silent = await RawWS.open(server.port, "/silent")
    await wait_for(lambda: len(tracker.clients) == 1)
    client = tracker.clients[0]
    opened = trio.current_time()
    with caplog.at_level(logging.WARNING, logger="trio_push"):
        # Far more than the socket buffers hold: the writer blocks in send.
        for _ in range(64):
            assert client.write(b"x" * 256 * 1024)
        with trio.fail_after(5):
            while not tracker.closed_at:
                await trio.sleep(0.01)
    detected = tracker.closed_at[0] - opened
    assert detected <= ping_interval + pong_timeout + 1.0
    assert any("no pong" in r.getMessage() for r in caplog.records)
    assert not any("no write progress" in r.getMessage() for r in caplog.records)
    assert not client.open
    await silent.aclose()


async def test_half_open_client_is_found_by_the_keepalive(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = Tracker()
    ping_interval, pong_timeout = 0.3, 0.6
    server = await start_server(
        echo_app(tracker), ping_interval=ping_interval, pong_timeout=pong_timeout
    )
    # One client answers pings (RawWS.message answers them), one never reads
    # nor answers, and sends no FIN: from the server it looks alive.
    alive = await RawWS.open(server.port, "/alive")
    silent = await RawWS.open(server.port, "/silent")
    await wait_for(lambda: len(tracker.clients) == 2)
    opened = trio.current_time()
    pings = 0

    async def keep_answering() -> None:
        nonlocal pings
        while True:
            got = await alive.next_frame()
            assert got is not None
            if got[0] == PING:
                pings += 1
                await alive.send(frame(0xA, got[2]))

    with caplog.at_level(logging.WARNING, logger="trio_push"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_answering)
            with trio.fail_after(5):
                while not tracker.closed_at:
                    await trio.sleep(0.01)
            detected = tracker.closed_at[0] - opened
            # Several intervals more: the answering client stays.
            await trio.sleep(3 * ping_interval)
            nursery.cancel_scope.cancel()
    assert ping_interval + pong_timeout - 0.1 <= detected <= ping_interval + pong_timeout + 1.0
    assert len(tracker.closed_at) == 1
    assert pings >= 3
    assert not tracker.clients[1].open and tracker.clients[0].open
    await alive.send(frame(TEXT, b"still"))
    assert await alive.message() == (TEXT, b"still")
    assert any("no pong" in r.getMessage() for r in caplog.records), caplog.text
    await silent.aclose()
    await alive.aclose()


async def test_sse_gets_keepalive_comments(start_server: Any) -> None:
    tracker = Tracker()
    server = await start_server(echo_app(tracker), sse_keepalive=0.2)
    stream = await connect(server.port)
    await stream.send_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    buf = bytearray()
    with trio.fail_after(3):
        head = await read_until(stream, b"\r\n\r\n", buf)
        assert head.startswith(b"HTTP/1.1 200 ")
        started = trio.current_time()
        # Chunked: "<size>\r\n" then the comment line, ":" up to "\n".
        for _ in range(3):
            await read_until(stream, b"\r\n:", buf)
            await read_until(stream, b"\n", buf)
    assert 0.4 <= trio.current_time() - started <= 1.5
    await stream.aclose()


# -- the send queue's bound ---------------------------------------------------------


class Burst:
    """Writes ``count`` messages at once on open, recording each result."""

    def __init__(self, count: int, size: int, text: bool = False) -> None:
        self.count = count
        self.size = size
        self.text = text
        self.results: list[bool] = []
        self.client: Any = None
        self.closed = False

    def on_open(self, client: Any) -> None:
        self.client = client
        for i in range(self.count):
            message = i.to_bytes(4, "big") + b"\0" * (self.size - 4)
            self.results.append(client.write(message.hex() if self.text else message))

    def on_close(self, client: Any) -> None:
        self.closed = True


async def test_a_burst_in_one_go_is_queued_whole_under_either_policy(start_server: Any) -> None:
    for overflow in ("drop", "close"):
        burst = Burst(300, 1000)
        server = await start_server(echo_app(burst), overflow=overflow, max_queue_messages=50)
        ws = await RawWS.open(server.port, rcvbuf=16384)
        await wait_for(lambda b=burst: b.client is not None)
        # Queued before the socket could refuse a byte: the app's burst.
        assert burst.results == [True] * 300
        for i in range(300):
            opcode, data = await ws.message()
            assert (opcode, data[:4]) == (BINARY, i.to_bytes(4, "big"))
        assert burst.client.dropped == 0 and burst.client.open
        await ws.aclose()


class Held:
    def __init__(self) -> None:
        self.client: Any = None
        self.closed = False

    def on_open(self, client: Any) -> None:
        self.client = client

    def on_close(self, client: Any) -> None:
        self.closed = True


async def test_overflow_drop_by_bytes(start_server: Any) -> None:
    held = Held()
    server = await start_server(echo_app(held), overflow="drop", max_queue_bytes=100_000)
    ws = await RawWS.open(server.port, rcvbuf=4096)
    await wait_for(lambda: held.client is not None)
    filled = await fill_until_refused(held.client)
    results = [held.client.write(i.to_bytes(4, "big") + b"\0" * 9996) for i in range(100)]
    # Each message is a 10,004-byte frame: 9 fit in 100,000 bytes.
    assert results == [True] * 9 + [False] * 91
    assert held.client.dropped == 91
    for _ in range(filled):
        await ws.message()
    for i in range(9):
        assert (await ws.message())[1][:4] == i.to_bytes(4, "big")
    await ws.aclose()


async def test_overflow_close_closes_with_1008_and_logs_it(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    held = Held()
    with caplog.at_level(logging.WARNING, logger="trio_push"):
        server = await start_server(echo_app(held), max_queue_messages=50)
        ws = await RawWS.open(server.port, rcvbuf=4096)
        await wait_for(lambda: held.client is not None)
        client = held.client
        filled = await fill_until_refused(client)
        results = [client.write(i.to_bytes(4, "big") + b"\0" * 996) for i in range(300)]
        assert results == [True] * 50 + [False] * 250
        assert client.dropped == 0
        assert not client.open
        # What was queued goes first, then the close.
        for _ in range(filled):
            await ws.message()
        for i in range(50):
            assert (await ws.message())[1][:4] == i.to_bytes(4, "big")
        assert await ws.close_code(answer=True) == 1008
        await ws.wait_eof()
        await wait_for(lambda: held.closed)
    assert any("queue full" in r.getMessage() for r in caplog.records), caplog.text
    await ws.aclose()


async def test_overflow_close_on_sse_ends_the_stream(start_server: Any) -> None:
    held = Held()
    server = await start_server(echo_app(held), max_queue_messages=50)
    stream = await connect(server.port, rcvbuf=4096)
    await stream.send_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await wait_for(lambda: held.client is not None)
    filled = await fill_until_refused(held.client)
    results = [held.client.write(f"m{i}") for i in range(300)]
    assert results.count(True) == 50 and not held.client.open
    with trio.fail_after(5):
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    assert data.count(b"event: msg") == filled + 50
    assert data.endswith(b"0\r\n\r\n")
    await wait_for(lambda: held.closed)
    await stream.aclose()
