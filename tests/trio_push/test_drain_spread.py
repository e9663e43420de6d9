"""``--drain-spread SECONDS``: a graceful shutdown closes its push clients in
batches across that window, not all at once."""

from __future__ import annotations

import signal

import trio

from tests.helpers.pubsub import PushClient, ServerProcess, connect_clients
from tests.helpers.server import TIMEOUT

SPREAD = 5.0
DRAIN_TIMEOUT = 2.0
CLIENTS = 1000
#: The documented bound (docs/deployment.md, "Paced drain"): in no one second
#: does a paced drain close more than this fraction of its clients.
MAX_FRACTION_PER_SECOND = 0.3


def most_in_one_second(times: list[float]) -> int:
    """The most of ``times`` that fall within any one second."""
    times = sorted(times)
    most = start = 0
    for end, t in enumerate(times):
        while t - times[start] > 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_a_paced_drain_spreads_the_closes_over_the_window(nursery: trio.Nursery) -> None:
    server = ServerProcess(
        "drain_app:app",
        "--drain-spread",
        str(SPREAD),
        "--drain-timeout",
        str(DRAIN_TIMEOUT),
        "--no-access-log",
    )
    try:
        clients = await connect_clients(nursery, server.port, CLIENTS, path="/sub")
        closed_at: dict[PushClient, float] = {}

        async def watch(client: PushClient) -> None:
            await client.wait_for(lambda c: c.closed, timeout=TIMEOUT + SPREAD)
            closed_at[client] = trio.current_time()

        with trio.fail_after(TIMEOUT):
            for client in clients:
                await client.wait_messages(1)
        stopped_at = trio.current_time()
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(TIMEOUT + SPREAD):
            async with trio.open_nursery() as watchers:
                for client in clients:
                    watchers.start_soon(watch, client)
        status = await trio.to_thread.run_sync(server.process.wait, TIMEOUT)
        exited_in = trio.current_time() - stopped_at
    finally:
        server.stop()
    assert status == 0, server.log()
    # Each got on_shutdown's message, then its close, as without a spread.
    for client in clients:
        assert str(client.messages[-1]).startswith("bye "), client.messages
        assert client.close_code == 1001
    times = list(closed_at.values())
    assert most_in_one_second(times) <= MAX_FRACTION_PER_SECOND * CLIENTS, sorted(times)
    assert max(times) - stopped_at <= SPREAD + 1.0
    # The drain bound is drain_spread + drain_timeout.
    assert exited_in <= SPREAD + DRAIN_TIMEOUT + 1.0, server.log()
    assert "paced drain: 1000 push connections in 50 batches over 5 s" in server.log()
