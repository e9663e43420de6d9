"""The app the history tests run under the CLI (``tests.apps.history_app:App``).

- ``/sub?ch=NAME&ch=...`` (SSE or WebSocket): subscribes to each ``ch``. On
  SSE the position comes from the page's ``Last-Event-ID``; on a WebSocket
  from the ``since`` query parameter, with the envelope. The first message
  is ``hello <pid>`` (SSE event ``hello``); a gap is the message
  ``gap <channel> <reason>`` (SSE event ``gap``).
- ``/publish?ch=NAME&n=N&prefix=P&size=S``: publishes ``P0`` ... ``P<N-1>``
  (each padded with dots to ``S`` bytes) at once, waits until Redis gave
  each its position, and answers them as JSON (``false`` for a refused one).
- ``/pid``: this process's id.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs

import trio_push


class Subscriber:
    def __init__(self, channels: list[str]) -> None:
        self.channels = channels

    def on_open(self, client: trio_push.Client) -> None:
        sse = client.protocol == "sse"
        client.write(f"hello {os.getpid()}", **({"event": "hello"} if sse else {}))
        for channel in self.channels:
            if sse:
                client.subscribe(channel)
            else:
                client.subscribe(channel, since=client.since(channel), envelope=True)

    def on_gap(self, client: trio_push.Client, channel: str, reason: str) -> None:
        sse = client.protocol == "sse"
        client.write(f"gap {channel} {reason}", **({"event": "gap"} if sse else {}))


def padded(text: str, size: int) -> str:
    return text + "." * (size - len(text))


class App:
    async def call(self, env: dict[str, Any]) -> Any:
        query = parse_qs(env.get("QUERY_STRING", ""))
        path = env["PATH_INFO"]
        if path == "/sub" and env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = Subscriber(query.get("ch", []))
            return 200, {}, b""
        if path == "/publish":
            channel = query["ch"][0]
            prefix = query.get("prefix", ["m"])[0]
            size = int(query.get("size", ["0"])[0])
            n = int(query.get("n", ["1"])[0])
            results = [trio_push.publish(channel, padded(f"{prefix}{i}", size)) for i in range(n)]
            positions: list[str | bool] = []
            for result in results:
                if isinstance(result, trio_push.Position):
                    try:
                        positions.append(str(await result.wait()))
                    except trio_push.PublishError:
                        positions.append(False)
                else:
                    positions.append(result)
            return 200, {"content-type": "application/json"}, json.dumps(positions)
        if path == "/pid":
            return 200, {"content-type": "text/plain"}, str(os.getpid())
        return 404, {}, b"not found"
