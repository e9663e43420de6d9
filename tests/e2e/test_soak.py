"""A standing guard: one server under a mix of clients for a while.

Readers, slow readers, non-readers, churners and bursting handlers, over
WebSocket and SSE, against one ``trio-push --threads 4`` process with a
publisher; then the same through Redis, with Redis killed and restarted in
the middle. Every client that reads gets exactly its sequence; every
``on_open`` has one ``on_close`` (the server is stopped with SIGTERM while
clients are still there); the server's RSS and file descriptors come back
once the clients are gone.

About 25 s a run; ``SOAK_SECONDS=N`` makes each run last N seconds of load.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio
import wsproto.events as wse
from httpx_sse import aconnect_sse
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.apps import soak_app
from tests.helpers.procs import APPS, VENV_BIN, free_port, vm_rss_kib, wait_listening
from tests.helpers.pubsub import RedisServer
from tests.helpers.server import RawWebSocket, connect, http_client

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "0A": "LISTEN",
}


class Server:
    """``trio-push soak_app:app`` in a subprocess, and what it uses."""

    def __init__(self, tmp: Path, redis: RedisServer | None) -> None:
        self.port = free_port()
        self.journal = tmp / "journal"
        self.log = tmp / "server.log"
        args = [str(VENV_BIN / "trio-push"), "soak_app:app", "--port", str(self.port)]
        args += ["--threads", "4", "--max-queue-messages", "200", "--drain-timeout", "3"]
        args += ["--no-access-log"]
        if redis is not None:
            args += ["--redis", redis.url]
        env = {**os.environ, "SOAK_JOURNAL": str(self.journal), "PYTHONUNBUFFERED": "1"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args, cwd=APPS, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_listening(self.port, self.proc)
        # The port listens before the server serves: its connections to Redis
        # are made in between. The descriptors counted as the baseline are
        # those of a serving server (logged once the engine is up), after
        # the probe connections are gone (a whole request answered).
        deadline = time.monotonic() + 15
        while b"listening on" not in self.log.read_bytes():
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", self.port)) as probe:
            probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while probe.recv(65536):
                pass

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def sockets(self) -> Counter[str]:
        """The server's open sockets as ``local->remote state``, for a
        failure message."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found: Counter[str] = Counter()
        for line in Path(f"/proc/{self.proc.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
                found[f"{local}->{remote} {TCP_STATES.get(fields[3], fields[3])}"] += 1
        return found

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


class Results:
    def __init__(self) -> None:
        self.sequences: list[tuple[str, int, list[int]]] = []
        self.bursts: list[tuple[str, int, Any]] = []
        self.problems: list[str] = []


def numbers(messages: list[str]) -> tuple[int, list[int]]:
    assert messages[0].startswith("start "), messages[0][:40]
    return int(messages[0].split()[1]), [int(m.split(" ", 1)[0]) for m in messages[1:]]


async def ws_reader(port: int, results: Results, until: float) -> None:
    got: list[str] = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/feed") as ws:
        while trio.current_time() < until:
            with trio.move_on_after(1):
                got.append(await ws.get_message())
    results.sequences.append(("ws", *numbers(got)))


async def sse_reader(port: int, results: Results, until: float) -> None:
    got: list[str] = []
    url = f"http://127.0.0.1:{port}/feed"
    async with http_client() as http, aconnect_sse(http, "GET", url) as source:
        events = source.aiter_sse()
        while trio.current_time() < until:
            got.append((await events.__anext__()).data)
    results.sequences.append(("sse", *numbers(got)))


async def slow_ws_reader(port: int, results: Results, until: float) -> None:
    """Reads 16 KiB every 10 ms through a small window: slower than the
    server could send, faster than the feed's rate."""
    ws = await RawWebSocket.open(port, "/feed", rcvbuf=16384)
    got: list[str] = []
    parts: list[str] = []
    events = ws.events  # what came with the handshake
    while trio.current_time() < until:
        for event in events:
            if isinstance(event, wse.Ping):
                await ws.stream.send_all(ws.ws.send(event.response()))
            elif isinstance(event, wse.TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    got.append("".join(parts))
                    parts = []
        await trio.sleep(0.01)
        data = await ws.stream.receive_some(16384)
        assert data, "the server closed a slow reader"
        ws.ws.receive_data(data)
        events = list(ws.ws.events())
    await ws.aclose()
    results.sequences.append(("slow ws", *numbers(got)))


async def non_reader(port: int, results: Results, until: float) -> None:
    """Subscribes and never reads: the server closes it (queue bound)."""
    async with await connect(port, rcvbuf=4096) as stream:
        await stream.send_all(
            b"GET /feed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        await trio.sleep_until(until)


async def churner(port: int, results: Results, until: float) -> None:
    """Connects, reads a few messages, leaves (politely or not), again."""
    while trio.current_time() < until:
        if random.random() < 0.5:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/feed") as ws:
                for _ in range(random.randint(1, 5)):
                    await ws.get_message()
        else:
            ws = await RawWebSocket.open(port, "/feed")
            await ws.messages(random.randint(1, 5))
            await trio.aclose_forcefully(ws.stream)


async def burster(port: int, results: Results, until: float) -> None:
    """Opens /burst (2,000 writes then close) over WebSocket and SSE."""
    while trio.current_time() < until:
        got: list[str] = []
        code = None
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/burst") as ws:
                while True:
                    got.append(await ws.get_message())
        except ConnectionClosed as exc:
            code = exc.reason.code
        results.bursts.append(("ws", code, [m.split(" ", 1)[0] for m in got]))
        events = []
        url = f"http://127.0.0.1:{port}/burst"
        async with http_client() as http, aconnect_sse(http, "GET", url) as source:
            async for event in source.aiter_sse():
                events.append(event.data.split(" ", 1)[0])
        results.bursts.append(("sse", None, events))


async def until_done(task: Any, port: int, results: Results, until: float) -> None:
    try:
        with trio.fail_after(until - trio.current_time() + 20):
            await task(port, results, until)
    except Exception as exc:  # recorded: one failing client must not hide the others
        results.problems.append(f"{task.__name__}: {type(exc).__name__}: {exc}")


def check_sequences(results: Results, lost: set[int]) -> None:
    assert len(results.sequences) >= 40
    for kind, start, got in results.sequences:
        assert got, f"{kind} reader got nothing after start {start}"
        assert got == sorted(set(got)), f"{kind} reader: out of order or twice"
        missing = set(range(start, got[-1] + 1)) - set(got)
        assert missing <= lost, f"{kind} reader from {start}: missing {sorted(missing - lost)}"


async def soak(tmp_path: Path, redis: RedisServer | None) -> None:
    server = Server(tmp_path, redis)
    try:
        await _soak(server, redis)
    finally:
        if server.proc.poll() is None:  # the run failed before it stopped the server
            server.proc.kill()
            server.proc.wait(30)


async def _soak(server: Server, redis: RedisServer | None) -> None:
    fds_at_start, sockets_at_start = server.fds(), server.sockets()
    results = Results()
    with trio.fail_after(SECONDS + 60):
        until = trio.current_time() + SECONDS
        async with trio.open_nursery() as nursery:
            clients: list[Any] = [ws_reader] * 20 + [sse_reader] * 20 + [slow_ws_reader] * 5
            clients += [non_reader] * 5 + [churner] * 4 + [burster] * 2
            for client in clients:
                nursery.start_soon(until_done, client, server.port, results, until)
            await trio.sleep(SECONDS / 4)
            rss_warm = vm_rss_kib(server.proc.pid)
            if redis is not None:
                redis.kill()
                await trio.sleep(0.5)
                redis.start()
        log = server.log.read_text()
        assert not results.problems, "\n".join(results.problems) + "\n" + log[-3000:]
        # Everyone has left: what they held is let go.
        with trio.move_on_after(20):
            while server.fds() > fds_at_start:
                await trio.sleep(0.1)
        left = server.sockets() - sockets_at_start
        assert server.fds() <= fds_at_start, (
            f"{server.fds()} fds, {fds_at_start} at start; sockets left: {dict(left)}\n"
            + server.log.read_text()[-3000:]
        )
        rss_end = vm_rss_kib(server.proc.pid)
        # A few clients stay for the shutdown: they too get their on_close.
        async with trio.open_nursery() as nursery:
            late = trio.current_time() + 2
            for client in [ws_reader, sse_reader, burster] * 3:
                nursery.start_soon(until_done, client, server.port, Results(), late)
            await trio.sleep(1)
            assert await trio.to_thread.run_sync(server.stop) == 0
    log = server.log.read_text()
    journal = server.journal.read_text().split()
    events = Counter(zip(journal[::2], journal[1::2], strict=True))
    lost = {int(n) for what, n in events if what == "lost"}
    opened = {n for what, n in events if what == "open"}
    closed = [n for (what, n), count in events.items() if what == "close" for _ in range(count)]
    assert sorted(closed) == sorted(opened), "an on_open without exactly one on_close"
    check_sequences(results, lost)
    for kind, code, got in results.bursts:
        assert got == [f"b{i}" for i in range(soak_app.BURST)], (
            f"{kind} burst: {len(got)} of {soak_app.BURST}, closed with {code}"
        )
        assert code == (1000 if kind == "ws" else None), f"{kind} burst closed with {code}"
    assert "Traceback" not in log, log[-3000:]
    assert rss_end - rss_warm < 20 * 1024, f"RSS grew from {rss_warm} to {rss_end} KiB"
    print(
        f"soak {'redis' if redis else 'memory'}: {len(results.sequences)} readers,"
        f" {len(results.bursts)} bursts, {len(opened)} connections, {len(lost)} lost"
        f" publishes told; RSS {rss_warm} -> {rss_end} KiB"
    )


async def test_soak_in_memory(tmp_path: Path) -> None:
    await soak(tmp_path, None)


async def test_soak_through_redis_restarting(tmp_path: Path) -> None:
    with RedisServer() as redis:
        await soak(tmp_path, redis)
