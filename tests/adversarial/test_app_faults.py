"""Faults in the app: exceptions (500, 1011) and callables that hold the
event loop (logged once, by name)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosedError

from tests.helpers.frames import Bystander
from tests.helpers.server import (
    Echo,
    echo_app,
    exchange,
    in_thread,
    status_line,
    wait_for,
    ws_connect,
)

SECRET = "secret-detail-7f3a"


def faulty_app(env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError(f"{SECRET} in the app")
    if path == "/raise-async":
        return _raise_async()
    if path == "/bad-return":
        return "not a response"
    if path == "/bad-status":
        return "abc", {}, b""
    if path == "/bad-body":
        return 200, {}, 12345
    if path == "/raise-in-stream":

        def body() -> Any:
            yield b"first part "
            raise RuntimeError(SECRET)

        return 200, {}, body()
    return echo_app(Echo())(env)


async def _raise_async() -> Any:
    await trio.sleep(0)
    raise KeyError(SECRET)


@pytest.mark.parametrize(
    "path", ["/raise", "/raise-async", "/bad-return", "/bad-status", "/bad-body"]
)
async def test_app_fault_gives_500_without_a_traceback(
    start_server: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(faulty_app)
    bystander = await Bystander.open(server.port)
    with caplog.at_level(logging.ERROR, logger="trio_push"):
        response = await exchange(
            server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
    assert status_line(response) == 500, response
    assert b"Traceback" not in response
    assert SECRET.encode() not in response
    assert b".py" not in response
    # The traceback goes to the log instead.
    assert any(r.exc_info for r in caplog.records), caplog.text
    await bystander.check()
    await bystander.aclose()


async def test_fault_in_a_streamed_body_cuts_the_response(start_server: Any) -> None:
    # The head is out already: the only honest signal left is an incomplete
    # chunked body, never a clean end.
    server = await start_server(faulty_app)
    bystander = await Bystander.open(server.port)
    response = await exchange(
        server.port, b"GET /raise-in-stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_line(response) == 200
    assert b"first part" in response
    assert not response.endswith(b"0\r\n\r\n")
    assert SECRET.encode() not in response
    await bystander.check()
    await bystander.aclose()


class Faulty:
    def __init__(self) -> None:
        self.closed = 0

    def on_message(self, client: Any, data: Any) -> None:
        if data == "boom":
            raise ValueError(SECRET)
        client.write(data)

    def on_close(self, client: Any) -> None:
        self.closed += 1


async def test_callback_exception_closes_with_1011(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Faulty()
    server = await start_server(echo_app(handler))
    bystander = await Bystander.open(server.port)

    def talk() -> Any:
        with ws_connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            ws.send("fine")
            assert ws.recv() == "fine"
            ws.send("boom")
            try:
                ws.recv()
            except ConnectionClosedError as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason
        return None

    with caplog.at_level(logging.ERROR, logger="trio_push"):
        code, reason = await in_thread(talk)
    assert code == 1011
    assert SECRET not in reason
    await wait_for(lambda: handler.closed == 1)
    assert any(r.exc_info and SECRET in str(r.exc_info[1]) for r in caplog.records)
    await bystander.check()
    await bystander.aclose()


async def test_slow_sync_callback_is_logged_once_with_its_name(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class SlowHandler:
        def on_message(self, client: Any, data: Any) -> None:
            time.sleep(0.3)
            client.write(data)

    server = await start_server(echo_app(SlowHandler()), slow_callback=0.1)

    def talk() -> list[Any]:
        with ws_connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            out = []
            for text in ("one", "two", "three"):
                ws.send(text)
                out.append(ws.recv())
            return out

    with caplog.at_level(logging.WARNING, logger="trio_push"):
        assert await in_thread(talk) == ["one", "two", "three"]
    slow = [r.getMessage() for r in caplog.records if "held the event loop" in r.getMessage()]
    assert len(slow) == 1, slow
    assert "SlowHandler.on_message" in slow[0]


async def test_fast_sync_callback_is_not_logged(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class QuickHandler:
        def on_message(self, client: Any, data: Any) -> None:
            time.sleep(0.01)
            client.write(data)

    server = await start_server(echo_app(QuickHandler()), slow_callback=0.2)

    def talk() -> Any:
        with ws_connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            ws.send("x")
            return ws.recv()

    with caplog.at_level(logging.WARNING, logger="trio_push"):
        assert await in_thread(talk) == "x"
    assert not [r for r in caplog.records if "held the event loop" in r.getMessage()]


async def test_slow_sync_app_is_logged_once_with_its_name(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def sluggish_app(env: dict[str, Any]) -> Any:
        time.sleep(0.25)
        return 200, {"content-length": "2"}, b"ok"

    server = await start_server(sluggish_app, slow_callback=0.1)
    with caplog.at_level(logging.WARNING, logger="trio_push"):
        for _ in range(2):
            response = await exchange(
                server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert response.endswith(b"ok")
    slow = [r.getMessage() for r in caplog.records if "held the event loop" in r.getMessage()]
    assert len(slow) == 1, slow
    assert "sluggish_app" in slow[0]
