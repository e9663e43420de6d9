"""The app that tests/e2e/test_soak.py runs under the CLI (``trio-push soak_app:app``).

- ``/feed``: a subscriber of the channel ``soak``; its first message is
  ``start N``, N being the first number it will get: the background task
  publishes ``N payload`` for N = 0, 1, 2, ... at a steady rate (every 50th
  payload is 64 KiB).
- ``/burst``: 2,000 writes in ``on_open``, then ``close()``.

Every ``on_open`` and ``on_close`` is written to the journal file named by
``SOAK_JOURNAL``, and so is every number whose publish may not have reached
Redis (``lost N``), so the test can check what came and what was called.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import trio

import trio_push
from trio_push._redis import PublishError

BURST = 2000
RATE = 200  # publishes per second
_lock = threading.Lock()
_server: list[Any] = []
_next = [0]
# Each connection's number in the journal (ids of freed clients come back).
_serial = itertools.count()


def opened(client: trio_push.Client) -> None:
    client.env["soak.serial"] = n = next(_serial)
    journal(f"open {n}")


def closed(client: trio_push.Client) -> None:
    journal(f"close {client.env['soak.serial']}")


def journal(line: str) -> None:
    with _lock, open(os.environ["SOAK_JOURNAL"], "a") as f:
        f.write(line + "\n")


class Feed:
    async def on_open(self, client: trio_push.Client) -> None:
        # On the event loop, with no await between: the subscription is in
        # place before the next publish, whose number is the one announced.
        opened(client)
        client.write(f"start {_next[0]}")
        client.subscribe("soak")

    def on_close(self, client: trio_push.Client) -> None:  # in a worker thread
        closed(client)


class Burst:
    def on_open(self, client: trio_push.Client) -> None:
        opened(client)
        for i in range(BURST):
            client.write(f"b{i} " + "x" * 100)
        client.close()

    def on_close(self, client: trio_push.Client) -> None:
        closed(client)


FEED, BURSTER = Feed(), Burst()


def app(env: dict[str, Any]) -> Any:
    if not _server:
        _server.append(env["trio_push.server"])
    if env["rack.upgrade?"]:
        env["rack.upgrade"] = BURSTER if env["PATH_INFO"] == "/burst" else FEED
        return 200, {}, b""
    return 200, {"content-type": "text/plain"}, b"ok\n"


async def publish_forever() -> None:
    while not _server:
        await trio.sleep(0.01)
    engine = _server[0].pubsub
    confirmed = getattr(engine, "publish_confirmed", None)
    while True:
        n = _next[0]
        _next[0] += 1
        payload = "p" * (65536 if n % 50 == 49 else 100)
        if confirmed is None:
            if not engine.publish("soak", f"{n} {payload}"):
                journal(f"lost {n}")
        else:
            try:
                await confirmed("soak", f"{n} {payload}")
            except PublishError:
                journal(f"lost {n}")
        await trio.sleep(1 / RATE)


app.background = publish_forever  # type: ignore[attr-defined]
