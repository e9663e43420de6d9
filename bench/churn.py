"""Memory under connection churn: trio-push and its peers, side by side.

    .venv/bin/python bench/churn.py                       # 40,000 connections each
    .venv/bin/python bench/churn.py --servers trio-push --n 10000

For each server (``servers.py``), it starts the server on 127.0.0.1, then
opens and drops ``--n`` WebSocket connections to its ``/echo`` handler
(``--concurrency`` at a time, each one: the handshake, then the TCP
connection closed without a close frame, as a phone that loses its network
does), and reads the server's resident memory (VmRSS) after a warm-up of
``--warmup`` connections and every quarter of the run. A server that frees
what a closed connection held stays flat; one that leaves garbage for the
cyclic collector grows.

Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

from fanout import free_port, wait_listening

HERE = Path(__file__).resolve().parent
SERVERS = ["trio-push", "hypercorn", "uvicorn", "websockets"]
HANDSHAKE = (
    b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one(port: int) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    writer.write(HANDSHAKE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:40]!r}")
    writer.transport.abort()


async def churn(port: int, n: int, concurrency: int) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one(port)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(name: str, n: int, warmup: int, concurrency: int) -> list[int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "servers.py"), name, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, server, 30)
        asyncio.run(churn(port, warmup, concurrency))
        samples = [rss_kib(server.pid)]
        for _ in range(4):
            asyncio.run(churn(port, n // 4, concurrency))
            # Let the server notice the last closes.
            asyncio.run(asyncio.sleep(1))
            samples.append(rss_kib(server.pid))
        return samples
    finally:
        server.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
        if server.poll() is None:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    quarters = [f"+{args.n * q // 4:,}" for q in range(1, 5)]
    print(f"{'server':<12}" + "".join(f"{h:>10}" for h in ["warm", *quarters]) + "  growth")
    for name in args.servers.split(","):
        samples = measure(name, args.n, args.warmup, args.concurrency)
        mib = [f"{s / 1024:.1f}" for s in samples]
        growth = (samples[-1] - samples[0]) / 1024
        print(f"{name:<12}" + "".join(f"{m:>10}" for m in mib) + f"  {growth:+.1f} MiB")


if __name__ == "__main__":
    main()
