"""RedisPubSub on a Redis Cluster (issue 16) against one Redis, side by side.

    .venv/bin/python bench/redis_cluster.py                  # both measures
    .venv/bin/python bench/redis_cluster.py --measures publish --seconds 2

- **fanout**: ``--n`` WebSocket subscribers of one channel on a trio-push
  server (``bench/servers.py trio-push-redis``, one process), ``--messages``
  messages of ``--size`` bytes published in a burst, ``--rounds`` times
  (bench/loadclient.py); deliveries per second of the median round, through
  one Redis and through a 3-shard cluster.
- **publish**: ``--publishers`` processes, each a RedisPubSub publishing as
  fast as it can (``publish``, a ``publish_confirmed`` every 1,000 to bound
  what is queued) on 12 channels, 4 on each shard of the 3, for ``--seconds``;
  the publishes Redis confirmed per second, all processes together, through
  one Redis, a 1-shard and a 3-shard cluster; plain channels, and channels
  with history (the Lua script: the work is Redis's). Beside it, the
  publishes per CPU-second of the busiest redis-server (``INFO cpu``): what
  the topology confirms per second where Redis is the limit (a machine with
  a core per redis-server), since each Redis is single-threaded.

Every Redis is a fresh redis-server on loopback (``--save ''``), killed at
the end (tests/helpers/pubsub.py and redis_cluster.py). Run on a quiet
machine; the load is printed beside the table (``os.getloadavg``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.procs import free_port  # noqa: E402
from tests.helpers.pubsub import RedisServer  # noqa: E402
from tests.helpers.redis_cluster import RedisCluster  # noqa: E402
from trio_push._redis_cluster import SLOTS, key_slot  # noqa: E402


def balanced(shards: int, each: int) -> list[str]:
    """``each`` channels in each third (``shards``-th) of the slots: the
    shards of a cluster ``redis-cli --cluster create`` made carry as much."""
    found: dict[int, list[str]] = {shard: [] for shard in range(shards)}
    i = 0
    while any(len(names) < each for names in found.values()):
        name = f"bench.{i}"
        names = found[key_slot(name.encode()) * shards // SLOTS]
        if len(names) < each:
            names.append(name)
        i += 1
    return [name for names in found.values() for name in names]


CHANNELS = balanced(3, 4)


@contextlib.contextmanager
def topology(name: str) -> Iterator[tuple[str, list[RedisServer]]]:
    """A fresh Redis (``redis``) or cluster (``cluster-1``, ``cluster-3``);
    its URL and its redis-servers."""
    if name == "redis":
        with RedisServer() as redis:
            yield redis.url, [redis]
        return
    masters = int(name.split("-")[1])
    with tempfile.TemporaryDirectory() as folder, RedisCluster(Path(folder), masters) as cluster:
        yield cluster.url(), cluster.nodes


def cpu_seconds(nodes: list[RedisServer]) -> list[float]:
    """Each redis-server's CPU time so far (``INFO cpu``: user + system)."""
    times = []
    for node in nodes:
        info = node.call("INFO", "cpu").decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        times.append(float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"]))
    return times


def fanout(args: argparse.Namespace, url: str) -> float:
    """Deliveries per second of the median round."""
    port = free_port()
    env = dict(os.environ, BENCH_REDIS_URL=url, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/servers.py"), "trio-push-redis", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/hello"], check=False
        ).returncode:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        load = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench/loadclient.py"),
                *("--port", str(port), "--n", str(args.n), "--messages", str(args.messages)),
                *("--size", str(args.size), "--rounds", str(args.rounds)),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.terminate()
        server.wait(10)
    result = json.loads(load.stdout)
    return args.n * args.messages / statistics.median(result["rounds"])


def publish(
    args: argparse.Namespace, url: str, nodes: list[RedisServer], history: bool
) -> tuple[float, float]:
    """Confirmed publishes per second, all publishers together; and how many
    publishes one CPU-second of the busiest redis-server carried (what a
    machine where Redis, not the publishers, is the limit would confirm per
    second: sharding divides each Redis's share)."""
    start = time.time() + 2.0  # every publisher connected by then
    publishers = [
        subprocess.Popen(
            [sys.executable, __file__, "publisher", url, str(start), str(args.seconds)]
            + (["--history"] if history else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.publishers)
    ]
    before = cpu_seconds(nodes)
    total = 0
    for process in publishers:
        out, _ = process.communicate(timeout=60 + args.seconds)
        total += json.loads(out)["confirmed"]
    busiest = max(b - a for a, b in zip(before, cpu_seconds(nodes), strict=True))
    return total / args.seconds, total / busiest


def publisher_main(argv: list[str]) -> None:
    """One publisher process: publish from ``start`` for ``seconds``; print
    how many Redis confirmed."""
    import trio

    import trio_push
    from trio_push._history import History, HistoryRules

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("start", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--history", action="store_true")
    args = parser.parse_args(argv)
    payload = "x" * 64

    async def main() -> int:
        engine = trio_push.RedisPubSub(args.url, heartbeat=None)
        if args.history:
            engine.history = HistoryRules(History(100))
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            with trio.fail_after(10):
                while not engine.connected:
                    await trio.sleep(0.01)
            await trio.sleep(max(0.0, args.start - time.time()))
            end = time.time() + args.seconds
            sent = 0
            while time.time() < end:
                for i in range(1000):
                    if not engine.publish(CHANNELS[i % len(CHANNELS)], payload):
                        raise RuntimeError("a publish was refused")
                sent += 1000
                for channel in CHANNELS:  # what is queued on every shard is bounded
                    await engine.publish_confirmed(channel, payload)
                    sent += 1
            nursery.cancel_scope.cancel()
        return sent - engine.failed - engine.unconfirmed

    print(json.dumps({"confirmed": trio.run(main)}))


def main() -> None:
    if sys.argv[1:2] == ["publisher"]:
        publisher_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--measures", default="fanout,publish")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    measures = args.measures.split(",")
    rows: list[tuple[str, str, float, float | None]] = []
    if "fanout" in measures:
        for name in ("redis", "cluster-3"):
            with topology(name) as (url, _):
                rows.append(("fanout", name, fanout(args, url), None))
    if "publish" in measures:
        for history in (False, True):
            for name in ("redis", "cluster-1", "cluster-3"):
                with topology(name) as (url, nodes):
                    what = "publish (history)" if history else "publish"
                    rows.append((what, name, *publish(args, url, nodes, history)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before the table: {load}")
    print(
        f"{'measure':<20} {'topology':<10} {'per second':>12} {'vs redis':>9}"
        f" {'per busiest Redis CPU-s':>24} {'vs redis':>9}"
    )
    base: dict[str, tuple[float, float | None]] = {}
    for what, name, value, capacity in rows:
        first, first_capacity = base.setdefault(what, (value, capacity))
        line = f"{what:<20} {name:<10} {value:>12,.0f} {value / first:>8.2f}x"
        if capacity is not None and first_capacity:
            line += f" {capacity:>24,.0f} {capacity / first_capacity:>8.2f}x"
        print(line)


if __name__ == "__main__":
    main()
