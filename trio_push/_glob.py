"""Redis ``PSUBSCRIBE`` globs: which channels a pattern subscription matches."""

from __future__ import annotations

import re

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
