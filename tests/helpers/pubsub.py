"""Helpers for the pub/sub tests.

Lightweight clients on raw Trio sockets (a thousand of them cost little: a
handshake, then frames or SSE events parsed as they come), a real
``redis-server`` on a free port, and trio-push servers in this process (with
a handler that subscribes on request) and in subprocesses.
Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis
import trio

import trio_push
from tests.helpers.frames import BINARY, CLOSE, TEXT, frame, parse_frames
from tests.helpers.procs import APPS, ROOT, free_port
from tests.helpers.server import TIMEOUT, push_app

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

_WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


# -- raw clients ------------------------------------------------------------------


class PushClient:
    """A WebSocket or SSE client on a raw Trio socket that keeps every
    message it receives (``messages``) and notices when the server closes
    (``closed``, and ``close_code`` for a WebSocket)."""

    def __init__(self, stream: trio.SocketStream, protocol: str) -> None:
        self.stream = stream
        self.protocol = protocol
        self.messages: list[str | bytes] = []
        self.closed = False
        self.close_code: int | None = None
        self._buf = bytearray()
        self._changed = trio.Event()
        self._chunk_left = 0
        self._chunked = False
        self._body = bytearray()

    @classmethod
    async def connect(cls, port: int, path: str, protocol: str = "websocket") -> PushClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if protocol == "websocket":
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {_WS_KEY.decode()}\r\n\r\n"
            )
        else:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            )
        await stream.send_all(request.encode())
        client = cls(stream, protocol)
        head = await client._read_head()
        status = head.split(b" ", 2)[1]
        expected = b"101" if protocol == "websocket" else b"200"
        if status != expected:
            raise AssertionError(f"handshake failed: {head!r}")
        client._chunked = b"transfer-encoding: chunked" in head.lower()
        return client

    async def _read_head(self) -> bytes:
        while b"\r\n\r\n" not in self._buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise AssertionError(f"closed during the handshake: {bytes(self._buf)!r}")
            self._buf += data
        end = self._buf.index(b"\r\n\r\n") + 4
        head = bytes(self._buf[:end])
        del self._buf[:end]
        return head

    async def run(self) -> None:
        """Read until the server closes (run it in a nursery)."""
        self._feed(b"")
        try:
            while not self.closed:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.closed = True
                    break
                self._buf += data
                self._feed(data)
        finally:
            self.closed = True
            self._wake()
            # Closed at once, even when cancelled: the server sees the end.
            self.stream.socket.close()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _feed(self, _: bytes) -> None:
        if self.protocol == "websocket":
            self._parse_frames()
        else:
            self._parse_sse()
        self._wake()

    def _parse_frames(self) -> None:
        for opcode, _fin, payload in parse_frames(self._buf):
            if opcode == TEXT:
                self.messages.append(payload.decode())
            elif opcode == BINARY:
                self.messages.append(payload)
            elif opcode == CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self.closed = True

    def _parse_sse(self) -> None:
        buf = self._buf
        if self._chunked:
            while buf:
                if self._chunk_left == 0:
                    line_end = buf.find(b"\r\n")
                    if line_end < 0:
                        return
                    size = int(bytes(buf[:line_end]), 16)
                    if size == 0:
                        self.closed = True
                        del buf[:]
                        break
                    self._chunk_left = size + 2  # the chunk and its CRLF
                    del buf[: line_end + 2]
                take = min(self._chunk_left, len(buf))
                self._body += buf[:take]
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left == 0:
                    del self._body[-2:]
        else:
            self._body += buf
            del buf[:]
        body = self._body
        while True:
            end = body.find(b"\n\n")
            if end < 0:
                return
            block = bytes(body[:end]).decode()
            del body[: end + 2]
            data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
            if data:
                self.messages.append("\n".join(data))

    async def wait_for(
        self, predicate: Callable[[PushClient], bool], timeout: float = TIMEOUT
    ) -> None:
        with trio.fail_after(timeout):
            while not predicate(self):
                if self.closed and not predicate(self):
                    raise AssertionError(f"closed while waiting; got {self.messages[-3:]!r}")
                await self._changed.wait()

    async def wait_messages(self, n: int, timeout: float = TIMEOUT) -> list[str | bytes]:
        await self.wait_for(lambda c: len(c.messages) >= n, timeout)
        return self.messages

    async def send_text(self, text: str) -> None:
        """A masked text frame (WebSocket only)."""
        await self.stream.send_all(frame(TEXT, text.encode()))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


# -- trio-push servers in this process --------------------------------------------


class Subscribe:
    """Subscribes each client to ``channels`` on open; ``sub X`` / ``unsub X``
    messages change that, each answered with ``ok ...``."""

    def __init__(self, *channels: str) -> None:
        self.channels = channels
        self.closed: list[trio_push.Client] = []

    def on_open(self, client: trio_push.Client) -> None:
        for channel in self.channels:
            client.subscribe(channel)

    def on_message(self, client: trio_push.Client, data: str) -> None:
        verb, _, channel = data.partition(" ")
        if verb == "sub":
            client.subscribe(channel)
        elif verb == "unsub":
            client.unsubscribe(channel)
        elif verb == "pub":
            channel, _, message = channel.partition(" ")
            client.publish(channel, message)
        client.write(f"ok {data}")

    def on_close(self, client: trio_push.Client) -> None:
        self.closed.append(client)


async def start(nursery: trio.Nursery, handler: Any, **kwargs: Any) -> trio_push.Server:
    """Serve ``push_app(handler)`` on 127.0.0.1:0 in ``nursery``, quick to stop."""
    kwargs.setdefault("drain_timeout", 0.5)
    kwargs.setdefault("close_timeout", 2.0)
    with trio.fail_after(TIMEOUT):
        return await nursery.start(
            lambda task_status: trio_push.serve(  # type: ignore[no-any-return]
                push_app(handler), 0, host="127.0.0.1", task_status=task_status, **kwargs
            )
        )


async def connect_clients(
    nursery: trio.Nursery, port: int, n: int, protocol: str = "websocket", path: str = "/"
) -> list[PushClient]:
    """``n`` clients of ``protocol`` on ``path`` (at most 100 connecting at once),
    each reading in ``nursery``."""
    clients: list[PushClient] = []
    limit = trio.CapacityLimiter(100)

    async def one() -> None:
        async with limit:
            client = await PushClient.connect(port, path, protocol)
        clients.append(client)
        nursery.start_soon(client.run)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as inner:
            for _ in range(n):
                inner.start_soon(one)
    return clients


# -- Redis ---------------------------------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1 (no persistence), with
    ``options`` added to its command line; ``user`` and ``password`` (for
    an ACL user the options define) go in its URL and authenticate ``call``."""

    def __init__(self, *options: str, user: str | None = None, password: str | None = None) -> None:
        self.port = free_port()
        self.options = options
        self.user = user
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def url(self) -> str:
        auth = f"{self.user or ''}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(
                f"{REDIS_SERVER} is missing: scripts/setup installs it"
                " (apt-get install redis-server)"
            )
        self.process = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                if self.call("PING") == b"PONG":
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def argv(self) -> list[str]:
        """The command line that starts it."""
        base = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        return [REDIS_SERVER, *base, *self.options]

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(TIMEOUT)
            self.process = None

    def call(self, *args: str | bytes) -> Any:
        """One command on a fresh connection (blocking; fine in tests)."""
        from trio_push._redis import command

        encoded = [a.encode() if isinstance(a, str) else a for a in args]
        auth = [b"AUTH", *(x.encode() for x in (self.user, self.password) if x)]
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            sock.sendall((command(*auth) if self.password else b"") + command(*encoded))
            reader = hiredis.Reader()
            replies = []
            while len(replies) < (2 if self.password else 1):
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("redis closed the connection")
                    reader.feed(data)
                else:
                    replies.append(reply)
            return replies[-1]

    def numsub(self, channel: str) -> int:
        reply = self.call("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def numpat(self) -> int:
        return int(self.call("PUBSUB", "NUMPAT"))


def engine(redis: RedisServer) -> trio_push.RedisPubSub:
    """A Redis engine with quick health checks and reconnects, so the tests take little time."""
    return trio_push.RedisPubSub(redis.url, backoff_max=0.2, health_interval=2.0)


# -- trio-push in a subprocess --------------------------------------------------------

_LISTENING = re.compile(r"(?:listening on|workers on) http://[^:]+:(\d+)")


class ServerProcess:
    """``python -m trio_push ARGS`` run from tests/apps/ (so ``pubsub_app``
    imports), its log collected, its port read from the log."""

    def __init__(self, *args: str, cwd: Path = APPS) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trio_push", *args, "--port", "0"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._port: int | None = None
        self._have_port = threading.Event()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and self._port is None:
                self._port = int(match.group(1))
                self._have_port.set()
        self._have_port.set()

    @property
    def port(self) -> int:
        self._have_port.wait(TIMEOUT)
        if self._port is None:
            raise RuntimeError("server did not start:\n" + self.log())
        return self._port

    def log(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        return self.process.returncode


def worker_pids(process: ServerProcess, what: str = "started") -> list[int]:
    """Pids of a supervisor's workers that got to ``what`` ("started", "ready"), in order."""
    return [int(p) for p in re.findall(rf"worker \d {what}, pid (\d+)", process.log())]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def http_get(port: int, path: str) -> str:
    """A one-shot HTTP/1.0 GET; the body as text."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = bytearray()
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        raise AssertionError(f"GET {path}: {head!r}")
    return body.decode()
