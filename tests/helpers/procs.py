"""Running servers as a user would: as subprocesses, on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

from tests.helpers.server import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
#: The apps the tests run under the CLI (``trio-push pubsub_app:app``), from this folder.
APPS = ROOT / "tests" / "apps"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode} before listening:\n{out}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {timeout}s")


def vm_rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process, in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/*/status")


@contextmanager
def running(
    args: list[str], *, cwd: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``args`` in ``cwd``, wait until ``port`` listens, stop it after.

    Output goes to a pipe; on the way out the process gets SIGINT (as a user's
    Ctrl-C), then SIGKILL if it has not ended within 10 s.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    proc = subprocess.Popen(
        args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- the command line -------------------------------------------------------------

#: The console script, and the module run with ``python -m``.
SCRIPT = VENV_BIN / "trio-push"
MODULE = [sys.executable, "-m", "trio_push"]

#: ``pushapp.py`` for the CLI tests (the ``app_dir`` fixture): each kind of app.
APP_SOURCE = textwrap.dedent(
    """
    class Echo:
        def on_message(self, client, data):
            client.write(data)

    class Listen:
        def call(self, env):
            if env["rack.upgrade?"]:
                env["rack.upgrade"] = Echo()
                return 200, {}, b""
            return 200, {"content-type": "text/plain"}, b"from class"

    class Callable:
        def __call__(self, env):
            return 200, {}, b"from instance"

    instance = Callable()

    def function(env):
        return 200, {}, b"from function"
    """
)


class Running:
    """A CLI process started by :func:`cli`, and where to reach it."""

    def __init__(self, proc: trio.Process, port: int, stderr: Path) -> None:
        self.proc = proc
        self.port = port
        self.stderr_path = stderr
        self.url = f"http://127.0.0.1:{port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def wait(self, timeout: float = 5.0) -> int:
        with trio.fail_after(timeout):
            return await self.proc.wait()


@asynccontextmanager
async def cli(command: list[str], cwd: Path, *args: str) -> AsyncIterator[Running]:
    """Run the CLI on a free port and wait until it answers HTTP."""
    port = free_port()
    stderr = cwd / f"stderr-{port}.txt"
    with stderr.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            [*command, *args, "--port", str(port)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = Running(proc, port, stderr)
    try:
        with trio.fail_after(TIMEOUT):
            while True:
                assert proc.returncode is None, running.stderr
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    await trio.sleep(0.05)
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def run_cli(command: list[str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end (for the error cases)."""
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [*command, *args], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )
