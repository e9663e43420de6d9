"""The load client of bench/compare.py: asyncio on uvloop, frames by hand.

    python bench/compareclient.py echo --port P --clients 50 --round-trips 2000
    python bench/compareclient.py idle --port P --n 5000 --protocol ws

``echo``: each client opens ``/echo`` as a WebSocket and does its round trips
one after the other: a masked 64-byte text frame out, the 66-byte echo back
(counted, not parsed), then the next. Prints one JSON object: round trips per
second over all clients, and the CPU this process used (to show it was not
the bottleneck).

``idle``: opens ``--n`` connections to ``/echo`` (WebSocket, or SSE with
``Accept: text/event-stream``), 200 handshakes at a time, prints ``ready``
once every one is open, and holds them until a line arrives on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

from loadclient import Handshaking, handshake

MASK = b"\x37\xfa\x21\x3d"


def masked_text_frame(payload: bytes) -> bytes:
    """A client's text frame (payload < 126 bytes), masked as RFC 6455 asks."""
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + MASK + masked


class Conn(Handshaking):
    """Opens with ``request``; then, if ``frame`` is set, echoes round trips."""

    def __init__(self, request: bytes, status: bytes, frame: bytes = b"", expect: int = 0) -> None:
        super().__init__(request, status)
        self.frame = frame
        self.expect = expect
        self.done = asyncio.get_running_loop().create_future()
        self.left = 0
        self.got = 0

    def received(self, data: bytes) -> None:
        if not self.expect:
            return
        self.got += len(data)
        while self.got >= self.expect and self.left:
            self.got -= self.expect
            self.left -= 1
            if self.left:
                assert self.transport is not None
                self.transport.write(self.frame)
            elif not self.done.done():
                self.done.set_result(None)

    def start(self, round_trips: int) -> None:
        assert self.transport is not None
        self.left = round_trips
        self.transport.write(self.frame)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done() and self.left:
            self.done.set_exception(ConnectionError(f"closed with {self.left} round trips left"))


async def open_all(n: int, make: type[Conn] | object, port: int) -> list[Conn]:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(200)
    conns: list[Conn] = []

    async def one() -> None:
        async with limit:
            _, conn = await loop.create_connection(make, "127.0.0.1", port)  # type: ignore[arg-type]
            await conn.opened
        conns.append(conn)

    await asyncio.gather(*(one() for _ in range(n)))
    return conns


async def echo(args: argparse.Namespace) -> dict[str, object]:
    request, status = handshake("ws", "/echo")
    payload = b"x" * (args.size - 1) + b"~"
    frame = masked_text_frame(payload)
    expect = 2 + len(payload)
    conns = await open_all(args.clients, lambda: Conn(request, status, frame, expect), args.port)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for conn in conns:
        conn.start(args.round_trips)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), args.timeout)
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    await asyncio.sleep(0.05)
    total = args.clients * args.round_trips
    return {"seconds": elapsed, "round_trips": total, "rate": total / elapsed, "cpu": cpu / elapsed}


async def idle(args: argparse.Namespace) -> dict[str, object]:
    request, status = handshake(args.protocol, "/echo")
    t0 = time.perf_counter()
    conns = await open_all(args.n, lambda: Conn(request, status), args.port)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    lost = sum(1 for c in conns if c.transport is None or c.transport.is_closing())
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    await asyncio.sleep(0.1)
    return {"opened": len(conns), "connect": time.perf_counter() - t0, "lost": lost}


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["echo", "idle"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--protocol", choices=["ws", "sse"], default="ws")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    result = run(echo(args) if args.mode == "echo" else idle(args))
    result["pid"] = os.getpid()
    json.dump(result, sys.stdout)
    print(flush=True)


if __name__ == "__main__":
    cli()
