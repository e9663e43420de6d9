"""The load client: N WebSocket or SSE connections on asyncio (uvloop if
installed), counting the ``~`` that ends each message; nothing is parsed.

    python bench/loadclient.py --port P --n 5000 --protocol ws --rounds 3

For each round it waits until the server counts N subscribers, asks it to
publish (``/publish``), and times how long until every connection has every
message. Prints one JSON object: connect time and per-round times, and the
CPU time it used itself (to show it was not the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

MARK = ord("~")


def handshake(protocol: str, path: str) -> tuple[bytes, bytes]:
    """The request that opens a ``protocol`` (``ws`` or ``sse``) connection
    to ``path``, and the status its answer must carry."""
    if protocol == "ws":
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode(),
            b" 101 ",
        )
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode(),
        b" 200 ",
    )


class Handshaking(asyncio.Protocol):
    """Sends ``request``; once the response head (with ``status``) is in,
    ``opened`` is done and every byte after it goes to :meth:`received`."""

    __slots__ = ("request", "status", "head", "opened", "transport")

    def __init__(self, request: bytes, status: bytes) -> None:
        self.request = request
        self.status = status
        self.head = b""
        self.opened = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if self.status not in self.head[:16]:
                self.opened.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            data = self.head[end + 4 :]
            self.head = b""
            self.opened.set_result(None)
        self.received(data)

    def received(self, data: bytes) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))


H = TypeVar("H", bound=Handshaking)


class Counter(Handshaking):
    __slots__ = ("count", "target", "bench")

    def __init__(self, bench: Bench, request: bytes, status: bytes) -> None:
        super().__init__(request, status)
        self.bench = bench
        self.count = 0
        self.target = 0

    def received(self, data: bytes) -> None:
        count = self.count + data.count(MARK)
        if self.count < self.target <= count:
            self.bench.arrived()
        self.count = count

    def connection_lost(self, exc: Exception | None) -> None:
        if self.opened.done() and self.count < self.target:
            self.bench.lost += 1
        super().connection_lost(exc)


class Bench:
    def __init__(self) -> None:
        self.waiting = 0
        self.all_in = asyncio.Event()
        self.lost = 0

    def arrived(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_in.set()


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read(-1)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return body


async def subscribe(
    port: int, n: int, make: Callable[[], H], timeout: float
) -> tuple[list[H], float]:
    """``n`` connections made by ``make``, opened 200 at a time, once the
    server's ``/count`` says it has them all (within ``timeout`` s); and the
    seconds the handshakes took."""
    loop = asyncio.get_running_loop()
    clients: list[H] = []
    limit = asyncio.Semaphore(200)

    async def connect() -> None:
        async with limit:
            _, client = await loop.create_connection(make, "127.0.0.1", port)
            await client.opened
        clients.append(client)

    started = time.perf_counter()
    await asyncio.gather(*(connect() for _ in range(n)))
    connect_time = time.perf_counter() - started
    deadline = time.monotonic() + timeout
    while int(await http_get(port, "/count")) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("the server never counted every subscriber")
        await asyncio.sleep(0.05)
    return clients, connect_time


async def main(args: argparse.Namespace) -> dict[str, object]:
    request, status = handshake(args.protocol, f"/{args.protocol}")
    bench = Bench()
    clients, connect_time = await subscribe(
        args.port, args.n, lambda: Counter(bench, request, status), args.timeout
    )

    rounds = []
    cpu_used = []
    for r in range(args.rounds):
        bench.waiting = args.n
        bench.all_in = asyncio.Event()
        for client in clients:
            client.target += args.messages
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        publish = asyncio.ensure_future(
            http_get(args.port, f"/publish?n={args.messages}&size={args.size}&round={r}")
        )
        try:
            await asyncio.wait_for(bench.all_in.wait(), args.timeout)
        except asyncio.TimeoutError:
            short = sum(1 for c in clients if c.count < c.target)
            raise RuntimeError(
                f"round {r}: {short} clients short after {args.timeout} s"
                f" ({bench.lost} connections closed)"
            ) from None
        elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        await publish
        rounds.append(elapsed)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        cpu_used.append(cpu / elapsed)
        if elapsed > args.slow:
            break  # a slow server: one round says enough, and bounds the run
        await asyncio.sleep(0.2)
    extra = sum(c.count - c.target for c in clients)
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    await asyncio.sleep(0.1)
    return {
        "connect": connect_time,
        "rounds": rounds,
        "client_cpu": cpu_used,
        "extra": extra,
        "lost": bench.lost,
    }


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--protocol", choices=["ws", "sse"], default="ws")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--slow", type=float, default=10.0, help="no more rounds after one this long"
    )
    args = parser.parse_args()
    # Up to the hard limit on open files (bench/compare.py's conns_max).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report(main(args))


def report(bench: Any) -> None:
    """Run the load client's coroutine ``bench`` on uvloop (asyncio without
    it) and print its result, with the loop it ran on, as JSON."""
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
        loop_name = "asyncio"
    else:
        run = uvloop.run
        loop_name = "uvloop"
    result = run(bench)
    result["loop"] = loop_name
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    cli()
