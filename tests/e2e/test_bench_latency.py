"""bench/latency.py: its load client reads messages cut anywhere into reads
the way they were sent, and a small run against trio-push gets every
delivery and prints its table."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import latencyclient  # noqa: E402


def frames(count: int, size: int) -> bytes:
    """What a server sends for messages 0 .. count - 1 (unmasked text frames),
    message k due at 1,000,000 + k microseconds."""
    out = b""
    for k in range(count):
        head = f"{k}:{1_000_000 + k}:".encode()
        payload = head + b"x" * (size - len(head) - 1) + b"~"
        out += bytes([0x81, len(payload)]) + payload
    return out


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(1, 40),
    size=st.integers(40, 125),
    clients=st.integers(1, 3),
    data=st.data(),
)
def test_reads_cut_anywhere_give_each_message_its_number_and_due_time(
    count: int, size: int, clients: int, data: st.DataObject
) -> None:
    stream = frames(count, size)

    async def run() -> latencyclient.Bench:
        bench = latencyclient.Bench(size)
        for _ in range(clients):
            subscriber = latencyclient.Subscriber(bench, b"", b"")
            cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
            for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                subscriber.received(stream[lo:hi])
            assert subscriber.next == count
        return bench

    bench = asyncio.run(run())
    assert bench.due == [1_000_000 + k for k in range(count)]
    assert bench.delivered == count * clients
    assert bench.disorder == 0
    assert list(bench.counts) and all(c > 0 for c in bench.counts)


def test_a_message_out_of_order_is_counted() -> None:
    async def run() -> latencyclient.Bench:
        bench = latencyclient.Bench(64)
        first, second = (
            latencyclient.Subscriber(bench, b"", b""),
            latencyclient.Subscriber(bench, b"", b""),
        )
        stream = frames(3, 64)
        first.received(stream)
        second.received(stream[len(stream) // 3 :])  # message 0 never came
        return bench

    assert asyncio.run(run()).disorder == 1


@pytest.mark.parametrize("block", [3, 1000])
def test_latencies_are_each_delivery_s_and_the_missing_ones_count_from_the_end(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    monkeypatch.setattr(latencyclient, "BLOCK", block)
    now = [0.0]
    monkeypatch.setattr(latencyclient.time, "monotonic", lambda: now[0])
    stream = frames(10, 64)  # message k due at 1 + k / 1e6 s
    expected = []

    async def run() -> tuple[object, int]:
        bench = latencyclient.Bench(64)
        clients = []
        for i, got in enumerate([10, 7, 0, 10]):  # how many each subscriber gets
            subscriber = latencyclient.Subscriber(bench, b"", b"")
            clients.append(subscriber)
            for k in range(got):
                now[0] = 2.0 + i + k / 100
                subscriber.received(stream[66 * k : 66 * (k + 1)])
                expected.append(now[0] - (1 + k / 1e6))
            expected.extend(5.0 - (1 + k / 1e6) for k in range(got, 10))
        return latencyclient.latencies(bench, clients, 10, bench.due, 5.0)

    values, missing = asyncio.run(run())
    assert missing == 3 + 10
    assert np.allclose(values, np.sort(np.array(expected) * 1000), atol=1e-3)


def test_a_small_run_against_trio_push_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    cpu = str(min(os.sched_getaffinity(0)))
    proc = subprocess.run(
        [sys.executable, str(BENCH / "latency.py"), "--servers", "trio-push"]
        + ["--n", "20", "--seconds", "1", "--drain", "5", "--timeout", "30"]
        + ["--server-cpu", cpu, "--load-cpu", cpu, "--json", str(out), "--results", ""]
        + ["--chart", str(tmp_path / "latency.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["results"]["trio-push"]
    assert result["sent"] == 200
    assert result["deliveries"] == 20 * 200
    assert (result["missing"], result["extra"], result["disorder"], result["lost"]) == (0,) * 4
    assert "| **trio-push** | 4,000 | 0 |" in proc.stdout
    assert (tmp_path / "latency.png").stat().st_size > 0
