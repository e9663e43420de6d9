"""The clock example on asyncio: the same protocol core, another event loop.

trio_push drives a ``sansio_push.ServerConnection`` with Trio; this file
drives the very same object with nothing but the standard library's asyncio,
to show that the core does all the protocol work and a driver only moves
bytes. It serves the pages of ``examples/clock/`` and pushes the time every
second to every WebSocket (``/listen``) and SSE (``/sse``) client, and
answers a WebSocket message with ``echo: <message>``.

    python examples/asyncio_clock.py [--port 9292]

then open http://localhost:9292/websocket.html or http://localhost:9292/sse.html.

The driver is an ``asyncio.Protocol``, the callback flavour of asyncio, which
fits a sans-IO core closely: bytes arrive in ``data_received``, go into the
core, and every event that comes out is handled on the spot. Backpressure is
the core's: bytes are handed to the transport only while asyncio has not
asked us to pause writing; while paused they stay queued in the core, which
applies its own limits to a client that does not read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

import sansio_push as sp

PAGES = Path(__file__).resolve().parent / "clock"
ROUTES = {
    "/websocket.html": PAGES / "websocket.html",
    "/sse.html": PAGES / "sse.html",
}
INDEX = (
    b'<html><body><a href="websocket.html">WebSocket clock</a>'
    b' | <a href="sse.html">SSE clock</a></body></html>\n'
)
HTML = [("content-type", "text/html; charset=utf-8")]
# How long to wait for the peer's close frame after we sent ours.
CLOSE_TIMEOUT = 5.0


class PushProtocol(asyncio.Protocol):
    """One TCP connection: HTTP requests, then maybe a WebSocket or SSE stream."""

    #: Every connection that has upgraded and is still open; the clock's audience.
    listeners: set[PushProtocol] = set()

    def __init__(self, config: sp.Config) -> None:
        self.config = config
        self.core: sp.ServerConnection
        self.transport: asyncio.Transport
        self.env: dict | None = None
        self.paused = False

    # -- asyncio's callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.core = sp.ServerConnection(
            self.config,
            client=transport.get_extra_info("peername")[:2],
            server=transport.get_extra_info("sockname")[:2],
        )

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data)
        self.process()

    def eof_received(self) -> bool:
        self.core.receive_data(b"")
        self.process()
        return True  # keep the transport: flush() closes it once the core is done

    def connection_lost(self, exc: Exception | None) -> None:
        PushProtocol.listeners.discard(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.flush()

    # -- driving the core -----------------------------------------------------

    def process(self) -> None:
        """Handle every event the core has, then send what it queued."""
        while (event := self.core.next_event()) is not None:
            if isinstance(event, sp.Request):
                self.env = event.env  # answered once its (unused) body is in
            elif isinstance(event, sp.EndOfRequest):
                assert self.env is not None
                self.answer(self.env)
            elif isinstance(event, sp.Message):
                data = event.data  # str for a text message, bytes for binary
                text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                self.core.send_message(f"echo: {text}")
            elif isinstance(event, sp.Closed):
                PushProtocol.listeners.discard(self)
            # Body (ignored: no page takes one), Rejected (the core already
            # queued the error response), Pong, Drained: nothing to do.
        self.flush()

    def flush(self) -> None:
        """Hand the core's bytes to asyncio, unless it asked us to wait."""
        if self.transport.is_closing():
            return
        if not self.paused:
            data = self.core.data_to_send()
            if data:
                self.transport.write(data)
                self.core.sent(len(data))
        if self.core.finished and not self.core.pending_bytes:
            self.transport.close()  # asyncio sends what it holds, then closes

    def push(self, message: str) -> None:
        """Send one message to this client (the clock calls it)."""
        was_open = self.core.open
        self.core.send_message(message)
        if was_open and not self.core.open:
            # Its send queue overflowed and the core started closing it: give
            # the peer a moment to answer our close frame, then drop it.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.abort)
        self.flush()

    # -- the app ----------------------------------------------------------------

    def answer(self, env: dict) -> None:
        path = env["PATH_INFO"]
        kind = env["rack.upgrade?"]
        if (path, kind) in (("/listen", "websocket"), ("/sse", "sse")):
            self.core.start_response(200, upgrade=True)
            PushProtocol.listeners.add(self)
            print(f"--- {kind} client {env['REMOTE_ADDR']}:{env['REMOTE_PORT']} opened")
        elif env["REQUEST_METHOD"] not in ("GET", "HEAD"):
            self.core.respond(405, [("allow", "GET, HEAD")], b"Method Not Allowed\n")
        elif path in ROUTES:
            self.core.respond(200, HTML, ROUTES[path].read_bytes())
        elif path == "/":
            self.core.respond(200, HTML, INDEX)
        else:
            self.core.respond(404, [("content-type", "text/plain")], b"Not Found\n")


async def clock() -> None:
    """Push the time to every listener, on every turn of the second."""
    while True:
        # Wake just past the turn (a wake-up a hair early would repeat a time).
        await asyncio.sleep(1.005 - time.time() % 1)
        now = time.strftime("%H:%M:%S")
        for listener in list(PushProtocol.listeners):
            listener.push(now)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    config = sp.Config()
    server = await loop.create_server(lambda: PushProtocol(config), host, port)
    print(f"asyncio clock on http://{host}:{port}/websocket.html and /sse.html", flush=True)
    async with server:
        await clock()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The trio-push clock example, on asyncio.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9292, help="port (default 9292)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port))
