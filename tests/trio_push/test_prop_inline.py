"""Property: a push connection's reads handled by the read poller itself
(``Connection.ready``, with no task switch) give what its reader's task
gives (the server without the poller, as off Linux): the same callbacks in
the same order with the same messages, and the same frames back. Whatever
the messages' sizes (past the read buffer's 64 KiB too), however the peer's
bytes are cut, with pings and pongs among them, and whatever ``on_message`` does:
nothing, one write, a burst of writes, return an awaitable that writes
later, or be ``async def``."""

from __future__ import annotations

import functools
import struct
from typing import Any
from unittest import mock

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_push
from tests.helpers.frames import BINARY, CLOSE, PING, PONG, RawWS, frame
from tests.helpers.server import FAST, TIMEOUT
from trio_push._connection import Connection
from trio_push._poller import ReadPoller

# What on_message does with a message, by its first byte.
NOTHING, ECHO, BURST, LATER = b"n", b"e", b"b", b"l"
BURST_WRITES = 200


def act(client: Any, data: bytes) -> Any:
    op = data[:1]
    if op == ECHO:
        client.write(data)
    elif op == BURST:
        for i in range(BURST_WRITES):
            client.write(data[: i % 50 + 1])
    elif op == LATER:

        async def later() -> None:
            await trio.sleep(0)
            client.write(b"later " + data[:16])

        return later()
    return None


def answers(data: bytes) -> list[bytes]:
    """The messages ``act`` writes back for ``data``."""
    op = data[:1]
    if op == ECHO:
        return [data]
    if op == BURST:
        return [data[: i % 50 + 1] for i in range(BURST_WRITES)]
    if op == LATER:
        return [b"later " + data[:16]]
    return []


class Scripted:
    def __init__(self) -> None:
        self.log: list[Any] = []
        self.closed = trio.Event()

    def on_open(self, client: Any) -> None:
        self.log.append("open")

    def on_message(self, client: Any, data: bytes) -> Any:
        self.log.append(("message", data))
        return act(client, data)

    def on_close(self, client: Any) -> None:
        self.log.append(("close", client.close_code))
        self.closed.set()


class AsyncScripted(Scripted):
    async def on_message(self, client: Any, data: bytes) -> None:  # type: ignore[override]
        self.log.append(("message", data))
        later = act(client, data)
        if later is not None:
            await later


async def converse(
    script: list[tuple[str, bytes]], cuts: list[int], handler: Scripted
) -> tuple[list[Any], list[bytes], list[bytes]]:
    """Serve ``handler``; send ``script`` (messages and pings) cut at
    ``cuts``, then read every answer and close. The handler's log, the
    messages and the pongs that came back."""
    opcodes = {"message": BINARY, "ping": PING, "pong": PONG}
    wire = b"".join(frame(opcodes[kind], data) for kind, data in script)
    messages = [data for kind, data in script if kind == "message"]
    wanted = sum(len(answers(data)) for data in messages)
    pings = sum(kind == "ping" for kind, _ in script)

    def app(env: dict[str, Any]) -> Any:
        env["rack.upgrade"] = handler
        return 200, {}, b""

    got: list[bytes] = []
    pongs: list[bytes] = []
    with trio.fail_after(TIMEOUT * 2):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio_push.serve, app, 0, host="127.0.0.1", **FAST)
            server = await nursery.start(serve)
            ws = await RawWS.open(server.port)
            sent = trio.Event()

            async def send() -> None:
                start = 0
                for cut in [*sorted(c % (len(wire) + 1) for c in cuts), len(wire)]:
                    await ws.send(wire[start:cut])
                    start = max(start, cut)
                    await trio.sleep(0)
                sent.set()

            nursery.start_soon(send)
            while len(got) < wanted or len(pongs) < pings:
                received = await ws.next_frame()
                assert received is not None, "EOF before every answer"
                opcode, fin, payload = received
                assert fin
                if opcode == PONG:
                    pongs.append(payload)
                else:
                    assert opcode == BINARY, opcode
                    got.append(payload)
            await sent.wait()
            await ws.send(frame(CLOSE, struct.pack("!H", 1000)))
            while (received := await ws.next_frame()) is not None:
                assert received[0] == CLOSE, received
            await handler.closed.wait()
            await ws.aclose()
            nursery.cancel_scope.cancel()
    return handler.log, got, pongs


def run(
    script: list[tuple[str, bytes]], cuts: list[int], asynchronous: bool, polled: bool
) -> tuple[tuple[list[Any], list[bytes], list[bytes]], int]:
    """``converse`` with the read poller or without; how often the poller
    had the connection's reads handled by ``Connection.ready``."""
    inline = 0
    ready = Connection.ready

    def counted(self: Connection) -> bool:
        nonlocal inline
        inline += 1
        return ready(self)

    handler = AsyncScripted() if asynchronous else Scripted()
    with (
        mock.patch.object(ReadPoller, "available", staticmethod(lambda: polled)),
        mock.patch.object(Connection, "ready", counted),
    ):
        return trio.run(converse, script, cuts, handler), inline


ops = st.sampled_from([NOTHING, ECHO, BURST, LATER])
sizes = st.one_of(st.integers(1, 300), st.integers(1, 200_000))
steps = st.one_of(
    st.tuples(st.just("message"), st.builds(lambda op, n: op + b"x" * (n - 1), ops, sizes)),
    st.tuples(st.sampled_from(["ping", "pong"]), st.binary(max_size=20)),
)


@settings(max_examples=60, deadline=None)
@given(
    script=st.lists(steps, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 10**7), max_size=6),
    asynchronous=st.booleans(),
)
def test_reads_handled_by_the_poller_are_the_readers(
    script: list[tuple[str, bytes]], cuts: list[int], asynchronous: bool
) -> None:
    polled, inline = run(script, cuts, asynchronous, polled=True)
    plain, never = run(script, cuts, asynchronous, polled=False)
    assert never == 0
    assert inline > 0
    assert polled == plain
    messages = [data for kind, data in script if kind == "message"]
    log, got, pongs = plain
    assert log == ["open", *(("message", data) for data in messages), ("close", 1000)]
    assert got == [answer for data in messages for answer in answers(data)]
    assert pongs == [data for kind, data in script if kind == "ping"]
