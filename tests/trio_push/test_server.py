"""The server: serve, start and stop, the app's background task; and graceful
shutdown, however it comes (cancelling serve, ``stop()``, SIGINT or SIGTERM to
the CLI or to ``trio.run(serve, ...)``): on_shutdown, 1001, in-flight requests,
refused newcomers, exactly one on_close for every on_open at the drain
deadline, a bounded drain under load (1,000 push clients, 10 of which never
read), and a second SIGINT that stops at once."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.exceptions import ConnectionClosed as WSClosed

import trio_push
from tests.helpers.frames import CLOSE, parse_frames
from tests.helpers.procs import MODULE, cli, free_port, running
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    Recorder,
    connect,
    exchange,
    get_text,
    http_client,
    in_thread,
    push_app,
    read_all,
    read_until,
    wait_for,
    ws_connect,
    ws_handshake,
)

# -- serve, start and stop -------------------------------------------------------------


async def test_serve_on_port_0_reports_the_listening_server(start_server: Any) -> None:
    server = await start_server(push_app(Recorder()))
    assert isinstance(server, trio_push.Server)
    assert server.port > 0
    async with http_client() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert response.text == "hello"


def test_server_start_and_stop_from_a_plain_script() -> None:
    # No Trio here: start() serves on a thread of its own.
    server = trio_push.Server(lambda env: (200, {}, b"threaded"), 0, drain_timeout=2.0)
    server.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT, trust_env=False)
        assert response.text == "threaded"
    finally:
        server.stop()
        server.join(TIMEOUT)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT, trust_env=False)


def test_server_start_raises_for_a_port_in_use() -> None:
    first = trio_push.Server(lambda env: (200, {}, b""), 0)
    first.start()
    try:
        second = trio_push.Server(lambda env: (200, {}, b""), first.port)
        with pytest.raises(OSError):
            second.start()
    finally:
        first.stop()
        first.join(TIMEOUT)


async def test_background_task_runs_on_the_event_loop(start_server: Any) -> None:
    loop_thread = threading.current_thread()
    where: list[threading.Thread] = []

    class App:
        def __init__(self) -> None:
            self.clients: list[Any] = []

        def call(self, env: dict[str, Any]) -> Any:
            env["rack.upgrade"] = self
            return 200, {}, b""

        def on_open(self, client: Any) -> None:
            self.clients.append(client)

        async def background(self) -> None:
            where.append(threading.current_thread())
            n = 0
            while True:
                for c in self.clients:
                    c.write(f"tick {n}")
                n += 1
                await trio.sleep(0.01)

    server = await start_server(App())
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            first = await ws.get_message()
            second = await ws.get_message()
    assert first.startswith("tick ") and second.startswith("tick ")
    assert where == [loop_thread]


# -- graceful shutdown: on_shutdown, 1001, in-flight requests, newcomers ---------------


class Goodbye(Recorder):
    def on_shutdown(self, client: Any) -> None:
        self.events.append(("shutdown", client.open))
        client.write("server going down")


async def test_on_shutdown_runs_with_the_client_open_then_closes_1001(serve_scope: Any) -> None:
    handler = Goodbye()
    server, scope, done = await serve_scope(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await handler.opened.wait()
            scope.cancel()
            last = await ws.get_message()
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        await done.wait()
    assert last == "server going down"
    assert info.value.reason.code == 1001
    events = [e for e in handler.events if e[0] != "drained"]
    assert events == [("open", None), ("shutdown", True), ("close", None)]


async def test_on_shutdown_write_reaches_an_sse_client_then_the_stream_ends(
    serve_scope: Any,
) -> None:
    from httpx_sse import aconnect_sse

    handler = Goodbye()
    server, scope, done = await serve_scope(push_app(handler))
    got = []
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            await handler.opened.wait()
            scope.cancel()
            async for event in es.aiter_sse():
                got.append(event.data)
        await done.wait()
    assert got == ["server going down"]
    assert [n for n in handler.names() if n != "drained"] == ["open", "shutdown", "close"]


async def test_on_shutdown_in_a_worker_thread_writes_before_the_1001(serve_scope: Any) -> None:
    handler = Goodbye()
    server, scope, done = await serve_scope(push_app(handler), threads=2)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await handler.opened.wait()
            scope.cancel()
            last = await ws.get_message()
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        await done.wait()
    assert last == "server going down"
    assert info.value.reason.code == 1001


async def test_in_flight_request_finishes_during_shutdown(serve_scope: Any) -> None:
    started = trio.Event()

    async def app(env: dict[str, Any]) -> Any:
        started.set()
        await trio.sleep(0.2)
        return 200, {}, b"finished anyway"

    server, scope, done = await serve_scope(app)
    with trio.fail_after(TIMEOUT):
        async with http_client() as http, trio.open_nursery() as nursery:
            result: list[httpx.Response] = []

            async def get() -> None:
                result.append(await http.get(f"http://127.0.0.1:{server.port}/"))

            nursery.start_soon(get)
            await started.wait()
            scope.cancel()
        await done.wait()
    assert result[0].status_code == 200
    assert result[0].text == "finished anyway"


async def test_upgrade_accepted_during_shutdown_is_shut_down_too(serve_scope: Any) -> None:
    # The app is still deciding when the shutdown starts; it then accepts.
    handler = Goodbye()
    deciding = trio.Event()

    async def app(env: dict[str, Any]) -> Any:
        deciding.set()
        await trio.sleep(0.2)
        env["rack.upgrade"] = handler
        return 200, {}, b""

    server, scope, done = await serve_scope(app, drain_timeout=5.0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            codes: list[int] = []

            async def client() -> None:
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                    try:
                        while True:
                            await ws.get_message()
                    except ConnectionClosed as exc:
                        codes.append(exc.reason.code)

            nursery.start_soon(client)
            await deciding.wait()
            scope.cancel()
            with trio.fail_after(2.0):  # well before the 5 s drain timeout
                await done.wait()
    assert codes == [1001]
    assert [n for n in handler.names() if n != "drained"] == ["open", "shutdown", "close"]


async def test_new_connections_are_refused_once_stopping(serve_scope: Any) -> None:
    handler = Recorder()
    server, scope, done = await serve_scope(push_app(handler))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/"):
            await handler.opened.wait()
            scope.cancel()
            await wait_for(lambda: server.stopping)
            await trio.sleep(0.05)
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", server.port)
        await done.wait()


async def test_cancelling_serve_closes_every_connection(serve_scope: Any) -> None:
    rec = Recorder()
    server, scope, done = await serve_scope(push_app(rec))
    url = f"ws://127.0.0.1:{server.port}/ws"
    seen: dict[str, Any] = {}

    async def trio_websocket_client() -> None:
        async with open_websocket_url(url) as ws:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                seen["trio-websocket"] = exc.reason.code

    def websockets_client() -> None:
        with ws_connect(url) as ws:
            try:
                ws.recv(timeout=TIMEOUT)
            except WSClosed as exc:
                seen["websockets"] = exc.rcvd.code if exc.rcvd else None

    async def sse_client() -> None:
        async with (
            http_client() as client,
            aconnect_sse(client, "GET", f"http://127.0.0.1:{server.port}/sse") as es,
        ):
            async for _ in es.aiter_sse():
                pass
            seen["sse"] = "ended"

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio_websocket_client)
            nursery.start_soon(in_thread, websockets_client)
            nursery.start_soon(sse_client)
            await wait_for(lambda: len(rec.clients) == 3)
            scope.cancel()
            await done.wait()
    assert seen == {"trio-websocket": 1001, "websockets": 1001, "sse": "ended"}


async def test_cancelling_serve_runs_on_close_for_every_client(serve_scope: Any) -> None:
    rec = Recorder()
    server, scope, done = await serve_scope(push_app(rec))

    async def client() -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(client)
            await wait_for(lambda: len(rec.clients) == 5)
            scope.cancel()
            await done.wait()
    assert rec.names().count("open") == 5
    assert rec.names().count("close") == 5
    assert all(not c.open for c in rec.clients)


async def test_cancelled_serve_stops_listening(serve_scope: Any) -> None:
    server, scope, done = await serve_scope(push_app(Recorder()))
    port = server.port
    scope.cancel()
    with trio.fail_after(TIMEOUT):
        await done.wait()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_cancelling_serve_closes_idle_keep_alive_connections(serve_scope: Any) -> None:
    server, scope, done = await serve_scope(push_app(Recorder()), idle_timeout=30)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await stream.receive_some(65536)
            scope.cancel()
            with trio.fail_after(1.0):  # not the 30 s idle timeout, nor the drain
                rest = await read_all(stream)
                await done.wait()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest == b""


# -- no callback lost at the drain deadline --------------------------------------------


class Counting:
    """Sync callbacks that take a while, as a database write would."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.opened: list[int] = []
        self.shut: list[int] = []
        self.closed: list[int] = []

    def on_open(self, client: trio_push.Client) -> None:
        with self.lock:
            self.opened.append(id(client))

    def on_shutdown(self, client: trio_push.Client) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.shut.append(id(client))

    def on_close(self, client: trio_push.Client) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.closed.append(id(client))


async def reader(port: int, codes: list[int | None], ready: trio.Semaphore) -> None:
    """A WebSocket client that reads until the server closes it."""
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            ready.release()
            while True:
                await ws.get_message()
    except ConnectionClosed as exc:
        codes.append(exc.reason.code)
    except OSError:
        codes.append(None)


async def stop_with_readers(
    server: trio_push.Server, done: trio.Event, n: int, opened: Callable[[], int]
) -> list[int | None]:
    """Connect ``n`` readers, stop the server once ``opened()`` counts them
    all, and wait for serve to return; the close code each reader got."""
    codes: list[int | None] = []
    ready = trio.Semaphore(0)
    async with trio.open_nursery() as clients:
        for _ in range(n):
            clients.start_soon(reader, server.port, codes, ready)
        with trio.fail_after(TIMEOUT):
            for _ in range(n):
                await ready.acquire()
            while opened() < n:
                await trio.sleep(0.01)
        server.stop()
        with trio.fail_after(TIMEOUT):
            await done.wait()
    return codes


async def test_every_on_open_gets_one_on_close_with_threads_at_the_drain_deadline(
    serve_scope: Any,
) -> None:
    # 300 x 20 ms of on_shutdown on 4 threads is 1.5 s: the 0.5 s drain
    # ends in the middle of them.
    n = 300
    handler = Counting(0.02)
    server, _, done = await serve_scope(
        push_app(handler), threads=4, drain_timeout=0.5, close_timeout=5.0
    )
    codes = await stop_with_readers(server, done, n, lambda: len(handler.opened))
    assert sorted(handler.closed) == sorted(handler.opened)
    assert len(set(handler.closed)) == n
    # The drain ended before every on_shutdown ran; those that ran, ran once.
    assert len(set(handler.shut)) == len(handler.shut) < n
    # Every client got its close frame, on time or at the deadline.
    assert codes == [1001] * n


class AsyncClose:
    def __init__(self) -> None:
        self.opened = 0
        self.finished = 0

    def on_open(self, client: trio_push.Client) -> None:
        self.opened += 1

    async def on_close(self, client: trio_push.Client) -> None:
        await trio.sleep(0.3)  # still awaiting when the drain ends
        self.finished += 1


async def test_an_async_on_close_still_awaiting_at_the_drain_deadline_finishes(
    serve_scope: Any,
) -> None:
    n = 50
    handler = AsyncClose()
    server, _, done = await serve_scope(push_app(handler), drain_timeout=0.1, close_timeout=5.0)
    await stop_with_readers(server, done, n, lambda: handler.opened)
    assert handler.finished == n


async def test_a_worker_thread_busy_past_the_bound_does_not_hold_the_exit(
    serve_scope: Any,
) -> None:
    finished = threading.Event()

    def app(env: dict[str, Any]) -> Any:
        time.sleep(2)
        finished.set()
        return 200, {"content-type": "text/plain"}, b"late answer"

    server, _, done = await serve_scope(app, threads=2, drain_timeout=0.3, close_timeout=0.3)
    async with trio.open_nursery() as nursery:
        answer: list[bytes] = []

        async def ask() -> None:
            answer.append(
                await exchange(
                    server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
            )

        nursery.start_soon(ask)
        await trio.sleep(0.2)  # the app is running in its thread
        server.stop()
        with trio.fail_after(TIMEOUT):
            await done.wait()
        # serve returned while the thread still works, and nothing it
        # answers later is sent.
        assert not finished.is_set()
    assert answer == [b""]
    await trio.to_thread.run_sync(finished.wait, TIMEOUT)
    await trio.sleep(0.1)
    assert answer == [b""]


async def test_a_websocket_opened_during_the_drain_still_gets_on_close(
    serve_scope: Any,
) -> None:
    handler = Counting(0.0)
    server, _, done = await serve_scope(push_app(handler), threads=2, drain_timeout=0.5)
    ws = await RawWebSocket.open(server.port)
    with trio.fail_after(TIMEOUT):
        while not handler.opened:
            await trio.sleep(0.01)
        server.stop()
        await ws.close_code()
        await done.wait()
    assert handler.closed == handler.opened
    await ws.aclose()


# -- under load: 1,000 push clients, 10 of which never read ----------------------------


MB = 1024 * 1024
DRAIN = 2.0
N_WS, N_SSE, N_STUCK = 958, 30, 10  # with one trio-websocket and one httpx-sse client: 1000
TOTAL = N_WS + N_SSE + N_STUCK + 2


class LastWord:
    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.shutdown: set[int] = set()
        self.closed: set[int] = set()
        self.order_ok = True

    def on_open(self, client: Any) -> None:
        self.clients.append(client)

    def on_shutdown(self, client: Any) -> None:
        # The client is still open here: a last word goes out before the 1001.
        self.shutdown.add(id(client))
        if not client.open or id(client) in self.closed:
            self.order_ok = False
        if client.env["PATH_INFO"] == "/last-word":
            client.write("bye")

    def on_close(self, client: Any) -> None:
        self.closed.add(id(client))


class Results:
    def __init__(self) -> None:
        self.ws_codes: list[int | None] = []
        self.ws_code_at: list[float] = []
        self.sse_ends: list[bytes] = []
        self.stopped_at = 0.0


async def open_raw(port: int, request: bytes, rcvbuf: int | None = None) -> Any:
    stream = await connect(port, rcvbuf)
    await stream.send_all(request)
    buf = bytearray()
    head = await read_until(stream, b"\r\n\r\n", buf)
    assert head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.1 200 ")), head
    return stream, buf


async def ws_reader(stream: trio.SocketStream, buf: bytearray, results: Results) -> None:
    """Read to the close frame, answer it, wait for the server's EOF."""
    code = None
    while True:
        for opcode, _fin, payload in parse_frames(buf):
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                results.ws_code_at.append(trio.current_time())
                mask = b"\0\0\0\0"
                await stream.send_all(bytes([0x88, 0x80 | len(payload[:2])]) + mask + payload[:2])
        if code is not None:
            break
        data = await stream.receive_some(65536)
        if not data:
            break
        buf += data
    results.ws_codes.append(code)
    with trio.move_on_after(DRAIN + 2):
        while await stream.receive_some(65536):
            pass
    await stream.aclose()


async def sse_reader(stream: trio.SocketStream, buf: bytearray, results: Results) -> None:
    data = bytes(buf)
    while chunk := await stream.receive_some(65536):
        data += chunk
    results.sse_ends.append(data[-5:])
    await stream.aclose()


async def trio_ws_client(port: int, results: Results, ready: trio.Event) -> None:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/last-word") as ws:
        ready.set()
        message = await ws.get_message()
        assert message == "bye"
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            results.ws_codes.append(exc.reason.code)
            results.ws_code_at.append(trio.current_time())


async def httpx_sse_client(port: int, results: Results, ready: trio.Event) -> None:
    url = f"http://127.0.0.1:{port}/last-word"
    async with http_client() as http, aconnect_sse(http, "GET", url) as source:
        ready.set()
        events = [event async for event in source.aiter_sse()]
    assert [e.data for e in events] == ["bye"]
    results.sse_ends.append(b"httpx")


@pytest.mark.parametrize("how", ["cancel", "stop"])
async def test_shutdown_with_1000_clients_and_10_that_never_read(
    serve_scope: Any, how: str
) -> None:
    handler = LastWord()
    server, scope, done = await serve_scope(
        push_app(handler), drain_timeout=DRAIN, max_queue_bytes=64 * MB, write_timeout=30.0
    )
    port = server.port
    results = Results()
    ws_request, _ = ws_handshake("/ws")
    sse_request = b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"

    async with trio.open_nursery() as clients:
        with trio.fail_after(30):
            # The ten that never read come first: fill every buffer between
            # the server's queue and them.
            stuck = []
            for _ in range(N_STUCK):
                stuck.append(await open_raw(port, ws_handshake("/stuck")[0], rcvbuf=4096))
            while len(handler.clients) < N_STUCK:
                await trio.sleep(0.01)
            for client in list(handler.clients):
                while True:
                    client.write(b"\0" * MB)
                    await trio.sleep(0.02)
                    if client.pending > 0:
                        await trio.sleep(0.1)
                        if client.pending > 0:
                            break
            assert all(c.pending > 0 and c.open for c in handler.clients)

            async def open_batch(request: bytes, reader: Any, count: int) -> None:
                async def one() -> None:
                    stream, buf = await open_raw(port, request)
                    clients.start_soon(reader, stream, buf, results)

                async with trio.open_nursery() as batch:
                    for _ in range(count):
                        batch.start_soon(one)

            for _ in range(N_WS // 100):
                await open_batch(ws_request, ws_reader, 100)
            await open_batch(ws_request, ws_reader, N_WS % 100)
            await open_batch(sse_request, sse_reader, N_SSE)
            ready = [trio.Event(), trio.Event()]
            clients.start_soon(trio_ws_client, port, results, ready[0])
            clients.start_soon(httpx_sse_client, port, results, ready[1])
            for event in ready:
                await event.wait()
            while len(handler.clients) < TOTAL:
                await trio.sleep(0.01)
        assert len(server.push_connections) == TOTAL
        assert not handler.shutdown and not handler.closed

        started = trio.current_time()
        if how == "cancel":
            scope.cancel()
        else:
            server.stop()
        with trio.fail_after(DRAIN + 5):
            await done.wait()
        elapsed = trio.current_time() - started
        # The client tasks are done or about to be.
        with trio.fail_after(5):
            while len(results.ws_codes) < N_WS + 1 or len(results.sse_ends) < N_SSE + 1:
                await trio.sleep(0.01)
        for stream, _buf in stuck:
            await stream.aclose()

    # Bounded: the drain, plus a second.
    assert elapsed <= DRAIN + 1.0, elapsed
    # It did wait for the ten that never read (they were not just dropped).
    assert elapsed >= DRAIN - 0.2, elapsed
    ids = {id(c) for c in handler.clients}
    assert handler.shutdown == ids, f"{len(ids - handler.shutdown)} got no on_shutdown"
    assert handler.closed == ids, f"{len(ids - handler.closed)} got no on_close"
    assert handler.order_ok
    assert results.ws_codes == [1001] * (N_WS + 1), sorted(set(map(str, results.ws_codes)))
    # Every reader had its 1001 long before the drain ran out.
    assert max(results.ws_code_at) - started < DRAIN - 0.5
    # Each raw SSE stream ended with the last chunk (a clean end, not a cut).
    assert results.sse_ends.count(b"0\r\n\r\n") == N_SSE, set(results.sse_ends)
    assert b"httpx" in results.sse_ends
    assert not server.connections


# -- signals: trio.run(serve, ...) and the CLI -----------------------------------------


async def test_trio_run_serve_app_port_serves_until_interrupted(tmp_path: Any) -> None:
    # The documented one-liner, in a process of its own so SIGINT can stop it.
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, trio, trio_push
            def app(env):
                return 200, {"content-type": "text/plain"}, b"one-liner"
            trio.run(trio_push.serve, app, int(sys.argv[1]))
            """
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    async with http_client() as client:
                        response = await client.get(f"http://127.0.0.1:{port}/")
                    break
                except httpx.ConnectError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    await trio.sleep(0.05)
        assert response.text == "one-liner"
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            while proc.poll() is None:
                await trio.sleep(0.02)
        # A graceful stop, as with the CLI: no KeyboardInterrupt traceback.
        assert proc.returncode == 0
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


async def test_sigint_stops_it_gracefully(app_dir: Path) -> None:
    async with cli(MODULE, app_dir, "pushapp:Listen") as server:
        assert await get_text(server.url + "/") == "from class"
        server.proc.send_signal(signal.SIGINT)
        assert await server.wait(5.0) == 0
    assert "Traceback" not in server.stderr
    with pytest.raises(httpx.ConnectError):
        await get_text(server.url + "/")


async def test_sigint_closes_open_websockets_with_1001(app_dir: Path) -> None:
    async with cli(MODULE, app_dir, "pushapp:Listen") as server:
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                server.proc.send_signal(signal.SIGINT)
                with pytest.raises(Exception) as info:
                    await ws.get_message()
                code = info.value.reason.code  # type: ignore[attr-defined]
        assert await server.wait(5.0) == 0
    assert code == 1001


FLOOD_APP = """
class Flood:
    def on_open(self, client):
        for _ in range(3):
            client.write(b"x" * (1024 * 1024))

def app(env):
    if env["rack.upgrade?"]:
        env["rack.upgrade"] = Flood()
        return 200, {}, b""
    return 200, {"content-length": "2"}, b"ok"
"""


async def _stuck_cli(tmp_path: Any, drain: float) -> Any:
    (tmp_path / "floodapp.py").write_text(FLOOD_APP)
    port = free_port()
    args = [sys.executable, "-m", "trio_push", "floodapp:app", "--port", str(port)]
    return args + ["--drain-timeout", str(drain)], port


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
async def test_cli_signal_shutdown_is_bounded_with_a_client_that_never_reads(
    tmp_path: Any, signum: str
) -> None:
    args, port = await _stuck_cli(tmp_path, 1.0)
    with running(args, cwd=tmp_path, port=port) as proc:
        stream, _buf = await open_raw(port, ws_handshake("/")[0], rcvbuf=4096)
        await trio.sleep(0.3)  # the flood fills the buffers
        started = trio.current_time()
        proc.send_signal(getattr(signal, signum))
        with trio.fail_after(5):
            while proc.poll() is None:
                await trio.sleep(0.02)
        elapsed = trio.current_time() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        await stream.aclose()
    assert proc.returncode == 0, output
    assert 0.8 <= elapsed <= 1.0 + 1.0, (elapsed, output)
    assert "did not close in time" in output


async def test_cli_second_sigint_stops_at_once(tmp_path: Any) -> None:
    args, port = await _stuck_cli(tmp_path, 30.0)
    with running(args, cwd=tmp_path, port=port) as proc:
        stream, _buf = await open_raw(port, ws_handshake("/")[0], rcvbuf=4096)
        await trio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        await trio.sleep(0.5)
        assert proc.poll() is None, "the first SIGINT must wait for the drain"
        started = trio.current_time()
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(5):
            while proc.poll() is None:
                await trio.sleep(0.02)
        elapsed = trio.current_time() - started
        output = proc.stdout.read().decode() if proc.stdout else ""
        await stream.aclose()
    assert elapsed < 1.0, (elapsed, output)
    assert "again" in output
