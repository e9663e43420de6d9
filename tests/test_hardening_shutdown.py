"""Graceful shutdown under load: 1,000 push clients, 10 of which never read."""

from __future__ import annotations

import signal
import struct
import sys
from typing import Any

import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.helpers.frames import CLOSE, parse_frames
from tests.helpers.procs import free_port, running
from tests.helpers.server import connect, http_client, push_app, read_until, ws_handshake

MB = 1024 * 1024
DRAIN = 2.0
N_WS, N_SSE, N_STUCK = 958, 30, 10  # with one trio-websocket and one httpx-sse client: 1000
TOTAL = N_WS + N_SSE + N_STUCK + 2


class Counting:
    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.shutdown: set[int] = set()
        self.closed: set[int] = set()
        self.order_ok = True

    def on_open(self, client: Any) -> None:
        self.clients.append(client)

    def on_shutdown(self, client: Any) -> None:
        # The client is still open here: a last word goes out before the 1001.
        self.shutdown.add(id(client))
        if not client.open or id(client) in self.closed:
            self.order_ok = False
        if client.env["PATH_INFO"] == "/last-word":
            client.write("bye")

    def on_close(self, client: Any) -> None:
        self.closed.add(id(client))


class Results:
    def __init__(self) -> None:
        self.ws_codes: list[int | None] = []
        self.ws_code_at: list[float] = []
        self.sse_ends: list[bytes] = []
        self.stopped_at = 0.0


async def open_raw(port: int, request: bytes, rcvbuf: int | None = None) -> Any:
    stream = await connect(port, rcvbuf)
    await stream.send_all(request)
    buf = bytearray()
    head = await read_until(stream, b"\r\n\r\n", buf)
    assert head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.1 200 ")), head
    return stream, buf


async def ws_reader(stream: trio.SocketStream, buf: bytearray, results: Results) -> None:
    """Read to the close frame, answer it, wait for the server's EOF."""
    code = None
    while True:
        for opcode, _fin, payload in parse_frames(buf):
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                results.ws_code_at.append(trio.current_time())
                mask = b"\0\0\0\0"
                await stream.send_all(bytes([0x88, 0x80 | len(payload[:2])]) + mask + payload[:2])
        if code is not None:
            break
        data = await stream.receive_some(65536)
        if not data:
            break
        buf += data
    results.ws_codes.append(code)
    with trio.move_on_after(DRAIN + 2):
        while await stream.receive_some(65536):
            pass
    await stream.aclose()


async def sse_reader(stream: trio.SocketStream, buf: bytearray, results: Results) -> None:
    data = bytes(buf)
    while chunk := await stream.receive_some(65536):
        data += chunk
    results.sse_ends.append(data[-5:])
    await stream.aclose()


async def trio_ws_client(port: int, results: Results, ready: trio.Event) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/last-word") as ws:
        ready.set()
        message = await ws.get_message()
        assert message == "bye"
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            results.ws_codes.append(exc.reason.code)
            results.ws_code_at.append(trio.current_time())


async def httpx_sse_client(port: int, results: Results, ready: trio.Event) -> None:
    url = f"http://127.0.0.1:{port}/last-word"
    async with http_client() as http, aconnect_sse(http, "GET", url) as source:
        ready.set()
        events = [event async for event in source.aiter_sse()]
    assert [e.data for e in events] == ["bye"]
    results.sse_ends.append(b"httpx")


@pytest.mark.parametrize("how", ["cancel", "stop"])
async def test_shutdown_with_1000_clients_and_10_that_never_read(
    serve_scope: Any, how: str
) -> None:
    handler = Counting()
    server, scope, done = await serve_scope(
        push_app(handler), drain_timeout=DRAIN, max_queue_bytes=64 * MB, write_timeout=30.0
    )
    port = server.port
    results = Results()
    ws_request, _ = ws_handshake("/ws")
    sse_request = b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"

    async with trio.open_nursery() as clients:
        with trio.fail_after(30):
            # The ten that never read come first: fill every buffer between
            # the server's queue and them.
            stuck = []
            for _ in range(N_STUCK):
                stuck.append(await open_raw(port, ws_handshake("/stuck")[0], rcvbuf=4096))
            while len(handler.clients) < N_STUCK:
                await trio.sleep(0.01)
            for client in list(handler.clients):
                while True:
                    client.write(b"\0" * MB)
                    await trio.sleep(0.02)
                    if client.pending > 0:
                        await trio.sleep(0.1)
                        if client.pending > 0:
                            break
            assert all(c.pending > 0 and c.open for c in handler.clients)

            async def open_batch(request: bytes, reader: Any, count: int) -> None:
                async def one() -> None:
                    stream, buf = await open_raw(port, request)
                    clients.start_soon(reader, stream, buf, results)

                async with trio.open_nursery() as batch:
                    for _ in range(count):
                        batch.start_soon(one)

            for _ in range(N_WS // 100):
                await open_batch(ws_request, ws_reader, 100)
            await open_batch(ws_request, ws_reader, N_WS % 100)
            await open_batch(sse_request, sse_reader, N_SSE)
            ready = [trio.Event(), trio.Event()]
            clients.start_soon(trio_ws_client, port, results, ready[0])
            clients.start_soon(httpx_sse_client, port, results, ready[1])
            for event in ready:
                await event.wait()
            while len(handler.clients) < TOTAL:
                await trio.sleep(0.01)
        assert len(server.push_connections) == TOTAL
        assert not handler.shutdown and not handler.closed

        started = trio.current_time()
        if how == "cancel":
            scope.cancel()
        else:
            server.stop()
        with trio.fail_after(DRAIN + 5):
            await done.wait()
        elapsed = trio.current_time() - started
        # The client tasks are done or about to be.
        with trio.fail_after(5):
            while len(results.ws_codes) < N_WS + 1 or len(results.sse_ends) < N_SSE + 1:
                await trio.sleep(0.01)
        for stream, _buf in stuck:
            await stream.aclose()

    # Bounded: the drain, plus a second.
    assert elapsed <= DRAIN + 1.0, elapsed
    # It did wait for the ten that never read (they were not just dropped).
    assert elapsed >= DRAIN - 0.2, elapsed
    ids = {id(c) for c in handler.clients}
    assert handler.shutdown == ids, f"{len(ids - handler.shutdown)} got no on_shutdown"
    assert handler.closed == ids, f"{len(ids - handler.closed)} got no on_close"
    assert handler.order_ok
    assert results.ws_codes == [1001] * (N_WS + 1), sorted(set(map(str, results.ws_codes)))
    # Every reader had its 1001 long before the drain ran out.
    assert max(results.ws_code_at) - started < DRAIN - 0.5
    # Each raw SSE stream ended with the last chunk (a clean end, not a cut).
    assert results.sse_ends.count(b"0\r\n\r\n") == N_SSE, set(results.sse_ends)
    assert b"httpx" in results.sse_ends
    assert not server.connections


# -- the CLI: signals ---------------------------------------------------------------

FLOOD_APP = """
class Flood:
    def on_open(self, client):
        for _ in range(3):
            client.write(b"x" * (1024 * 1024))

def app(env):
    if env["rack.upgrade?"]:
        env["rack.upgrade"] = Flood()
        return 200, {}, b""
    return 200, {"content-length": "2"}, b"ok"
"""


async def _stuck_cli(tmp_path: Any, drain: float) -> Any:
    (tmp_path / "floodapp.py").write_text(FLOOD_APP)
    port = free_port()
    args = [sys.executable, "-m", "trio_push", "floodapp:app", "--port", str(port)]
    return args + ["--drain-timeout", str(drain)], port


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
async def test_cli_signal_shutdown_is_bounded_with_a_client_that_never_reads(
    tmp_path: Any, signum: str
) -> None:
    args, port = await _stuck_cli(tmp_path, 1.0)
    with running(args, cwd=tmp_path, port=port) as proc:
        stream, _buf = await open_raw(port, ws_handshake("/")[0], rcvbuf=4096)
        await trio.sleep(0.3)  # the flood fills the buffers
        started = trio.current_time()
        proc.send_signal(getattr(signal, signum))
        with trio.fail_after(5):
            while proc.poll() is None:
                await trio.sleep(0.02)
        elapsed = trio.current_time() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        await stream.aclose()
    assert proc.returncode == 0, output
    assert 0.8 <= elapsed <= 1.0 + 1.0, (elapsed, output)
    assert "did not close in time" in output


async def test_cli_second_sigint_stops_at_once(tmp_path: Any) -> None:
    args, port = await _stuck_cli(tmp_path, 30.0)
    with running(args, cwd=tmp_path, port=port) as proc:
        stream, _buf = await open_raw(port, ws_handshake("/")[0], rcvbuf=4096)
        await trio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        await trio.sleep(0.5)
        assert proc.poll() is None, "the first SIGINT must wait for the drain"
        started = trio.current_time()
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            while proc.poll() is None:
                await trio.sleep(0.02)
        elapsed = trio.current_time() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        await stream.aclose()
    assert elapsed < 1.0, (elapsed, output)
    assert "again" in output
