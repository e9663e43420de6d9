"""The HTTP/2 load client: event streams on shared h2c connections, on
asyncio (uvloop if installed), counting the ``~`` that ends each message.

    python bench/h2client.py --port P --connections 50 --streams 100 --rounds 3

Each connection sends the preface, its SETTINGS (server push off, a large
INITIAL_WINDOW_SIZE), a WINDOW_UPDATE that opens the connection window as far
as it goes, and ``--streams`` GETs of ``/sse`` (one HPACK block, encoded once
with no indexing, so that the same bytes are valid for every stream). Of what
comes back only the frame headers are parsed: DATA payloads are counted (the
``~`` of each stream, and the bytes, returned in WINDOW_UPDATEs once half a
window is used), SETTINGS and PING are acknowledged, HEADERS and the rest are
skipped. A RST_STREAM or GOAWAY before every stream has its response head is
an error.

The rounds are those of ``loadclient.py``: wait until the server counts every
stream as a subscriber, ask it to publish (``/publish``, over HTTP/1.1), time
until every stream has every message. Prints one JSON object with the same
keys as ``loadclient.py`` (``connect``, ``rounds``, ``client_cpu``, ``extra``,
``lost``) and what the connections saw (frames, GOAWAYs, resets).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import struct
import time

from hpack import Encoder, HeaderTuple, NeverIndexedHeaderTuple
from loadclient import Bench, http_get, report

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
WINDOW_UPDATE = 0x8
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
ENABLE_PUSH, INITIAL_WINDOW_SIZE = 0x2, 0x4
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
MARK = ord("~")
#: length (24 bits as 8 + 16), type, flags, stream id (with its reserved bit).
HEAD = struct.Struct(">BHBBI")


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(len(payload) >> 16, len(payload) & 0xFFFF, kind, flags, stream) + payload


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))


def request_block(port: int, path: str) -> bytes:
    """The HPACK block of ``GET path`` for an event stream. Never-indexed
    literals: the server's dynamic table stays empty, so the same block
    decodes the same on every stream."""
    headers = [
        HeaderTuple(":method", "GET"),
        HeaderTuple(":scheme", "http"),
        NeverIndexedHeaderTuple(":authority", f"127.0.0.1:{port}"),
        NeverIndexedHeaderTuple(":path", path),
        NeverIndexedHeaderTuple("accept", "text/event-stream"),
    ]
    return bytes(Encoder().encode(headers))


def opening(block: bytes, streams: int, window: int) -> bytes:
    """What a connection sends first: preface, SETTINGS, the connection's
    WINDOW_UPDATE, and one HEADERS (END_STREAM) per stream: 1, 3, 5, ..."""
    settings = struct.pack(">HIHI", ENABLE_PUSH, 0, INITIAL_WINDOW_SIZE, window)
    heads = [frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, block) for i in range(streams)]
    return b"".join(
        [
            PREFACE,
            frame(SETTINGS, 0, 0, settings),
            window_update(0, MAX_WINDOW - DEFAULT_WINDOW),
            *heads,
        ]
    )


class H2Streams(asyncio.Protocol):
    """One connection and its ``streams`` event streams; ``opened`` is done
    once every stream has its response head."""

    def __init__(self, bench: Bench, first: bytes, streams: int, window: int) -> None:
        self.bench = bench
        self.first = first
        self.streams = streams
        self.window = window
        self.opened = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.heads = 0
        self.target = 0
        self.counts = [0] * streams
        self.ended = [False] * streams
        self.stream_used = [0] * streams
        self.used = 0  # DATA bytes not yet given back to the connection window
        self.frames = 0
        self.data_bytes = 0
        self.resets: list[int] = []
        self.goaway: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.first)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        out: list[bytes] = []
        counts, stream_used, target = self.counts, self.stream_used, self.target
        half = self.window // 2
        unpack = HEAD.unpack_from
        frames = used = 0
        # DATA inline (the hot path), the other frames in control().
        while end - pos >= 9:
            high, low, kind, flags, stream = unpack(buf, pos)
            start = pos + 9
            stop = start + (high << 16 | low)
            if stop > end:
                break
            pos = stop
            frames += 1
            stream &= MAX_WINDOW
            if kind:
                self.control(kind, flags, stream, buf[start:stop], out)
                continue
            length = stop - start
            used += length
            if flags & PADDED:
                stop -= buf[start]
                start += 1
            i = stream >> 1
            count = counts[i] + buf.count(MARK, start, stop)
            if counts[i] < target <= count:
                self.bench.arrived()
            counts[i] = count
            # Flow control: a stream's bytes go back once half its window is used.
            length += stream_used[i]
            if length >= half and not self.ended[i]:
                out.append(window_update(stream, length))
                length = 0
            stream_used[i] = length
            if flags & END_STREAM:
                self.end(stream)
        self.buf = buf[pos:]
        self.frames += frames
        self.data_bytes += used
        self.used += used
        if self.used >= MAX_WINDOW // 2:
            out.append(window_update(0, self.used))
            self.used = 0
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))

    def control(self, kind: int, flags: int, stream: int, payload: bytes, out: list[bytes]) -> None:
        if kind == HEADERS:
            self.heads += 1
            if flags & END_STREAM:
                self.end(stream)
            if self.heads == self.streams and not self.opened.done():
                self.opened.set_result(None)
        elif kind == SETTINGS and not flags & ACK:
            out.append(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self.resets.append(int.from_bytes(payload, "big"))
            self.end(stream)
            self.fail(f"stream {stream} reset, code {self.resets[-1]}")
        elif kind == GOAWAY:
            self.goaway = int.from_bytes(payload[4:8], "big")
            self.fail(f"GOAWAY, code {self.goaway}")

    def end(self, stream: int) -> None:
        i = stream >> 1
        if not self.ended[i]:
            self.ended[i] = True
            if self.counts[i] < self.target:
                self.bench.lost += 1

    def fail(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(why))

    def connection_lost(self, exc: Exception | None) -> None:
        for i in range(self.streams):
            self.end(2 * i + 1)
        self.fail(f"connection closed after {self.heads} of {self.streams} response heads")


async def main(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    first = opening(request_block(args.port, args.path), args.streams, args.window)
    bench = Bench()
    connections: list[H2Streams] = []
    total = args.connections * args.streams

    async def connect() -> None:
        _, conn = await loop.create_connection(
            lambda: H2Streams(bench, first, args.streams, args.window), "127.0.0.1", args.port
        )
        connections.append(conn)
        await asyncio.wait_for(conn.opened, args.timeout)

    started = time.perf_counter()
    await asyncio.gather(*(connect() for _ in range(args.connections)))
    connect_time = time.perf_counter() - started
    deadline = time.monotonic() + args.timeout
    while int(await http_get(args.port, "/count")) < total:
        if time.monotonic() > deadline:
            raise RuntimeError("the server never counted every stream as a subscriber")
        await asyncio.sleep(0.05)

    rounds: list[float] = []
    cpu_used: list[float] = []
    for r in range(args.rounds):
        bench.waiting = total
        bench.all_in = asyncio.Event()
        for conn in connections:
            conn.target += args.messages
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        t0 = time.perf_counter()
        query = f"/publish?n={args.messages}&size={args.size}&round={r}"
        publish = asyncio.ensure_future(http_get(args.port, query))
        try:
            await asyncio.wait_for(bench.all_in.wait(), args.timeout)
        except asyncio.TimeoutError:
            short = sum(c < conn.target for conn in connections for c in conn.counts)
            raise RuntimeError(
                f"round {r}: {short} streams short after {args.timeout} s"
                f" ({bench.lost} streams ended)"
            ) from None
        elapsed = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_used.append((usage.ru_utime + usage.ru_stime - cpu0) / elapsed)
        rounds.append(elapsed)
        await publish
        if elapsed > args.slow:
            break  # a slow server: one round says enough, and bounds the run
        await asyncio.sleep(0.2)
    extra = sum(c - conn.target for conn in connections for c in conn.counts)
    for conn in connections:
        assert conn.transport is not None
        conn.transport.close()
    await asyncio.sleep(0.1)
    return {
        "connect": connect_time,
        "rounds": rounds,
        "client_cpu": cpu_used,
        "extra": extra,
        "lost": bench.lost,
        "frames": sum(c.frames for c in connections),
        "data_bytes": sum(c.data_bytes for c in connections),
        "resets": sum(len(c.resets) for c in connections),
        "goaways": sum(c.goaway is not None for c in connections),
    }


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--streams", type=int, default=100, help="per connection")
    parser.add_argument("--path", default="/sse")
    parser.add_argument(
        "--window", type=int, default=MAX_WINDOW, help="SETTINGS_INITIAL_WINDOW_SIZE (streams)"
    )
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--slow", type=float, default=10.0, help="no more rounds after one this long"
    )
    args = parser.parse_args()
    report(main(args))


if __name__ == "__main__":
    cli()
