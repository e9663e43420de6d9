"""Starting and stopping the server; plain and async apps; worker threads."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.exceptions import ConnectionClosed as WSClosed

import trio_push
from tests.helpers.procs import free_port
from tests.helpers.server import (
    TIMEOUT,
    Recorder,
    http_client,
    in_thread,
    push_app,
    read_all,
    wait_for,
    ws_connect,
)


async def test_serve_on_port_0_reports_the_listening_server(start_server: Any) -> None:
    server = await start_server(push_app(Recorder()))
    assert isinstance(server, trio_push.Server)
    assert server.port > 0
    async with http_client() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert response.text == "hello"


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
