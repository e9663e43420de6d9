"""Coverage-guided fuzzing of sansio_push.H2Connection with atheris.

Arbitrary bytes follow a valid HTTP/2 preface and SETTINGS frame, so that the
fuzzer spends its time on frames, not on the preface. The first input byte
picks the setup: bit 0 small limits (streams, header list, windows), bits
1-4 how the rest is cut into reads (1 to 16 bytes at a time, or 0: one read).

The harness plays a simple app and driver: it answers every request (push
upgrades accepted, bodies read), echoes WebSocket messages, writes to event
streams, frames what each stream queued, closes streams it is done with, and
takes everything queued for the socket. Peer bytes must never make the core
raise; the connection's and each stream's byte accounting must hold after
every step.

Run it long (crash-* files land in the current directory)::

    .venv/bin/python fuzz/fuzz_h2.py -max_total_time=3600 fuzz/seeds_h2

See fuzz/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports():
    import h2  # noqa: F401
    import hpack  # noqa: F401

    import sansio_push
    from sansio_push import (
        Closed,
        Config,
        EndOfRequest,
        H2Connection,
        H2Stream,
        Message,
        Request,
        StreamInput,
        StreamOpened,
    )

#: The preface and an empty SETTINGS frame: every input starts past them.
START = sansio_push.PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SMALL = {
    "h2_max_concurrent_streams": 4,
    "h2_max_header_list_size": 512,
    "h2_stream_window": 65535,
    "h2_connection_window": 65535,
    "max_body_size": 64,
    "max_message_size": 64,
}


class Harness:
    def __init__(self, config: Config) -> None:
        self.conn = H2Connection(config, client=("10.0.0.1", 1), server=("10.0.0.2", 2))

    def feed(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        while (event := conn.next_event()) is not None:
            if isinstance(event, StreamOpened | StreamInput):
                self.serve(event.stream)
        for stream in list(conn.streams.values()):
            self.send(stream)
        self.take()

    def serve(self, stream: H2Stream) -> None:
        while (event := stream.next_event()) is not None:
            if isinstance(event, Request):
                if event.env["rack.upgrade?"] is None:
                    stream.respond(200, [("content-type", "text/plain")], b"fuzz")
                else:
                    stream.start_response(200, [], upgrade=True)
                    stream.send_message("hello")
            elif isinstance(event, Message):
                stream.send_message(event.data)
            elif isinstance(event, Closed | EndOfRequest) and stream.protocol == "http":
                break
        if stream.finished and stream.all_sent:
            self.conn.close_stream(stream)

    def send(self, stream: H2Stream) -> None:
        data = stream.data_to_send()
        assert stream.pending_bytes == len(data)
        if data:
            n = self.conn.frame(stream, data)
            assert 0 <= n <= len(data)
            if n:
                stream.sent(n)
        if stream.finished and stream.all_sent:
            self.conn.close_stream(stream)

    def take(self) -> None:
        conn = self.conn
        data = conn.data_to_send()
        assert conn.pending_bytes == len(data)
        conn.sent(len(data))
        assert conn.pending_bytes == 0


def test_one_input(data: bytes) -> None:
    if not data:
        return
    setup, rest = data[0], data[1:]
    harness = Harness(Config(**SMALL) if setup & 1 else Config())  # type: ignore[arg-type]
    harness.feed(START)
    step = (setup >> 1) & 0xF
    if step == 0:
        harness.feed(rest)
    else:
        for start in range(0, len(rest), step):
            harness.feed(rest[start : start + step])
            if harness.conn.finished:
                break
    harness.feed(b"")
    assert harness.conn.finished


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
