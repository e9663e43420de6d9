"""Graceful shutdown: on_shutdown, 1001, in-flight requests; Server.start/stop;
the app's background task."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import trio_push
from tests.helpers.server import TIMEOUT, Recorder, http_client, push_app, wait_for


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
