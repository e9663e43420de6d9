"""``--workers N``: SIGHUP replaces the workers one by one, under load, with
no request refused and every push client told (``on_shutdown``, close 1001)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import trio

from tests.helpers.history import open_event_source
from tests.helpers.pubsub import PushClient, RedisServer, ServerProcess, pid_alive, worker_pids
from tests.helpers.server import TIMEOUT, wait_for

HTTP_CLIENTS = 200
PUSH_CLIENTS = 500


@pytest.fixture
def workers(redis: RedisServer) -> Iterator[ServerProcess]:
    process = ServerProcess(
        "drain_app:app", "--workers", "2", "--redis", redis.url, "--no-access-log"
    )
    try:
        yield process
    finally:
        process.stop()


@dataclass
class Visit:
    """One connection of a push client: the worker it met, what it got."""

    client: PushClient
    pid: int


@dataclass
class Load:
    """HTTP clients looping on ``/pid`` (a fresh connection for each
    request: a new connection is what a worker that stops listening could
    refuse) and push clients that reconnect when closed."""

    port: int
    done: bool = False
    answers: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    visits: list[list[Visit]] = field(default_factory=list)

    async def http_loop(self, http: httpx.AsyncClient) -> None:
        while not self.done:
            try:
                response = await http.get(f"http://127.0.0.1:{self.port}/pid")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            if response.status_code != 200:
                self.failures.append(f"{response.status_code} {response.text}")
                continue
            pid = int(response.text)
            self.answers[pid] = self.answers.get(pid, 0) + 1

    async def push_loop(self, nursery: trio.Nursery, limit: trio.CapacityLimiter) -> None:
        visits: list[Visit] = []
        self.visits.append(visits)
        while True:
            try:
                async with limit:
                    client = await PushClient.connect(self.port, "/sub")
            except (OSError, trio.BrokenResourceError, AssertionError) as exc:
                self.failures.append(f"push connect: {exc!r}")
                return
            nursery.start_soon(client.run)
            hello = (await client.wait_messages(1))[0]
            visits.append(Visit(client, int(str(hello).split()[1])))
            await client.wait_for(lambda c: c.closed, timeout=3 * TIMEOUT)
            if self.done:
                return


async def test_sighup_replaces_every_worker_under_load(
    nursery: trio.Nursery, workers: ServerProcess
) -> None:
    await wait_for(lambda: len(worker_pids(workers, "ready")) == 2)
    old = worker_pids(workers, "ready")
    load = Load(workers.port)
    limits = httpx.Limits(max_connections=HTTP_CLIENTS, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(limits=limits, timeout=TIMEOUT) as http,
        trio.open_nursery() as clients,
    ):
        limit = trio.CapacityLimiter(100)
        for _ in range(PUSH_CLIENTS):
            clients.start_soon(load.push_loop, nursery, limit)
        await wait_for(lambda: sum(map(len, load.visits)) == PUSH_CLIENTS)
        for _ in range(HTTP_CLIENTS):
            clients.start_soon(load.http_loop, http)
        await wait_for(lambda: sum(load.answers.values()) >= 500)

        workers.process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "rolling restart done" in workers.log())
        new = [pid for pid in worker_pids(workers, "ready") if pid not in old]
        # Every push client ends up on a new worker, and HTTP goes there too.
        await wait_for(lambda: bool(load.failures) or all(v[-1].pid in new for v in load.visits))
        before = {pid: load.answers.get(pid, 0) for pid in new}
        await wait_for(
            lambda: bool(load.failures) or all(load.answers.get(p, 0) > before[p] + 20 for p in new)
        )
        load.done = True
        for visits in load.visits:
            await visits[-1].client.aclose()
    assert load.failures == []
    assert len(new) == 2 and set(load.answers) >= {*old, *new}
    assert not any(pid_alive(pid) for pid in old)
    assert all(pid_alive(pid) for pid in new)
    # Every connection to an old worker got on_shutdown's message and a 1001.
    replaced = [v for visits in load.visits for v in visits if v.pid in old]
    assert len(replaced) >= PUSH_CLIENTS
    for visit in replaced:
        assert visit.client.messages[-1] == f"bye {visit.pid}", visit.client.messages
        assert visit.client.close_code == 1001
    # Each old worker was told to drain only once its replacement listened.
    log = workers.log()
    pairs = [(int(n), int(o)) for n, o in re.findall(r"pid (\d+) listens; pid (\d+) drains", log)]
    assert sorted(n for n, _ in pairs) == sorted(new)
    assert sorted(o for _, o in pairs) == sorted(old)
    for new_pid, old_pid in pairs:
        ready = log.index(f"ready, pid {new_pid}")
        drains = log.index(f"pid {new_pid} listens; pid {old_pid} drains")
        assert ready < drains < log.index(f"(pid {old_pid}) exited, replaced")
    assert workers.alive()


async def test_a_sighup_during_a_rolling_restart_queues_another(workers: ServerProcess) -> None:
    await wait_for(lambda: len(worker_pids(workers, "ready")) == 2)
    first = worker_pids(workers, "ready")
    workers.process.send_signal(signal.SIGHUP)
    await wait_for(lambda: len(worker_pids(workers, "ready")) == 3)
    workers.process.send_signal(signal.SIGHUP)
    workers.process.send_signal(signal.SIGHUP)  # folded into the queued one
    await wait_for(lambda: workers.log().count("rolling restart done") == 2, timeout=2 * TIMEOUT)
    log = workers.log()
    assert "SIGHUP during a rolling restart: another one follows it" in log
    ready = worker_pids(workers, "ready")
    assert len(ready) == 6
    assert not any(pid_alive(pid) for pid in ready[:4])
    assert all(pid_alive(pid) for pid in ready[4:])
    assert set(first).isdisjoint(ready[4:])
    # Once done, no third one.
    await trio.sleep(0.5)
    assert workers.log().count("replacing the 2 workers one by one") == 2


async def test_with_history_the_clients_of_replaced_workers_resume_with_nothing_lost(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    """History on (Redis): event streams closed by the roll reconnect (to a
    new worker) with their Last-Event-ID and miss none of what was published
    meanwhile, while a publisher keeps publishing through the roll."""
    process = ServerProcess(
        "tests.apps.history_app:App",
        *("--workers", "2", "--redis", redis.url, "--history", "20000", "--no-access-log"),
    )
    try:
        await wait_for(lambda: len(worker_pids(process, "ready")) == 2)
        old = worker_pids(process, "ready")
        url = f"http://127.0.0.1:{process.port}"
        sources = [
            (await open_event_source(nursery, f"{url}/sub?ch=feed", reconnect=True))[0]
            for _ in range(20)
        ]
        await wait_for(lambda: redis.numsub("feed") == 2 or len({s.pids[0] for s in sources}) < 2)
        published: list[str] = []
        after = 0  # batches published once the roll was done
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            batch = 0
            while after < 5:
                answer = await http.get(f"{url}/publish?ch=feed&n=20&prefix=b{batch}-")
                positions = answer.json()
                assert all(positions), positions  # every publish got a position
                published += [f"b{batch}-{i}" for i in range(20)]
                batch += 1
                if batch == 3:
                    process.process.send_signal(signal.SIGHUP)
                if "rolling restart done" in process.log():
                    after += 1
                await trio.sleep(0.05)
        assert batch > 8  # publishing went on through the roll
        for source in sources:
            await source.wait_for(lambda s: len(s.messages) >= len(published))
            assert source.messages == published  # in order, none lost, none twice
            assert source.gaps == []
        # They did reconnect: each met an old worker, and ends on a new one.
        new = [pid for pid in worker_pids(process, "ready") if pid not in old]
        assert all(int(s.pids[0]) in old and int(s.pids[-1]) in new for s in sources)
    finally:
        process.stop()
