"""A chat room: one page, one WebSocket per visitor, each room a channel.

Run it from this folder (see README.md):

    trio-push app:app --workers 2 --redis redis://127.0.0.1:6379/0

then open http://127.0.0.1:9292/ in two browsers. Every message goes
through ``client.publish``, so with ``--redis`` it reaches every visitor of
the room whichever worker (or machine) holds their connection.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio_push

PAGE = (Path(__file__).parent / "index.html").read_bytes()
ROOM = re.compile(r"[a-z0-9-]{1,32}")
MAX_TEXT = 500


class Visitor:
    """One visitor in one room (a handler instance per connection)."""

    def __init__(self, room: str, name: str) -> None:
        self.channel = f"chat.{room}"
        self.name = name

    def say(self, client: trio_push.Client, kind: str, text: str = "") -> None:
        event = {"type": kind, "name": self.name, "text": text, "worker": os.getpid()}
        if not client.publish(self.channel, json.dumps(event)):
            # Redis is unreachable: tell this visitor, nobody else can hear.
            client.write(json.dumps({"type": "error", "text": "not delivered, try again"}))

    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe(self.channel)
        self.say(client, "join")

    def on_message(self, client: trio_push.Client, data: str | bytes) -> None:
        if isinstance(data, bytes):
            return
        try:
            text = str(json.loads(data)["text"])[:MAX_TEXT]
        except (ValueError, KeyError, TypeError):
            return
        if text.strip():
            self.say(client, "message", text)

    def on_close(self, client: trio_push.Client) -> None:
        self.say(client, "leave")


def app(env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    if path == "/":
        return 200, {"content-type": "text/html; charset=utf-8"}, PAGE
    if path == "/chat" and env["rack.upgrade?"] == "websocket":
        query = parse_qs(env.get("QUERY_STRING", ""))
        room = query.get("room", ["lobby"])[0].lower()
        name = query.get("name", [""])[0].strip()[:40] or "anonymous"
        if not ROOM.fullmatch(room):
            return 400, {"content-type": "text/plain"}, b"room: 1 to 32 of a-z, 0-9, -\n"
        env["rack.upgrade"] = Visitor(room, name)
        return 200, {}, b""
    return 404, {"content-type": "text/plain"}, b"Not Found\n"
