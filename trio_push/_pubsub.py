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
import re
from bisect import bisect_left, bisect_right
from typing import Any, Protocol

import trio

import sansio_push as sp

from ._loop import Loop

log = logging.getLogger("trio_push.pubsub")

_SPECIAL = frozenset("*?[")


def is_pattern(channel: str) -> bool:
    """Whether ``subscribe(channel)`` is a glob pattern (has ``*``, ``?`` or ``[``)."""
    return not _SPECIAL.isdisjoint(channel)


def glob_to_regex(pattern: str) -> re.Pattern[bytes]:
    """Compile a Redis ``PSUBSCRIBE`` glob into a regex on UTF-8 bytes.

    A port of Redis's ``stringmatchlen``: ``*`` any bytes, ``?`` one byte,
    ``[abc]``, ``[^abc]``, ``[a-z]`` (reversed ranges allowed, an unclosed
    ``[`` takes the rest of the pattern as its set), and ``\\`` escaping,
    inside brackets too. Match the result with ``fullmatch``; see
    :func:`glob_match` for the one case a regex cannot express (the empty
    channel).
    """
    p = pattern.encode("utf-8", "surrogateescape")
    out: list[bytes] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == 0x2A:  # *
            while i + 1 < n and p[i + 1] == 0x2A:
                i += 1
            out.append(b".*")
        elif c == 0x3F:  # ?
            out.append(b".")
        elif c == 0x5B:  # [
            i += 1
            negate = i < n and p[i] == 0x5E  # ^
            if negate:
                i += 1
            members: set[int] = set()
            while True:
                if i < n and p[i] == 0x5C and n - i >= 2:  # backslash
                    i += 1
                    members.add(p[i])
                elif i >= n or p[i] == 0x5D:  # ] or an unclosed [
                    break
                elif n - i >= 3 and p[i + 1] == 0x2D:  # a-z
                    lo, hi = sorted((p[i], p[i + 2]))
                    members.update(range(lo, hi + 1))
                    i += 2
                else:
                    members.add(p[i])
                i += 1
            out.append(_byte_class(members, negate))
        elif c == 0x5C and i + 1 < n:  # backslash
            i += 1
            out.append(re.escape(p[i : i + 1]))
        else:
            out.append(re.escape(p[i : i + 1]))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


def _byte_class(members: set[int], negate: bool) -> bytes:
    if not members:
        return b"." if negate else b"(?!)"
    body = b"".join(re.escape(bytes((m,))) for m in sorted(members))
    return b"[" + (b"^" if negate else b"") + body + b"]"


def glob_match(pattern: str, channel: str) -> bool:
    """Whether Redis would deliver a publish on ``channel`` to ``PSUBSCRIBE pattern``."""
    if not channel:
        return not pattern
    return glob_to_regex(pattern).fullmatch(channel.encode("utf-8", "surrogateescape")) is not None


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


class Subscriber(Protocol):
    """What pub/sub needs of a subscribed push session."""

    #: Its subscriptions (appended and removed by :class:`Subscriptions`).
    cursors: list[Cursor]

    @property
    def core(self) -> QueueState: ...

    def flush_soon(self) -> None:
        """Something was published for it: send soon (it calls :func:`pull`)."""

    def take_published(self, batch: list[sp.Prepared]) -> None:
        """Queue what :func:`pull` took for it, in order."""

    def overflow(self) -> None:
        """It fell too far behind: apply the 'close' overflow policy."""

    def subscribe_refused(self, channel: str, reason: str) -> None:
        """The engine refused its subscription to ``channel``."""


class Cursor:
    """One subscription of one subscriber: how far into its topic's log
    the subscriber has taken messages."""

    __slots__ = ("topic", "subscriber", "pos", "idle")

    def __init__(self, topic: Topic, subscriber: Subscriber) -> None:
        self.topic = topic
        self.subscriber = subscriber
        self.pos = topic.base + len(topic.log)
        # Registered in topic.idle: the writer sleeps, wake it on publish.
        # A new cursor starts registered: its writer may be asleep already
        # (it registers its cursors only as it goes to sleep), and waking a
        # writer that is awake costs nothing.
        self.idle = True
        topic.idle[self] = None


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
    )

    def __init__(self, key: str, pattern: bool = False) -> None:
        self.key = key
        self.regex = glob_to_regex(key) if pattern else None
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

    def trim(self) -> None:
        end = self.base + len(self.log)
        for cursor in list(self.cursors.values()):
            if cursor.pos < end and cursor.subscriber.core.refusing:
                enforce_bounds(cursor.subscriber)
        lowest = min((c.pos for c in self.cursors.values()), default=end)
        drop = lowest - self.base
        if drop > 0:
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


def pull(subscriber: Subscriber, limit: int | None = None) -> None:
    """Queue on ``subscriber`` what its subscriptions published since it
    last looked, in publish order (where its queue bound and overflow policy
    apply, as for any write): everything, or with ``limit`` about that
    many message bytes (at least one message)."""
    cursors = subscriber.cursors
    if len(cursors) == 1:
        cursor = cursors[0]
        topic = cursor.topic
        start = cursor.pos - topic.base
        log = topic.log
        if start >= len(log):
            return
        end = len(log) if limit is None else _limited_end(topic, start, limit)
        batch = log[start:end] if start or end < len(log) else log.copy()
        cursor.pos = topic.base + end
    else:
        entries: list[tuple[int, sp.Prepared]] = []
        # With a limit, a cursor that stops early stops every other one at
        # the same point of the publish order.
        cut = None
        spans = []
        for cursor in cursors:
            topic = cursor.topic
            start = cursor.pos - topic.base
            if start < len(topic.log):
                end = len(topic.log) if limit is None else _limited_end(topic, start, limit)
                if end < len(topic.log):
                    last = topic.seqs[end - 1]
                    cut = last if cut is None else min(cut, last)
                spans.append((cursor, start, end))
        if not spans:
            return
        for cursor, start, end in spans:
            topic = cursor.topic
            if cut is not None:
                end = bisect_right(topic.seqs, cut, start, end)
            entries += zip(topic.seqs[start:end], topic.log[start:end], strict=True)
            cursor.pos = topic.base + end
        entries.sort(key=_first)
        batch = [p for _, p in entries]
    subscriber.take_published(batch)


def _limited_end(topic: Topic, start: int, limit: int) -> int:
    """Where a pull from ``start`` taking about ``limit`` bytes ends: past
    the message that reaches the limit, at least one message."""
    first = topic.ends[start - 1] if start else topic.base_bytes
    return min(bisect_left(topic.ends, first + limit, start) + 1, len(topic.log))


def _first(entry: tuple[int, sp.Prepared]) -> int:
    return entry[0]


def backlog(subscriber: Subscriber) -> int:
    """Messages published to ``subscriber``'s subscriptions that it has not taken."""
    return sum(c.topic.base + len(c.topic.log) - c.pos for c in subscriber.cursors)


_MATCH_CACHE_SIZE = 4096


class Subscriptions:
    """The subscriptions of this process's clients, as tables both ways.

    ``channel -> topic`` and ``pattern -> topic`` for delivery (a topic
    holds its subscribers' cursors), and ``subscriber -> its channels and
    patterns`` so that a closing client leaves in time proportional to its
    own subscriptions. Event loop thread only.
    """

    __slots__ = ("exact", "patterns", "by_client", "_matches", "seq")

    def __init__(self) -> None:
        self.exact: dict[str, Topic] = {}
        self.patterns: dict[str, Topic] = {}
        self.by_client: dict[Subscriber, set[str]] = {}
        # channel -> the patterns that match it; cleared when patterns change.
        self._matches: dict[str, tuple[Topic, ...]] = {}
        self.seq = 0

    def add(self, subscriber: Subscriber, channel: str) -> bool:
        """Subscribe; True if ``channel`` had no subscriber here before."""
        mine = self.by_client.get(subscriber)
        if mine is None:
            mine = self.by_client[subscriber] = set()
        elif channel in mine:
            return False
        mine.add(channel)
        pattern = is_pattern(channel)
        table = self.patterns if pattern else self.exact
        topic = table.get(channel)
        first = topic is None
        if topic is None:
            topic = table[channel] = Topic(channel, pattern)
            if pattern:
                self._matches.clear()
        cursor = topic.cursors[subscriber] = Cursor(topic, subscriber)
        subscriber.cursors.append(cursor)
        return first

    def remove(self, subscriber: Subscriber, channel: str) -> bool:
        """Unsubscribe; True if ``channel`` has no subscriber here any more.
        What was published before still reaches the subscriber."""
        mine = self.by_client.get(subscriber)
        if mine is None or channel not in mine:
            return False
        pull(subscriber)
        mine.discard(channel)
        if not mine:
            del self.by_client[subscriber]
        return self._drop(subscriber, channel)

    def remove_all(self, subscriber: Subscriber) -> list[str]:
        """Unsubscribe ``subscriber`` (which has closed) from everything; the
        channels and patterns left with no subscriber here."""
        mine = self.by_client.pop(subscriber, None)
        if not mine:
            return []
        return [channel for channel in mine if self._drop(subscriber, channel)]

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


def as_prepared(message: str | bytes | sp.Prepared) -> sp.Prepared:
    return message if isinstance(message, sp.Prepared) else sp.prepare(message)


class PubSub(Protocol):
    """What :class:`trio_push.Server` needs of a pub/sub engine.

    ``subscribe``, ``unsubscribe``, ``unsubscribe_all`` and ``count`` run on
    the server's event loop thread (:class:`Client` hops there); what they
    get is the client's push session, a :class:`Subscriber`. ``publish``
    may be called from any task and any thread and never blocks.
    ``run`` is started by the server in its own nursery, reports readiness
    through ``task_status``, and is cancelled after the connections are gone.
    """

    def subscribe(self, subscriber: Subscriber, channel: str) -> None: ...

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None: ...

    def unsubscribe_all(self, subscriber: Subscriber) -> None: ...

    def publish(self, channel: str, message: str | bytes | sp.Prepared) -> bool: ...

    def count(self, channel: str) -> int: ...

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class MemoryPubSub:
    """The in-process engine: subscriptions and delivery in this process.

    ``publish`` from the event loop thread delivers before it returns; from
    another thread it hands the message (already encoded) to the event loop
    in call order. It returns True, or False if the server has stopped.
    """

    def __init__(self) -> None:
        self.subscriptions = Subscriptions()
        self._loop = Loop()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._loop.enter()
        task_status.started()

    @property
    def bus(self) -> object:
        """Engines with the same bus reach the same subscribers: a
        process-wide :func:`trio_push.publish` publishes once per bus."""
        return self

    def subscribe(self, subscriber: Subscriber, channel: str) -> None:
        self.subscriptions.add(subscriber, channel)

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        self.subscriptions.remove(subscriber, channel)

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        self.subscriptions.remove_all(subscriber)

    def count(self, channel: str) -> int:
        return self.subscriptions.count(channel)

    def publish(self, channel: str, message: str | bytes | sp.Prepared) -> bool:
        return self._loop.call(self._deliver, channel, as_prepared(message))

    def _deliver(self, channel: str, prepared: sp.Prepared) -> int:
        return self.subscriptions.publish(channel, prepared)
