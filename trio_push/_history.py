"""Channel history: positions, the in-process store, and the forms a
position takes on the wire (an SSE event id, a WebSocket envelope).

A channel with history keeps its last ``size`` messages and/or those of the
last ``ttl`` seconds (:class:`History`). Every message published on it gets
a :class:`Position`: its *offset*, 1, 2, 3... with no hole, in publish
order, and the channel's *epoch*, a token that changes whenever the history
is lost (a new process for the in-process store; Redis restarted, flushed or
the channel forgotten for a day for the Redis one), so that a position from
a lost history is told apart from one that was kept. With offsets that leave
no hole, whether a client missed anything is a comparison: the message
after offset ``n`` is ``n + 1``.

A client resumes from a position it was given (``client.subscribe(channel,
since=position)``, or an SSE ``Last-Event-ID``); what history no longer
holds, or a position of another epoch, is a *gap*, and the handler's
``on_gap(client, channel, reason)`` hears of it before any live message.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any
from urllib.parse import parse_qs

import trio

import sansio_push as sp

from ._glob import glob_match

#: A channel's history (its epoch and last offset) is forgotten this long
#: after its last publish; a client resuming later gets the gap signal.
META_TTL = 24 * 3600.0
#: An SSE id carries the positions of at most this many channels.
MAX_ID_CHANNELS = 32

# Why a client did not get everything after its position (on_gap's reason).
TRIMMED = "trimmed"  # history no longer holds the message after it
EPOCH = "epoch"  # the position is from a history that was lost
UNAVAILABLE = "unavailable"  # the history could not be read (Redis down)
NO_HISTORY = "no-history"  # the channel keeps no history
UNKNOWN = "unknown"  # the SSE Last-Event-ID is not one of ours
OVERFLOW = "overflow"  # overflow='resync' on a channel without history


@dataclass(frozen=True, slots=True)
class History:
    """How much history a channel keeps: the last ``size`` messages, and/or
    those published in the last ``ttl`` seconds (0 and None: no bound of
    that kind; at least one bound is needed)."""

    size: int = 0
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.size < 0 or (self.ttl is not None and self.ttl <= 0):
            raise ValueError(f"bad history {self!r}: size must be >= 0 and ttl > 0")
        if not self.size and self.ttl is None:
            raise ValueError("a History needs a size or a ttl")


class HistoryRules:
    """Which channels keep history, and how much: ``default`` for every
    channel (None: none), unless the first matching glob pattern of
    ``patterns`` says otherwise (a pattern mapped to None: no history)."""

    __slots__ = ("default", "patterns", "_cache")

    def __init__(
        self, default: History | None = None, patterns: Mapping[str, History | None] | None = None
    ) -> None:
        self.default = default
        self.patterns = dict(patterns or {})
        self._cache: dict[str, History | None] = {}

    def __bool__(self) -> bool:
        return self.default is not None or any(h is not None for h in self.patterns.values())

    def get(self, channel: str) -> History | None:
        try:
            return self._cache[channel]
        except KeyError:
            pass
        found = self.default
        for pattern, history in self.patterns.items():
            if glob_match(pattern, channel):
                found = history
                break
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[channel] = found
        return found


def rules_from(default_size: int, default_ttl: float | None, patterns: Any) -> HistoryRules:
    """The rules of ``Options(history=, history_ttl=, history_for=)``."""
    default = History(default_size, default_ttl) if default_size or default_ttl else None
    return HistoryRules(default, patterns)


class PublishError(sp.PushError):
    """A publish that was not confirmed: :meth:`Position.wait`, and
    :meth:`trio_push.RedisPubSub.publish_confirmed`."""


_POSITION = re.compile(r"([0-9a-z]{1,16}):([0-9]{1,15})-([0-9]{1,19})\Z")


class Position:
    """Where a message stands in its channel's history: ``epoch`` and
    ``offset`` (and ``ms``, the publish time in milliseconds, which the
    Redis store's stream ids need). Its text form, ``str(position)``, is
    ``epoch:ms-offset``: what a page sends back to resume, opaque to it.

    Always true (``publish`` returns a position or False). Through Redis,
    ``publish`` cannot wait for Redis to assign it: the position it returns
    is filled in when Redis answers (:attr:`known`; ``await
    position.wait()`` in a task of the server's run).
    """

    __slots__ = ("channel", "epoch", "offset", "ms", "error", "_event")

    def __init__(self, channel: str, epoch: str | None = None, offset: int = 0, ms: int = 0):
        self.channel = channel
        self.epoch = epoch
        self.offset = offset
        self.ms = ms
        #: Why it never became known (Redis did not confirm the publish).
        self.error: str | None = None
        self._event: trio.Event | None = None

    @classmethod
    def parse(cls, channel: str, text: str) -> Position:
        """The position ``text`` (``str(position)``) on ``channel``; ``ValueError`` if malformed."""
        m = _POSITION.match(text)
        if m is None:
            raise ValueError(f"not a position: {text!r}")
        return cls(channel, m[1], int(m[3]), int(m[2]))

    @property
    def known(self) -> bool:
        return self.epoch is not None

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return f"{self.epoch}:{self.ms}-{self.offset}" if self.epoch is not None else ""

    def __repr__(self) -> str:
        return f"<Position {self.channel!r} {self or '(pending)'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Position) and (self.channel, self.epoch, self.offset) == (
            other.channel,
            other.epoch,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash((self.channel, self.epoch, self.offset))

    def settle(self, epoch: str | None, offset: int = 0, ms: int = 0, error: str = "") -> None:
        """Fill in what Redis assigned (or, with ``epoch`` None, why it did not)."""
        self.epoch, self.offset, self.ms = epoch, offset, ms
        if epoch is None:
            self.error = error
        if self._event is not None:
            self._event.set()

    async def wait(self) -> Position:
        """Until :attr:`known`; raises ``trio_push.PublishError`` if it never will be."""
        if self.epoch is None and self.error is None:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        if self.epoch is None:
            raise PublishError(self.error or "the publish was not confirmed")
        return self


@lru_cache(maxsize=4096)
def tag(channel: str) -> str:
    """A channel's short name in an SSE id: 8 hex digits of its hash."""
    return blake2b(channel.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()


def sse_id(positions: Iterable[Position]) -> str:
    """The SSE event id that carries ``positions``: ``tag=epoch:ms-offset``,
    comma-separated, one per channel."""
    return ",".join(f"{tag(p.channel)}={p}" for p in positions)


_ID_ENTRY = re.compile(r"([0-9a-f]{8})=([0-9a-z:-]{5,52})\Z")


def parse_last_event_id(text: str) -> dict[str, str] | None:
    """``tag -> position text`` from an SSE ``Last-Event-ID`` we sent; None
    if it is not one of ours (the app's own ids, say)."""
    found: dict[str, str] = {}
    parts = text.split(",")
    if len(parts) > MAX_ID_CHANNELS:
        return None
    for part in parts:
        m = _ID_ENTRY.match(part)
        if m is None or _POSITION.match(m[2]) is None:
            return None
        found[m[1]] = m[2]
    return found


class Published(sp.Prepared):
    """A published message, as every subscriber's log holds it: the
    message, its channel and, on a channel with history, its position
    (then its SSE id is the position's, and the same bytes go to every
    subscriber that takes it with that id)."""

    __slots__ = ("channel", "position", "_plain", "_wrapped")

    def __init__(
        self, message: str | bytes, channel: str, position: Position | None = None
    ) -> None:
        single = f"{tag(channel)}={position}" if position is not None else None
        super().__init__(message, id=single)
        self.channel = channel
        self.position = position
        self._plain: sp.Prepared | None = None
        self._wrapped: sp.Prepared | None = None

    @property
    def plain(self) -> sp.Prepared:
        """The message with no SSE id (for a subscription whose id this is not)."""
        if self.id is None:
            return self
        if self._plain is None:
            self._plain = sp.Prepared(self.message)
        return self._plain

    @property
    def wrapped(self) -> sp.Prepared:
        """The WebSocket envelope: text as JSON ``{"channel", "position",
        "data"}``; bytes as a binary message, that JSON without ``data``,
        a newline, then the bytes."""
        if self._wrapped is None:
            head: dict[str, Any] = {"channel": self.channel, "position": None}
            if self.position is not None:
                head["position"] = str(self.position)
            message = self.message
            if isinstance(message, str):
                head["data"] = message
                self._wrapped = sp.Prepared(json.dumps(head, ensure_ascii=False))
            else:
                self._wrapped = sp.Prepared(json.dumps(head).encode() + b"\n" + message)
        return self._wrapped


def announcement(position: Position) -> str:
    """The envelope without data that tells a WebSocket page where its
    subscription to a history channel starts."""
    return json.dumps({"channel": position.channel, "position": str(position)}, ensure_ascii=False)


class _Channel:
    """One channel's history in this process."""

    __slots__ = ("epoch", "offset", "ms", "last", "entries", "history")

    def __init__(self, history: History) -> None:
        self.epoch = secrets.token_hex(4)
        self.offset = 0
        self.ms = 0
        self.last = 0.0  # monotonic time of the last publish
        # (monotonic time, message), oldest first; offsets follow from the end.
        self.entries: deque[tuple[float, Published]] = deque()
        self.history = history

    def trim(self, now: float) -> None:
        entries = self.entries
        size, ttl = self.history.size, self.history.ttl
        while size and len(entries) > size:
            entries.popleft()
        if ttl is not None:
            cutoff = now - ttl
            while entries and entries[0][0] < cutoff:
                entries.popleft()


class MemoryHistory:
    """The history of the channels published in this process."""

    __slots__ = ("rules", "channels", "_appends")

    def __init__(self, rules: HistoryRules) -> None:
        self.rules = rules
        self.channels: dict[str, _Channel] = {}
        self._appends = 0

    def _channel(self, channel: str, history: History, now: float) -> _Channel:
        state = self.channels.get(channel)
        if state is None or now - state.last > META_TTL:
            state = self.channels[channel] = _Channel(history)
            state.last = now
        return state

    def top(self, channel: str) -> Position | None:
        """The position of ``channel``'s last message (offset 0 if none yet);
        None if it keeps no history."""
        history = self.rules.get(channel)
        if history is None:
            return None
        state = self._channel(channel, history, time.monotonic())
        return Position(channel, state.epoch, state.offset, state.ms)

    def append(self, channel: str, message: str | bytes) -> Published:
        """Record ``message`` if ``channel`` keeps history; what to deliver."""
        history = self.rules.get(channel)
        if history is None:
            return Published(message, channel)
        now = time.monotonic()
        state = self._channel(channel, history, now)
        state.offset += 1
        state.ms = max(state.ms, int(time.time() * 1000))
        state.last = now
        published = Published(
            message, channel, Position(channel, state.epoch, state.offset, state.ms)
        )
        state.entries.append((now, published))
        state.trim(now)
        self._appends += 1
        if self._appends % 4096 == 0:
            self._forget(now)
        return published

    def retract(self, published: Published) -> None:
        """Take back ``published``, the last message :meth:`append` recorded."""
        state = self.channels.get(published.channel)
        position = published.position
        if state is not None and position is not None and state.offset == position.offset:
            if state.entries and state.entries[-1][1] is published:
                state.entries.pop()
            state.offset -= 1

    def _forget(self, now: float) -> None:
        for name in [n for n, s in self.channels.items() if now - s.last > META_TTL]:
            del self.channels[name]

    def since(self, position: Position) -> tuple[list[Published], str | None]:
        """What was published on ``position.channel`` after ``position``, and
        the gap reason if that is not all of it."""
        channel = position.channel
        if self.rules.get(channel) is None:
            return [], NO_HISTORY
        state = self.channels.get(channel)
        if state is None or state.epoch != position.epoch or position.offset > state.offset:
            return [], EPOCH
        now = time.monotonic()
        state.trim(now)
        entries = state.entries
        if position.offset == state.offset:
            return [], None
        first = state.offset - len(entries) + 1  # the offset of entries[0]
        if not entries or position.offset + 1 < first:
            return [], TRIMMED
        skip = position.offset + 1 - first
        return [p for _, p in list(entries)[skip:]], None


class PagePositions:
    """Where a reconnecting page says it was: an SSE ``Last-Event-ID`` we
    sent (the header, or a ``lastEventId`` query parameter), or the
    ``since`` query parameter of the shipped WebSocket helper (a JSON
    object, channel to position)."""

    __slots__ = ("by_tag", "by_channel", "incomplete", "unreadable")

    def __init__(self, env: Mapping[str, Any], protocol: str) -> None:
        self.by_tag: dict[str, str] = {}
        self.by_channel: dict[str, str] = {}
        #: The page sent an id that does not name every channel it had:
        #: not ours (the app's own ids), or as long as an id may be.
        self.incomplete = False
        #: WebSocket: the channels whose ``since`` is not a position (not
        #: what the shipped helper sends): the page was somewhere we cannot
        #: tell, as with an SSE id that is not ours.
        self.unreadable: frozenset[str] = frozenset()
        query = parse_qs(env.get("QUERY_STRING", ""))
        if protocol == "sse":
            # A page that reopens an EventSource itself cannot set the
            # header: it may pass the id as ?lastEventId= (as for Mercure).
            text = env.get("HTTP_LAST_EVENT_ID") or next(iter(query.get("lastEventId", [])), "")
            if text:
                found = parse_last_event_id(text)
                self.incomplete = found is None or len(found) == MAX_ID_CHANNELS
                self.by_tag = found or {}
        else:
            for value in query.get("since", [])[-1:]:
                try:
                    found = json.loads(value)
                except ValueError:
                    found = None
                if isinstance(found, dict) and len(found) <= MAX_ID_CHANNELS:
                    self.by_channel = {
                        k: v
                        for k, v in found.items()
                        if isinstance(v, str) and _POSITION.match(v) is not None
                    }
                    self.unreadable = frozenset(found.keys() - self.by_channel.keys())

    def get(self, channel: str) -> str | None:
        """The position the page has on ``channel``, as it sent it (None
        if it sent none, or none that can be one)."""
        if self.by_tag:
            return self.by_tag.get(tag(channel))
        return self.by_channel.get(channel)
