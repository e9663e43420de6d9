"""Stateful property: pending / pending_bytes / Drained follow a simple model
through any sequence of queueing and partial taking, on upgraded connections."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sansio_wire import connect_sse, connect_ws

from sansio_push import Config, Drained, ServerConnection, prepare

messages = st.one_of(st.text(max_size=40), st.binary(max_size=300))
MACHINE_SETTINGS = settings(
    max_examples=int(os.environ.get("SANSIO_STATEFUL_EXAMPLES", "40")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Accounting(RuleBasedStateMachine):
    """The model: every byte ever queued, the offsets where messages end, how
    many bytes were taken, and how many were queued when the socket first
    refused (the queue bounds count only what was queued after that, until
    everything is taken). pending = message ends not yet taken."""

    conn: ServerConnection

    @initialize(
        kind=st.sampled_from(["websocket", "sse"]),
        max_messages=st.integers(1, 8),
        max_bytes=st.integers(50, 2000),
        overflow=st.sampled_from(["drop", "close"]),
    )
    def connect(self, kind: str, max_messages: int, max_bytes: int, overflow: str) -> None:
        self.config = Config(
            max_queue_messages=max_messages,
            max_queue_bytes=max_bytes,
            overflow=overflow,  # type: ignore[arg-type]
        )
        self.kind = kind
        self.conn = (connect_ws if kind == "websocket" else connect_sse)(self.config)[0]
        self.queued = 0
        self.taken = 0
        self.ends: list[int] = []
        self.stream = b""
        self.dropped = 0
        self.open = True
        self.refused_at = -1

    @property
    def pending(self) -> int:
        return sum(1 for end in self.ends if end > self.taken)

    def _after_queue(self, before: bytes, accepted: bool) -> None:
        after = self.conn.data_to_send()
        assert after.startswith(before)
        added = after[len(before) :]
        if accepted:
            assert added, "an accepted message queued no bytes"
            self.queued += len(added)
            self.ends.append(self.queued)
        else:
            # Refused: nothing queued, or (policy 'close') only the end of the push.
            self.queued += len(added)
            if self.config.overflow == "drop" and self.open:
                assert added == b""
        self.stream += added

    def _fits(self, size: int) -> bool:
        if self.refused_at < 0:
            return True
        since = max(self.refused_at, self.taken)
        return (
            sum(1 for end in self.ends if end > since) < self.config.max_queue_messages
            and self.queued - since + size <= self.config.max_queue_bytes
        )

    def _taken(self, n: int) -> None:
        self.taken += n
        if self.taken == self.queued:
            self.refused_at = -1

    @rule()
    def refuse(self) -> None:
        self.conn.refused()
        if self.refused_at < 0 and self.queued > self.taken:
            self.refused_at = self.queued

    @rule(msg=messages, use_prepare=st.booleans())
    def queue_message(self, msg: str | bytes, use_prepare: bool) -> None:
        before = self.conn.data_to_send()
        if self.kind == "sse" and isinstance(msg, bytes):
            msg = msg.decode("latin-1")
        # The encoded size, to predict the bound, from a throwaway connection.
        probe = (connect_ws if self.kind == "websocket" else connect_sse)()[0]
        probe.send_message(msg)
        size = probe.pending_bytes
        fits = self._fits(size)
        accepted = (
            self.conn.send_prepared(prepare(msg)) if use_prepare else self.conn.send_message(msg)
        )
        assert accepted == (self.open and fits)
        if self.open and not fits:
            if self.config.overflow == "drop":
                self.dropped += 1
            else:
                self.open = False
        self._after_queue(before, accepted)

    @rule()
    def keepalive(self) -> None:
        before = self.conn.data_to_send()
        self.conn.send_keepalive()
        added = self.conn.data_to_send()[len(before) :]
        assert bool(added) == self.open
        self.queued += len(added)
        self.stream += added

    @rule(fraction=st.floats(0, 1))
    def take(self, fraction: float) -> None:
        waiting = self.queued - self.taken
        n = round(waiting * fraction)
        before = self.pending
        result = self.conn.sent(n)
        self._taken(n)
        assert (result == Drained()) == (before > 0 and self.pending == 0)
        assert result is None or result == Drained()

    @precondition(lambda self: self.queued > self.taken)
    @rule()
    def take_one_byte(self) -> None:
        before = self.pending
        result = self.conn.sent(1)
        self._taken(1)
        assert (result is not None) == (before > 0 and self.pending == 0)

    @rule()
    def take_the_last_byte_of_the_next_message(self) -> None:
        ends = [e for e in self.ends if e > self.taken]
        if not ends:
            return
        before = self.pending
        n = ends[0] - self.taken
        result = self.conn.sent(n)
        self._taken(n)
        assert self.pending == before - 1
        assert (result is not None) == (self.pending == 0)

    @rule()
    def close(self) -> None:
        before = self.conn.data_to_send()
        self.conn.close()
        self.open = False
        added = self.conn.data_to_send()[len(before) :]
        self.queued += len(added)
        self.stream += added

    @invariant()
    def pending_is_messages_queued_minus_taken(self) -> None:
        if hasattr(self, "conn"):
            assert self.conn.pending == self.pending

    @invariant()
    def pending_bytes_is_bytes_queued_minus_taken(self) -> None:
        if hasattr(self, "conn"):
            assert self.conn.pending_bytes == self.queued - self.taken
            assert self.conn.data_to_send() == self.stream[self.taken :]

    @invariant()
    def open_and_dropped_match(self) -> None:
        if hasattr(self, "conn"):
            assert self.conn.open == self.open
            assert self.conn.dropped == self.dropped
            assert self.conn.refusing == (self.refused_at >= 0)


Accounting.TestCase.settings = MACHINE_SETTINGS
TestAccounting = Accounting.TestCase
