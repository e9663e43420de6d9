"""Publish/subscribe: one publish reaches every subscriber, encoded once.

Two engines share one interface (:class:`PubSub`) and one local table of
subscriptions (:class:`Subscriptions`):

- :class:`MemoryPubSub` (the default) delivers within this process.
- :class:`trio_push.RedisPubSub` goes through Redis, so a publish reaches the
  subscribers of every process and machine connected to the same Redis.

Delivery follows Redis: a publish to ``channel`` reaches each subscription
that matches it, the exact channel and every glob pattern
(``PSUBSCRIBE`` rules), so a client subscribed to both ``chat.1`` and
``chat.*`` receives a message to ``chat.1`` twice, as a Redis client would.

A subscriber is a client's push session, seen here only through the
:class:`Subscriber` protocol: its cursors, and how to hand it what was
published.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any, Protocol

import trio

import sansio_push as sp

from ._glob import glob_to_regex, is_pattern
from ._history import (
    EPOCH,
    MAX_ID_CHANNELS,
    NO_HISTORY,
    TRIMMED,
    HistoryRules,
    MemoryHistory,
    Position,
    Published,
    sse_id,
)
from ._loop import Loop

log = logging.getLogger("trio_push.pubsub")

# A topic's log is looked at for trimming once it holds this many messages
# or bytes, and again each time as much again is published: what every
# subscriber has taken is dropped, and a subscriber too slow for the logs
# (see enforce_bounds) gets its overflow policy.
TRIM_MESSAGES = 512
TRIM_BYTES = 1024 * 1024
# What one pull takes from the logs for a connection, in message bytes: the
# rest waits in the shared log until the socket has taken this much.
PULL_BYTES = 256 * 1024
# A subscriber whose socket refuses bytes and that has more than this many
# times its queue bounds waiting for it in the logs is too slow: a burst up
# to that size waits in the shared log for the readers that take it.
LAG_FACTOR = 4


class QueueState(Protocol):
    """What pub/sub reads of a subscriber's protocol core."""

    @property
    def refusing(self) -> bool:
        """Its socket refuses bytes (see ``sansio_push.ServerConnection.refused``)."""

    @property
    def config(self) -> sp.Config:
        """Its queue bounds and overflow policy."""

    @property
    def protocol(self) -> str:
        """``'websocket'`` or ``'sse'``."""


class Subscriber(Protocol):
    """What pub/sub needs of a subscribed push session."""

    #: Its subscriptions (appended and removed by :class:`Subscriptions`).
    cursors: list[Cursor]
    #: History loads (and gap notices) in flight: nothing is taken from
    #: the logs for it until they are done, so that what history brings
    #: goes before what is live.
    loading: int

    @property
    def core(self) -> QueueState: ...

    def flush_soon(self) -> None:
        """Something was published for it: send soon (it calls :func:`pull`)."""

    def take_published(self, batch: list[sp.Prepared], run: sp.PreparedRun | None = None) -> None:
        """Queue what :func:`pull` took for it, in order (``run``: the same
        messages, when they are one topic's, to queue in one piece)."""

    def overflow(self) -> None:
        """It fell too far behind: apply the 'close' overflow policy."""

    def subscribe_refused(self, channel: str, reason: str) -> None:
        """The engine refused its subscription to ``channel``."""

    def gap(self, channel: str, reason: str) -> None:
        """It will not get everything after its position on ``channel``:
        tell the app (``on_gap``) before anything else is taken."""

    def announce(self, cursor: Cursor) -> None:
        """A history subscription knows its position (:attr:`Cursor.last`):
        tell the page (an SSE id, a WebSocket envelope) before any message."""


class Cursor:
    """One subscription of one subscriber: how far into its topic's log
    the subscriber has taken messages, and on a channel with history, the
    position of the last one."""

    __slots__ = (
        "topic",
        "subscriber",
        "pos",
        "idle",
        "envelope",
        "last",
        "replay",
        "seam",
        "detached",
    )

    def __init__(self, topic: Topic, subscriber: Subscriber, envelope: bool = False) -> None:
        self.topic = topic
        self.subscriber = subscriber
        self.pos = topic.base + len(topic.log)
        # Registered in topic.idle: the writer sleeps, wake it on publish.
        # A new cursor starts registered: its writer may be asleep already
        # (it registers its cursors only as it goes to sleep), and waking a
        # writer that is awake costs nothing.
        self.idle = True
        topic.idle[self] = None
        #: WebSocket messages go out in the envelope (Published.wrapped).
        self.envelope = envelope
        #: History channels: the position of the last message taken (where
        #: it started, once its history load is done).
        self.last: Position | None = None
        #: What a history load brought, taken before the log.
        self.replay: list[Published] | None = None
        #: After a load: messages of the log up to ``last`` were in history
        #: already, and are skipped.
        self.seam = False
        #: overflow='resync': where to read history from once the socket drains.
        self.detached: Position | None = None


class Topic:
    """A channel or pattern with subscribers here, and its recent messages.

    A publish appends the prepared message to the log, once, whatever the
    number of subscribers, and wakes the writers that sleep; each
    connection's writer takes what is new for it (its :class:`Cursor`)
    right before it sends, as much as its socket takes, so a burst of
    messages leaves in few sends and waits in one shared log, not in a
    queue per subscriber.
    """

    __slots__ = (
        "key",
        "regex",
        "log",
        "seqs",
        "ends",
        "base",
        "base_bytes",
        "trim_messages",
        "trim_bytes",
        "cursors",
        "idle",
        "history",
        "_run",
    )

    def __init__(self, key: str, pattern: bool = False, history: bool = False) -> None:
        self.key = key
        self.regex = glob_to_regex(key) if pattern else None
        #: A channel (not a pattern) that keeps history: its messages have positions.
        self.history = history
        self.log: list[sp.Prepared] = []
        # Publish order across topics, for connections on several.
        self.seqs: list[int] = []
        # Message bytes ever published here, as of the end of each message
        # in the log; base_bytes as of the log's start.
        self.ends: list[int] = []
        self.base = 0
        self.base_bytes = 0
        self.trim_messages = TRIM_MESSAGES
        self.trim_bytes = TRIM_BYTES
        self.cursors: dict[Subscriber, Cursor] = {}
        # Cursors whose writer sleeps (a dict: ordered, O(1) removal).
        self.idle: dict[Cursor, None] = {}
        # The last run taken (see run), and where it starts and ends.
        self._run: tuple[int, int, sp.PreparedRun] | None = None

    def matches(self, channel: str) -> bool:
        assert self.regex is not None
        return bool(channel) and (
            self.regex.fullmatch(channel.encode("utf-8", "surrogateescape")) is not None
        )

    def bytes_from(self, start: int) -> int:
        """Message bytes in the log from index ``start`` to its end."""
        if start >= len(self.log):
            return 0
        return self.ends[-1] - (self.ends[start - 1] if start else self.base_bytes)

    def publish(self, prepared: sp.Prepared, seq: int) -> int:
        """Make ``prepared`` the next message of every subscriber; never waits."""
        if not self.cursors:
            return 0
        self.log.append(prepared)
        self.seqs.append(seq)
        self.ends.append((self.ends[-1] if self.ends else self.base_bytes) + len(prepared.message))
        if self.idle:
            idle, self.idle = self.idle, {}
            for cursor in idle:
                cursor.idle = False
                cursor.subscriber.flush_soon()
        if len(self.log) > self.trim_messages or self.bytes_from(0) > self.trim_bytes:
            self.trim()
        return len(self.cursors)

    def run(self, start: int, end: int) -> sp.PreparedRun:
        """The log's messages from index ``start`` to ``end``, as a run that
        every subscriber taking the same ones shares: a burst's bytes are
        joined once for all of them."""
        first, last = self.base + start, self.base + end
        cached = self._run
        if cached is None or cached[0] != first or cached[1] != last:
            cached = self._run = (first, last, sp.PreparedRun(self.log[start:end]))
        return cached[2]

    def trim(self) -> None:
        end = self.base + len(self.log)
        for cursor in list(self.cursors.values()):
            if cursor.pos < end and cursor.subscriber.core.refusing:
                enforce_bounds(cursor.subscriber)
        lowest = min((c.pos for c in self.cursors.values()), default=end)
        drop = lowest - self.base
        if drop > 0:
            self._run = None
            self.base_bytes = self.ends[drop - 1]
            del self.log[:drop]
            del self.seqs[:drop]
            del self.ends[:drop]
            self.base = lowest
        # Subscribers that are behind but whose sockets take what they are
        # given keep their messages here; look again once as much again has
        # been published, so a trim costs its walk over the cursors once
        # per TRIM_MESSAGES publishes (or TRIM_BYTES), not once per publish.
        self.trim_messages = len(self.log) + TRIM_MESSAGES
        self.trim_bytes = self.bytes_from(0) + TRIM_BYTES


def enforce_bounds(subscriber: Subscriber) -> None:
    """Apply ``subscriber``'s overflow policy if its socket refuses bytes and
    more waits for it in the logs than LAG_FACTOR times its queue bounds."""
    messages = nbytes = 0
    for cursor in subscriber.cursors:
        topic = cursor.topic
        start = cursor.pos - topic.base
        messages += len(topic.log) - start
        nbytes += topic.bytes_from(start)
    config = subscriber.core.config
    if (
        messages > LAG_FACTOR * config.max_queue_messages
        or nbytes > LAG_FACTOR * config.max_queue_bytes
    ):
        if config.overflow == "drop":
            pull(subscriber)  # each message past the queue bound is dropped, and counted
        else:
            subscriber.overflow()


def detach(subscriber: Subscriber) -> list[str]:
    """overflow='resync': ``subscriber`` lets go of what waits for it in
    the logs. A history subscription notes where it was, to read the rest
    from history once its socket has drained (see :meth:`Subscriptions.load`);
    one without history has lost it: the channels of those are returned,
    for the app to be told (reason 'overflow')."""
    lost = []
    for cursor in subscriber.cursors:
        topic = cursor.topic
        end = topic.base + len(topic.log)
        if cursor.detached is None and cursor.pos < end:
            if topic.history and cursor.last is not None:
                cursor.detached = cursor.last
            else:
                lost.append(topic.key)
        cursor.pos = end
        cursor.replay = None
    return lost


def pull(subscriber: Subscriber, limit: int | None = None) -> None:
    """Queue on ``subscriber`` what its subscriptions published since it
    last looked, in publish order (where its queue bound and overflow policy
    apply, as for any write): everything, or with ``limit`` about that
    many message bytes (at least one message)."""
    if subscriber.loading:
        return
    cursors = subscriber.cursors
    if not _as_logged(subscriber):
        _pull_views(subscriber, limit)
        return
    if len(cursors) == 1:
        cursor = cursors[0]
        topic = cursor.topic
        start = cursor.pos - topic.base
        log = topic.log
        if start >= len(log):
            return
        end = len(log) if limit is None else _limited_end(topic, start, limit)
        run = topic.run(start, end)
        cursor.pos = topic.base + end
        if topic.history:
            _note_last(cursor, run.messages[-1])
        subscriber.take_published(run.messages, run)
        return
    entries = _live_entries(subscriber, limit, note=True)
    if entries:
        entries.sort(key=_first)
        subscriber.take_published([p for _, _, p in entries])


def _as_logged(subscriber: Subscriber) -> bool:
    """Whether the log's messages go to ``subscriber`` as they are: no
    history to take first, no envelope, and on SSE, no event id but the
    message's own (at most one history channel, no pattern)."""
    sse = subscriber.core.protocol == "sse"
    kept = 0
    for cursor in subscriber.cursors:
        if cursor.replay is not None or cursor.seam or cursor.detached is not None:
            return False
        if sse:
            if cursor.topic.regex is not None:
                return False
            kept += cursor.topic.history
        elif cursor.envelope:
            return False
    return kept <= 1


def _note_last(cursor: Cursor, prepared: sp.Prepared) -> None:
    position = getattr(prepared, "position", None)
    if position is not None:
        cursor.last = position


_Entry = tuple[int, Cursor, sp.Prepared]


def _live_entries(subscriber: Subscriber, limit: int | None, note: bool = False) -> list[_Entry]:
    """What the subscriber's cursors have not taken from their logs, as
    ``(publish order, cursor, message)``, their cursors moved past it. With
    a limit, about that many message bytes in all, in publish order: every
    cursor stops at the same point of the publish order (see _shared_cut).
    With ``note``, a history cursor's :attr:`Cursor.last` becomes its last
    message's position (the caller queues them all as they are)."""
    cut = None
    spans = []
    for cursor in subscriber.cursors:
        topic = cursor.topic
        start = cursor.pos - topic.base
        if cursor.detached is not None:
            cursor.pos = topic.base + len(topic.log)  # history brings them
        elif start < len(topic.log):
            end = len(topic.log) if limit is None else _limited_end(topic, start, limit)
            if end < len(topic.log):
                last = topic.seqs[end - 1]
                cut = last if cut is None else min(cut, last)
            spans.append((cursor, start, end))
    if limit is not None and len(spans) > 1:
        cut = _shared_cut(spans, limit, cut)
    entries: list[_Entry] = []
    for cursor, start, end in spans:
        topic = cursor.topic
        if cut is not None:
            end = bisect_right(topic.seqs, cut, start, end)
        entries += (
            (seq, cursor, p)
            for seq, p in zip(topic.seqs[start:end], topic.log[start:end], strict=True)
        )
        cursor.pos = topic.base + end
        if note and topic.history and end > start:
            _note_last(cursor, topic.log[end - 1])
    return entries


def _shared_cut(spans: list[tuple[Cursor, int, int]], limit: int, cut: int | None) -> int | None:
    """The point of the publish order at which the messages of ``spans``
    (cursor, start, end in its topic's log), taken in publish order, reach
    ``limit`` bytes in all (the message that reaches it included); None if
    they all fit. ``cut``, where the first span that reaches the limit on
    its own does, bounds it: each span taking ``limit`` would take about
    that much once per channel."""

    def upto(seq: int) -> int:
        total = 0
        for cursor, start, end in spans:
            topic = cursor.topic
            i = bisect_right(topic.seqs, seq, start, end)
            if i > start:
                total += topic.ends[i - 1] - (topic.ends[start - 1] if start else topic.base_bytes)
        return total

    if cut is not None:
        high = cut
    else:
        high = max(c.topic.seqs[end - 1] for c, _, end in spans)
        if upto(high) < limit:
            return None
    low = min(c.topic.seqs[start] for c, start, _ in spans)
    while low < high:
        mid = (low + high) // 2
        if upto(mid) >= limit:
            high = mid
        else:
            low = mid + 1
    return high


def _pull_views(subscriber: Subscriber, limit: int | None) -> None:
    """:func:`pull` for a subscriber that needs more than the logged bytes:
    history to take first, envelopes, SSE ids of several channels."""
    sse = subscriber.core.protocol == "sse"
    kept = [c for c in subscriber.cursors if c.topic.history]
    views = _Views(sse, kept)
    batch: list[sp.Prepared] = []
    budget = PULL_BYTES if limit is None else limit
    replaying = False
    for cursor in subscriber.cursors:
        replay = cursor.replay
        if replay is None:
            continue
        replaying = True
        n = 0
        while n < len(replay) and (limit is None or budget > 0):
            budget -= len(replay[n].message)
            n += 1
        for p in replay[:n]:
            _note_last(cursor, p)
            batch.append(views.of(cursor, p))
        del replay[:n]
        if not replay:
            cursor.replay = None
            cursor.seam = True
    if not replaying:
        entries = _live_entries(subscriber, limit)
        entries.sort(key=_first)
        for _, cursor, p in entries:
            if cursor.seam and not _past_seam(cursor, p):
                continue
            if cursor.topic.history:
                _note_last(cursor, p)
            batch.append(views.of(cursor, p))
    if batch:
        subscriber.take_published(batch)


class _Views:
    """The form of each message for one subscriber (see :func:`_pull_views`)."""

    __slots__ = ("sse", "kept")

    def __init__(self, sse: bool, kept: list[Cursor]) -> None:
        self.sse = sse
        self.kept = kept

    def of(self, cursor: Cursor, p: sp.Prepared) -> sp.Prepared:
        if not isinstance(p, Published):
            return p
        if not self.sse:
            return p.wrapped if cursor.envelope else p
        if cursor.topic.regex is not None or not cursor.topic.history:
            return p.plain
        if len(self.kept) <= 1:
            return p
        return sp.Prepared(p.message, id=connection_id(self.kept))


def connection_id(cursors: list[Cursor]) -> str:
    """The SSE id of a connection on several history channels: every
    channel's last position (the first MAX_ID_CHANNELS)."""
    return sse_id([c.last for c in cursors if c.last is not None][:MAX_ID_CHANNELS])


def _past_seam(cursor: Cursor, p: sp.Prepared) -> bool:
    """Whether ``p``, live after a history load, is new to ``cursor`` (else
    history brought it already). The first one that is new ends the seam."""
    position = getattr(p, "position", None)
    last = cursor.last
    if position is None or not position.known:
        return True
    if last is not None and position.epoch == last.epoch and position.offset <= last.offset:
        return False
    cursor.seam = False
    if last is not None and (position.epoch != last.epoch or position.offset > last.offset + 1):
        log.error(
            "channel %r: live messages resume at %s after history ended at %s",
            cursor.topic.key,
            position,
            last,
        )
        cursor.subscriber.gap(cursor.topic.key, EPOCH if position.epoch != last.epoch else TRIMMED)
    return True


def _limited_end(topic: Topic, start: int, limit: int) -> int:
    """Where a pull from ``start`` taking about ``limit`` bytes ends: past
    the message that reaches the limit, at least one message."""
    first = topic.ends[start - 1] if start else topic.base_bytes
    return min(bisect_left(topic.ends, first + limit, start) + 1, len(topic.log))


def _first(entry: _Entry) -> int:
    return entry[0]


def _behind(cursor: Cursor) -> int:
    """Messages published to ``cursor``'s topic that it has not taken."""
    topic = cursor.topic
    return topic.base + len(topic.log) - cursor.pos + (len(cursor.replay) if cursor.replay else 0)


def backlog(subscriber: Subscriber) -> int:
    """Messages published to ``subscriber``'s subscriptions that it has not taken."""
    cursors = subscriber.cursors
    if len(cursors) == 1:
        # The usual subscriber (asked twice per burst it takes): no generator.
        return _behind(cursors[0])
    return sum(map(_behind, cursors))


def any_detached(subscriber: Subscriber) -> bool:
    """Whether one of ``subscriber``'s subscriptions let go of the logs
    (overflow='resync': see :func:`detach`)."""
    # A loop, not any() over a generator: it is asked once per send.
    for cursor in subscriber.cursors:  # noqa: SIM110
        if cursor.detached is not None:
            return True
    return False


_MATCH_CACHE_SIZE = 4096


class Subscriptions:
    """The subscriptions of this process's clients, as tables both ways.

    ``channel -> topic`` and ``pattern -> topic`` for delivery (a topic
    holds its subscribers' cursors), and the other way a subscriber's own
    cursors (``subscriber.cursors``), so that a closing client leaves in
    time proportional to its own subscriptions (a set of its channels here
    as well would cost every subscribed connection 216 bytes). Event loop
    thread only.
    """

    __slots__ = (
        "exact",
        "patterns",
        "_matches",
        "seq",
        "rules",
        "replays",
        "replayed",
        "changed",
    )

    def __init__(self, rules: HistoryRules | None = None) -> None:
        self.exact: dict[str, Topic] = {}
        self.patterns: dict[str, Topic] = {}
        # channel -> the patterns that match it; cleared when patterns change.
        self._matches: dict[str, tuple[Topic, ...]] = {}
        self.seq = 0
        #: Resumes read from history, and the messages they replayed (metrics).
        self.replays = 0
        self.replayed = 0
        #: Which channels keep history (see _history.HistoryRules).
        self.rules = rules if rules is not None else HistoryRules()
        #: Called with a channel or pattern whose number of subscribers
        #: here changed (a join, a leave), if set: how an engine learns
        #: what to tell others of its counts (see RedisPubSub).
        self.changed: Callable[[str], None] | None = None

    def add(self, subscriber: Subscriber, channel: str) -> bool:
        """Subscribe; True if ``channel`` had no subscriber here before."""
        cursor = self.join(subscriber, channel)
        return cursor is not None and len(cursor.topic.cursors) == 1

    def join(self, subscriber: Subscriber, channel: str, envelope: bool = False) -> Cursor | None:
        """Subscribe: the new subscription, or None if it was there already.
        A history subscription waits for :meth:`loaded` (subscriber.loading)."""
        pattern = is_pattern(channel)
        table = self.patterns if pattern else self.exact
        topic = table.get(channel)
        if topic is not None and subscriber in topic.cursors:
            return None
        if topic is None:
            history = not pattern and self.rules.get(channel) is not None
            topic = table[channel] = Topic(channel, pattern, history)
            if pattern:
                self._matches.clear()
        cursor = topic.cursors[subscriber] = Cursor(topic, subscriber, envelope)
        subscriber.cursors.append(cursor)
        if self.changed is not None:
            self.changed(channel)
        if topic.history:
            subscriber.loading += 1
        return cursor

    def loaded(
        self,
        cursor: Cursor,
        since: Position | None,
        replay: list[Published],
        top: Position | None,
        reason: str | None = None,
    ) -> None:
        """A history subscription's load is done: ``replay``, what was
        published after ``since`` (None: a new subscription, it starts at
        ``top``, the channel's last position), or the gap ``reason``."""
        subscriber = cursor.subscriber
        subscriber.loading -= 1
        if cursor.topic.cursors.get(subscriber) is not cursor:
            return  # unsubscribed meanwhile
        if reason is not None or since is None:
            cursor.last = top
            if reason is not None:
                subscriber.gap(cursor.topic.key, reason)
        else:
            cursor.last = since
            cursor.replay = replay or None
            self.replays += 1
            self.replayed += len(replay)
        cursor.seam = cursor.last is not None
        subscriber.announce(cursor)
        subscriber.flush_soon()

    def remove(self, subscriber: Subscriber, channel: str) -> bool:
        """Unsubscribe; True if ``channel`` has no subscriber here any more.
        What was published before still reaches the subscriber."""
        topic = (self.patterns if is_pattern(channel) else self.exact).get(channel)
        if topic is None or subscriber not in topic.cursors:
            return False
        pull(subscriber)
        return self._drop(subscriber, channel)

    def remove_all(self, subscriber: Subscriber) -> list[str]:
        """Unsubscribe ``subscriber`` (which has closed) from everything; the
        channels and patterns left with no subscriber here."""
        channels = [cursor.topic.key for cursor in subscriber.cursors]
        return [channel for channel in channels if self._drop(subscriber, channel)]

    def _drop(self, subscriber: Subscriber, channel: str) -> bool:
        pattern = is_pattern(channel)
        table = self.patterns if pattern else self.exact
        topic = table.get(channel)
        if topic is None:
            return False
        cursor = topic.cursors.pop(subscriber, None)
        if cursor is not None:
            subscriber.cursors.remove(cursor)
            if cursor.idle:
                del topic.idle[cursor]
            if self.changed is not None:
                self.changed(channel)
        if topic.cursors:
            return False
        del table[channel]
        if pattern:
            self._matches.clear()
        return True

    def publish(self, channel: str, prepared: sp.Prepared) -> int:
        """Deliver to the exact subscribers of ``channel`` and to every
        pattern that matches it; the number of subscriptions reached."""
        n = 0
        topic = self.exact.get(channel)
        if topic is not None:
            self.seq += 1
            n += topic.publish(prepared, self.seq)
        if self.patterns:
            for topic in self.matching(channel):
                self.seq += 1
                n += topic.publish(prepared, self.seq)
        return n

    def publish_to(self, topic: Topic | None, prepared: sp.Prepared) -> int:
        """Deliver to one topic (Redis tells which)."""
        if topic is None:
            return 0
        self.seq += 1
        return topic.publish(prepared, self.seq)

    def matching(self, channel: str) -> tuple[Topic, ...]:
        """The pattern subscriptions that a publish on ``channel`` reaches."""
        found = self._matches.get(channel)
        if found is None:
            found = tuple(p for p in self.patterns.values() if p.matches(channel))
            if len(self._matches) >= _MATCH_CACHE_SIZE:
                self._matches.clear()
            self._matches[channel] = found
        return found

    def count(self, channel: str) -> int:
        """How many clients here a publish on ``channel`` reaches (a client
        counts once, however many of its subscriptions match)."""
        exact = self.exact.get(channel)
        patterns = self.matching(channel)
        if not patterns:
            return len(exact.cursors) if exact is not None else 0
        found = set(exact.cursors) if exact is not None else set()
        for p in patterns:
            found.update(p.cursors)
        return len(found)


class PubSub(Protocol):
    """What :class:`trio_push.Server` needs of a pub/sub engine.

    ``subscribe``, ``unsubscribe``, ``unsubscribe_all``, ``resync`` and
    ``count`` run on the server's event loop thread (:class:`Client` hops
    there); what they get is the client's push session, a
    :class:`Subscriber`. ``publish`` may be called from any task and any
    thread and never blocks. ``run`` is started by the server in its own
    nursery, reports readiness through ``task_status``, and is cancelled
    after the connections are gone. ``history`` says which channels keep
    history (the server sets it from its options before ``run``).
    """

    history: HistoryRules

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        since: Position | None = None,
        envelope: bool = False,
    ) -> None: ...

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None: ...

    def unsubscribe_all(self, subscriber: Subscriber) -> None: ...

    def resync(self, subscriber: Subscriber) -> None: ...

    def publish(self, channel: str, message: str | bytes | sp.Prepared) -> Position | bool: ...

    def count(self, channel: str) -> int: ...

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class Engine:
    """What the engines here share: the table of this process's
    subscriptions (and the history rules in it), and subscribing, where a
    history subscription first loads from the engine's history
    (:meth:`_load`, which ends in :meth:`Subscriptions.loaded`)."""

    subscriptions: Subscriptions

    @property
    def history(self) -> HistoryRules:
        """Which channels keep history (set by the server from its options)."""
        return self.subscriptions.rules

    @history.setter
    def history(self, rules: HistoryRules) -> None:
        self.subscriptions.rules = rules

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        since: Position | None = None,
        envelope: bool = False,
    ) -> None:
        cursor = self.subscriptions.join(subscriber, channel, envelope)
        if cursor is None:
            return
        if len(cursor.topic.cursors) == 1:
            self._first_subscriber(channel)
        if cursor.topic.history:
            self._load(cursor, since)
        elif since is not None:
            subscriber.gap(channel, NO_HISTORY)

    def resync(self, subscriber: Subscriber) -> None:
        """The subscriptions that overflow='resync' detached (see
        :func:`detach`) load again, each from where it was."""
        for cursor in subscriber.cursors:
            since = cursor.detached
            if since is not None:
                cursor.detached = None
                subscriber.loading += 1
                self._load(cursor, since)

    def count(self, channel: str) -> int:
        """Clients of this process that a publish on ``channel`` reaches."""
        return self.subscriptions.count(channel)

    async def cluster_count(self, channel: str) -> int:
        """Clients of every process on this engine's bus that a publish on
        ``channel`` reaches: in-process, those of this process (:meth:`count`)."""
        return self.count(channel)

    def _first_subscriber(self, channel: str) -> None:
        """``channel`` (or pattern) has its first subscriber in this process."""

    def _load(self, cursor: Cursor, since: Position | None) -> None:
        raise NotImplementedError


class MemoryPubSub(Engine):
    """The in-process engine: subscriptions, delivery and history in this process.

    ``publish`` from the event loop thread delivers before it returns; from
    another thread it hands the message (already encoded) to the event loop
    in call order. It returns the message's :class:`Position` on a channel
    with history, else True; False if the server has stopped.
    """

    def __init__(self) -> None:
        self.subscriptions = Subscriptions()
        self._store = MemoryHistory(self.subscriptions.rules)
        self._loop = Loop()
        # Positions are given in the caller's thread, in the order the
        # messages reach the loop.
        self._lock = threading.Lock()
        #: Publishes delivered, and refused (the server had stopped), since start
        #: (metrics).
        self.published = 0
        self.failed = 0

    @Engine.history.setter
    def history(self, rules: HistoryRules) -> None:
        self.subscriptions.rules = self._store.rules = rules

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._loop.enter()
        task_status.started()

    @property
    def bus(self) -> object:
        """Engines with the same bus reach the same subscribers: a
        process-wide :func:`trio_push.publish` publishes once per bus."""
        return self

    def _load(self, cursor: Cursor, since: Position | None) -> None:
        with self._lock:
            top = self._store.top(cursor.topic.key)
            replay, reason = self._store.since(since) if since is not None else ([], None)
        self.subscriptions.loaded(cursor, since, replay, top, reason)

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        self.subscriptions.remove(subscriber, channel)

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        self.subscriptions.remove_all(subscriber)

    def publish(self, channel: str, message: str | bytes | sp.Prepared) -> Position | bool:
        if isinstance(message, sp.Prepared):
            message = message.message
        if self._store.rules.get(channel) is None:
            if self._loop.call(self._deliver, channel, Published(message, channel)):
                return True
            self.failed += 1
            return False
        with self._lock:
            published = self._store.append(channel, message)
            if not self._loop.call(self._deliver, channel, published):
                self._store.retract(published)  # never delivered: not history either
                self.failed += 1
                return False
        assert published.position is not None
        return published.position

    def _deliver(self, channel: str, prepared: sp.Prepared) -> int:
        self.published += 1  # here, on the loop: one thread counts
        return self.subscriptions.publish(channel, prepared)
