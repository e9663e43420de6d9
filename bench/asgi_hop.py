"""One round trip from a Trio task to an asyncio coroutine and back, the
two ways an asyncio-only ASGI app could run beside trio-push's Trio side:
on an asyncio loop in a thread of its own (what trio-push does; uvloop's or
asyncio's own), or in the Trio run through trio-asyncio (not a dependency:
``pip install trio-asyncio`` to measure it; the row is skipped without it).

    .venv/bin/python bench/asgi_hop.py

Each way is a fresh process, rounds interleaved; the median of the rounds,
in microseconds per round trip.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import trio

N = 20000
ROUNDS = 3


async def work(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def via_trio_asyncio() -> float:
    import trio_asyncio

    async with trio_asyncio.open_loop():
        call = trio_asyncio.aio_as_trio(work)
        for i in range(500):
            await call(i)
        started = time.perf_counter()
        for i in range(N):
            await call(i)
        return (time.perf_counter() - started) / N * 1e6


async def via_thread(uvloop: bool) -> float:
    if uvloop:
        import uvloop as uv

        loop = uv.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    token = trio.lowlevel.current_trio_token()

    async def one(i: int) -> Any:
        done = trio.Event()
        box: list[Any] = []

        def finished(future: Any) -> None:
            box.append(future.result())
            token.run_sync_soon(done.set)

        loop.call_soon_threadsafe(lambda: loop.create_task(work(i)).add_done_callback(finished))
        await done.wait()
        return box[0]

    for i in range(500):
        await one(i)
    started = time.perf_counter()
    for i in range(N):
        await one(i)
    return (time.perf_counter() - started) / N * 1e6


WAYS = {
    "asyncio thread (uvloop)": "uvloop",
    "asyncio thread (asyncio)": "asyncio",
    "trio-asyncio": "trio-asyncio",
}


def main() -> None:
    if len(sys.argv) > 1:
        way = sys.argv[1]
        result = trio.run(via_trio_asyncio) if way == "trio-asyncio" else None
        if result is None:
            result = trio.run(via_thread, way == "uvloop")
        print(result)
        return
    ways = dict(WAYS)
    if importlib.util.find_spec("trio_asyncio") is None:
        del ways["trio-asyncio"]
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(ROUNDS):
        for name, way in ways.items():
            out = subprocess.run(
                [sys.executable, __file__, way], capture_output=True, text=True, check=True
            )
            times[name].append(float(out.stdout))
    print("| way | µs per round trip |")
    print("| --- | ---: |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.0f} |")


if __name__ == "__main__":
    main()
