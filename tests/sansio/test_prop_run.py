"""Stateful property: queueing a run of prepared messages in one piece
(``send_run``, falling back to one message at a time when it declines) leaves
a connection exactly as ``send_prepared`` of each message in turn does:
the same bytes, pending counts, drains, drops, bounds and close, through
any sequence of refusals, partial sends, keepalives and closes."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sansio_wire import connect_sse, connect_ws

from sansio_push import Config, Prepared, PreparedRun, ServerConnection, prepare

# Bytes that are not UTF-8 cannot be SSE events: the one-by-one path skips them.
messages = st.one_of(st.text(max_size=30), st.binary(max_size=200))
DEFLATE_OFFER = [("Sec-WebSocket-Extensions", "permessage-deflate")]
MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("SANSIO_STATEFUL_EXAMPLES", "100")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def send_each(conn: ServerConnection, batch: list[Prepared], burst: bool) -> int:
    """What PushSession.take_published does without a run: how many were queued."""
    queued = 0
    for prepared in batch:
        try:
            if conn.send_prepared(prepared, burst=burst):
                queued += 1
            elif not conn.open:
                break
        except ValueError:
            pass
    return queued


class RunAgainstEach(RuleBasedStateMachine):
    """Three connections made alike, given the same calls, except that
    ``fast`` and ``twin`` get each batch as a run (the twin right after
    ``fast``, as a burst's next subscriber: it finds what was made for
    ``fast`` kept)."""

    @initialize(
        kind=st.sampled_from(["websocket", "websocket-deflate", "sse"]),
        max_messages=st.integers(1, 8),
        max_bytes=st.integers(50, 2000),
        overflow=st.sampled_from(["drop", "close", "resync"]),
    )
    def connect(self, kind: str, max_messages: int, max_bytes: int, overflow: str) -> None:
        config = Config(
            max_queue_messages=max_messages,
            max_queue_bytes=max_bytes,
            overflow=overflow,  # type: ignore[arg-type]
            compression=kind == "websocket-deflate",
        )
        if kind == "sse":
            self.fast, self.twin, self.slow = (connect_sse(config)[0] for _ in range(3))
        else:
            offer = DEFLATE_OFFER if kind == "websocket-deflate" else []
            self.fast, self.twin, self.slow = (connect_ws(config, offer)[0] for _ in range(3))
        self.runs: list[PreparedRun] = []

    @rule(
        batch=st.lists(messages, min_size=1, max_size=12), burst=st.booleans(), again=st.booleans()
    )
    def queue_run(self, batch: list[str | bytes], burst: bool, again: bool) -> None:
        if again and self.runs:
            run = self.runs[-1]  # shared by connections: joined once, reused
        else:
            run = PreparedRun([prepare(m) for m in batch])
            self.runs.append(run)
        queued = send_each(self.slow, run.messages, burst)
        for conn in (self.fast, self.twin):
            if conn.send_run(run, burst=burst):
                assert queued == len(run.messages)
            else:
                assert queued == send_each(conn, run.messages, burst)

    @property
    def all(self) -> tuple[ServerConnection, ...]:
        return self.fast, self.twin, self.slow

    @rule()
    def refuse(self) -> None:
        for conn in self.all:
            conn.refused()

    @rule(fraction=st.floats(0, 1))
    def take(self, fraction: float) -> None:
        n = int(len(self.slow.data_to_send()) * fraction)
        assert len({conn.sent(n) is None for conn in self.all}) == 1

    @rule()
    def keepalive(self) -> None:
        for conn in self.all:
            conn.send_keepalive()

    @rule()
    def close(self) -> None:
        for conn in self.all:
            conn.close()

    @invariant()
    def alike(self) -> None:
        slow = self.slow
        for conn in (self.fast, self.twin):
            assert conn.data_to_send() == slow.data_to_send()
            assert (conn.pending, conn.pending_bytes) == (slow.pending, slow.pending_bytes)
            assert (conn.dropped, conn.open, conn.refusing) == (
                slow.dropped,
                slow.open,
                slow.refusing,
            )
            assert (conn.bytes_queued, conn.bytes_sent) == (slow.bytes_queued, slow.bytes_sent)


TestRunAgainstEach = RunAgainstEach.TestCase
TestRunAgainstEach.settings = MACHINE_SETTINGS
