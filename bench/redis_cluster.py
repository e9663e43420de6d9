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
  what is queued) on 12 channels spread over the shards, for ``--seconds``;
  the publishes Redis confirmed per second, all processes together, through
  one Redis, a 1-shard and a 3-shard cluster; plain channels, and channels
  with history (the Lua script: the work is Redis's).

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

CHANNELS = [f"bench.{i}" for i in range(12)]


@contextlib.contextmanager
def topology(name: str) -> Iterator[str]:
    """A fresh Redis (``redis``) or cluster (``cluster-1``, ``cluster-3``); its URL."""
    if name == "redis":
        with RedisServer() as redis:
            yield redis.url
        return
    masters = int(name.split("-")[1])
    with tempfile.TemporaryDirectory() as folder, RedisCluster(Path(folder), masters) as cluster:
        yield cluster.url()


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


def publish(args: argparse.Namespace, url: str, history: bool) -> float:
    """Confirmed publishes per second, all publishers together."""
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
    total = 0
    for process in publishers:
        out, _ = process.communicate(timeout=60 + args.seconds)
        total += json.loads(out)["confirmed"]
    return total / args.seconds


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
    rows: list[tuple[str, str, float]] = []
    if "fanout" in measures:
        for name in ("redis", "cluster-3"):
            with topology(name) as url:
                rows.append(("fanout", name, fanout(args, url)))
    if "publish" in measures:
        for history in (False, True):
            for name in ("redis", "cluster-1", "cluster-3"):
                with topology(name) as url:
                    what = "publish (history)" if history else "publish"
                    rows.append((what, name, publish(args, url, history)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before the table: {load}")
    print(f"{'measure':<20} {'topology':<10} {'per second':>12} {'vs redis':>9}")
    base: dict[str, float] = {}
    for what, name, value in rows:
        base.setdefault(what, value)
        print(f"{what:<20} {name:<10} {value:>12,.0f} {value / base[what]:>8.2f}x")


if __name__ == "__main__":
    main()
