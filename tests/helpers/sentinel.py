"""Redis Sentinel for the tests: real ``redis-server --sentinel`` processes
on free loopback ports, and a group of one master, one replica and three
sentinels that fails over in a few seconds once its master is killed.
Every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.pubsub import REDIS_SERVER, RedisServer
from tests.helpers.server import TIMEOUT

SERVICE = "mymaster"
#: How long a master may not answer before a sentinel says it is down (ms).
DOWN_AFTER = 500
FAILOVER_TIMEOUT = 3000


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``predicate`` (blocking; errors count as false) until it is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def replica_of(master: RedisServer, folder: Path) -> RedisServer:
    """A replica of ``master`` (not started), which keeps the copy it syncs in
    ``folder`` (not in the working directory, where the next redis-server
    would load it)."""
    return RedisServer("--replicaof", "127.0.0.1", str(master.port), "--dir", str(folder))


class SentinelServer(RedisServer):
    """A sentinel on 127.0.0.1 monitoring ``masters`` (service name -> port
    of its master on 127.0.0.1), its config file in ``folder`` (it rewrites
    it: a restart keeps what it learned), with the lines ``config`` too."""

    def __init__(
        self, folder: Path, masters: dict[str, int], quorum: int = 2, *config: str
    ) -> None:
        super().__init__()
        self.conf = folder / f"sentinel-{self.port}.conf"
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {folder}", *config]
        for name, port in masters.items():
            lines += [
                f"sentinel monitor {name} 127.0.0.1 {port} {quorum}",
                f"sentinel down-after-milliseconds {name} {DOWN_AFTER}",
                f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT}",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [REDIS_SERVER, str(self.conf), "--sentinel"]

    def master(self, name: str = SERVICE) -> tuple[str, int] | None:
        reply = self.call("SENTINEL", "get-master-addr-by-name", name)
        return None if reply is None else (reply[0].decode(), int(reply[1]))

    def knows(self, name: str, sentinels: int, replicas: int) -> bool:
        """It sees the other ``sentinels`` and ``replicas`` good replicas of ``name``."""
        found = self.call("SENTINEL", "SENTINELS", name)
        good = [
            r
            for r in self.call("SENTINEL", "REPLICAS", name)
            if b"s_down" not in dict(zip(r[::2], r[1::2], strict=True))[b"flags"]
        ]
        return len(found) >= sentinels and len(good) >= replicas


class SentinelGroup:
    """One master, one replica, three sentinels (quorum 2), all on loopback:
    :meth:`kill_master` kills the master (SIGKILL) and the sentinels promote
    the replica (:meth:`wait_failover`)."""

    def __init__(self, folder: Path) -> None:
        self.master = RedisServer("--repl-diskless-sync-delay", "0", "--dir", str(folder))
        self.master.start()
        self.replica = replica_of(self.master, folder)
        self.sentinels: list[SentinelServer] = []
        try:
            self.replica.start()
            wait_until(lambda: self.synced(self.replica), "the replica synced")
            for _ in range(3):
                self.sentinels.append(SentinelServer(folder, {SERVICE: self.master.port}))
                self.sentinels[-1].start()
            for sentinel in self.sentinels:
                wait_until(lambda s=sentinel: s.knows(SERVICE, 2, 1), "the sentinels met")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def synced(replica: RedisServer) -> bool:
        info = replica.call("INFO", "replication").decode()
        return "master_link_status:up" in info

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def kill_master(self) -> None:
        self.master.kill()

    def wait_failover(self, timeout: float = 20.0) -> None:
        """Until every sentinel still running names the replica as the master."""
        new = ("127.0.0.1", self.replica.port)
        running = [s for s in self.sentinels if s.process is not None]
        wait_until(lambda: all(s.master() == new for s in running), "the failover", timeout)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.kill()

    def __enter__(self) -> SentinelGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def offset(server: RedisServer, field: str) -> int:
    info = server.call("INFO", "replication").decode()
    return int(info.split(f"{field}:", 1)[1].split()[0])


def caught_up(master: RedisServer, replica: RedisServer) -> bool:
    """The replica has processed all that the master wrote so far."""
    return offset(replica, "slave_repl_offset") >= offset(master, "master_repl_offset")
