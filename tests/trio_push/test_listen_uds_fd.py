"""``uds`` / ``--uds PATH`` (a Unix socket: curl ``--unix-socket`` for HTTP,
SSE and HTTP/2, a websockets client, the socket file's life) and ``fd`` /
``--fd N`` (a listening socket the test opens and hands the CLI, TCP and
Unix)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from websockets.sync.client import unix_connect

from tests.apps import env_app
from tests.helpers.procs import APPS, MODULE
from tests.helpers.server import TIMEOUT, in_thread


async def _curl(sock_path: str | None, url: str, *args: str) -> str:
    where = ["--unix-socket", sock_path] if sock_path is not None else []
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            ["curl", "-sS", "--max-time", str(TIMEOUT), *where, *args, url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    return str(done.stdout.decode())


async def _curl_env(sock_path: str | None, url: str, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await _curl(sock_path, url, *args))
    return result


async def _curl_sse_first(sock_path: str, url: str) -> dict[str, Any]:
    """The first event of an event stream, read with curl until it has it."""
    args = ["curl", "-sSN", "--unix-socket", sock_path, "-H", "Accept: text/event-stream", url]
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE)
        try:
            assert process.stdout is not None
            data = b""
            while b"\n\n" not in data:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, data
                data += chunk
        finally:
            process.kill()
            await process.wait()
    lines = data.decode().split("\n\n", 1)[0].splitlines()
    result: dict[str, Any] = json.loads(
        "".join(line[6:] for line in lines if line.startswith("data: "))
    )
    return result


def _ws_first(sock_path: str) -> tuple[dict[str, Any], str]:
    with unix_connect(sock_path, "ws://localhost/", open_timeout=TIMEOUT) as ws:
        first = json.loads(ws.recv(timeout=TIMEOUT))
        ws.send("over a unix socket")
        return first, str(ws.recv(timeout=TIMEOUT))


async def test_uds_http_h2_sse_and_websocket(start_server: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    server = await start_server(env_app.app, uds=path)
    assert server.ports == []
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    env = await _curl_env(path, "http://localhost/")
    # No REMOTE_ADDR for a Unix socket's peer; the path and 80 as SERVER_NAME/PORT.
    assert env["REMOTE_ADDR"] is None and env["REMOTE_PORT"] is None
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (path, "80")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    h2 = await _curl_env(path, "http://localhost/", "--http2-prior-knowledge")
    assert h2["SERVER_PROTOCOL"] == "HTTP/2"
    assert (await _curl_sse_first(path, "http://localhost/"))["SERVER_NAME"] == path
    first, echo = await in_thread(_ws_first, path)
    assert first["SERVER_NAME"] == path and first["REMOTE_ADDR"] is None
    assert echo == "over a unix socket"


async def test_uds_proxy_headers_trust_unix_peers_when_told(
    start_server: Any, tmp_path: Path
) -> None:
    headers = ["-H", "X-Forwarded-For: 203.0.113.7", "-H", "X-Forwarded-Proto: https"]
    path = str(tmp_path / "trusted.sock")
    await start_server(env_app.app, uds=path, proxy_headers=True, forwarded_allow_ips="unix")
    env = await _curl_env(path, "http://localhost/", *headers)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")
    # The default (127.0.0.1) does not trust a Unix socket's peer.
    path = str(tmp_path / "untrusted.sock")
    await start_server(env_app.app, uds=path, proxy_headers=True)
    env = await _curl_env(path, "http://localhost/", *headers)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (None, "http")


async def test_uds_file_replaced_when_stale_kept_when_live_and_removed_at_exit(
    serve_scope: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "app.sock")
    # A stale socket file: bound, no one listens (a server that was killed).
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)
    server, scope, done = await serve_scope(env_app.app, uds=path)
    assert (await _curl_env(path, "http://localhost/"))["SERVER_NAME"] == path
    # A second server on a live socket: refused, and the file is left alone.
    with pytest.raises(OSError) as live:
        await serve_scope(env_app.app, uds=path)
    assert live.value.errno == errno.EADDRINUSE
    assert (await _curl_env(path, "http://localhost/"))["SERVER_NAME"] == path
    scope.cancel()
    with trio.fail_after(TIMEOUT):
        await done.wait()
    assert not os.path.exists(path)
    # A file that is not a socket is never removed.
    Path(path).write_text("not a socket")
    with pytest.raises(OSError) as not_socket:
        await serve_scope(env_app.app, uds=path)
    assert not_socket.value.errno == errno.EEXIST
    assert Path(path).read_text() == "not a socket"


async def test_uds_with_tls(
    start_server: Any, server_context: ssl.SSLContext, ca: trustme.CA, tmp_path: Path
) -> None:
    path = str(tmp_path / "tls.sock")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    await start_server(env_app.app, uds=path, ssl_context=server_context)
    env = await _curl_env(path, "https://localhost/", "--cacert", str(ca_file))
    assert (env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("https", "443")
    h2 = await _curl_env(path, "https://localhost/", "--cacert", str(ca_file), "--http2")
    assert h2["SERVER_PROTOCOL"] == "HTTP/2"


# -- under the CLI -------------------------------------------------------------------


async def _start(args: list[str], cwd: Path, **kwargs: Any) -> trio.Process:
    return await trio.lowlevel.open_process(
        [*MODULE, "env_app:app", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=(cwd / "stderr.txt").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


async def _stop(process: trio.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    with trio.fail_after(TIMEOUT):
        return await process.wait()


async def _wait_answers(sock_path: str | None, url: str, process: trio.Process) -> None:
    with trio.fail_after(TIMEOUT):
        while True:
            assert process.returncode is None
            done = await trio.run_process(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    *(["--unix-socket", sock_path] if sock_path else []),
                    url,
                ],
                capture_stderr=True,
                check=False,
            )
            if done.returncode == 0:
                return
            await trio.sleep(0.05)


@pytest.fixture
def app_cwd(tmp_path: Path) -> Path:
    shutil.copy(APPS / "env_app.py", tmp_path)
    return tmp_path


async def test_cli_uds(app_cwd: Path) -> None:
    path = str(app_cwd / "cli.sock")
    process = await _start(["--uds", path], app_cwd)
    try:
        await _wait_answers(path, "http://localhost/", process)
        assert (await _curl_env(path, "http://localhost/"))["SERVER_NAME"] == path
        assert (await _curl_sse_first(path, "http://localhost/"))["SERVER_PORT"] == "80"
    finally:
        assert await _stop(process) == 0
    assert not os.path.exists(path)
    assert f"listening on unix:{path}" in (app_cwd / "stderr.txt").read_text()


async def test_cli_fd_tcp(app_cwd: Path) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        fd = listening.fileno()
        process = await _start(["--fd", str(fd)], app_cwd, pass_fds=(fd,))
        try:
            url = f"http://127.0.0.1:{port}/"
            await _wait_answers(None, url, process)
            env = await _curl_env(None, url)
            assert (env["REMOTE_ADDR"], env["SERVER_PORT"]) == ("127.0.0.1", str(port))
            h2 = await _curl_env(None, url, "--http2-prior-knowledge")
            assert h2["SERVER_PROTOCOL"] == "HTTP/2"
        finally:
            assert await _stop(process) == 0
    log = (app_cwd / "stderr.txt").read_text()
    assert f"listening on http://127.0.0.1:{port}" in log


async def test_cli_fd_unix(app_cwd: Path) -> None:
    path = str(app_cwd / "inherited.sock")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(path)
        listening.listen()
        fd = listening.fileno()
        process = await _start(["--fd", str(fd)], app_cwd, pass_fds=(fd,))
        try:
            await _wait_answers(path, "http://localhost/", process)
            assert (await _curl_env(path, "http://localhost/"))["SERVER_NAME"] == path
        finally:
            assert await _stop(process) == 0
        # Not ours: the socket file of an inherited socket is left as it is.
        assert stat.S_ISSOCK(os.stat(path).st_mode)


async def _cli_error(cwd: Path, *args: str, pass_fds: tuple[int, ...] = ()) -> str:
    """What the CLI says on stderr when it refuses to start (it must)."""
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [*MODULE, "env_app:app", *args],
            cwd=cwd,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            pass_fds=pass_fds,
        )
    assert done.returncode != 0
    return str(done.stderr.decode().strip())


async def test_cli_errors(app_cwd: Path) -> None:
    plain = app_cwd / "plain.txt"
    plain.write_text("x")
    with plain.open() as f:
        fd = f.fileno()
        said = await _cli_error(app_cwd, "--fd", str(fd), pass_fds=(fd,))
        assert said == f"trio-push: --fd {fd}: not a socket (Socket operation on non-socket)"
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        fd = bound.fileno()
        said = await _cli_error(app_cwd, "--fd", str(fd), pass_fds=(fd,))
        assert said == f"trio-push: --fd {fd}: not a listening stream socket"
    said = await _cli_error(app_cwd, "--uds", str(plain))
    assert said == f"trio-push: --uds {plain}: exists and is not a socket"
    said = await _cli_error(app_cwd, "--uds", str(app_cwd / "no-such-folder" / "a.sock"))
    assert (
        said
        == f"trio-push: --uds {app_cwd / 'no-such-folder' / 'a.sock'}: No such file or directory"
    )
    said = await _cli_error(app_cwd, "--uds", "a.sock", "--fd", "3")
    assert said == "trio-push: --uds and --fd are two ways to listen: give one"
    said = await _cli_error(app_cwd, "--uds", "a.sock", "--workers", "2", "--redis", "redis://x")
    assert said == "trio-push: --workers cannot share --uds or --fd yet: run one process per socket"
