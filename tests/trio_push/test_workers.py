"""``--workers N --redis URL``: processes sharing one port, and their supervisor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio

from tests.helpers.procs import APPS, ROOT
from tests.helpers.pubsub import (
    PushClient,
    RedisServer,
    ServerProcess,
    http_get,
    pid_alive,
    worker_pids,
)
from tests.helpers.server import TIMEOUT, wait_for


@pytest.fixture
def workers(redis: RedisServer) -> Iterator[ServerProcess]:
    process = ServerProcess("pubsub_app:app", "--workers", "2", "--redis", redis.url)
    try:
        yield process
    finally:
        process.stop()


async def one_client_per_worker(
    nursery: trio.Nursery, port: int, channel: str
) -> dict[str, PushClient]:
    """Connect until a client sits on each of the two workers (the kernel
    picks the worker for each connection)."""
    found: dict[str, PushClient] = {}
    with trio.fail_after(TIMEOUT):
        while len(found) < 2:
            try:
                client = await PushClient.connect(port, f"/sub?ch={channel}")
            except OSError:
                await trio.sleep(0.05)  # a worker not listening yet
                continue
            nursery.start_soon(client.run)
            (greeting,) = await client.wait_messages(1)
            pid = str(greeting).split()[1]
            if pid in found:
                await client.aclose()
            else:
                found[pid] = client
    return found


async def test_a_client_on_each_worker_gets_a_message(
    nursery: trio.Nursery, redis: RedisServer, workers: ServerProcess
) -> None:
    clients = await one_client_per_worker(nursery, workers.port, "everyone")
    assert set(clients) == {str(p) for p in worker_pids(workers)}
    await wait_for(lambda: redis.numsub("everyone") == 2)
    assert await http_get(workers.port, "/publish?ch=everyone&msg=hi+all") == "True"
    for client in clients.values():
        assert (await client.wait_messages(2))[1] == "hi all"
    # The app runs in several processes, and the env says so (PEP 3333).
    assert await http_get(workers.port, "/multiprocess") == "True"


async def test_the_supervisor_restarts_a_worker_that_dies(
    nursery: trio.Nursery, redis: RedisServer, workers: ServerProcess
) -> None:
    await one_client_per_worker(nursery, workers.port, "x")
    first, second = worker_pids(workers)
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: len(worker_pids(workers)) == 3)
    assert "died (signal SIGKILL); restarting" in workers.log()
    replacement = worker_pids(workers)[2]
    clients = await one_client_per_worker(nursery, workers.port, "y")
    assert set(clients) == {str(second), str(replacement)}
    assert workers.alive()


async def stops_gracefully_on(
    signum: signal.Signals, nursery: trio.Nursery, workers: ServerProcess
) -> None:
    """Send ``signum`` to the supervisor alone (workers have sessions of their
    own, so it must pass the stop on): it and every worker end, gracefully."""
    clients = await one_client_per_worker(nursery, workers.port, "bye")
    pids = worker_pids(workers)
    workers.process.send_signal(signum)
    status = await trio.to_thread.run_sync(workers.process.wait, TIMEOUT)
    assert status == 0, workers.log()
    assert not any(pid_alive(pid) for pid in pids)
    for client in clients.values():
        await client.wait_for(lambda c: c.closed)
        assert client.close_code == 1001  # going away: a graceful shutdown
    # (The log is read by a thread: it may lag the exit a little.)
    await wait_for(lambda: "supervisor: all workers stopped" in workers.log())


async def test_sigterm_stops_the_supervisor_and_every_worker(
    nursery: trio.Nursery, redis: RedisServer, workers: ServerProcess
) -> None:
    await stops_gracefully_on(signal.SIGTERM, nursery, workers)


async def test_sigint_stops_the_supervisor_and_every_worker(
    nursery: trio.Nursery, redis: RedisServer, workers: ServerProcess
) -> None:
    await stops_gracefully_on(signal.SIGINT, nursery, workers)


async def test_workers_stop_when_the_supervisor_is_killed(
    redis: RedisServer, workers: ServerProcess
) -> None:
    await wait_for(lambda: len(worker_pids(workers)) == 2)
    pids = worker_pids(workers)
    workers.process.kill()
    await wait_for(lambda: not any(pid_alive(pid) for pid in pids))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "trio_push", "pubsub_app:app", *args],
        cwd=APPS,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_workers_without_redis_refuse_to_start() -> None:
    result = run_cli("--workers", "2", "--port", "0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "trio-push: --workers 2 needs --redis URL: without it a publish would reach"
        " the clients of one worker only"
    ]


def test_workers_on_a_port_in_use_refuse_to_start(redis: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--workers", "2", "--redis", redis.url, "--port", str(port))
    assert result.returncode != 0
    assert "already in use" in result.stderr
