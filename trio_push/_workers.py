"""``--workers N``: N server processes on one port, and their supervisor.

Each worker is a full server (``trio-push ... --worker``) with its own
listening socket on the same address and port, bound with ``SO_REUSEPORT``:
the kernel spreads new connections across the workers. The supervisor starts
them, restarts one that dies, and on SIGINT/SIGTERM stops them all
gracefully (a second signal: at once). Workers run in a session of their
own, so a terminal's Ctrl-C reaches the supervisor only, and each worker
stops by itself if its supervisor goes away.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import trio

log = logging.getLogger("trio_push.workers")

# A worker that dies this soon after it started counts as failing to start.
_QUICK_DEATH = 2.0
# After this many quick deaths in a row the supervisor gives up.
_MAX_QUICK_DEATHS = 5
# Tells a worker its supervisor's pid (it may be gone before the worker asks).
_SUPERVISOR_ENV = "TRIO_PUSH_SUPERVISOR_PID"


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Check that ``host:port`` is free and hold it for the workers.

    An ordinary bind first, which fails if anything listens there (even
    another ``SO_REUSEPORT`` group: joining it by mistake would split its
    traffic with us). Then a ``SO_REUSEPORT`` socket that is bound but never
    listens: it receives no connections, keeps the port ours while workers
    restart, and turns port 0 into a real port number.
    """
    family, type_, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, type_, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        port = probe.getsockname()[1]
    hold = socket.socket(family, type_, proto)
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    hold.bind((address[0], port, *address[2:]))
    return hold, port


def supervise(
    argv: list[str],
    workers: int,
    host: str,
    port: int,
    stop_timeout: float,
    *,
    env: dict[str, str] | None = None,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Run ``workers`` copies of ``trio-push argv --worker`` on ``host:port``
    until SIGINT/SIGTERM; the exit status (0, or 1 if workers keep dying
    as they start). ``env``: more environment for the workers;
    ``on_exit(pid)``: called once a worker has exited."""
    hold, port = reserve_port(host, port)
    command = [sys.executable, "-m", "trio_push", *argv, "--port", str(port), "--worker"]
    supervisor = _Supervisor(command, workers, stop_timeout)
    supervisor.env.update(env or {})
    supervisor.on_exit = on_exit
    try:
        return trio.run(supervisor.run, host, port)
    finally:
        hold.close()


class _Supervisor:
    def __init__(self, command: list[str], workers: int, stop_timeout: float) -> None:
        self.command = command
        self.workers = workers
        self.stop_timeout = stop_timeout
        self.processes: dict[int, trio.Process] = {}
        self.stopping = False
        self.status = 0
        self._nursery: trio.Nursery | None = None
        self.env = {**os.environ, _SUPERVISOR_ENV: str(os.getpid())}
        self.on_exit: Callable[[int], None] | None = None

    async def run(self, host: str, port: int) -> int:
        log.info("supervisor: %d workers on http://%s:%d", self.workers, host, port)
        async with trio.open_nursery() as outer:
            self._nursery = outer
            outer.start_soon(self._watch_signals)
            async with trio.open_nursery() as nursery:
                for slot in range(self.workers):
                    nursery.start_soon(self._keep, slot)
            outer.cancel_scope.cancel()
        log.info("supervisor: all workers stopped")
        return self.status

    async def _keep(self, slot: int) -> None:
        quick_deaths = 0
        while not self.stopping:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                self.command,
                start_new_session=True,
                env=self.env,
            )
            self.processes[slot] = process
            log.info("supervisor: worker %d started, pid %d", slot, process.pid)
            status = await process.wait()
            del self.processes[slot]
            if self.on_exit is not None:
                self.on_exit(process.pid)
            if self.stopping:
                log.info("supervisor: worker %d (pid %d) exited", slot, process.pid)
                return
            how = f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"
            if trio.current_time() - started < _QUICK_DEATH:
                quick_deaths += 1
            else:
                quick_deaths = 0
            if quick_deaths >= _MAX_QUICK_DEATHS:
                log.critical(
                    "supervisor: worker %d died at start %d times in a row (%s); stopping",
                    slot,
                    quick_deaths,
                    how,
                )
                self.status = 1
                self._stop(signal.SIGTERM)
                return
            delay = min(0.1 * 2**quick_deaths, 5.0)
            log.error(
                "supervisor: worker %d (pid %d) died (%s); restarting in %.1f s",
                slot,
                process.pid,
                how,
                delay,
            )
            await trio.sleep(delay)

    def _stop(self, signum: int) -> None:
        first = not self.stopping
        self.stopping = True
        for process in list(self.processes.values()):
            if process.returncode is None:
                process.send_signal(signum)
        if first and self._nursery is not None:
            self._nursery.start_soon(self._kill_after_timeout)

    async def _kill_after_timeout(self) -> None:
        await trio.sleep(self.stop_timeout)
        for process in list(self.processes.values()):
            if process.returncode is None:
                log.warning("supervisor: worker pid %d did not stop in time; killing", process.pid)
                process.kill()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stopping:
                    log.warning("supervisor: %s again: stopping the workers now", name)
                else:
                    log.info("supervisor: %s: stopping the workers gracefully", name)
                # A worker takes a second signal as "stop now".
                self._stop(signal.SIGTERM)


class _Server(Protocol):
    """What a worker needs of its server (``trio_push.Server`` is one)."""

    @property
    def thread_id(self) -> int | None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


async def serve_as_worker(
    server: S, serve: Callable[[S], Awaitable[None]], poll: float = 0.5
) -> None:
    """``serve(server)``, stopping gracefully if the supervisor goes away."""
    parent = int(os.environ.get(_SUPERVISOR_ENV, "0")) or os.getppid()
    error: OSError | None = None
    async with trio.open_nursery() as nursery:

        async def watch_parent() -> None:
            while os.getppid() == parent:
                await trio.sleep(poll)
            log.warning("worker: the supervisor (pid %d) is gone; stopping", parent)
            if server.thread_id is None:
                nursery.cancel_scope.cancel()  # not serving yet: nothing to drain
            else:
                server.stop()

        nursery.start_soon(watch_parent)
        try:
            await serve(server)
        except OSError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
