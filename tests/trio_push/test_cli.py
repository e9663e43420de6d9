"""The command line, each run as a user runs it (``python -m trio_push`` and the
``trio-push`` script): apps of each kind, static files, one-line errors, the
access log, ``--help``; then ``--reload``, ``--interface``, ``--threads``, an
app's ``background``, the access log's exact shape and switches, and the limit
flags. (SIGINT and the drain are in test_server.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.helpers.procs import APP_SOURCE, MODULE, SCRIPT, cli, free_port, run_cli, wait_listening
from tests.helpers.server import (
    TIMEOUT,
    RawWebSocket,
    get,
    get_text,
    http_client,
    in_thread,
    ws_connect,
)

# -- apps, errors, the access log, --help ----------------------------------------


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


# -- --reload -------------------------------------------------------------------

RELOAD_APP = """
def app(env):
    return 200, {{"content-type": "text/plain"}}, {body!r}
"""


def _descendants(pid: int) -> set[int]:
    """The pids of ``pid``'s children, grandchildren, ... (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; its parent has not reaped it yet


def _body_or_none(http: httpx.Client, url: str) -> bytes | None:
    """The body of GET ``url``, or None while nothing answers (restarting)."""
    try:
        response = http.get(url)
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    return response.content


def test_reload_serves_the_new_code_after_an_edit_and_sigint_ends_it(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "reloadapp.py"
    # v2's body has another length, so that a .pyc written in the same second
    # as the first version cannot pass for the new source (Python checks the
    # source's mtime, in whole seconds, and size).
    module.write_text(RELOAD_APP.format(body=b"v1"))
    port = free_port()
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(SCRIPT), "reloadapp:app", "--reload", "--port", str(port)],
            cwd=app_dir,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # so that its reloaded child can be found and ended
        )
    url = f"http://127.0.0.1:{port}/"
    children: set[int] = set()
    try:
        wait_listening(port, proc)
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            assert _body_or_none(http, url) == b"v1"
            first_children = _descendants(proc.pid)
            assert first_children, "--reload should serve from a child process"

            # The watcher starts right after the first child: an edit made
            # before it is ready would go unseen, so edit again now and then.
            deadline = time.monotonic() + 30
            body = None
            while body != b"version 2":
                assert time.monotonic() < deadline, (
                    f"still serving {body!r} 30 s after reloadapp.py changed:\n{log.read_text()}"
                )
                module.write_text(RELOAD_APP.format(body=b"version 2"))
                edited = time.monotonic()
                while body != b"version 2" and time.monotonic() - edited < 5:
                    time.sleep(0.1)
                    body = _body_or_none(http, url)
        assert "change(s) detected: restarting" in log.read_text()
        children = _descendants(proc.pid)
        # The new code runs in a new process, and the old one has ended.
        assert children - first_children, (first_children, children)
        assert first_children - children, (first_children, children)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0, log.read_text()
        gone = time.monotonic() + TIMEOUT
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < gone, f"the reloaded server outlived --reload: {children}"
            time.sleep(0.05)
        assert "Traceback" not in log.read_text()
        with pytest.raises(httpx.TransportError), httpx.Client(trust_env=False) as http:
            http.get(url, timeout=2.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- --interface ------------------------------------------------------------------

INTERFACE_APPS = textwrap.dedent(
    """
    import functools

    # WSGI, but start_response has a default: detected as push-style.
    def wsgi_with_default(environ, start_response=None):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi says ", environ["PATH_INFO"].encode()]

    # Push-style behind a decorator that hides the signature (*args, **kwargs):
    # detected as WSGI.
    def logged(fn):
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)
        return wrapper

    @logged
    def wrapped_push(env):
        return 200, {"content-type": "text/plain"}, "push says " + env["PATH_INFO"]

    # Plainly one or the other.
    def push(env):
        return 200, {"content-type": "text/plain"}, b"push"

    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi"]
    """
)


@pytest.fixture
def interface_dir(tmp_path: Path) -> Path:
    (tmp_path / "ifaces.py").write_text(INTERFACE_APPS)
    return tmp_path


@pytest.mark.parametrize(
    ("app", "forced", "expected"),
    [
        ("ifaces:wsgi_with_default", "wsgi", "wsgi says /here"),
        ("ifaces:wrapped_push", "push", "push says /here"),
    ],
)
async def test_interface_forces_what_detection_gets_wrong(
    interface_dir: Path, app: str, forced: str, expected: str
) -> None:
    # Detected the wrong way, the app fails (a 500, not a hang)...
    async with cli(MODULE, interface_dir, app) as server:
        detected = await get(server.url + "/here")
    assert detected.status_code == 500, detected.text
    # ... and served right once the interface is forced.
    async with cli(MODULE, interface_dir, app, "--interface", forced) as server:
        response = await get(server.url + "/here")
    assert response.status_code == 200, server.stderr
    assert response.text == expected


@pytest.mark.parametrize(
    ("app", "forced", "error"),
    [
        ("ifaces:push", "wsgi", "TypeError"),
        ("ifaces:wsgi", "push", "TypeError"),
    ],
)
async def test_a_wrong_forced_interface_is_a_500_with_the_error_logged(
    interface_dir: Path, app: str, forced: str, error: str
) -> None:
    async with cli(MODULE, interface_dir, app, "--interface", forced) as server:
        with trio.fail_after(TIMEOUT):
            # Every request fails the same way, and the server goes on.
            for _ in range(2):
                response = await get(server.url + "/")
                assert response.status_code == 500, response.text
                assert error not in response.text  # no traceback to the client
            while "500 Internal Server Error" not in server.stderr:
                await trio.sleep(0.02)
        stderr = server.stderr
    assert "error in app for GET / HTTP/1.1" in stderr, stderr
    assert error in stderr, stderr


# -- --threads --------------------------------------------------------------------

THREAD_APP = textwrap.dedent(
    """
    import threading

    class Names:
        def on_message(self, client, data):
            client.write(threading.current_thread().name)

    def app(env):
        if env["rack.upgrade?"]:
            env["rack.upgrade"] = Names()
            return 200, {}, b""
        return 200, {"content-type": "text/plain"}, threading.current_thread().name
    """
)


@pytest.mark.parametrize("threads", [None, "3"])
async def test_threads_runs_plain_app_and_callbacks_in_worker_threads(
    tmp_path: Path, threads: str | None
) -> None:
    (tmp_path / "threadapp.py").write_text(THREAD_APP)
    args = ["threadapp:app"] + (["--threads", threads] if threads else [])
    async with cli(MODULE, tmp_path, *args) as server:
        app_threads = {await get_text(server.url + "/") for _ in range(6)}
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
                callback_threads = set()
                for _ in range(6):
                    await ws.send_message("which thread?")
                    callback_threads.add(await ws.get_message())
    if threads is None:
        # Without --threads, plain callables run on the event loop's thread.
        assert app_threads == callback_threads == {"MainThread"}
    else:
        assert "MainThread" not in app_threads, app_threads
        assert "MainThread" not in callback_threads, callback_threads
        assert len(app_threads | callback_threads) <= int(threads)


# -- an app's background ------------------------------------------------------------

BACKGROUND_APP = textwrap.dedent(
    """
    import threading
    import trio

    class App:
        def __init__(self):
            self.ticks = 0
            self.thread = None

        async def background(self):
            self.thread = threading.current_thread().name
            while True:
                self.ticks += 1
                await trio.sleep(0.05)

        def call(self, env):
            body = f"ticks={self.ticks} thread={self.thread}"
            return 200, {"content-type": "text/plain"}, body
    """
)


async def test_the_cli_runs_the_apps_background_task(tmp_path: Path) -> None:
    (tmp_path / "bgapp.py").write_text(BACKGROUND_APP)
    async with cli(MODULE, tmp_path, "bgapp:App") as server:
        pattern = re.compile(r"ticks=(\d+) thread=(\S+)")
        with trio.fail_after(TIMEOUT):
            while True:
                match = pattern.fullmatch(await get_text(server.url + "/"))
                assert match, "unexpected body"
                if int(match[1]) >= 3:
                    break
                await trio.sleep(0.05)
        # It keeps running (on the event loop's thread), not just once.
        assert match[2] == "MainThread"
        ticks = int(match[1])
        await trio.sleep(0.3)
        later = pattern.fullmatch(await get_text(server.url + "/"))
        assert later and int(later[1]) > ticks


# -- the access log -------------------------------------------------------------------

LOG_APP = textwrap.dedent(
    """
    import logging

    def app(env):
        if env["PATH_INFO"] == "/warn":
            logging.getLogger("logapp").warning("the app warns")
        return 200, {"content-type": "text/plain"}, b"ok"
    """
)

ACCESS_LINE = re.compile(r'^INFO: +127\.0\.0\.1:\d+ - "GET /x HTTP/1\.1" 200 OK$')


async def _log_of(tmp_path: Path, *options: str) -> str:
    """Start the CLI, GET /x then /warn, stop it with SIGINT; its stderr."""
    (tmp_path / "logapp.py").write_text(LOG_APP)
    async with cli(MODULE, tmp_path, "logapp:app", *options) as server:
        assert await get_text(server.url + "/x") == "ok"
        assert await get_text(server.url + "/warn") == "ok"
        server.proc.send_signal(signal.SIGINT)
        assert await server.wait(TIMEOUT) == 0
        return server.stderr


async def test_access_log_line_has_uvicorns_shape(tmp_path: Path) -> None:
    stderr = await _log_of(tmp_path)
    lines = [line for line in stderr.splitlines() if "/x" in line]
    assert len(lines) == 1, stderr
    assert ACCESS_LINE.match(lines[0]), lines[0]
    assert re.search(r"^WARNING: +the app warns$", stderr, re.M), stderr


async def test_log_level_warning_hides_the_access_log(tmp_path: Path) -> None:
    stderr = await _log_of(tmp_path, "--log-level", "warning")
    assert "/x" not in stderr, stderr
    assert "INFO" not in stderr, stderr
    # Warnings still show: the log is on, only the level changed.
    assert re.search(r"^WARNING: +the app warns$", stderr, re.M), stderr


async def test_no_access_log_hides_the_access_log(tmp_path: Path) -> None:
    stderr = await _log_of(tmp_path, "--no-access-log")
    assert "/x" not in stderr and "/warn" not in stderr, stderr
    # The server's own info lines still show: only the access log is off.
    assert re.search(r"^INFO: +trio-push listening on http://127\.0\.0\.1:\d+$", stderr, re.M)
    assert re.search(r"^WARNING: +the app warns$", stderr, re.M), stderr


# -- limit flags ------------------------------------------------------------------


async def admitted(port: int) -> RawWebSocket:
    """A WebSocket, once the server admits it: the connection that found the
    server listening may still count toward --max-connections for a moment."""
    while True:
        try:
            return await RawWebSocket.open(port)
        except AssertionError:  # 503: not admitted yet
            await trio.sleep(0.05)


async def test_limit_flags_reach_the_server(tmp_path: Path) -> None:
    (tmp_path / "pushapp.py").write_text(APP_SOURCE)
    flags = ["--max-connections", "2", "--ping-interval", "0.2", "--max-message-size", "16"]
    async with cli(MODULE, tmp_path, "pushapp:Listen", *flags, "--compression") as running:
        with trio.fail_after(TIMEOUT):
            first = await admitted(running.port)
            second = await admitted(running.port)
        # --max-connections 2: a third connection gets 503.
        async with http_client() as http:
            assert (await http.get(running.url)).status_code == 503
        # --ping-interval 0.2: an idle WebSocket gets pings.
        with trio.fail_after(TIMEOUT):
            while first.pings < 2:
                await first._pump()
            # --max-message-size 16: 16 bytes are a message, 17 close with 1009.
            await first.send("x" * 16)
            assert await first.messages(1) == ["x" * 16]
            await first.send("x" * 17)
            assert await first.close_code() == 1009
        await first.aclose()
        await second.aclose()

        # --compression: websockets' client offers permessage-deflate, and gets it.
        def agreed() -> list[str]:
            with ws_connect(f"ws://127.0.0.1:{running.port}/") as ws:
                ws.send("hello")
                assert ws.recv(timeout=TIMEOUT) == "hello"
                return [extension.name for extension in ws.protocol.extensions]

        # The closed ones may not be let go yet (503): wait until a request is
        # served (its connection closed with its client), then connect. (A 503
        # during websockets' handshake can trip an assertion inside its client.)
        with trio.fail_after(TIMEOUT):
            while True:
                async with http_client() as http:
                    if (await http.get(running.url)).status_code != 503:
                        break
                await trio.sleep(0.05)
            names = await in_thread(agreed)
    assert names == ["permessage-deflate"]


QUEUE_APP = """
import trio


class Fill:
    # Fills the queue of a client that does not read, then writes past the
    # bounds (100 kB messages, then small ones) and reports what was taken.

    def __init__(self):
        self.report = None

    async def on_open(self, client):
        while True:
            client.write(b"f" * 65536)
            await trio.sleep(0.01)
            if client.pending:
                break
        big = sum(client.write(b"b" * 100_000) for _ in range(10))
        small = sum(client.write(f"m{i}") for i in range(10))
        self.report = f"accepted {big} {small} dropped {client.dropped}"

    def on_drained(self, client):
        if self.report:
            client.write(self.report)
            self.report = None


def app(env):
    env["rack.upgrade"] = Fill()
    return 200, {}, b""
"""


async def test_queue_flags_reach_the_server(tmp_path: Path) -> None:
    (tmp_path / "queueapp.py").write_text(QUEUE_APP)
    flags = ["--max-queue-messages", "5", "--max-queue-bytes", "300000", "--overflow", "drop"]
    async with cli(MODULE, tmp_path, "queueapp:app", *flags) as running:
        with trio.fail_after(TIMEOUT):
            ws = await RawWebSocket.open(running.port, rcvbuf=4096)
            await trio.sleep(1)  # not reading: the app fills the queue
            while True:
                [last] = await ws.messages(1)
                if isinstance(last, str) and last.startswith("accepted"):
                    break
    # 2 of the 100 kB ones fit the byte bound, then 3 small ones the message bound.
    assert last == "accepted 2 3 dropped 15"
    await ws.aclose()


HISTORY_APP = """
import trio_push


class Feed:
    def on_open(self, client):
        client.subscribe("feed", since=client.since("feed"), envelope=True)

    def on_gap(self, client, channel, reason):
        client.write(f"gap {channel} {reason}")


def app(env):
    if env["rack.upgrade?"]:
        env["rack.upgrade"] = Feed()
        return 200, {}, b""
    if env["PATH_INFO"] == "/pub":
        return 200, {}, str(trio_push.publish("feed", env["QUERY_STRING"])).encode()
    options = env["trio_push.server"].options
    report = f"{options.history} {options.history_ttl} {options.protocol.overflow}"
    return 200, {}, report.encode()
"""


def _resume(port: int, position: str, n: int) -> list[str]:
    """``n`` frames from a WebSocket resuming ``feed`` from ``position``:
    each message's data, or the gap notice (the start position left out)."""
    since = quote(json.dumps({"feed": position}))
    got: list[str] = []
    with ws_connect(f"ws://127.0.0.1:{port}/?since={since}") as ws:
        while len(got) < n:
            frame = ws.recv(timeout=TIMEOUT)
            assert isinstance(frame, str)
            if frame.startswith("gap "):
                got.append(frame)
            elif "data" in (envelope := json.loads(frame)):
                got.append(envelope["data"])
    return got


async def test_history_and_overflow_resync_flags_reach_the_server(tmp_path: Path) -> None:
    (tmp_path / "historyapp.py").write_text(HISTORY_APP)
    flags = ["--history", "3", "--overflow", "resync"]
    async with cli(MODULE, tmp_path, "historyapp:app", *flags) as running:
        assert await get_text(running.url + "/options") == "3 None resync"
        positions = [await get_text(f"{running.url}/pub?m{i}") for i in range(5)]
        assert all(re.fullmatch(r"[0-9a-z]+:[0-9]+-[0-9]+", p) for p in positions)
        assert [p.rsplit("-", 1)[1] for p in positions] == ["1", "2", "3", "4", "5"]
        # The last 3 are kept: from the 2nd, all of them; from the 1st, a gap.
        assert await in_thread(_resume, running.port, positions[1], 3) == ["m2", "m3", "m4"]
        assert await in_thread(_resume, running.port, positions[0], 1) == ["gap feed trimmed"]


async def test_history_ttl_flag_reaches_the_server(tmp_path: Path) -> None:
    (tmp_path / "historyapp.py").write_text(HISTORY_APP)
    async with cli(MODULE, tmp_path, "historyapp:app", "--history-ttl", "0.5") as running:
        assert await get_text(running.url + "/options") == "0 0.5 close"
        old = [await get_text(f"{running.url}/pub?old{i}") for i in range(2)]
        assert await in_thread(_resume, running.port, old[0], 1) == ["old1"]
        await trio.sleep(0.55)
        await get_text(f"{running.url}/pub?new")
        # What is older than 0.5 s is gone: behind it, a gap.
        assert await in_thread(_resume, running.port, old[0], 1) == ["gap feed trimmed"]
        assert await in_thread(_resume, running.port, old[1], 1) == ["new"]


@pytest.mark.parametrize("flags", [["--history", "-1"], ["--history-ttl", "0"]])
async def test_a_bad_history_flag_is_a_one_line_error(app_dir: Path, flags: list[str]) -> None:
    result = await run_cli(MODULE, app_dir, "pushapp:function", *flags, "--port", "0")
    assert_one_line_error(result, "--history")


async def test_http2_flags_reach_the_server(tmp_path: Path) -> None:
    (tmp_path / "pushapp.py").write_text(APP_SOURCE)
    flags = ["--h2-max-streams", "7", "--h2-max-header-list-size", "9000"]
    flags += ["--h2-max-frame-size", "32768"]
    async with cli(MODULE, tmp_path, "pushapp:function", *flags) as running:
        result = await trio.run_process(
            ["nghttp", "-nv", running.url + "/"], capture_stdout=True, check=False
        )
        out = result.stdout.decode()
        assert result.returncode == 0, out
        # The server's SETTINGS carry them (and extended CONNECT, for WebSockets).
        for setting in (
            "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]",
            "SETTINGS_MAX_HEADER_LIST_SIZE(0x06):9000]",
            "SETTINGS_MAX_FRAME_SIZE(0x05):32768]",
            "SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1]",
        ):
            assert setting in out
        assert ":status: 200" in out


async def test_no_http2_answers_the_http2_preface_as_http_1_1_would(tmp_path: Path) -> None:
    (tmp_path / "pushapp.py").write_text(APP_SOURCE)
    async with cli(MODULE, tmp_path, "pushapp:function", "--no-http2") as running:
        h2c = await trio.run_process(
            ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", running.url + "/"],
            capture_stdout=True,
            check=False,
        )
        assert h2c.returncode != 0  # h11 answers the preface with a 400, not HTTP/2
        async with http_client() as http:
            assert (await http.get(running.url)).status_code == 200


@pytest.mark.parametrize(
    "flags", [["--h2-max-frame-size", "1000"], ["--h2-max-streams", "0"]], ids=["frame", "streams"]
)
async def test_a_bad_http2_flag_is_a_one_line_error(app_dir: Path, flags: list[str]) -> None:
    result = await run_cli(MODULE, app_dir, "pushapp:function", *flags, "--port", "0")
    assert_one_line_error(result, flags[0])
