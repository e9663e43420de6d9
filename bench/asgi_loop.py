"""What running an ASGI app on an asyncio thread costs: the same small app
(a 5-byte answer, a WebSocket echo) under ``--asgi-loop asyncio`` (uvloop in
a thread of its own, the default), ``--asgi-loop trio`` (in the server's
run) and as a push-style app (no ASGI), side by side, rounds interleaved.

    .venv/bin/python bench/asgi_loop.py            # 3 rounds, about 2 minutes

- ``http_us``, ``ws_us``: the median round trip, in microseconds, of 3,000
  sequential keep-alive ``GET /`` on one connection, then of 3,000 echoes of
  a 32-byte WebSocket message: the latency each hop adds.
- ``rps``: ``wrk -t1 -c50 -d5s`` on ``GET /``: throughput, where the two
  threads of the asyncio mode overlap.

The median of the rounds is printed, with the load average of the machine
beside it (other work moves these figures: compare within one run). The
side-by-side with uvicorn and hypercorn is ``bench/asgi.py``.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TRIO_PUSH = [sys.executable, "-m", "trio_push", "--no-access-log"]
CONFIGS = {
    "asgi, --asgi-loop asyncio": ["asgi_loop:asgi", "--interface", "asgi"],
    "asgi, --asgi-loop trio": ["asgi_loop:asgi", "--asgi-loop", "trio"],
    "push-style (no ASGI)": ["asgi_loop:push"],
}


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": message["text"]})


class Echo:
    def on_message(self, client: Any, data: Any) -> None:
        client.write(data)


def push(env: dict[str, Any]) -> Any:
    if env["rack.upgrade?"]:
        env["rack.upgrade"] = Echo()
        return 200, {}, b""
    return 200, {"content-type": "text/plain"}, b"hello"


def latency(port: int, n: int) -> tuple[float, float]:
    """Median µs of ``n`` sequential GETs, then of ``n`` WebSocket echoes."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(n):
            started = time.perf_counter()
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"hello"):
                got += s.recv(65536)
            times.append(time.perf_counter() - started)
        http = statistics.median(times[n // 10 :])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        s.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        frame = bytes([0x81, 0x80 | 32]) + b"\0\0\0\0" + b"x" * 32
        times = []
        for _ in range(n):
            started = time.perf_counter()
            s.sendall(frame)
            got = b""
            while len(got) < 34:
                got += s.recv(65536)
            times.append(time.perf_counter() - started)
        ws = statistics.median(times[n // 10 :])
    return http * 1e6, ws * 1e6


def throughput(port: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c50", "-d5s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def measure(args: list[str], n: int) -> tuple[float, float, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    server = subprocess.Popen(
        [*TRIO_PUSH, *args, "--port", str(port)],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        http, ws = latency(port, n)
        return http, ws, throughput(port)
    finally:
        server.terminate()
        server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=3000, help="sequential round trips")
    options = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
    loads = []
    for _ in range(options.rounds):
        for name, args in CONFIGS.items():
            results[name].append(measure(args, options.n))
            loads.append(os.getloadavg()[0])
    print(f"load average during the run: {min(loads):.2f} to {max(loads):.2f} (2 cores)")
    print("| app | http_us | ws_us | rps |")
    print("| --- | ---: | ---: | ---: |")
    for name, rows in results.items():
        http, ws, rps = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"| {name} | {http:.0f} | {ws:.0f} | {rps:,.0f} |")


if __name__ == "__main__":
    main()
