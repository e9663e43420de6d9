"""Coverage-guided fuzzing of sansio_push.ServerConnection with atheris.

Arbitrary bytes go to a ServerConnection in each of its states. The first
input byte picks the setup:

- bits 0-1: the state: 0 = before any request, 1 = after a WebSocket
  upgrade, 2 = after an SSE upgrade (3 counts as 0);
- bit 2: ``Config(compression=True)`` (and, in state 1, a permessage-deflate
  offer in the handshake);
- bit 3: small limits (head, body, message size, send queue), so the limit
  paths are reached by short inputs;
- bits 4-7: how the rest is cut into reads (1 to 16 bytes at a time, or, for
  0, one read).

The harness plays a simple app: it answers every request (accepting push
upgrades, or refusing some with 403), echoes WebSocket messages, pings now and
then, and takes everything queued as a socket would. After the input it feeds
the peer's EOF.

Peer bytes must never make the core raise: the documented outcomes are events
(``Rejected``, ``Closed`` ...). Any exception is a crash. The harness also
checks the accounting invariants after every step.

Run it long (crash-* files land in the current directory)::

    .venv/bin/python fuzz/fuzz_connection.py -max_total_time=3600 -dict=fuzz/http.dict fuzz/seeds

See fuzz/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports():
    import h11  # noqa: F401
    import wsproto  # noqa: F401

    import sansio_push
    from sansio_push import (
        Body,
        Closed,
        Config,
        Drained,
        EndOfRequest,
        Message,
        Pong,
        Rejected,
        Request,
        ServerConnection,
    )

WS_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
SSE_REQUEST = b"GET /events HTTP/1.1\r\nHost: fuzz\r\nAccept: text/event-stream\r\n\r\n"

SMALL = {
    "max_head_size": 512,
    "max_body_size": 64,
    "max_message_size": 64,
    "max_queue_messages": 3,
    "max_queue_bytes": 256,
}
EVENTS = (Request, Body, EndOfRequest, Rejected, Message, Pong, Closed)


class Harness:
    def __init__(self, config: Config) -> None:
        self.conn = ServerConnection(config, client=("10.0.0.1", 1), server=("10.0.0.2", 2))
        self.kind: str | None = None
        self.env: dict[str, object] = {}
        self.closed = False
        self.steps = 0

    def pump(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not None:
            assert isinstance(event, EVENTS), event
            assert not self.closed, f"{event!r} after Closed"
            self.steps += 1
            if isinstance(event, Request):
                self.env = event.env
                kind = event.env["rack.upgrade?"]
                assert kind in (None, "websocket", "sse"), kind
                for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL"):
                    assert isinstance(event.env[key], str), key
            elif isinstance(event, EndOfRequest):
                self.answer()
            elif isinstance(event, Message):
                assert isinstance(event.data, (str, bytes))
                conn.send_message(event.data)
                if self.steps % 3 == 0:
                    conn.send_keepalive(b"fz")
                if self.steps % 7 == 0:
                    conn.close(1000, "enough")
            elif isinstance(event, Closed):
                assert isinstance(event.code, int)
                self.closed = True
            self.take()
        self.take()

    def answer(self) -> None:
        conn = self.conn
        kind = self.env.get("rack.upgrade?")
        path = str(self.env.get("PATH_INFO", ""))
        if kind is not None and not path.endswith("x"):
            protocol = conn.start_response(0, [("X-Fuzz", "1")], upgrade=True)
            assert protocol == kind, (protocol, kind)
            self.kind = protocol
            conn.send_message("welcome")
        elif path.endswith("x"):
            conn.respond(403, [], b"no")
        else:
            conn.respond(200, [("Content-Type", "text/plain")], path.encode("latin-1")[:50])

    def take(self) -> None:
        conn = self.conn
        data = conn.data_to_send()
        assert len(data) == conn.pending_bytes
        assert conn.pending >= 0
        before = conn.pending
        # Take it in two steps, to exercise partial takes.
        half = len(data) // 2
        first = conn.sent(half)
        second = conn.sent(len(data) - half)
        assert conn.pending == 0 and conn.pending_bytes == 0
        drained = [d for d in (first, second) if d is not None]
        assert drained in ([], [Drained()]), drained
        assert bool(drained) == (before > 0), (before, drained)


def setup(state: int, compression: bool, small: bool) -> Harness:
    config = Config(compression=compression, **(SMALL if small else {}))
    h = Harness(config)
    if state == 1:
        offer = DEFLATE_OFFER if compression else b""
        h.conn.receive_data(WS_REQUEST + offer + b"\r\n")
        h.pump()
        assert h.conn.protocol == "websocket", h.conn.protocol
    elif state == 2:
        h.conn.receive_data(SSE_REQUEST)
        h.pump()
        assert h.conn.protocol == "sse", h.conn.protocol
    return h


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    control, rest = data[0], data[1:]
    state = (control & 3) % 3
    h = setup(state, bool(control & 4), bool(control & 8))
    step = control >> 4 or len(rest) or 1
    for i in range(0, len(rest), step):
        h.conn.receive_data(rest[i : i + step])
        h.pump()
    h.conn.receive_data(b"")
    h.pump()
    if h.conn.protocol != "http":
        # A push connection ends with Closed once the peer is gone.
        assert h.closed, "push connection without Closed after EOF"
    # Nothing more, whatever comes.
    h.conn.receive_data(b"")
    assert h.conn.next_event() is None


def main() -> None:
    assert sansio_push.ServerConnection is ServerConnection
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
