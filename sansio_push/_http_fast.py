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

The response to a fast request is written as h11 would write it (the same
bytes, the same refusals with the same messages: ``tests/sansio/test_http_fast.py``
compares the two), without building h11's objects: the headers checked with
h11's grammar, ``Content-Length`` or chunked framing, ``Connection: close``
when the app asks for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import LocalProtocolError
from ._frames import LAST_CHUNK, chunk

_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/[!-~]*) HTTP/1\.1")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([!-~]+(?:[ \t]+[!-~]+)*)?[ \t]*")
# Headers that take a request off the fast path: a body, an upgrade, an
# expectation, or a connection option other than keep-alive.
_NOT_SIMPLE = frozenset(
    (b"content-length", b"transfer-encoding", b"upgrade", b"expect", b"connection", b"te")
)

# Header lines as read (_read_field): a client sends the same ones again and
# again (Host, User-Agent, Accept...). Only short ones, emptied when full.
_FIELDS: dict[bytes, tuple[bytes, bytes] | tuple[()]] = {}
_FIELDS_KEPT = 1024
_FIELD_KEPT_SIZE = 256

# What h11 allows in a response's header names and values (RFC 9110 5.1, 5.5),
# and in a Content-Length (digits, at most 20 of them).
_FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_DIGITS = re.compile(rb"[0-9]+")
_MAX_DIGITS = 20


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
        field = _FIELDS.get(line)
        if field is None:
            field = _read_field(line)
        if not field:
            return None
        if field[0] == b"host":
            hosts += 1
        headers.append(field)
    if hosts != 1:
        return None
    return SimpleRequest(match[1], match[2], headers)


def _read_field(line: bytes) -> tuple[bytes, bytes] | tuple[()]:
    """A header line of a simple request as (lower-case name, value); ``()``
    if it takes the request off the fast path. Remembered (see _FIELDS)."""
    field = _HEADER.fullmatch(line)
    if field is None:
        return ()
    name = field[1].lower()
    value = field[2] or b""
    read: tuple[bytes, bytes] | tuple[()] = (name, value)
    if name in _NOT_SIMPLE:
        if name != b"connection" or value.lower() != b"keep-alive":
            read = ()
    elif name == b"accept" and b"text/event-stream" in value.lower():
        read = ()  # SSE: the upgrade path reads it through h11
    if len(line) <= _FIELD_KEPT_SIZE:
        if len(_FIELDS) >= _FIELDS_KEPT:
            _FIELDS.clear()
        _FIELDS[line] = read
    return read


def _comma_values(value: bytes) -> list[bytes]:
    return [p.strip().lower() for p in value.split(b",") if p.strip()]


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
    would write them (the same checks, in the same order, with the same
    messages). Raises :class:`~sansio_push.LocalProtocolError` for what h11
    would refuse."""
    if not isinstance(status, int):
        raise LocalProtocolError("status code must be integer")
    lines: list[bytes] = []
    hosts: list[bytes] = []
    length = None
    chunked = False
    keep_alive = True
    for name, value in pairs:
        if _FIELD_NAME.fullmatch(name) is None:
            raise LocalProtocolError(f"Illegal header name {name!r}")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise LocalProtocolError(f"Illegal header value {value!r}")
        lower = name.lower()
        if lower == b"content-length":
            lengths = {v.strip() for v in value.split(b",")}
            if len(lengths) != 1:
                raise LocalProtocolError("conflicting Content-Length headers")
            value = lengths.pop()
            if _DIGITS.fullmatch(value) is None or len(value) > _MAX_DIGITS:
                raise LocalProtocolError("bad Content-Length")
            if length is not None:
                if length != value:
                    raise LocalProtocolError("conflicting Content-Length headers")
                continue
            length = value
        elif lower == b"transfer-encoding":
            if chunked:
                raise LocalProtocolError("multiple Transfer-Encoding headers")
            value = value.lower()
            if value != b"chunked":
                raise LocalProtocolError("Only Transfer-Encoding: chunked is supported")
            chunked = True
        elif lower == b"connection":
            keep_alive = keep_alive and b"close" not in _comma_values(value)
        # h11 writes Host first.
        (hosts if lower == b"host" else lines).append(b"%s: %s\r\n" % (name, value))
    if not 200 <= status < 1000:
        raise LocalProtocolError(
            f"Response status_code should be in range [200, 1000), not {status}"
        )
    no_body = status in (204, 304)
    if not no_body and (chunked or length is None):
        # Chunked, or h11's "http/1.0" framing (no length), chunked for a 1.1
        # client: h11 drops Content-Length and puts its own Transfer-Encoding last.
        lines = [line for line in lines if not _is_framing(line)]
        lines.append(b"Transfer-Encoding: chunked\r\n")
        length = None
    # h11 rewrites Connection only for a request that asked to close, which
    # is never a simple one; the app's own "close" ends the connection after.
    if head_request or no_body:
        body = Framing(False, 0, keep_alive)
    elif length is None:
        body = Framing(True, 0, keep_alive)
    else:
        body = Framing(False, int(length), keep_alive)
    head = b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, b"".join(hosts + lines))
    return head, body


def _is_framing(line: bytes) -> bool:
    name = line[: line.index(b":")].lower()
    return name == b"content-length" or name == b"transfer-encoding"
