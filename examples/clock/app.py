"""The seed's config.ru, in Python: demultiplexing in call(env), a clock thread.

Run it from this folder:

    trio-push app:Listen

then open http://localhost:9292/websocket.html or http://localhost:9292/sse.html.
"""

import threading
import time
from pathlib import Path

HERE = Path(__file__).parent


class Clock:
    """Publishes the time to every open client, WebSocket or SSE.

    One instance serves every connection; it keeps the open clients itself.
    """

    def __init__(self):
        self.clients = []
        # Callbacks may run in worker threads (--threads), and the clock runs
        # in a thread of its own, so the list is guarded.
        self.mutex = threading.Lock()

    def on_open(self, client):
        print("--- on_open")
        with self.mutex:
            self.clients.append(client)

    def on_close(self, client):
        print("--- on_close")
        with self.mutex:
            self.clients.remove(client)

    def on_drained(self, client):
        print("--- on_drained")

    def on_message(self, client, data):
        print(f"--- on_message {data}")
        client.write(f"echo: {data}")

    def start(self):
        """Write the current time to every client, every second."""
        while True:
            msg = time.strftime("%H:%M:%S")
            with self.mutex:
                for c in self.clients:
                    # write() returns False for a client that just closed.
                    c.write(msg)
            time.sleep(1)


clock = Clock()


class Listen:
    """Serves the two pages and accepts /listen and /sse as push connections."""

    def call(self, env):
        path = env["SCRIPT_NAME"] + env["PATH_INFO"]
        if path == "/websocket.html":
            return 200, {}, [(HERE / "websocket.html").read_bytes()]
        if path == "/sse.html":
            return 200, {}, [(HERE / "sse.html").read_bytes()]
        if path in ("/listen", "/sse") and env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = clock
            return 200, {}, []
        return 404, {}, []


# Start the clock, as the seed's `Thread.new { $clock.start }` does.
threading.Thread(target=clock.start, daemon=True).start()
