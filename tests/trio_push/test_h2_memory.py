"""What an idle event stream costs the server on a shared HTTP/2 connection,
measured with tracemalloc, as tests/trio_push/test_connection.py does for a
connection: STREAMS streams on CONNECTIONS h2c connections (prior knowledge)
from another process (the ``h2`` library as the client), so that only the
server's allocations are counted; the growth of traced memory over the number
of streams (each connection's own share included), after a first round has
warmed the caches up. Over the budget, the test fails and says where the bytes
went: the biggest allocations by traceback, per stream."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import trio

import trio_push
from tests.helpers.server import TIMEOUT, wait_for

CONNECTIONS = 5
STREAMS_PER_CONNECTION = 100
STREAMS = CONNECTIONS * STREAMS_PER_CONNECTION

#: How many frames of each allocation are traced (and shown where the bytes went).
FRAMES_SHOWN = 5

#: Bytes per idle event stream on a shared HTTP/2 connection: what it measured
#: when the budget was set (2,900), plus 5% (issue 14's target was 4 KiB).
BUDGET = 3050

_CLIENT = r"""
import socket, sys
import h2.config, h2.connection, h2.events
port, connections, streams = map(int, sys.argv[1:4])
request = [
    (":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
    (":path", "/events"), ("accept", "text/event-stream"),
]
held = []
for _ in range(connections):
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    for i in range(streams):
        conn.send_headers(2 * i + 1, request, end_stream=True)
    sock.sendall(conn.data_to_send())
    heads = 0
    while heads < streams:
        data = sock.recv(65536)
        if not data:
            sys.exit(f"closed after {heads} response heads")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                assert (b":status", b"200") in event.headers, event.headers
                heads += 1
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                sys.exit(repr(event))
        sock.sendall(conn.data_to_send())
    held.append((sock, conn))
print("ready", flush=True)
sys.stdin.read()
"""


class Streams:
    """Counts the event streams opened and closed, and the protocols they came on."""

    def __init__(self) -> None:
        self.opened = self.closed = 0
        self.protocols: set[str] = set()

    def on_open(self, client: trio_push.Client) -> None:
        self.opened += 1
        self.protocols.add(client.env["SERVER_PROTOCOL"])

    def on_close(self, client: trio_push.Client) -> None:
        self.closed += 1


def _tasks(server: Any) -> int:
    """The server's connection tasks and every task under them."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(c) for n in task.child_nurseries for c in n.child_tasks)

    return sum(count(task) for task in server.conn_nursery.child_tasks)


async def _streams_held(server: Any, handler: Streams, inside: Any) -> Any:
    """Opens STREAMS idle event streams from another process and, once the
    server holds them all with one task per connection, returns what
    ``inside()`` gives; then closes them, and waits until the server has let
    go of them (every session finished, its connection task gone)."""
    opened, closed, baseline = handler.opened, handler.closed, _tasks(server)
    args = [str(server.port), str(CONNECTIONS), str(STREAMS_PER_CONNECTION)]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _CLIENT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        ready = b""
        with trio.fail_after(TIMEOUT):
            while not ready.endswith(b"\n") and (chunk := await process.stdout.receive_some()):
                ready += chunk
        assert ready == b"ready\n", f"the h2 client did not open its streams: {ready!r}"
        await wait_for(lambda: handler.opened == opened + STREAMS)
        await wait_for(lambda: _tasks(server) == baseline + CONNECTIONS)  # on_open's are done
        gc.collect()
        held = inside()
    finally:
        await process.stdin.aclose()
        with trio.fail_after(TIMEOUT):
            await process.wait()
    await wait_for(lambda: handler.closed == closed + STREAMS)
    # on_close comes before a session finishes: until then it holds all it had.
    await wait_for(lambda: _tasks(server) == baseline)
    return held


def _by_place(snapshot: tracemalloc.Snapshot) -> Counter[tuple[str, ...]]:
    """Traced bytes by place: the innermost FRAMES_SHOWN frames of each allocation."""
    sizes: Counter[tuple[str, ...]] = Counter()
    for trace in snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]).traces:
        frames = trace.traceback[-FRAMES_SHOWN:]
        sizes[tuple(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))] += trace.size
    return sizes


def _biggest(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, count: int) -> str:
    """The places (innermost frame first) that grew most, in bytes per stream."""
    grown = _by_place(after)
    grown.subtract(_by_place(before))
    return "\n".join(
        f"  {size / STREAMS:6.0f} B/stream  {' < '.join(place)}"
        for place, size in grown.most_common(count)
    )


async def test_an_idle_event_stream_on_a_shared_h2_connection_stays_under_its_byte_budget(
    nursery: trio.Nursery,
) -> None:
    handler = Streams()

    def app(env: dict[str, Any]) -> Any:
        if env["rack.upgrade?"] == "sse":
            env["rack.upgrade"] = handler
            return 200, {}, []
        return 404, {}, []

    server = await nursery.start(trio_push.serve, app, 0)
    tracemalloc.start(FRAMES_SHOWN)
    try:
        await _streams_held(server, handler, lambda: None)  # warm-up
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        after = await _streams_held(server, handler, lambda: tracemalloc.get_traced_memory()[0])
        # Where it goes (a third round: the first snapshot would count in the figure).
        gc.collect()
        first = tracemalloc.take_snapshot()
        second = await _streams_held(server, handler, tracemalloc.take_snapshot)
    finally:
        tracemalloc.stop()
    assert handler.protocols == {"HTTP/2"}
    per_stream = (after - before) / STREAMS
    top = _biggest(first, second, 12)
    print(f"{per_stream:.0f} bytes per idle event stream on a shared HTTP/2 connection\n{top}")
    assert per_stream <= BUDGET, (
        f"an idle event stream on a shared HTTP/2 connection costs {per_stream:.0f} bytes, over"
        f" its budget of {BUDGET}; the biggest allocations:\n{top}"
    )
