"""examples/asyncio_clock.py: the protocol core driven by asyncio, checked
from the outside with real clients (websockets, httpx, headless Chromium)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers import browser
from tests.helpers.procs import ROOT, free_port

EXAMPLE = ROOT / "examples" / "asyncio_clock.py"
CLOCK = ROOT / "examples" / "clock"
TIME = re.compile(r"\d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("asyncio_clock") / "server.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the example exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the example never listened:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _time(text: str | bytes) -> str:
    assert isinstance(text, str) and TIME.fullmatch(text), f"not a HH:MM:SS time: {text!r}"
    return text


def test_serves_the_clock_pages(base_url: str) -> None:
    for name in ("websocket.html", "sse.html"):
        response = httpx.get(f"http://{base_url}/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.content == (CLOCK / name).read_bytes()
    assert httpx.get(f"http://{base_url}/nothing-here").status_code == 404
    head = httpx.head(f"http://{base_url}/sse.html")
    assert head.status_code == 200 and head.content == b""


def test_websocket_pushes_the_time_and_echoes(base_url: str) -> None:
    with connect(f"ws://{base_url}/listen", open_timeout=5) as ws:
        first = _time(ws.recv(timeout=3))
        second = _time(ws.recv(timeout=3))
        assert second != first
        ws.send("hello")
        # The clock keeps ticking: the echo comes among the times.
        for _ in range(5):
            message = ws.recv(timeout=3)
            if message == "echo: hello":
                break
            _time(message)
        else:
            pytest.fail("no 'echo: hello' came back")


def test_sse_pushes_the_time(base_url: str) -> None:
    headers = {"accept": "text/event-stream"}
    with httpx.stream("GET", f"http://{base_url}/sse", headers=headers, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        events: list[str] = []
        while len(events) < 2:
            block = []
            for line in lines:
                if not line:
                    break
                block.append(line)
            assert block[0] == "event: msg", block
            assert block[1].startswith("data: "), block
            events.append(_time(block[1].removeprefix("data: ")))
        assert events[0] != events[1]


def test_websocket_page_in_chromium(base_url: str) -> None:
    with browser.browser() as driver:
        driver.get(f"http://{base_url}/websocket.html")
        browser.wait_for_text(driver, "status", lambda t: t == "connected")
        first = browser.wait_for_text(driver, "message", lambda t: bool(TIME.fullmatch(t)))
        browser.wait_for_text(driver, "message", lambda t: bool(TIME.fullmatch(t)) and t != first)
        browser.send_ws_from_page(driver, "from chromium")
        browser.wait_for_text(driver, "message", lambda t: t == "echo: from chromium")


def test_sse_page_in_chromium(base_url: str) -> None:
    with browser.browser() as driver:
        driver.get(f"http://{base_url}/sse.html")
        browser.wait_for_text(driver, "status", lambda t: t == "connected")
        first = browser.wait_for_text(driver, "message", lambda t: bool(TIME.fullmatch(t)))
        browser.wait_for_text(driver, "message", lambda t: bool(TIME.fullmatch(t)) and t != first)
