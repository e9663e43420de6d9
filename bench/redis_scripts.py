"""What a publish costs Redis (issue 16): a plain ``PUBLISH``, the history
script without and with its replication-id check (``INFO replication``,
what lets a failover start a new epoch), and the history script followed by
``WAIT 1`` after each pipelined batch (what a position settling only once a
replica has it would cost).

    .venv/bin/python bench/redis_scripts.py                  # about a minute
    .venv/bin/python bench/redis_scripts.py --n 50000 --rounds 5

A master and its replica (redis-server, ``--save '' --appendonly no``, free
loopback ports, stopped at the end); one client connection sends ``--n``
publishes of ``--size`` bytes to one channel in pipelined batches of each
``--batches`` size and waits for each batch's replies before the next (as
the engine's publisher connection does under load). The variants take turns
within each of ``--rounds`` rounds; the table has each one's median round:
publishes a second, the median batch's round trip, and the rate against the
history script as shipped. Loopback, one machine: a replica elsewhere makes
``WAIT`` cost that network's round trip per batch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hiredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trio_push._redis import EPOCH_LUA, PUBLISH_SCRIPT, command  # noqa: E402

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
#: The history script as it was before the replication-id check.
_CHECK = EPOCH_LUA[EPOCH_LUA.index("local info") : EPOCH_LUA.index("local e =")]
WITHOUT_CHECK = PUBLISH_SCRIPT.replace(_CHECK, "local r = 'same'\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = hiredis.Reader()

    def replies(self, n: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < n:
            reply = self.reader.gets()
            if reply is False:
                self.reader.feed(self.sock.recv(1 << 20))
                continue
            if isinstance(reply, Exception):
                raise reply
            out.append(reply)
        return out

    def call(self, *args: bytes) -> Any:
        self.sock.sendall(command(*args))
        return self.replies(1)[0]


def start(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*argv, *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            Connection(port).call(b"PING")
            return process, port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def run(conn: Connection, variant: str, n: int, batch: int, size: int, sha: dict[str, bytes]):
    """Publishes a second, and the median batch's round trip (ms)."""
    payload = b"x" * size
    if variant == "PUBLISH":
        one = command(b"PUBLISH", b"c", payload)
    else:
        script = sha["without check" if variant == "history, no check" else "history"]
        keys = (b"tp:m:{c}", b"tp:s:{c}", b"c", payload, b"1000", b"0", b"600000", b"600000")
        one = command(b"EVALSHA", script, b"2", *keys)
    tail = command(b"WAIT", b"1", b"1000") if variant.endswith("WAIT 1") else b""
    each = []
    began = time.perf_counter()
    for _ in range(0, n, batch):
        t = time.perf_counter()
        conn.sock.sendall(one * batch + tail)
        replies = conn.replies(batch + (1 if tail else 0))
        if tail and replies[-1] < 1:
            raise RuntimeError("WAIT: the replica did not acknowledge in time")
        each.append(time.perf_counter() - t)
    return n / (time.perf_counter() - began), statistics.median(each) * 1000


VARIANTS = ["PUBLISH", "history, no check", "history", "history + WAIT 1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="publishes per variant and round")
    parser.add_argument("--batches", default="1,10,100", help="pipelined batch sizes")
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    master, port = start("--repl-diskless-sync-delay", "0")
    replica, _ = start("--replicaof", "127.0.0.1", str(port), "--dir", "/tmp")
    try:
        conn = Connection(port)
        deadline = time.monotonic() + 10
        while conn.call(b"WAIT", b"1", b"100") < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
        sha = {
            "history": conn.call(b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.encode()),
            "without check": conn.call(b"SCRIPT", b"LOAD", WITHOUT_CHECK.encode()),
        }
        print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
        print("| batch | variant | publishes/s | batch round trip (ms) | vs history |")
        print("| --- | --- | --- | --- | --- |")
        for batch in (int(b) for b in args.batches.split(",")):
            results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    conn.call(b"DEL", b"tp:m:{c}", b"tp:s:{c}")
                    results[variant].append(run(conn, variant, args.n, batch, args.size, sha))
            rates = {v: statistics.median(r for r, _ in results[v]) for v in VARIANTS}
            for variant in VARIANTS:
                latency = statistics.median(ms for _, ms in results[variant])
                ratio = rates[variant] / rates["history"]
                print(
                    f"| {batch} | {variant} | {rates[variant]:,.0f} | {latency:.3f} | {ratio:.0%} |"
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        for process in (replica, master):
            process.kill()
            process.wait(10)


if __name__ == "__main__":
    main()
