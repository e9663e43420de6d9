"""FastAPI and Starlette apps served by trio-push (ASGI), driven by httpx,
websockets and Chromium: JSON routes, bodies, streamed responses,
sse-starlette, WebSocket echo with a subprotocol, a denial, lifespan, push
through the extension across two workers, asyncio-only code with
redis.asyncio."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from httpx_sse import connect_sse
from websockets.sync.client import connect

from tests.helpers.browser import browser, chromium_available, wait_for_text
from tests.helpers.procs import ROOT, vm_rss_kib
from tests.helpers.pubsub import APPS, RedisServer, ServerProcess
from tests.helpers.server import TIMEOUT


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def fastapi(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[str, ServerProcess, Path]]:
    notes = tmp_path_factory.mktemp("lifespan") / "lifespan.txt"
    os.environ["LIFESPAN_FILE"] = str(notes)
    os.environ["REDIS_URL"] = redis_server.url
    try:
        process = ServerProcess("asgi_fastapi:app", "--interface", "asgi")
    finally:
        del os.environ["LIFESPAN_FILE"], os.environ["REDIS_URL"]
    try:
        yield f"http://127.0.0.1:{process.port}", process, notes
    finally:
        process.stop()


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def starlette(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerProcess]]:
    process = ServerProcess(
        "asgi_starlette:app", "--asgi-loop", request.param, "--root-path", "/api"
    )
    try:
        yield f"http://127.0.0.1:{process.port}", process
    finally:
        process.stop()


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


# -- FastAPI ---------------------------------------------------------------------


def test_fastapi_json_body_and_stream(fastapi: tuple[str, ServerProcess, Path]) -> None:
    base, _, _ = fastapi
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        assert http.get("/json").json() == {"hello": "world", "started": "yes", "path": "/json"}
        assert http.get("/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x"}
        assert http.get("/items/nope").status_code == 422
        assert http.post("/echo", content=b"hello body").text == "10:hello body"
        big = os.urandom(900_000)  # under max_body_size (1 MiB)
        pieces = [big[i : i + 65536] for i in range(0, len(big), 65536)]
        upload = http.post("/upload", content=iter(pieces))
        assert upload.json()["size"] == len(big)
        assert upload.json()["chunks"] > 1
        with http.stream("GET", "/stream", params={"n": 50}) as response:
            lines = list(response.iter_lines())
        assert lines == [f"row {i}" for i in range(50)]
        assert http.get("/asyncio").json() == {"got": [0, 1, 2], "loop": "uvloop"}
    with httpx.Client(base_url=base, http1=False, http2=True, timeout=TIMEOUT) as h2:
        response = h2.get("/json")
        assert response.http_version == "HTTP/2" and response.json()["hello"] == "world"


def test_fastapi_sse_starlette(fastapi: tuple[str, ServerProcess, Path]) -> None:
    base, _, _ = fastapi
    with httpx.Client(timeout=TIMEOUT) as http, connect_sse(http, "GET", base + "/sse?n=3") as src:
        events = [(e.event, e.data, e.id) for e in src.iter_sse()]
    assert events == [("tick", f"tick {i}", str(i)) for i in range(3)]


def test_fastapi_websocket_echo_denial_and_close(fastapi: tuple[str, ServerProcess, Path]) -> None:
    base, _, _ = fastapi
    with connect(ws_url(base, "/ws"), subprotocols=["other", "echo"], open_timeout=TIMEOUT) as ws:
        assert ws.subprotocol == "echo"
        ws.send("hi")
        assert ws.recv(TIMEOUT) == "hi"
        ws.send(b"\x01" * 65536)
        assert ws.recv(TIMEOUT) == b"\x01" * 65536
        ws.send("close")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert closed.value.rcvd.reason == "asked to"
    with pytest.raises(websockets.InvalidStatus) as denied:
        connect(ws_url(base, "/denied"), open_timeout=TIMEOUT)
    assert denied.value.response.status_code == 401
    assert denied.value.response.body == b"no entry"
    with pytest.raises(websockets.InvalidStatus) as refused:
        connect(ws_url(base, "/refused"), open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403


def test_fastapi_error_is_500_and_the_server_lives(
    fastapi: tuple[str, ServerProcess, Path],
) -> None:
    base, process, _ = fastapi
    assert httpx.get(base + "/boom", timeout=TIMEOUT).status_code == 500
    wait_until(lambda: "ValueError: boom" in process.log())
    assert httpx.get(base + "/json", timeout=TIMEOUT).status_code == 200


def test_fastapi_redis_asyncio(
    fastapi: tuple[str, ServerProcess, Path], redis_server: RedisServer
) -> None:
    base, _, _ = fastapi
    assert httpx.get(base + "/redis", params={"key": "asgi"}, timeout=TIMEOUT).json() == {
        "value": "v1"
    }
    assert redis_server.call("GET", "asgi") == b"v1"


def test_fastapi_push_and_publish(fastapi: tuple[str, ServerProcess, Path]) -> None:
    base, _, _ = fastapi
    got: list[str] = []
    subscribed = threading.Event()

    def listen_sse() -> None:
        with (
            httpx.Client(timeout=TIMEOUT) as http,
            connect_sse(http, "GET", base + "/push/news") as src,
        ):
            for event in src.iter_sse():
                if event.data.startswith("pid "):
                    subscribed.set()
                else:
                    got.append(event.data)
                    return

    thread = threading.Thread(target=listen_sse)
    thread.start()
    with connect(ws_url(base, "/push/news"), open_timeout=TIMEOUT) as ws:
        assert str(ws.recv(TIMEOUT)).startswith("pid ")
        assert subscribed.wait(TIMEOUT)
        published = httpx.post(base + "/publish/news", content="breaking", timeout=TIMEOUT)
        assert published.json()["published"] is True
        assert ws.recv(TIMEOUT) == "breaking"
    thread.join(TIMEOUT)
    assert got == ["breaking"]


@pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium and chromedriver")
def test_fastapi_in_chromium(fastapi: tuple[str, ServerProcess, Path]) -> None:
    base, _, _ = fastapi
    with browser() as driver:
        driver.get(base + "/page")
        wait_for_text(driver, "ws", lambda text: text == "echo:hello from the page")
        wait_for_text(driver, "sse", lambda text: text == "tick 0,tick 1")


def test_fastapi_lifespan_runs_and_fails_clearly(fastapi: tuple[str, ServerProcess, Path]) -> None:
    _, process, notes = fastapi
    assert notes.read_text() == "startup\n"
    env = {**os.environ, "LIFESPAN_FAIL": "1", "PYTHONPATH": str(ROOT)}
    failed = subprocess.run(
        [sys.executable, "-m", "trio_push", "asgi_fastapi:app", "--port", "0"],
        cwd=APPS,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert failed.returncode == 3
    assert "RuntimeError: no database" in failed.stderr
    assert "listening" not in failed.stderr


def test_a_lifespan_failure_under_workers_stops_the_supervisor(redis: RedisServer) -> None:
    """Every worker would fail the same way: the supervisor stops them all
    with status 3, instead of restarting them one after another."""
    env = {**os.environ, "LIFESPAN_FAIL": "1", "PYTHONPATH": str(ROOT)}
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "trio_push",
            "asgi_fastapi:app",
            "--port",
            "0",
            "--workers",
            "2",
            "--redis",
            redis.url,
        ],
        cwd=APPS,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert failed.returncode == 3, failed.stderr
    assert "says its app failed to start; stopping" in failed.stderr
    assert "restarting in" not in failed.stderr


def test_fastapi_lifespan_shutdown_after_the_connections(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    notes = tmp_path / "lifespan.txt"
    os.environ["LIFESPAN_FILE"] = str(notes)
    try:
        process = ServerProcess("asgi_fastapi:app", "--drain-timeout", "5")
    finally:
        del os.environ["LIFESPAN_FILE"]
    try:
        base = f"http://127.0.0.1:{process.port}"
        with connect(ws_url(base, "/ws"), open_timeout=TIMEOUT) as ws:
            ws.send("x")
            assert ws.recv(TIMEOUT) == "x"
            process.process.terminate()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        assert process.stop() == 0
    assert notes.read_text() == "startup\nshutdown\n"
    log = process.log()
    assert log.index("websocket /ws closed") < log.index("lifespan: shutdown")


def test_fastapi_never_reading_client_holds_no_memory(
    fastapi: tuple[str, ServerProcess, Path],
) -> None:
    """A FastAPI endpoint sends 64 KiB messages as fast as it may to a
    client that never reads: its sends wait, so the server's memory does
    not grow with what it tries to send (without backpressure it would be
    gigabytes in these seconds); when the client goes, the sends stop."""
    base, process, _ = fastapi
    pid = process.process.pid
    before = vm_rss_kib(pid)
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            b"GET /flood HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        peak = before
        for _ in range(30):  # 3 s of the app sending into a full socket
            time.sleep(0.1)
            peak = max(peak, vm_rss_kib(pid))
    wait_until(lambda: "flood: stopped after" in process.log())
    sends = int(re.search(r"flood: stopped after (\d+) sends", process.log()).group(1))
    # The queue bound (4 MiB) and the sockets' buffers, not 3 s of sending.
    assert sends * 65536 < 32 * 1024 * 1024, sends
    assert peak - before < 48 * 1024, (before, peak)


# -- push across workers ---------------------------------------------------------


def test_push_reaches_subscribers_on_two_workers(redis_server: RedisServer) -> None:
    process = ServerProcess("asgi_fastapi:app", "--workers", "2", "--redis", redis_server.url)
    try:
        wait_until(lambda: process.log().count("ready, pid") == 2)
        base = f"http://127.0.0.1:{process.port}"
        clients = []
        pids: set[str] = set()
        with contextlib.ExitStack() as stack:
            for _ in range(40):
                ws = stack.enter_context(connect(ws_url(base, "/push/room"), open_timeout=TIMEOUT))
                clients.append(ws)
                pids.add(str(ws.recv(TIMEOUT)))
                if len(pids) == 2 and len(clients) >= 4:
                    break
            assert len(pids) == 2, "every connection went to one worker"
            published = httpx.post(base + "/publish/room", content="to all", timeout=TIMEOUT)
            assert published.json()["published"] is True
            assert [ws.recv(TIMEOUT) for ws in clients] == ["to all"] * len(clients)
    finally:
        process.stop()


# -- Starlette ---------------------------------------------------------------------


def test_starlette(starlette: tuple[str, ServerProcess]) -> None:
    base, process = starlette
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        assert http.get("/json").json() == {"greeting": "hi", "root_path": "/api"}
        assert http.post("/echo", content=b"abc").text == "cba"
        assert http.get("/stream").text == "part 0\npart 1\npart 2\n"
        with connect_sse(http, "GET", "/sse") as src:
            assert [e.data for e in src.iter_sse()] == ["event 0", "event 1"]
    with connect(ws_url(base, "/ws"), subprotocols=["echo"], open_timeout=TIMEOUT) as ws:
        assert ws.subprotocol == "echo"
        ws.send("shout")
        assert ws.recv(TIMEOUT) == "SHOUT"
    with pytest.raises(websockets.InvalidStatus) as denied:
        connect(ws_url(base, "/denied"), open_timeout=TIMEOUT)
    assert denied.value.response.status_code == 403
    with connect(ws_url(base, "/push/echo"), open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"n": 1}))
        assert json.loads(ws.recv(TIMEOUT)) == {"n": 1}
    assert "lifespan: startup" in process.log()
