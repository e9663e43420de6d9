"""WebSocket frames (those a server sends, and the small ones it reads
itself), and the HTTP/1.1 chunk that frames an event stream.

Most of what a push server reads on a WebSocket is whole, small, masked text
or binary frames, and pongs to its keepalive pings. For those, wsproto's
machinery (a frame decoder, a message decoder, an event object per frame, a
generator per read) costs several times the parsing itself, and its state
costs every idle connection 1.7 KiB. So a connection reads such frames with
:func:`read_frame` until the first frame that is not one of them: a
fragment, a close, RSV bits, an unmasked frame, a reserved opcode, text that
is not UTF-8 or that arrives in pieces, a length not in its shortest form, a
frame over 64 KiB or over ``max_message_size``. From that frame on, wsproto
reads the connection, for good, starting with that frame's bytes: it judges
everything this reader does not take. What this reader takes, wsproto would
read the same way (tests/sansio/test_frames.py pins that).
"""

from __future__ import annotations

import struct
from enum import Enum

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_PING = 0x9
OP_PONG = 0xA


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented, uncompressed server frame (RFC 6455 5.2)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 0x10000:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def encode_message(msg: str | bytes) -> bytes:
    """A text frame for ``str``, a binary frame for any bytes-like object."""
    if isinstance(msg, str):
        return encode_frame(OP_TEXT, msg.encode("utf-8"))
    return encode_frame(OP_BINARY, bytes(msg))


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (RFC 9112 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


#: The chunk that ends a chunked body (no trailer fields).
LAST_CHUNK = b"0\r\n\r\n"


# First bytes taken: FIN set, no RSV bits, one of the four opcodes above.
_TAKEN = frozenset((0x80 | OP_TEXT, 0x80 | OP_BINARY, 0x80 | OP_PING, 0x80 | OP_PONG))


class NotTaken(Enum):
    """What :func:`read_frame` returns for a frame it leaves to wsproto."""

    TO_WSPROTO = "to wsproto"


#: :func:`read_frame`: the frame at this position is wsproto's to read.
TO_WSPROTO = NotTaken.TO_WSPROTO


def unmask(data: bytes, mask: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``mask`` repeated (RFC 6455 5.3)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def read_frame(
    buf: bytes, pos: int, max_size: int
) -> tuple[int, str | bytes, int] | NotTaken | None:
    """The client frame that starts at ``buf[pos]``: ``(opcode, payload, end)``
    with the payload unmasked (decoded for text) and ``end`` where the next
    frame starts; ``None`` if the frame is not whole yet; :data:`TO_WSPROTO`
    if it is not a frame this reader takes."""
    have = len(buf) - pos
    if have < 2:
        return None
    first = buf[pos]
    second = buf[pos + 1]
    if first not in _TAKEN or not second & 0x80:
        return TO_WSPROTO
    n = second & 0x7F
    start = pos + 6
    if n == 126:
        if first & 0x08:  # a control frame's payload is at most 125 bytes
            return TO_WSPROTO
        if have < 4:
            return None
        n = buf[pos + 2] << 8 | buf[pos + 3]
        if n < 126:
            return TO_WSPROTO
        start = pos + 8
    elif n == 127:
        return TO_WSPROTO
    if n > max_size:
        return TO_WSPROTO
    end = start + n
    if len(buf) < end:
        # wsproto fails a connection on bad UTF-8 as soon as the bad byte
        # arrives (RFC 6455 8.1), before the frame's end: text that comes in
        # pieces is left to it.
        return TO_WSPROTO if first == 0x80 | OP_TEXT and len(buf) > start else None
    payload = unmask(buf[start:end], buf[start - 4 : start])
    opcode = first & 0x0F
    if opcode == OP_TEXT:
        try:
            return opcode, payload.decode("utf-8"), end
        except UnicodeDecodeError:
            return TO_WSPROTO
    return opcode, payload, end
