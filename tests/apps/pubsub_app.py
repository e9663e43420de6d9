"""The app the pub/sub tests run in server subprocesses (``pubsub_app:app``).

- ``/sub?ch=NAME&ch=...`` (WebSocket or SSE): subscribes to each ``ch``;
  the first message is ``hello <pid>``.
- ``/publish?ch=NAME&msg=TEXT``: ``trio_push.publish``; answers ``True`` or
  ``False``.
- ``/count?ch=NAME``: ``trio_push.subscriber_count``.
- ``/pid``: this process's id.
- ``/multiprocess``: the env's ``wsgi.multiprocess``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

import trio_push


class Subscriber:
    def __init__(self, channels: list[str]) -> None:
        self.channels = channels

    def on_open(self, client: trio_push.Client) -> None:
        for channel in self.channels:
            client.subscribe(channel)
        client.write(f"hello {os.getpid()}")


def app(env: dict[str, Any]) -> Any:
    query = parse_qs(env.get("QUERY_STRING", ""))
    path = env["PATH_INFO"]
    if path == "/sub" and env["rack.upgrade?"] is not None:
        env["rack.upgrade"] = Subscriber(query.get("ch", []))
        return 200, {}, b""
    if path == "/publish":
        ok = trio_push.publish(query["ch"][0], query["msg"][0])
        return 200, {"content-type": "text/plain"}, str(ok)
    if path == "/count":
        return 200, {"content-type": "text/plain"}, str(trio_push.subscriber_count(query["ch"][0]))
    if path == "/pid":
        return 200, {"content-type": "text/plain"}, str(os.getpid())
    if path == "/multiprocess":
        return 200, {"content-type": "text/plain"}, str(env["wsgi.multiprocess"])
    return 404, {}, b"not found"
