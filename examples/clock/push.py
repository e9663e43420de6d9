"""The seed's push.rb, in Python: a router, /hello, a static root, and the
clock as background work on the server's event loop.

Run it from this folder:

    python push.py

then open http://localhost:6464/websocket.html or http://localhost:6464/sse.html
(set PORT to use another port).
"""

import os
import time
from pathlib import Path

import trio

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

    async def run(self):
        """Every second, write the time to every client.

        It runs on the server's event loop, like the callbacks, so the set
        of clients needs no lock.
        """
        while True:
            msg = time.strftime("%H:%M:%S")
            for c in self.clients:
                c.write(msg)
            await trio.sleep(1)


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

# The clock runs on the server's event loop, started once it listens and
# cancelled when it stops.
server = trio_push.Server(
    router, int(os.environ.get("PORT", "6464")), root=str(HERE), background=clock.run
)

# The server runs on a thread of its own: start() returns once it listens, as
# Agoo::Server.start does with thread_count: 1, leaving this thread free.
server.start()
try:
    server.join()
except KeyboardInterrupt:
    server.stop()
    server.join(15)
