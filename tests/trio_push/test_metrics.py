"""Prometheus metrics: real scrapes of ``metrics_port`` (prometheus-client's
own parser reads them) move as traffic of each kind goes through the server;
under ``--workers 2`` one scrape of the supervisor covers both workers."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import trio_push
from tests.helpers.procs import MODULE, free_port, run_cli
from tests.helpers.pubsub import (
    PushClient,
    RedisServer,
    ServerProcess,
    connect_clients,
    engine,
)
from tests.helpers.server import TIMEOUT, wait_for
from tests.trio_push.test_workers import one_client_per_worker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_now(port: int) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(port: int) -> Samples:
    return await trio.to_thread.run_sync(scrape_now, port)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"trio_push_{name}", tuple(sorted(labels.items()))), 0.0)


async def until(port: int, name: str, check: Any, **labels: str) -> Samples:
    """Scrape until ``check(value of name{labels})`` holds (bounded)."""
    with trio.fail_after(TIMEOUT):
        while True:
            samples = await scrape(port)
            if check(value(samples, name, **labels)):
                return samples
            await trio.sleep(0.05)


class Handler:
    """Subscribes to the channel its path names; echoes messages; ``boom``
    raises; ``since POSITION`` subscribes to ``news`` (or ``plain``, which
    keeps no history) from there."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe(self.channel)

    def on_message(self, client: trio_push.Client, data: str) -> None:
        if data == "boom":
            raise RuntimeError("boom")
        verb, _, rest = data.partition(" ")
        if verb == "since":
            channel, _, position = rest.partition(" ")
            client.subscribe(channel, since=position)
        client.write(data)


def app(env: dict[str, Any]) -> Any:
    path = env["PATH_INFO"]
    if env["rack.upgrade?"] is not None:
        env["rack.upgrade"] = Handler(path.strip("/") or "news")
        return 200, {}, b""
    if path == "/fail":
        raise RuntimeError("the app fails")
    if path == "/missing":
        return 404, {"content-type": "text/plain"}, b"no"
    return 200, {"content-type": "text/plain"}, b"hello"


async def serve(nursery: trio.Nursery, **kwargs: Any) -> trio_push.Server:
    kwargs.setdefault("drain_timeout", 0.5)
    kwargs.setdefault("close_timeout", 1.0)
    with trio.fail_after(TIMEOUT):
        server: trio_push.Server = await nursery.start(
            lambda task_status: trio_push.serve(
                app, 0, host="127.0.0.1", metrics_port=0, task_status=task_status, **kwargs
            )
        )
    return server


async def stuck_websocket(port: int, path: str) -> trio.SocketStream:
    """A WebSocket with a tiny receive window that never reads."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    return stream


async def test_each_metric_moves_with_its_traffic(nursery: trio.Nursery) -> None:
    server = await serve(
        nursery,
        history=100,
        history_for={"plain": None},
        max_queue_bytes=64 * 1024,
    )
    assert server.metrics_port is not None and server.metrics_port not in server.ports
    port = server.metrics_port
    before = await scrape(port)
    assert value(before, "connections_open", protocol="websocket") == 0
    assert value(before, "http_request_duration_seconds_count") == 0

    # HTTP: each status class, and the duration histogram.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/missing")).status_code == 404
        assert (await http.get("/fail")).status_code == 500
        # Never on the app's routes: the app answers /metrics.
        assert (await http.get("/metrics")).text == "hello"
    after = await scrape(port)
    assert value(after, "http_responses_total", status_class="2xx") == 2
    assert value(after, "http_responses_total", status_class="4xx") == 1
    assert value(after, "http_responses_total", status_class="5xx") == 1
    assert value(after, "http_request_duration_seconds_count") == 4
    assert value(after, "http_request_duration_seconds_bucket", le="+Inf") == 4
    assert value(after, "http_request_duration_seconds_sum") > 0
    assert value(after, "connections_accepted_total") >= 1

    # WebSocket and SSE: open connections by protocol, messages both ways.
    ws = await PushClient.connect(server.port, "/chat")
    nursery.start_soon(ws.run)
    sse = await PushClient.connect(server.port, "/news", "sse")
    nursery.start_soon(sse.run)
    samples = await until(port, "connections_open", lambda v: v == 1, protocol="sse")
    assert value(samples, "connections_open", protocol="websocket") == 1
    assert value(samples, "http_responses_total", status_class="1xx") == 1  # the 101
    await ws.send_text("hi there")
    assert await ws.wait_messages(1) == ["hi there"]
    position = trio_push.publish("news", "n1")
    assert isinstance(position, trio_push.Position)
    await sse.wait_messages(1)
    samples = await until(port, "messages_sent_total", lambda v: v == 2)
    assert value(samples, "messages_received_total") == 1
    assert value(samples, "bytes_received_total") == len("hi there")
    assert value(samples, "bytes_sent_total") > len("hi there") + len("n1")
    assert value(samples, "publishes_total") == 1

    # History: a replay, and a gap (a position on a channel without history).
    trio_push.publish("news", "n2")
    await ws.send_text(f"since news {position}")
    await ws.wait_for(lambda c: "n2" in c.messages)
    await ws.send_text(f"since plain {trio_push.Position('plain', position.epoch, 1)}")
    samples = await until(port, "history_gaps_total", lambda v: v == 1, reason="no-history")
    assert value(samples, "history_replays_total") == 1
    assert value(samples, "history_replayed_messages_total") == 1

    # An exception in a callback.
    await ws.send_text("boom")
    await ws.wait_for(lambda c: c.closed)
    samples = await until(port, "callback_errors_total", lambda v: v == 1)
    await until(port, "connections_open", lambda v: v == 0, protocol="websocket")

    # An overflow: a client that does not read, flooded through pub/sub.
    stuck = await stuck_websocket(server.port, "/flood")
    await wait_for(lambda: server.pubsub.count("flood") == 1)
    payload = "y" * 2000
    for i in range(3000):
        trio_push.publish("flood", f"{i} {payload}")
        if i % 20 == 19:
            await trio.sleep(0)
    samples = await until(port, "overflows_total", lambda v: v == 1, policy="close")
    assert value(samples, "publishes_total") == 3002
    await stuck.aclose()

    # Refused past max_connections: its own server (a limit of 1).
    small = await serve(nursery, max_connections=1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{small.port}") as http:
        hold = await PushClient.connect(small.port, "/news")
        nursery.start_soon(hold.run)
        assert (await http.get("/")).status_code == 503
        samples = await until(small.metrics_port or 0, "connections_refused_total", bool)
        assert value(samples, "connections_accepted_total") == 1
        assert value(samples, "connections_open", protocol="http") == 0
        assert value(samples, "connections_open", protocol="websocket") == 1


async def test_an_http2_stream_counts_as_its_protocol(nursery: trio.Nursery) -> None:
    server = await serve(nursery)
    assert server.metrics_port is not None
    url = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=url, http1=False, http2=True) as client:
        headers = {"accept": "text/event-stream"}
        async with client.stream("GET", "/news", headers=headers) as response:
            assert response.http_version == "HTTP/2"
            samples = await until(
                server.metrics_port, "connections_open", lambda v: v == 1, protocol="sse"
            )
            # The connection itself is still one HTTP connection.
            assert value(samples, "connections_open", protocol="http") == 1
    await until(server.metrics_port, "connections_open", lambda v: v == 0, protocol="sse")


async def test_an_overflow_under_drop_counts_each_message(nursery: trio.Nursery) -> None:
    server = await serve(nursery, max_queue_bytes=64 * 1024, overflow="drop")
    stuck = await stuck_websocket(server.port, "/flood")
    await wait_for(lambda: server.pubsub.count("flood") == 1)
    for i in range(3000):
        trio_push.publish("flood", f"{i} {'z' * 2000}")
        if i % 20 == 19:
            await trio.sleep(0)
    assert server.metrics_port is not None
    samples = await until(server.metrics_port, "overflows_total", lambda v: v > 100, policy="drop")
    assert value(samples, "overflows_total", policy="close") == 0
    await stuck.aclose()


async def test_redis_up_and_publish_failures_follow_redis(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    server = await serve(nursery, pubsub=engine(redis))
    assert server.metrics_port is not None
    port = server.metrics_port
    (client,) = await connect_clients(nursery, server.port, 1, path="/d")
    await wait_for(lambda: redis.numsub("d") == 1)
    await until(port, "redis_up", lambda v: v == 1)
    assert trio_push.publish("d", "one")
    await client.wait_messages(1)
    samples = await scrape(port)
    assert value(samples, "publishes_total") == 1
    assert value(samples, "publish_failures_total") == 0

    redis.kill()
    await until(port, "redis_up", lambda v: v == 0)
    assert trio_push.publish("d", "lost") is False
    samples = await scrape(port)
    assert value(samples, "publish_failures_total") == 1

    redis.start()
    await until(port, "redis_up", lambda v: v == 1)


async def test_one_scrape_covers_every_worker(redis: RedisServer) -> None:
    metrics_port = free_port()
    proc = ServerProcess(
        "pubsub_app:app",
        "--workers",
        "2",
        "--redis",
        redis.url,
        "--metrics-port",
        str(metrics_port),
        "--drain-timeout",
        "1",
    )
    try:
        async with trio.open_nursery() as nursery:
            clients = await one_client_per_worker(nursery, proc.port, "w")
            # One scrape, of the supervisor: both workers' connections.
            samples = await until(
                metrics_port, "connections_open", lambda v: v == 2, protocol="websocket"
            )
            assert value(samples, "connections_accepted_total") >= 2
            assert value(samples, "messages_sent_total") >= 2  # each client's hello
            samples = await until(metrics_port, "redis_up", lambda v: v == 2)
            accepted = value(samples, "connections_accepted_total")
            # A worker killed: its gauges leave the totals, its counters stay.
            killed, kept = clients
            os.kill(int(killed), signal.SIGKILL)
            samples = await until(
                metrics_port, "connections_open", lambda v: v == 1, protocol="websocket"
            )
            assert value(samples, "connections_accepted_total") >= accepted
            await clients[kept].aclose()
            await until(metrics_port, "connections_open", lambda v: v == 0, protocol="websocket")
            nursery.cancel_scope.cancel()
    finally:
        assert proc.stop() == 0, proc.log()


async def test_metrics_port_without_prometheus_client_is_one_line(tmp_path: Any) -> None:
    # The package hidden from the import system, as when it is not installed.
    code = (
        "import sys; sys.modules['prometheus_client'] = None;"
        "from trio_push._cli import main; main(sys.argv[1:])"
    )
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-c", code, "x:y", "--metrics-port", "9999"],
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [
        "trio-push: --metrics-port: metrics need prometheus-client:"
        " pip install 'trio-push[metrics]'"
    ]


def test_without_prometheus_client_a_server_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    server = trio_push.Server(app, 0, metrics_port=0)
    with pytest.raises(ImportError, match=r"trio-push\[metrics\]"):
        trio.run(server.serve)


@pytest.mark.parametrize("workers", [[], ["--workers", "2", "--redis", "redis://127.0.0.1:1"]])
async def test_a_metrics_port_in_use_is_one_line(app_dir: Path, workers: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_cli(
            MODULE, app_dir, "pushapp:Listen", *workers, "--port", "0", "--metrics-port", str(port)
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"trio-push: metrics port {port} on 127.0.0.1: Address already in use"
    )
