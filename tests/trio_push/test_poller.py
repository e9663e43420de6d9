"""Reading through the read poller (``_poller.ReadPoller``: one epoll of the
server's, each socket registered once, edge-triggered) gives a transport the
same bytes and the same end as Trio's own waits: whatever the sizes the peer
writes in (past the read buffer's size too), a wait cancelled before any
byte, the peer's end of the stream (after the bytes, or come with the last
of them, before any read), or ``stop_reading`` while waiting. And so
whether the socket's reader reads what comes itself when the poller asks it
(``ready()``, as a push connection's does) or leaves it to its woken task."""

from __future__ import annotations

import os
import socket

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_push._poller import ReadPoller
from trio_push._transport import Transport

pytestmark = pytest.mark.skipif(not ReadPoller.available(), reason="epoll only")


async def connected_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    listener.close()
    return server, client


async def next_bytes(transport: Transport) -> bytes | None:
    """As the push reader reads (``_connection.py``): wait, then read (None:
    nothing after all)."""
    try:
        await transport.readable()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""
    return transport.read_now()


class Reader:
    """What the poller asks first: ``reads`` reads what came, as
    ``Connection.ready`` does, until ``total``; else the woken task reads."""

    def __init__(self, transport: Transport, received: bytearray, total: int, reads: bool) -> None:
        self.transport, self.received, self.total, self.reads = transport, received, total, reads

    def ready(self) -> bool:
        if not self.reads:
            return False
        data = self.transport.read_now()
        if not data:
            return data is None
        self.received += data
        return len(self.received) < self.total


async def read_all(chunks: list[int], end: str, mode: str) -> tuple[bytes, bytes]:
    """Everything the transport reads of ``chunks`` written by the peer
    until a read gives ``b""``, and that read; ``mode``: ``trio`` (no poller), or
    through the poller, the reader's ``ready()`` declining (``woken``) or
    reading (``inline``)."""
    poller = ReadPoller()
    total = sum(chunks)
    received = bytearray()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            if mode != "trio":
                await nursery.start(poller.run)
            ours, peer = await connected_pair()
            transport = Transport(trio.SocketStream(ours), ours, None, 10.0)
            transport.use_poller(poller, Reader(transport, received, total, mode == "inline"))
            assert (transport._poller is not None) == (mode != "trio")
            with trio.move_on_after(0.01):
                await next_bytes(transport)  # nothing yet: cancelled while waiting
            peer_stream = trio.SocketStream(peer)
            if end == "eof_at_once":
                # All in the socket before the poller looks: one event for
                # the bytes and the end together (they fit the buffers, and
                # one read: it comes back short, the end still unread).
                for i, size in enumerate(chunks):
                    data = bytes([i % 251]) * size
                    while data:
                        data = data[os.write(peer.fileno(), data) :]
                peer.shutdown(socket.SHUT_WR)
                chunks = []

            async def write() -> None:
                for i, size in enumerate(chunks):
                    await peer_stream.send_all(bytes([i % 251]) * size)
                    await trio.sleep(0)
                if end == "eof":
                    peer.shutdown(socket.SHUT_WR)

            nursery.start_soon(write)
            stopping = False
            last = None
            while last is None:
                if end == "stop" and len(received) >= total and not stopping:
                    nursery.start_soon(stop_soon, transport)
                    stopping = True
                data = await next_bytes(transport)
                if data:
                    received += data
                elif data is not None:
                    last = data
            await transport.aclose()
            await peer_stream.aclose()
            nursery.cancel_scope.cancel()
    return bytes(received), last


async def stop_soon(transport: Transport) -> None:
    await trio.sleep(0.01)
    transport.stop_reading()


@settings(max_examples=25, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 150_000), max_size=6),
    end=st.sampled_from(["eof", "stop", "eof_at_once"]),
)
def test_polled_reads_are_trios(chunks: list[int], end: str) -> None:
    if end == "eof_at_once":
        chunks = [min(size, 10_000) for size in chunks]
    plain = trio.run(read_all, chunks, end, "trio")
    expected = b"".join(bytes([i % 251]) * size for i, size in enumerate(chunks))
    assert plain == (expected, b"")
    assert trio.run(read_all, chunks, end, "woken") == plain
    assert trio.run(read_all, chunks, end, "inline") == plain


def test_a_socket_is_not_registered_unless_the_poller_runs() -> None:
    assert not ReadPoller().register(0, Reader(None, bytearray(), 0, False))  # type: ignore[arg-type]
