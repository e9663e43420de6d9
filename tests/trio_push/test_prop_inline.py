"""Property: reads handled by the read poller itself, with no task switch,
give what the connection's task gives (the server without the poller, as
off Linux).

- A push connection (``Connection.ready``): the same callbacks in the same
  order with the same messages, and the same frames back. Whatever the
  messages' sizes (past the read buffer's 64 KiB too), however the peer's
  bytes are cut, with pings and pongs among them, and whatever
  ``on_message`` does: nothing, one write, a burst of writes, return an
  awaitable that writes later, or be ``async def``.
- HTTP/1.1 keep-alive (``RequestLoop.ready``): the same bytes back, byte for
  byte, and the same calls of the app, for pipelined requests cut anywhere:
  with and without bodies (up to 200 KB), HEAD, answers fixed, streamed,
  empty, awaited (a plain app returning an awaitable) or failing (a 500
  that closes), an ``async def`` app, a bad request last."""

from __future__ import annotations

import contextlib
import functools
import struct
from typing import Any
from unittest import mock

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_push
from tests.helpers.frames import BINARY, CLOSE, PING, PONG, RawWS, frame
from tests.helpers.server import FAST, TIMEOUT, parse_responses
from trio_push._connection import Connection
from trio_push._http import RequestLoop
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


def run(reader: type[Any], polled: bool, fn: Any, *args: Any) -> tuple[Any, int]:
    """``trio.run(fn, *args)`` with the read poller or without; how often
    the poller had reads handled by ``reader.ready``."""
    inline = 0
    ready = reader.ready

    def counted(self: Any) -> bool:
        nonlocal inline
        inline += 1
        return ready(self)  # type: ignore[no-any-return]

    with (
        mock.patch.object(ReadPoller, "available", staticmethod(lambda: polled)),
        mock.patch.object(reader, "ready", counted),
    ):
        return trio.run(fn, *args), inline


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
    handler = AsyncScripted if asynchronous else Scripted
    polled, inline = run(Connection, True, converse, script, cuts, handler())
    plain, never = run(Connection, False, converse, script, cuts, handler())
    assert never == 0
    assert polled == plain
    messages = [data for kind, data in script if kind == "message"]
    log, got, pongs = plain
    assert log == ["open", *(("message", data) for data in messages), ("close", 1000)]
    assert got == [answer for data in messages for answer in answers(data)]
    assert pongs == [data for kind, data in script if kind == "ping"]


# -- HTTP/1.1 ---------------------------------------------------------------

# What the app answers, by path: (status, whether it ends the connection).
PATHS = {"/fixed": 200, "/stream": 200, "/none": 204, "/later": 201, "/raise": 500}


def http_app(log: list[Any], asynchronous: bool) -> Any:
    def answer(env: dict[str, Any]) -> Any:
        path = env["PATH_INFO"]
        body = env["wsgi.input"].read()
        log.append((env["REQUEST_METHOD"], path, body))
        if path == "/fixed":
            return 200, {"content-type": "text/plain"}, [b"fixed ", body[:100]]
        if path == "/stream":
            return 200, {}, iter([b"a", b"bb", body[:1000]])
        if path == "/none":
            return 204, {}, []
        if path == "/raise":
            raise RuntimeError("the app fails")

        async def later() -> Any:
            await trio.sleep(0)
            return 201, {"x-later": "1"}, b"later"

        return later()

    async def async_answer(env: dict[str, Any]) -> Any:
        result = answer(env)
        return await result if env["PATH_INFO"] == "/later" else result

    return async_answer if asynchronous else answer


def http_request(method: str, path: str, body: bytes, last: bool) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    if last:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode() + body


async def http_converse(wire: bytes, cuts: list[int], asynchronous: bool) -> tuple[Any, bytes]:
    """Serve ``http_app``; send ``wire`` cut at ``cuts``; read to the end.
    The app's log and every byte that came back."""
    log: list[Any] = []
    received = bytearray()
    with trio.fail_after(TIMEOUT * 2):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                trio_push.serve, http_app(log, asynchronous), 0, host="127.0.0.1", **FAST
            )
            server = await nursery.start(serve)
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)

            async def send() -> None:
                start = 0
                for cut in [*sorted(c % (len(wire) + 1) for c in cuts), len(wire)]:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(wire[start:cut])
                    start = max(start, cut)
                    await trio.sleep(0)

            nursery.start_soon(send)
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    break
                received += data
            await stream.aclose()
            nursery.cancel_scope.cancel()
    return log, bytes(received)


requests = st.tuples(
    st.sampled_from(["GET", "HEAD", "POST"]),
    st.sampled_from(sorted(PATHS)),
    st.one_of(st.just(b""), st.binary(max_size=300), st.integers(1, 200_000).map(b"b".__mul__)),
)


@settings(max_examples=40, deadline=None)
@given(
    script=st.lists(requests, min_size=1, max_size=8),
    bad_last=st.booleans(),
    cuts=st.lists(st.integers(0, 10**7), max_size=6),
    asynchronous=st.booleans(),
)
def test_requests_answered_by_the_poller_are_the_loops(
    script: list[tuple[str, str, bytes]], bad_last: bool, cuts: list[int], asynchronous: bool
) -> None:
    script = [(m, p, body if m == "POST" else b"") for m, p, body in script]
    wire = b"".join(
        http_request(m, p, body, last=not bad_last and i == len(script) - 1)
        for i, (m, p, body) in enumerate(script)
    )
    if bad_last:
        wire += b"NOT HTTP\r\n\r\n"
    polled, _ = run(RequestLoop, True, http_converse, wire, cuts, asynchronous)
    plain, never = run(RequestLoop, False, http_converse, wire, cuts, asynchronous)
    assert never == 0
    assert polled == plain
    # What every request got: answers in order up to the first 500 (it
    # closes), then, if the peer's bytes went on, the 400.
    answered = script
    for i, (_, path, _) in enumerate(script):
        if path == "/raise":
            answered = script[: i + 1]
            break
    log, data = plain
    assert log == answered
    methods = [m for m, _, _ in answered]
    statuses = [status for status, _, _ in parse_responses(data, methods)]
    expected = [PATHS[path] for _, path, _ in answered]
    if bad_last and 500 not in expected:
        expected.append(400)
    assert statuses == expected


async def one_at_a_time() -> None:
    """A WebSocket message and an HTTP request, each sent once the answer
    to the one before came: each comes while its connection waits."""

    def app(env: dict[str, Any]) -> Any:
        if env["rack.upgrade?"]:
            env["rack.upgrade"] = Scripted()
            return 200, {}, b""
        return 200, {}, b"hello"

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio_push.serve, app, 0, host="127.0.0.1", **FAST)
            server = await nursery.start(serve)
            ws = await RawWS.open(server.port)
            for _ in range(3):
                await ws.send(frame(BINARY, ECHO))
                assert await ws.message() == (BINARY, ECHO)
            await ws.aclose()
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            for _ in range(3):
                await stream.send_all(http_request("GET", "/", b"", last=False))
                assert (await stream.receive_some(65536)).endswith(b"\r\n\r\nhello")
            await stream.aclose()
            nursery.cancel_scope.cancel()


def test_the_poller_handles_reads_of_waiting_connections_itself() -> None:
    """The properties above compare something: with the poller, reads that
    come while a connection waits are handled by its ``ready()``."""
    assert run(Connection, True, one_at_a_time)[1] >= 2
    assert run(RequestLoop, True, one_at_a_time)[1] >= 2
