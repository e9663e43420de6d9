"""The seed's push.rb, in Python: a router, /hello, a static root, and the
clock on the main thread while the server runs on its own.

Run it from this folder:

    python push.py

then open http://localhost:6464/websocket.html or http://localhost:6464/sse.html
(set PORT to use another port).
"""

import os
import time
from pathlib import Path

import trio_push

HERE = Path(__file__).parent


class HelloHandler:
    def call(self, env):
        return 200, {}, ["hello world"]


class Clock:
    """Publishes the time to every open client, WebSocket or SSE."""

    def __init__(self):
        self.clients = set()

    def on_open(self, client):
        print("--- on_open")
        self.clients.add(client)

    def on_close(self, client):
        print("--- on_close")
        self.clients.discard(client)

    def on_drained(self, client):
        print("--- on_drained")

    def on_message(self, client, data):
        print(f"--- on_message {data}")
        client.write(f"echo: {data}")

    def start(self):
        """Every second, write the time to every client (from this thread)."""
        while True:
            msg = time.strftime("%H:%M:%S")
            for c in list(self.clients):
                c.write(msg)
            time.sleep(1)


clock = Clock()


class Listen:
    """Only used for WebSocket or SSE upgrades."""

    def call(self, env):
        if env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = clock
            return 200, {}, []
        return 404, {}, []


router = trio_push.Router()
router.handle("GET", "/hello", HelloHandler())
router.handle("GET", "/listen", Listen())
router.handle("GET", "/sse", Listen())

# The server runs on a thread of its own; start() returns once it listens,
# as Agoo::Server.start does with thread_count: 1.
server = trio_push.Server(router, int(os.environ.get("PORT", "6464")), root=str(HERE))
server.start()

# The clock runs on this thread.
clock.start()
