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
    max_examples=int(os.environ.get("SANSIO_STATEFUL_EXAMPLES", "40")),
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
    """Two connections made alike, given the same calls, except that ``fast``
    gets each batch as a run."""

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
            self.fast, self.slow = connect_sse(config)[0], connect_sse(config)[0]
        else:
            offer = DEFLATE_OFFER if kind == "websocket-deflate" else []
            self.fast, self.slow = connect_ws(config, offer)[0], connect_ws(config, offer)[0]
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
        if self.fast.send_run(run, burst=burst):
            fast = len(run.messages)
        else:
            fast = send_each(self.fast, run.messages, burst)
        assert fast == send_each(self.slow, run.messages, burst)

    @rule()
    def refuse(self) -> None:
        self.fast.refused()
        self.slow.refused()

    @rule(fraction=st.floats(0, 1))
    def take(self, fraction: float) -> None:
        n = int(len(self.slow.data_to_send()) * fraction)
        assert (self.fast.sent(n) is None) == (self.slow.sent(n) is None)

    @rule()
    def keepalive(self) -> None:
        self.fast.send_keepalive()
        self.slow.send_keepalive()

    @rule()
    def close(self) -> None:
        self.fast.close()
        self.slow.close()

    @invariant()
    def alike(self) -> None:
        fast, slow = self.fast, self.slow
        assert fast.data_to_send() == slow.data_to_send()
        assert (fast.pending, fast.pending_bytes) == (slow.pending, slow.pending_bytes)
        assert (fast.dropped, fast.open, fast.refusing) == (slow.dropped, slow.open, slow.refusing)
        assert (fast.bytes_queued, fast.bytes_sent) == (slow.bytes_queued, slow.bytes_sent)


TestRunAgainstEach = RunAgainstEach.TestCase
TestRunAgainstEach.settings = MACHINE_SETTINGS
