"""The command line: ``python -m trio_push`` and the ``trio-push`` script."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.helpers.procs import MODULE, SCRIPT, cli, run_cli
from tests.helpers.server import TIMEOUT, get_text, http_client


async def test_serves_a_class_instantiated(app_dir: Path) -> None:
    async with cli(MODULE, app_dir, "pushapp:Listen") as server:
        assert await get_text(server.url + "/") == "from class"


async def test_serves_an_instance(app_dir: Path) -> None:
    async with cli([str(SCRIPT)], app_dir, "pushapp:instance") as server:
        assert await get_text(server.url + "/") == "from instance"


async def test_serves_a_function(app_dir: Path) -> None:
    async with cli([str(SCRIPT)], app_dir, "pushapp:function") as server:
        assert await get_text(server.url + "/") == "from function"


async def test_console_script_serves_websockets(app_dir: Path) -> None:
    async with cli([str(SCRIPT)], app_dir, "pushapp:Listen") as server:
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send_message("ping?")
                assert await ws.get_message() == "ping?"


async def test_root_serves_static_files(app_dir: Path) -> None:
    (app_dir / "public").mkdir()
    (app_dir / "public" / "page.html").write_text("static!")
    async with cli(MODULE, app_dir, "pushapp:function", "--root", "public") as server:
        assert await get_text(server.url + "/page.html") == "static!"
        assert await get_text(server.url + "/other") == "from function"


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


async def test_unknown_module_is_a_one_line_error(app_dir: Path) -> None:
    result = await run_cli(MODULE, app_dir, "no_such_module:app", "--port", "0")
    assert_one_line_error(result, "no_such_module")


async def test_missing_attribute_is_a_one_line_error(app_dir: Path) -> None:
    result = await run_cli([str(SCRIPT)], app_dir, "pushapp:nothing_here", "--port", "0")
    assert_one_line_error(result, "nothing_here")


async def test_port_in_use_is_a_one_line_error(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli(MODULE, app_dir, "pushapp:function", "--port", str(port))
    assert_one_line_error(result, str(port), "in use")


async def test_missing_root_folder_is_a_one_line_error(app_dir: Path) -> None:
    result = await run_cli(
        MODULE, app_dir, "pushapp:function", "--root", "no-such-dir", "--port", "0"
    )
    assert_one_line_error(result, "no-such-dir")


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


async def test_access_log_has_one_line_per_request(app_dir: Path) -> None:
    async with cli(MODULE, app_dir, "pushapp:Listen") as server:
        async with http_client() as http:
            for path in ("/a", "/b", "/c"):
                await http.get(server.url + path)
        server.proc.send_signal(signal.SIGINT)
        await server.wait()
    for path in ("/a", "/b", "/c"):
        lines = [line for line in server.stderr.splitlines() if f"GET {path} " in line]
        assert len(lines) == 1, server.stderr
        assert " 200" in lines[0]


async def test_access_log_has_push_open_and_close_with_duration_and_counts(
    app_dir: Path,
) -> None:
    async with cli(MODULE, app_dir, "pushapp:Listen") as server:
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/live") as ws:
                for text in ("one", "two"):
                    await ws.send_message(text)
                    assert await ws.get_message() == text
            # The close line is written once the server has seen the close.
            while "closed" not in server.stderr:
                await trio.sleep(0.02)
        server.proc.send_signal(signal.SIGINT)
        await server.wait()
    lines = [line for line in server.stderr.splitlines() if "/live" in line]
    assert len(lines) == 2, server.stderr
    opened, closed = lines
    assert "websocket" in opened and "open" in opened
    assert "websocket" in closed
    assert re.search(r"closed after \d+(\.\d+)?s", closed), closed
    assert re.search(r"\b2 in\b", closed), closed
    assert re.search(r"\b2 out\b", closed), closed


async def test_threads_option_is_accepted(app_dir: Path) -> None:
    async with cli(MODULE, app_dir, "pushapp:function", "--threads", "2") as server:
        assert await get_text(server.url + "/") == "from function"


def test_help_lists_the_options() -> None:
    result = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert result.returncode == 0
    for option in ("--host", "--port", "--root", "--threads", "--log-level"):
        assert option in result.stdout
