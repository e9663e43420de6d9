"""examples/chat, run as its README says: two workers and Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import trio

from tests.helpers.procs import ROOT
from tests.helpers.pubsub import PushClient, RedisServer, ServerProcess, http_get
from tests.helpers.server import TIMEOUT


@pytest.fixture
def chat() -> Iterator[tuple[RedisServer, ServerProcess]]:
    with RedisServer() as redis:
        server = ServerProcess(
            "app:app", "--workers", "2", "--redis", redis.url, cwd=ROOT / "examples" / "chat"
        )
        try:
            yield redis, server
        finally:
            server.stop()


async def visitor(nursery: trio.Nursery, port: int, name: str) -> tuple[PushClient, int]:
    """A visitor in room ``test``; the worker pid their own join came from."""
    client = await PushClient.connect(port, f"/chat?room=test&name={name}")
    nursery.start_soon(client.run)
    await client.wait_for(lambda c: any(json.loads(m)["name"] == name for m in c.messages))
    join = next(json.loads(m) for m in client.messages if json.loads(m)["name"] == name)
    assert join["type"] == "join"
    return client, join["worker"]


async def test_chat_across_two_workers(
    nursery: trio.Nursery, chat: tuple[RedisServer, ServerProcess]
) -> None:
    _, server = chat
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                page = await http_get(server.port, "/")
                break
            except OSError:
                await trio.sleep(0.05)
    assert "<title>trio-push chat</title>" in page

    # Visitors until two of them sit on different workers.
    by_worker: dict[int, tuple[str, PushClient]] = {}
    i = 0
    with trio.fail_after(TIMEOUT):
        while len(by_worker) < 2:
            name = f"v{i}"
            client, worker = await visitor(nursery, server.port, name)
            by_worker.setdefault(worker, (name, client))
            i += 1
    (w1, (alice_name, alice)), (w2, (_, bob)) = by_worker.items()
    assert w1 != w2
    await alice.send_text(json.dumps({"text": "hello from alice"}))
    for client in (alice, bob):
        await client.wait_for(lambda c: any(json.loads(m)["type"] == "message" for m in c.messages))
        said = [json.loads(m) for m in client.messages if json.loads(m)["type"] == "message"]
        assert said == [
            {"type": "message", "name": alice_name, "text": "hello from alice", "worker": w1}
        ]
