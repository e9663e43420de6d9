"""Resume: a page loses its connections and misses nothing.

Run it from this folder, with channel history on:

    trio-push app:router --history 1000

then open http://127.0.0.1:9292/. The server publishes a tick five times a
second (TICK=0.05 for twenty) on one channel; the page follows it twice,
with an EventSource and with the shipped WebSocket helper (push.js), and
its buttons drop the connections: each comes back where it was, and the
page checks that no tick is missing or repeated.
"""

import json
import os
from pathlib import Path

import trio

import trio_push

HERE = Path(__file__).parent
CHANNEL = "ticks"
#: Seconds between two ticks.
TICK = float(os.environ.get("TICK", "0.2"))


class Ticks:
    """The handler of every connection: subscribes it from where its page was."""

    def __init__(self):
        self.clients = set()

    def on_open(self, client):
        self.clients.add(client)
        if client.protocol == "sse":
            # Without since, an event stream resumes from the Last-Event-ID
            # that EventSource sends when it reconnects by itself (or the
            # ?lastEventId= of a page that reopens it).
            client.subscribe(CHANNEL)
            # Reconnect 0.5 s after a drop (EventSource waits about 3 s unless told).
            client.write("", event="retry", retry=500)
        else:
            # push.js says where the page was in its since parameter; with
            # the envelope, each message tells it its position.
            client.subscribe(CHANNEL, since=client.since(CHANNEL), envelope=True)

    def on_gap(self, client, channel, reason):
        # History no longer holds all the page missed ("trimmed"), the
        # server restarted ("epoch"), or it runs without --history.
        notice = json.dumps({"gap": reason})
        if client.protocol == "sse":
            client.write(notice, event="gap")
        else:
            client.write(notice)  # not an envelope: onmessage(data, null, null)

    def on_close(self, client):
        self.clients.discard(client)


ticks = Ticks()


def page(env):
    return 200, {"content-type": "text/html; charset=utf-8"}, (HERE / "index.html").read_bytes()


def listen(env):
    if env["rack.upgrade?"] is None:
        return 400, {"content-type": "text/plain"}, b"WebSocket or EventSource only\n"
    env["rack.upgrade"] = ticks
    return 200, {}, b""


def drop(env):
    """POST /drop: the server closes every connection, as a restart would."""
    for client in list(ticks.clients):
        client.close()
    return 204, {}, b""


async def tick():
    """Publish ``tick 1``, ``tick 2``... (the server runs it on its loop)."""
    n = 0
    while True:
        n += 1
        trio_push.publish(CHANNEL, f"tick {n}")
        await trio.sleep(TICK)


router = trio_push.Router()
router.handle("GET", "/", page)
router.handle("GET", "/push.js", trio_push.js_helper_app)
router.handle("GET", "/ws", listen)
router.handle("GET", "/sse", listen)
router.handle("POST", "/drop", drop)
router.background = tick
