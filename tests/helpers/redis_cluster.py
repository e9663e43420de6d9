"""A Redis Cluster of real ``redis-server`` processes on loopback ports, for
the tests: made with ``redis-cli --cluster create``, with helpers to move a
slot from one master to another (as ``redis-cli --cluster reshard`` does)
and to kill a master and wait for its replica to take over. Every wait is
bounded; ``stop`` (or leaving the ``with``) kills every node.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import trustme

from tests.helpers.procs import free_port
from tests.helpers.pubsub import RedisServer
from tests.helpers.server import TIMEOUT
from trio_push._redis_cluster import SLOTS, key_slot

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _fields(flat: Any) -> dict[bytes, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def wait(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` (blocking) until true, or fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each; their config
    files in ``folder``. ``url`` is the engine's ``redis+cluster://``. With
    ``tls`` (a trustme CA), every node has a TLS port too (``tls_ports``),
    and the cluster bus and replication run over TLS; the test's own
    commands go to the plain ports."""

    def __init__(
        self, folder: Path, masters: int = 3, replicas: int = 0, tls: trustme.CA | None = None
    ) -> None:
        self.folder = folder
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        self.tls_ports: dict[int, int] = {}
        self.tls_options: list[str] = []
        if tls is not None:
            cert = tls.issue_cert("127.0.0.1", "localhost")
            cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
            cert.private_key_pem.write_to_path(str(folder / "key.pem"))
            tls.cert_pem.write_to_path(str(folder / "ca.pem"))
            self.tls_options = ["--tls-cluster", "yes", "--tls-replication", "yes"]
            self.tls_options += ["--tls-auth-clients", "no"]
            for option, name in (("cert", "cert"), ("key", "key"), ("ca-cert", "ca")):
                self.tls_options += [f"--tls-{option}-file", str(folder / f"{name}.pem")]

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for _ in range(self.masters * (1 + self.replicas)):
            node = RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "500",
                # The other shards go on while one fails over.
                "--cluster-require-full-coverage",
                "no",
                # A replica's first sync at once (not 5 s later).
                "--repl-diskless-sync-delay",
                "0",
                # Its own free port (port + 10000 may be past 65535).
                "--cluster-port",
                str(free_port()),
            )
            config = self.folder / f"nodes-{node.port}.conf"
            node.options += ("--cluster-config-file", str(config), "--dir", str(self.folder))
            if self.tls_options:
                self.tls_ports[node.port] = free_port()
                node.options += ("--tls-port", str(self.tls_ports[node.port]), *self.tls_options)
            node.start()
            self.nodes.append(node)
        if self.masters == 1:
            # redis-cli --cluster create wants three masters.
            assert self.replicas == 0
            assert self.nodes[0].call("CLUSTER", "ADDSLOTSRANGE", "0", str(SLOTS - 1)) == b"OK"
        else:
            self._create()
        wait(self._settled, "the cluster to form")

    def _create(self) -> None:
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def url(self, query: str = "") -> str:
        """Two live nodes as seeds; over TLS (trusting the CA) with ``tls``."""
        if self.tls_options:
            seeds = ",".join(f"127.0.0.1:{self.tls_ports[n.port]}" for n in self.live()[:2])
            ca = f"ssl_ca_certs={self.folder / 'ca.pem'}"
            return f"rediss+cluster://{seeds}?{ca}" + (f"&{query}" if query else "")
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.live()[:2])
        return f"redis+cluster://{seeds}" + (f"?{query}" if query else "")

    def live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def node(self, port: int) -> RedisServer:
        (found,) = [node for node in self.nodes if node.port == port]
        return found

    def shards(
        self, via: RedisServer | None = None
    ) -> list[tuple[list[int], list[dict[bytes, Any]]]]:
        """Per shard: its slot bounds, its nodes' fields."""
        reply = (via or self.live()[0]).call("CLUSTER", "SHARDS")
        out = []
        for shard in reply:
            fields = _fields(shard)
            nodes = [_fields(n) for n in fields[b"nodes"]]
            out.append(([int(x) for x in fields[b"slots"]], nodes))
        return out

    def master_ports(self, via: RedisServer | None = None) -> list[int]:
        """The ports of the online masters that serve slots."""
        return sorted(
            int(n[b"port"])
            for bounds, nodes in self.shards(via)
            if bounds
            for n in nodes
            if n[b"role"] == b"master" and n[b"health"] == b"online"
        )

    def owner(self, slot: int) -> RedisServer:
        """The master that serves ``slot``."""
        for bounds, nodes in self.shards():
            for start, end in zip(bounds[::2], bounds[1::2], strict=True):
                if start <= slot <= end:
                    (master,) = [
                        n for n in nodes if n[b"role"] == b"master" and n[b"health"] == b"online"
                    ]
                    return self.node(int(master[b"port"]))
        raise AssertionError(f"no master serves slot {slot}")

    def owner_of(self, channel: str) -> RedisServer:
        return self.owner(key_slot(channel.encode()))

    def _settled(self) -> bool:
        """Every live node says the cluster is ok and sees every master,
        and every replica has synced."""
        try:
            for node in self.live():
                info = node.call("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
                if len(self.master_ports(node)) != self.masters:
                    return False
                replication = node.call("INFO", "replication").decode()
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False
        except OSError:
            return False
        return True

    # -- a slot's migration, in steps (publish in between) ---------------------------

    def begin_migration(self, slot: int, target: RedisServer) -> RedisServer:
        """``slot`` IMPORTING on ``target``, MIGRATING on its master (returned)."""
        source = self.owner(slot)
        target.call("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source.call("CLUSTER", "MYID"))
        source.call("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target.call("CLUSTER", "MYID"))
        return source

    def move_keys(self, slot: int, source: RedisServer, target: RedisServer) -> int:
        """MIGRATE every key of ``slot`` to ``target``; how many."""
        moved = 0
        while True:
            keys = source.call("CLUSTER", "GETKEYSINSLOT", str(slot), "100")
            if not keys:
                return moved
            reply = source.call(
                "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys
            )
            assert reply == b"OK", reply
            moved += len(keys)

    def end_migration(self, slot: int, target: RedisServer) -> None:
        """``slot`` is ``target``'s, on every master (the target first)."""
        target_id = target.call("CLUSTER", "MYID")
        masters = [self.node(port) for port in self.master_ports()]
        for node in sorted(masters, key=lambda n: n is not target):
            assert node.call("CLUSTER", "SETSLOT", str(slot), "NODE", target_id) == b"OK"
        wait(lambda: self.owner(slot) is target, f"slot {slot} to move")

    # -- a master's failure ------------------------------------------------------------

    def kill_master(self, master: RedisServer) -> RedisServer:
        """Kill ``master``; wait until one of its replicas serves its slots
        (seen by every live node); that replica."""
        before = self.master_ports()
        master.kill()

        def promoted() -> bool:
            try:
                ports = [self.master_ports(node) for node in self.live()]
            except OSError:
                return False
            return all(len(p) == len(before) and master.port not in p for p in ports)

        wait(promoted, f"a replica of {master.port} to take over")
        (port,) = set(self.master_ports()) - set(before)
        return self.node(port)
