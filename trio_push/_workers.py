"""``--workers N``: N server processes on one port, and their supervisor.

Each worker is a full server (``trio-push ... --worker``) with its own
listening socket on the same address and port, bound with ``SO_REUSEPORT``:
the kernel spreads new connections across the workers. The supervisor starts
them, restarts one that dies, and on SIGINT/SIGTERM stops them all
gracefully (a second signal: at once). Workers run in a session of their
own, so a terminal's Ctrl-C reaches the supervisor only, and each worker
stops by itself if its supervisor goes away.

SIGHUP is a rolling restart: one worker after another, a new worker is
started and, once it listens (it says so on a pipe the supervisor gave it),
the old one gets SIGTERM and drains while the new one takes the new
connections; the next worker is replaced once the old one has exited. A
SIGHUP during a rolling restart queues one more, which starts when it ends
(so every worker ends up started after the last SIGHUP).
"""

from __future__ import annotations

import contextlib
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
# Tells a worker the pipe on which to say that it listens.
_READY_ENV = "TRIO_PUSH_READY_FD"
# A new worker that does not listen this soon is given up on.
_READY_TIMEOUT = 60.0
#: The status a worker exits with when the app itself failed to start (an
#: ASGI lifespan's startup): every worker would fail the same way, so the
#: supervisor stops them all and exits with it instead of restarting it.
START_FAILED_EXIT = 3


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
    until SIGINT/SIGTERM; the exit status (0, 1 if workers keep dying as
    they start, or ``START_FAILED_EXIT`` if one says its app failed to
    start). ``env``: more environment for the workers;
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
        #: The worker serving in each slot.
        self.processes: dict[int, trio.Process] = {}
        # A rolling restart's: new workers not yet listening; those listening,
        # which their slot takes on once the worker they replace has exited;
        # old workers draining.
        self._incoming: set[trio.Process] = set()
        self._replacements: dict[int, trio.Process] = {}
        self._retiring: set[trio.Process] = set()
        self._rolling = False
        self._roll_again = False
        self.stopping = False
        self.status = 0
        self._nursery: trio.Nursery | None = None
        self.env = {**os.environ, _SUPERVISOR_ENV: str(os.getpid())}
        self.on_exit: Callable[[int], None] | None = None
        self._workers_nursery: trio.Nursery | None = None

    async def run(self, host: str, port: int) -> int:
        log.info("supervisor: %d workers on http://%s:%d", self.workers, host, port)
        async with trio.open_nursery() as outer:
            self._nursery = outer
            async with trio.open_nursery() as nursery:
                self._workers_nursery = nursery
                outer.start_soon(self._watch_signals)
                for slot in range(self.workers):
                    nursery.start_soon(self._keep, slot)
            outer.cancel_scope.cancel()
        log.info("supervisor: all workers stopped")
        return self.status

    async def _spawn(self, slot: int) -> tuple[trio.Process, trio.lowlevel.FdStream]:
        """Start a worker for ``slot``; the pipe on which it says it listens."""
        read_fd, write_fd = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                self.command,
                start_new_session=True,
                pass_fds=(write_fd,),
                env={**self.env, _READY_ENV: str(write_fd)},
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        log.info("supervisor: worker %d started, pid %d", slot, process.pid)
        return process, trio.lowlevel.FdStream(read_fd)

    async def _ready(self, slot: int, process: trio.Process, pipe: trio.lowlevel.FdStream) -> bool:
        """Whether the worker says it listens before it exits (its end of
        the pipe closes) or ``_READY_TIMEOUT`` runs out."""
        async with pipe:
            with trio.move_on_after(_READY_TIMEOUT):
                if await pipe.receive_some(64):
                    log.info("supervisor: worker %d ready, pid %d", slot, process.pid)
                    return True
        if process.returncode is None:
            log.error(
                "supervisor: worker %d (pid %d) not listening after %g s",
                slot,
                process.pid,
                _READY_TIMEOUT,
            )
        return False

    async def _keep(self, slot: int) -> None:
        quick_deaths = 0
        while True:
            process = self._replacements.pop(slot, None)
            started = trio.current_time()
            listened = True
            if process is not None:
                self.processes[slot] = process  # a rolling restart's, listening
            elif self.stopping:
                return
            else:
                process, pipe = await self._spawn(slot)
                self.processes[slot] = process
                listened = await self._ready(slot, process, pipe)
            status = await process.wait()
            del self.processes[slot]
            if self.on_exit is not None:
                self.on_exit(process.pid)
            if slot in self._replacements:
                log.info("supervisor: worker %d (pid %d) exited, replaced", slot, process.pid)
                quick_deaths = 0
                continue
            if self.stopping:
                log.info("supervisor: worker %d (pid %d) exited", slot, process.pid)
                return
            how = f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"
            if not listened and status == START_FAILED_EXIT:
                log.critical(
                    "supervisor: worker %d (pid %d) says its app failed to start; stopping",
                    slot,
                    process.pid,
                )
                self.status = START_FAILED_EXIT
                self._stop(signal.SIGTERM)
                return
            # A worker that never listened failed to start, however long it took.
            if not listened or trio.current_time() - started < _QUICK_DEATH:
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

    # -- rolling restart (SIGHUP) ----------------------------------------------------

    def _hup(self) -> None:
        if self.stopping:
            log.info("supervisor: SIGHUP while stopping: ignored")
        elif self._rolling:
            self._roll_again = True
            log.info("supervisor: SIGHUP during a rolling restart: another one follows it")
        elif self._workers_nursery is not None:
            self._rolling = True
            self._workers_nursery.start_soon(self._roll)

    async def _roll(self) -> None:
        try:
            again = True
            while again and not self.stopping:
                self._roll_again = False
                log.info("supervisor: SIGHUP: replacing the %d workers one by one", self.workers)
                again = await self._roll_once() and self._roll_again
        finally:
            self._rolling = False

    async def _roll_once(self) -> bool:
        """Replace each slot's worker; False if one of the new ones did not
        start (the rest are left as they are) or the supervisor is stopping."""
        for slot in range(self.workers):
            old = self.processes.get(slot)
            if self.stopping:
                return False
            if old is None:
                continue  # being restarted after a death: it will be new anyway
            new, pipe = await self._spawn(slot)
            self._incoming.add(new)
            try:
                ready = await self._ready(slot, new, pipe)
                if self.stopping:
                    await new.wait()  # it got the stop too, with the others
                    return False
                if not ready or self.processes.get(slot) is not old:
                    # Failed to start, or the old one died and was restarted meanwhile.
                    await self._retire(new)
                    if not ready:
                        log.error(
                            "supervisor: worker %d's replacement did not start: rolling"
                            " restart abandoned",
                            slot,
                        )
                        return False
                    continue
                self._replacements[slot] = new
            finally:
                self._incoming.discard(new)
            log.info("supervisor: worker %d: pid %d listens; pid %d drains", slot, new.pid, old.pid)
            await self._retire(old)
        log.info("supervisor: rolling restart done")
        return True

    async def _retire(self, process: trio.Process) -> None:
        """Stop ``process`` gracefully (SIGTERM), at once past ``stop_timeout``."""
        self._retiring.add(process)
        try:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(self.stop_timeout):
                await process.wait()
            if process.returncode is None:
                log.warning("supervisor: worker pid %d did not stop in time; killing", process.pid)
                process.kill()
                await process.wait()
        finally:
            self._retiring.discard(process)

    # -- stopping ---------------------------------------------------------------------

    def _all(self) -> list[trio.Process]:
        """Every worker process running, whatever its state."""
        return [
            *self.processes.values(),
            *self._incoming,
            *self._replacements.values(),
            *self._retiring,
        ]

    def _stop(self, signum: int) -> None:
        first = not self.stopping
        self.stopping = True
        for process in set(self._all()):
            # A worker draining for a rolling restart has had its SIGTERM
            # (a second one would cut its drain short).
            if process.returncode is None and not (first and process in self._retiring):
                process.send_signal(signum)
        if first and self._nursery is not None:
            self._nursery.start_soon(self._kill_after_timeout)

    async def _kill_after_timeout(self) -> None:
        await trio.sleep(self.stop_timeout)
        for process in set(self._all()):
            if process.returncode is None:
                log.warning("supervisor: worker pid %d did not stop in time; killing", process.pid)
                process.kill()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    self._hup()
                    continue
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


class _ReportReady:
    """The ``task_status`` a worker serves with: once the server listens,
    say so on the supervisor's pipe (if it gave one) and close it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def started(self, value: object = None) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):  # the supervisor is gone: watch_parent notices
            os.write(self.fd, b"ready\n")
        os.close(self.fd)
        self.fd = -1


async def serve_as_worker(
    server: S, serve: Callable[..., Awaitable[None]], poll: float = 0.5
) -> None:
    """``serve(server, task_status=...)``, telling the supervisor once it
    listens, stopping gracefully if the supervisor goes away."""
    ready = _ReportReady(int(os.environ.pop(_READY_ENV, "-1")))
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
            await serve(server, task_status=ready)
        except OSError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
