"""Publish/subscribe: one publish reaches every subscriber, encoded once."""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

from sansio_push import Prepared, prepare

if TYPE_CHECKING:
    from ._client import Client


def _is_pattern(channel: str) -> bool:
    return any(c in channel for c in "*?[")


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis ``PSUBSCRIBE`` glob: ``*``, ``?``, ``[abc]``,
    ``[^a]``, ``[a-z]`` and ``\\`` escaping."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith("^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


class MemoryPubSub:
    """The in-process engine: channel and pattern tables in this process.

    ``publish`` must run on the server's event loop thread; the public
    ``trio_push.publish`` hops there from other threads.
    """

    def __init__(self) -> None:
        self._channels: dict[str, set[Client]] = defaultdict(set)
        self._patterns: dict[str, tuple[re.Pattern[str], set[Client]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, client: Client, channel: str) -> None:
        if _is_pattern(channel):
            entry = self._patterns.get(channel)
            if entry is None:
                entry = self._patterns[channel] = (glob_to_regex(channel), set())
            entry[1].add(client)
        else:
            self._channels[channel].add(client)

    def unsubscribe(self, client: Client, channel: str) -> None:
        if _is_pattern(channel):
            entry = self._patterns.get(channel)
            if entry is not None:
                entry[1].discard(client)
                if not entry[1]:
                    del self._patterns[channel]
        else:
            subs = self._channels.get(channel)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self._channels[channel]

    def unsubscribe_all(self, client: Client) -> None:
        for channel in [c for c, subs in self._channels.items() if client in subs]:
            self.unsubscribe(client, channel)
        for pattern in [p for p, (_, subs) in self._patterns.items() if client in subs]:
            self.unsubscribe(client, pattern)

    def subscribers(self, channel: str) -> set[Client]:
        """Every client that a publish to ``channel`` reaches."""
        found = set(self._channels.get(channel, ()))
        for regex, subs in self._patterns.values():
            if regex.fullmatch(channel):
                found |= subs
        return found

    def publish(self, channel: str, message: str | bytes | Prepared) -> bool:
        prepared = message if isinstance(message, Prepared) else prepare(message)
        for client in self.subscribers(channel):
            client._conn.write_prepared(prepared)
        return True
