"""The handler's callbacks, as they are queued and run: order, arguments,
on_drained, errors, no overlap; ``async def`` ones on the event loop, plain ones
in worker threads with ``threads``, and a slow plain one logged."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.exceptions import ConnectionClosed as WSClosed

from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    Recorder,
    connect,
    http_client,
    in_thread,
    push_app,
    wait_for,
    ws_connect,
)


async def test_on_open_comes_first(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("a")
            await ws.send_message("b")
        await rec.closed.wait()
    assert rec.names()[0] == "open"
    assert rec.names().count("open") == 1


async def test_on_message_gets_str_for_text_and_bytes_for_binary(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("héllo")
            await ws.send_message(b"\x00\xffbin")
        await rec.closed.wait()
    messages = [data for name, data in rec.events if name == "message"]
    assert messages == ["héllo", b"\x00\xffbin"]
    assert type(messages[0]) is str
    assert type(messages[1]) is bytes


async def test_on_close_runs_exactly_once_and_last(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            for i in range(10):
                await ws.send_message(str(i))
            # Both sides close at once: the client here, the server too.
            rec.clients[0].close()
        await rec.closed.wait()
        await trio.sleep(0.1)  # anything late would show up now
    names = rec.names()
    assert names.count("close") == 1
    assert names[-1] == "close"
    assert names.count("message") == 10


async def test_on_close_runs_when_the_peer_vanishes(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        await rec.opened.wait()
        await ws.aclose()  # no close frame: the TCP connection just ends
        await rec.closed.wait()
    assert rec.names() == ["open", "close"]


async def test_on_drained_only_when_pending_goes_back_to_zero(start_server: Any) -> None:
    rec = Recorder()
    # A big send queue, so the burst below is not refused.
    server = await start_server(
        push_app(rec), max_queue_bytes=64 * 1024 * 1024, max_queue_messages=10_000
    )
    count, size = 200, 32 * 1024
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port, rcvbuf=4096)
        await rec.opened.wait()
        client = rec.clients[0]
        await trio.sleep(0.05)
        assert "drained" not in rec.names()  # nothing was written yet
        for i in range(count):
            assert client.write(bytes([i % 256]) * size)
        # The client does not read: the server's writer gets stuck.
        await trio.sleep(0.3)
        assert client.pending > 0
        assert "drained" not in rec.names()
        messages = await ws.messages(count)
        await wait_for(lambda: "drained" in rec.names())
    assert [m[:1] for m in messages] == [bytes([i % 256]) for i in range(count)]
    assert all(len(m) == size for m in messages)
    assert client.pending == 0
    await trio.sleep(0.1)
    assert rec.names().count("drained") == 1
    await ws.aclose()


async def test_on_drained_once_per_burst(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        await rec.opened.wait()
        client = rec.clients[0]
        for burst in range(3):
            for i in range(5):
                client.write(f"{burst}.{i}")
            await ws.messages(5)
            await wait_for(lambda b=burst: rec.names().count("drained") == b + 1)
        await trio.sleep(0.1)
    assert rec.names().count("drained") == 3
    await ws.aclose()


class OverlapChecker:
    """Records how many callbacks of each connection run at one time."""

    def __init__(self, *, slow: float) -> None:
        self.lock = threading.Lock()
        self.running: dict[int, int] = {}
        self.max_running = 0
        self.log: dict[int, list[str]] = {}
        self.slow = slow
        self.closed = 0

    def _enter(self, client: Any, name: str) -> None:
        with self.lock:
            key = id(client)
            self.running[key] = self.running.get(key, 0) + 1
            self.max_running = max(self.max_running, self.running[key])
            self.log.setdefault(key, []).append(name)

    def _exit(self, client: Any, name: str) -> None:
        with self.lock:
            self.running[id(client)] -= 1
            if name == "close":
                self.closed += 1

    def _callback(self, client: Any, name: str) -> None:
        self._enter(client, name)
        try:
            time.sleep(self.slow)
        finally:
            self._exit(client, name)

    def on_open(self, client: Any) -> None:
        self._callback(client, "open")

    def on_message(self, client: Any, data: Any) -> None:
        self._callback(client, "message")
        client.write(data)

    def on_drained(self, client: Any) -> None:
        self._callback(client, "drained")

    def on_close(self, client: Any) -> None:
        self._callback(client, "close")


@pytest.mark.parametrize("threads", [0, 4])
async def test_callbacks_of_one_connection_never_overlap(start_server: Any, threads: int) -> None:
    checker = OverlapChecker(slow=0.002)
    server = await start_server(push_app(checker), threads=threads)
    url = f"ws://127.0.0.1:{server.port}/"

    def client() -> None:
        with ws_connect(url) as ws:
            for i in range(20):
                ws.send(str(i))
            for _ in range(20):
                ws.recv(timeout=TIMEOUT)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(in_thread, client)
        await wait_for(lambda: checker.closed == 3)
    assert checker.max_running == 1
    for names in checker.log.values():
        assert names[0] == "open"
        assert names[-1] == "close"
        assert names.count("message") == 20


async def test_callbacks_run_in_event_order(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec), threads=4)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            for i in range(50):
                await ws.send_message(str(i))
        await rec.closed.wait()
    assert [d for n, d in rec.events if n == "message"] == [str(i) for i in range(50)]


class Failing:
    def __init__(self) -> None:
        self.closed = trio.Event()

    def on_message(self, client: Any, data: Any) -> None:
        raise ValueError("boom in on_message")

    def on_close(self, client: Any) -> None:
        self.closed.set()


async def test_callback_exception_closes_the_websocket_with_1011(start_server: Any) -> None:
    handler = Failing()
    server = await start_server(push_app(handler))

    def client() -> int | None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("trigger")
            try:
                ws.recv(timeout=TIMEOUT)
            except WSClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    with trio.fail_after(TIMEOUT):
        code = await in_thread(client)
        await handler.closed.wait()
    assert code == 1011


async def test_callback_exception_is_logged_with_its_traceback(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Failing()
    server = await start_server(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("trigger")
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        await handler.closed.wait()
    errors = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert errors, caplog.text
    assert isinstance(errors[0].exc_info[1], ValueError)
    assert "boom in on_message" in caplog.text
    assert "Traceback" in caplog.text
    assert "on_message" in errors[0].getMessage()


async def test_server_keeps_serving_after_a_callback_exception(start_server: Any) -> None:
    handler = Failing()
    server = await start_server(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("trigger")
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        async with http_client() as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/")
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.ping()
    assert response.status_code == 200
    assert response.text == "hello"


async def test_on_open_exception_still_calls_on_close(start_server: Any) -> None:
    events: list[str] = []
    closed = trio.Event()

    class Handler:
        def on_open(self, client: Any) -> None:
            events.append("open")
            raise RuntimeError("boom in on_open")

        def on_close(self, client: Any) -> None:
            events.append("close")
            closed.set()

    server = await start_server(push_app(Handler()))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        await closed.wait()
    assert info.value.reason.code == 1011
    assert events == ["open", "close"]


async def test_on_close_runs_when_an_sse_client_goes_away(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        await stream.send_all(b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        await rec.opened.wait()
        await stream.aclose()
        await rec.closed.wait()
    assert rec.names() == ["open", "close"]
    assert rec.clients[0].write("gone") is False


async def test_every_on_open_gets_exactly_one_on_close_under_churn(start_server: Any) -> None:
    lock = threading.Lock()
    opened: list[int] = []
    closed: list[int] = []
    clients: set[Any] = set()
    stop = threading.Event()

    class Churn:
        def on_open(self, client: Any) -> None:
            with lock:
                opened.append(id(client))
                clients.add(client)

        def on_message(self, client: Any, data: Any) -> None:
            client.write(data)
            if data == "close":
                client.close()

        def on_close(self, client: Any) -> None:
            with lock:
                closed.append(id(client))
                clients.discard(client)

    def writer() -> None:  # writes from another thread the whole time
        while not stop.is_set():
            with lock:
                targets = list(clients)
            for c in targets:
                c.write("tick")
            time.sleep(0.001)

    server = await start_server(push_app(Churn()), threads=2)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for i in range(40):

                    async def one(i: int = i) -> None:
                        ws = await RawWebSocket.open(server.port)
                        await ws.send("hello")
                        await trio.sleep(0.001 * (i % 7))
                        if i % 3 == 0:
                            await ws.send("close")  # the server closes it
                            await ws.close_code()
                        await ws.aclose()  # else just vanish

                    nursery.start_soon(one)
            await wait_for(lambda: len(closed) == 40)
    finally:
        stop.set()
        await in_thread(thread.join, TIMEOUT)
    assert len(opened) == 40
    assert sorted(opened) == sorted(closed)


# -- async def callbacks, and plain ones in worker threads -----------------------------


class AsyncRecorder:
    """A handler whose callbacks are all ``async def``."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.closed = trio.Event()

    async def on_open(self, client: Any) -> None:
        await trio.sleep(0)
        self.events.append("open")
        client.write("welcome")

    async def on_message(self, client: Any, data: Any) -> None:
        await trio.sleep(0)
        self.events.append(("message", data))
        client.write(f"echo {data}")

    async def on_close(self, client: Any) -> None:
        await trio.sleep(0)
        self.events.append("close")
        self.closed.set()


async def test_async_callbacks_run(start_server: Any) -> None:
    handler = AsyncRecorder()
    server = await start_server(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            assert await ws.get_message() == "welcome"
            await ws.send_message("hi")
            assert await ws.get_message() == "echo hi"
        await handler.closed.wait()
    assert handler.events == ["open", ("message", "hi"), "close"]


async def test_threads_run_plain_callbacks_in_worker_threads(start_server: Any) -> None:
    loop_thread = threading.current_thread()
    where: dict[str, threading.Thread] = {}
    closed = threading.Event()

    class Handler:
        def on_open(self, client: Any) -> None:
            where["on_open"] = threading.current_thread()

        def on_message(self, client: Any, data: Any) -> None:
            where["on_message"] = threading.current_thread()
            client.write(data)

        def on_close(self, client: Any) -> None:
            where["on_close"] = threading.current_thread()
            closed.set()

    server = await start_server(push_app(Handler()), threads=2)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
        await wait_for(closed.is_set)
    assert set(where) == {"on_open", "on_message", "on_close"}
    assert all(t is not loop_thread for t in where.values())


async def test_threads_still_run_async_callbacks_on_the_event_loop(start_server: Any) -> None:
    loop_thread = threading.current_thread()
    where: list[threading.Thread] = []

    class Handler:
        async def on_open(self, client: Any) -> None:
            where.append(threading.current_thread())
            client.close()

    server = await start_server(push_app(Handler()), threads=2)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    assert where == [loop_thread]


async def test_slow_plain_callback_is_logged(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    class Slow:
        def on_open(self, client: Any) -> None:
            time.sleep(0.1)
            client.close()

    server = await start_server(push_app(Slow()), slow_callback=0.05)
    caplog.set_level(logging.WARNING, logger="trio_push")
    with trio.fail_after(TIMEOUT):
        ws = await RawWebSocket.open(server.port)
        assert await ws.close_code() == 1000
    assert "on_open" in caplog.text
    await ws.aclose()
