"""The push-latency load (bench/latency.py): a publisher at a steady rate and
N WebSocket subscribers that note when each message reaches each of them.

    python bench/latencyclient.py publish --port P --rate 200 --seconds 20
    python bench/latencyclient.py subscribe --port P --n 10000 --drain 10

``publish`` sends message k on one WebSocket connection to ``/pub`` (which
publishes each message it gets to every subscriber) when it is due, at
t0 + k / rate: an absolute schedule, so a late send does not make the ones
after it late. Message k is ``k:DUE:xxx~`` (``--size`` bytes), DUE being the
time it was due in microseconds of ``time.monotonic()``, CLOCK_MONOTONIC,
which is one clock for every process of the machine. It prints JSON: how
many it sent, and how late (the send time minus DUE) at p50, p99 and worst.

``subscribe`` opens N subscribers to ``/ws`` (asyncio on uvloop), waits until
the server counts them, prints ``ready`` and takes the time of each read.
Each connection's messages come in order, one after the other, so a read
that completes c messages completes the next c of that connection: the
client counts the ``~`` that ends each message and parses only the number of
the last one, to check the order, and the DUE of a message the first time
any connection reads it. Then it reads from stdin how many messages the
publisher sent, from when and at what rate (``SENT T0 RATE``), waits for
every subscriber to have all of them (at most ``--drain`` s), and prints
JSON: deliveries, missing ones, and the latency from DUE to the read at
percentiles. A delivery still missing at the end counts as arriving at the
end, so with missing ones every percentile is a
lower bound (``censored``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import socket
import sys
import time
from array import array
from typing import Any

from loadclient import MARK, Handshaking, handshake, report, subscribe
from servers import raise_fd_limit

#: The percentiles of the curve (bench/latency.py's chart): 0 (the fastest)
#: to 99.99 evenly on a scale of -log10(1 - p).
CURVE = [1 - 10 ** (-i / 20) for i in range(81)]
#: Deliveries to work out latencies for at a time (bounds the client's memory).
BLOCK = 4_000_000
#: A close frame from a client (masked, no payload).
CLOSE = b"\x88\x80\0\0\0\0"


# -- the publisher --------------------------------------------------------------------


def ws_frame(payload: bytes) -> bytes:
    """A masked text frame (the mask is zero: the payload stays as it is)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def due_time(t0: int, rate: float, k: int) -> int:
    """When message ``k`` is due, in microseconds, if message 0 is at ``t0``."""
    return t0 + round(k * 1e6 / rate)


def publish(args: argparse.Namespace) -> dict[str, Any]:
    request, status = handshake("ws", "/pub")
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError("the server closed /pub during the handshake")
        head += data
    if status not in head[:16]:
        raise RuntimeError(head[:200].decode("latin-1"))
    count = round(args.rate * args.seconds)
    t0 = time.monotonic_ns() // 1000 + 100_000
    late = []
    for k in range(count):
        due = due_time(t0, args.rate, k)
        wait = due - time.monotonic_ns() // 1000
        if wait > 0:
            time.sleep(wait / 1e6)
        stamp = f"{k}:{due}:".encode()
        frame = ws_frame(stamp + b"x" * (args.size - len(stamp) - 1) + b"~")
        late.append(time.monotonic_ns() // 1000 - due)
        sock.sendall(frame)
    sock.sendall(CLOSE)
    sock.close()
    late.sort()
    return {
        "sent": count,
        "t0": t0,
        "rate": args.rate,
        "late_p50_ms": late[len(late) // 2] / 1000,
        "late_p99_ms": late[min(len(late) - 1, len(late) * 99 // 100)] / 1000,
        "late_max_ms": late[-1] / 1000,
    }


# -- the subscribers ------------------------------------------------------------------


class Bench:
    """What every subscriber's reads add to: per read, its time, the number
    of the first message it completed and how many; each message's DUE."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.times = array("d")
        self.firsts = array("q")
        self.counts = array("q")
        self.due: list[int] = []
        self.delivered = 0
        self.disorder = 0
        self.lost = 0

    def learn(self, messages: bytes, first: int) -> None:
        """The DUE of the messages ``first`` ... in ``messages``, whole frames
        each ending with ``~``, that no connection has read before."""
        for seq, frame in enumerate(messages.split(b"~")[:-1], first):
            if seq < len(self.due):
                continue
            number, due, _ = frame[2:].split(b":", 2)
            if int(number) != seq:
                self.disorder += 1
            self.due.append(int(due))


class Subscriber(Handshaking):
    __slots__ = ("bench", "next", "tail")

    def __init__(self, bench: Bench, request: bytes, status: bytes) -> None:
        super().__init__(request, status)
        self.bench = bench
        self.next = 0  # the number of the next message to complete
        self.tail = b""  # what came of that message so far

    def received(self, data: bytes) -> None:
        now = time.monotonic()
        count = data.count(MARK)
        if not count:
            self.tail += data
            return
        bench = self.bench
        first = self.next
        self.next = last = first + count
        bench.times.append(now)
        bench.firsts.append(first)
        bench.counts.append(count)
        bench.delivered += count
        end = data.rindex(MARK)
        if last > len(bench.due):
            bench.learn(self.tail + data[: end + 1], first)
        else:
            start = end + 1 - bench.size  # where the last message's text starts
            if start >= 0 and int(data[start : data.index(b":", start)]) != last - 1:
                bench.disorder += 1
        self.tail = data[end + 1 :]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.opened.done():
            self.bench.lost += 1
        super().connection_lost(exc)


def latencies(
    bench: Bench, clients: list[Subscriber], sent: int, dues: list[int], end: float
) -> Any:
    """Every delivery's latency in ms (float32, sorted), the missing ones'
    as if they arrived at ``end``; and how many were missing. ``dues``: when
    each of the ``sent`` messages was due (those that no subscriber got carry
    theirs only there)."""
    import numpy as np

    due = np.array(dues, dtype=np.float64) / 1e6
    times = np.frombuffer(bench.times, dtype=np.float64)
    firsts = np.frombuffer(bench.firsts, dtype=np.int64)
    counts = np.frombuffer(bench.counts, dtype=np.int64)
    parts = []
    # Some millions of deliveries at a time, to bound the memory of the index arrays.
    total = int(counts.sum())
    cuts = np.searchsorted(np.cumsum(counts), np.arange(BLOCK, total, BLOCK), side="right")
    bounds = [0, *cuts.tolist(), len(times)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        c = counts[lo:hi]
        starts = np.cumsum(c) - c
        seq = np.repeat(firsts[lo:hi] - starts, c) + np.arange(int(c.sum()))
        t = np.repeat(times[lo:hi], c)
        keep = seq < sent
        parts.append(((t[keep] - due[seq[keep]]) * 1000).astype(np.float32))
    # For message k, how many subscribers do not have it: those whose next is <= k.
    nexts = np.array([min(c.next, sent) for c in clients], dtype=np.int64)
    short = np.cumsum(np.bincount(nexts, minlength=sent + 1))[:sent]
    parts.append(np.repeat(((end - due) * 1000).astype(np.float32), short))
    out = np.concatenate(parts)
    out.sort()
    return out, int(short.sum())


def at(values: Any, p: float) -> float:
    """The ``p`` quantile (0 to 1) of sorted ``values``: the smallest value
    with at least that share of them at or below it."""
    return float(values[max(0, min(len(values) - 1, math.ceil(p * len(values)) - 1))])


async def subscribers(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request, status = handshake("ws", "/ws")
    bench = Bench(args.size)
    clients, connect_time = await subscribe(
        args.port, args.n, lambda: Subscriber(bench, request, status), args.timeout
    )
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print("ready", flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    line = await asyncio.wait_for(stdin.readline(), args.timeout)
    words = line.split()
    sent, t0_us, rate = int(words[0]), int(words[1]), float(words[2])
    published = time.monotonic()
    deadline = published + args.drain
    while bench.delivered < sent * args.n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    end = time.monotonic()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lost = bench.lost
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    schedule = [due_time(t0_us, rate, k) for k in range(sent)]
    seen = bench.due[:sent]
    if seen != schedule[: len(seen)]:
        bench.disorder += 1  # a message came with another DUE than it was sent with
    dues = seen + schedule[len(seen) :]
    values, missing = latencies(bench, clients, sent, dues, end)
    extra = sum(max(0, c.next - sent) for c in clients)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {
        "n": args.n,
        "sent": sent,
        "deliveries": len(values) - missing,
        "missing": missing,
        "extra": extra,
        "disorder": bench.disorder,
        "lost": lost,
        "censored": missing > 0,
        "reads": len(bench.times),
        "connect": connect_time,
        "drain": end - published,
        "client_cpu": cpu / (end - t0),
        "p50_ms": at(values, 0.5),
        "p99_ms": at(values, 0.99),
        "p999_ms": at(values, 0.999),
        "max_ms": float(values[-1]),
        "curve": [[p, at(values, p)] for p in CURVE],
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["publish", "subscribe"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=64, help="bytes per message (40 to 125)")
    parser.add_argument("--rate", type=float, default=200.0, help="publish: messages/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="publish: for how long")
    parser.add_argument("--n", type=int, default=1000, help="subscribe: how many")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="subscribe: the wait after the last publish"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="subscribe: for connecting, and for stdin"
    )
    args = parser.parse_args()
    if not 40 <= args.size <= 125:
        parser.error("--size must be 40 to 125")
    if args.mode == "publish":
        json.dump(publish(args), sys.stdout)
        return
    raise_fd_limit()
    report(subscribers(args))


if __name__ == "__main__":
    cli()
