"""The fast path for the common HTTP request, with h11 as the judge.

A keep-alive ``GET`` or ``HEAD`` with no body, no upgrade, no ``Expect`` and
plain visible-ASCII headers is most of what a server sees. For such a head,
h11's per-request machinery (event objects, a state machine, header
normalisation, twice per request) costs more than the parsing itself, so it
is read here with a grammar that is a strict subset of what h11 accepts: a
head this parser takes, h11 would take too and read the same way. Anything
else (a body, HTTP/1.0, ``Connection: close``, obs-text, a missing or repeated
``Host``, an absolute target, bare LF line ends, ...) is handed to h11 whole,
which parses it and enforces the protocol as before.

The response to a fast request is framed as h11 would frame it (the same
bytes): headers validated by building an ``h11.Response``, ``Content-Length``
or chunked framing, ``Connection: close`` when the app asks for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11

from ._errors import LocalProtocolError
from ._frames import LAST_CHUNK, chunk

_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/[!-~]*) HTTP/1\.1")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([!-~]+(?:[ \t]+[!-~]+)*)?[ \t]*")
# Headers that take a request off the fast path: a body, an upgrade, an
# expectation, or a connection option other than keep-alive.
_NOT_SIMPLE = frozenset(
    (b"content-length", b"transfer-encoding", b"upgrade", b"expect", b"connection", b"te")
)


@dataclass(slots=True)
class SimpleRequest:
    """A request head read by :func:`parse_simple` (what ``build_env`` reads)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: bytes = b"1.1"


def parse_simple(head: bytes) -> SimpleRequest | None:
    """``head`` (without its final blank line) as a simple request, or None
    to let h11 read it."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    for line in lines[1:]:
        field = _HEADER.fullmatch(line)
        if field is None:
            return None
        name = field[1].lower()
        value = field[2] or b""
        if name in _NOT_SIMPLE:
            if name != b"connection" or value.lower() != b"keep-alive":
                return None
        elif name == b"host":
            hosts += 1
        elif name == b"accept" and b"text/event-stream" in value.lower():
            return None  # SSE: the upgrade path reads it through h11
        headers.append((name, value))
    if hosts != 1:
        return None
    return SimpleRequest(match[1], match[2], headers)


def _comma_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    out = []
    for n, v in headers:
        if n.lower() == name:
            out += [p.strip().lower() for p in v.split(b",") if p.strip()]
    return out


def _set_header(
    headers: list[tuple[bytes, bytes]], name: bytes, values: list[bytes]
) -> list[tuple[bytes, bytes]]:
    kept = [(n, v) for n, v in headers if n.lower() != name]
    return kept + [(name.title(), v) for v in values]


class Framing:
    """How the body of a fast response goes out, and whether the connection
    stays open after it."""

    __slots__ = ("chunked", "left", "keep_alive")

    def __init__(self, chunked: bool, left: int, keep_alive: bool) -> None:
        self.chunked = chunked
        self.left = left
        self.keep_alive = keep_alive

    def body(self, data: bytes) -> bytes:
        if self.chunked:
            return chunk(data) if data else b""
        if len(data) > self.left:
            raise LocalProtocolError("Too much data for declared Content-Length")
        self.left -= len(data)
        return data

    def end(self) -> bytes:
        if self.chunked:
            return LAST_CHUNK
        if self.left:
            raise LocalProtocolError("Too little data for declared Content-Length")
        return b""


def start_response(
    status: int, pairs: list[tuple[bytes, bytes]], reason: bytes, head_request: bool
) -> tuple[bytes, Framing]:
    """The response head for a simple request, and its body framing, as h11
    would write them. Raises :class:`~sansio_push.LocalProtocolError` for
    what h11 would refuse."""
    try:
        # h11 validates names, values, Content-Length and Transfer-Encoding here.
        response = h11.Response(status_code=status, headers=pairs, reason=reason)
    except h11.LocalProtocolError as exc:
        raise LocalProtocolError(str(exc)) from exc
    headers = list(response.headers.raw_items())
    encodings = _comma_values(headers, b"transfer-encoding")
    lengths = _comma_values(headers, b"content-length")
    if status in (204, 304) or (lengths and not encodings):
        framing = "length"
    else:
        # Chunked, or h11's "http/1.0" framing (no length), chunked for a 1.1
        # client: h11 rewrites both headers either way.
        framing = "chunked"
        headers = _set_header(headers, b"content-length", [])
        headers = _set_header(headers, b"transfer-encoding", [b"chunked"])
    # h11 rewrites Connection only for a request that asked to close, which
    # is never a simple one; the app's own "close" ends the connection after.
    keep_alive = b"close" not in _comma_values(headers, b"connection")
    if head_request or status in (204, 304):
        body = Framing(False, 0, keep_alive)
    elif framing == "chunked":
        body = Framing(True, 0, keep_alive)
    else:
        body = Framing(False, int(lengths[0]), keep_alive)
    head = b"HTTP/1.1 %d %s\r\n" % (status, response.reason)
    # h11 writes Host first.
    headers.sort(key=_host_first)
    head += b"".join(b"%s: %s\r\n" % (n, v) for n, v in headers) + b"\r\n"
    return head, body


def _host_first(header: tuple[bytes, bytes]) -> int:
    return 0 if header[0].lower() == b"host" else 1
