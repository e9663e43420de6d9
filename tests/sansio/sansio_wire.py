"""Helpers for talking to a ServerConnection with bytes only (not a test module)."""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import h11

from sansio_push import Config, Drained, EndOfRequest, Event, Request, ServerConnection

#: The sample key of RFC 6455 section 1.3, and its accept token.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
CLIENT = ("127.0.0.1", 5000)
SERVER = ("127.0.0.1", 9292)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def new(config: Config | None = None) -> ServerConnection:
    return ServerConnection(config or Config(), client=CLIENT, server=SERVER)


def request(
    method: str = "GET",
    target: str = "/",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    host: bool = True,
    version: str = "1.1",
) -> bytes:
    """A request head (and ``body``, with Content-Length unless one is given)."""
    lines = [f"{method} {target} HTTP/{version}"]
    headers = list(headers)
    if host:
        lines.append("Host: example.com")
    lines += [f"{n}: {v}" for n, v in headers]
    names = {n.lower() for n, _ in headers}
    if body is not None and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(*pieces: bytes) -> bytes:
    """A chunked body made of ``pieces`` (then the last chunk)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


def ws_request(
    headers: Iterable[tuple[str, str]] = (),
    *,
    key: str | None = KEY,
    version: str | None = "13",
    connection: str = "Upgrade",
    upgrade: str = "websocket",
    method: str = "GET",
    target: str = "/ws",
) -> bytes:
    hs = [("Upgrade", upgrade), ("Connection", connection)]
    if key is not None:
        hs.append(("Sec-WebSocket-Key", key))
    if version is not None:
        hs.append(("Sec-WebSocket-Version", version))
    return request(method, target, hs + list(headers))


def sse_request(headers: Iterable[tuple[str, str]] = (), target: str = "/events") -> bytes:
    return request("GET", target, [("Accept", "text/event-stream"), *headers])


def drain(conn: ServerConnection) -> list[Event]:
    """Every event ready now."""
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def flush(conn: ServerConnection) -> bytes:
    """Take every byte waiting, as a driver writing them all would."""
    data = conn.data_to_send()
    conn.sent(len(data))
    return data


def flush_drained(conn: ServerConnection) -> tuple[bytes, Drained | None]:
    data = conn.data_to_send()
    return data, conn.sent(len(data))


def receive(conn: ServerConnection, data: bytes) -> list[Event]:
    conn.receive_data(data)
    return drain(conn)


def env_of(data: bytes, config: Config | None = None) -> dict[str, object]:
    """The env of the one request in ``data``."""
    events = receive(new(config), data)
    assert isinstance(events[0], Request), events
    return events[0].env


def connect_ws(
    config: Config | None = None,
    headers: Iterable[tuple[str, str]] = (),
    app_headers: Sequence[tuple[str, str]] = (),
) -> tuple[ServerConnection, bytes]:
    """An upgraded WebSocket connection, and the 101 it sent."""
    conn = new(config)
    events = receive(conn, ws_request(headers))
    assert isinstance(events[0], Request) and isinstance(events[-1], EndOfRequest)
    assert conn.start_response(0, app_headers, upgrade=True) == "websocket"
    return conn, flush(conn)


def connect_sse(
    config: Config | None = None, app_headers: Sequence[tuple[str, str]] = ()
) -> tuple[ServerConnection, bytes]:
    """An upgraded SSE connection, and the response head it sent."""
    conn = new(config)
    events = receive(conn, sse_request())
    assert isinstance(events[0], Request) and isinstance(events[-1], EndOfRequest)
    assert conn.start_response(200, app_headers, upgrade=True) == "sse"
    return conn, flush(conn)


def accept_token(key: str) -> str:
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC11B85").encode()).digest()
    return base64.b64encode(digest).decode()


# -- WebSocket frames, written and read independently of the code under test --


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
) -> bytes:
    """One client frame (masked unless ``mask`` is None)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 0x10000:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


def parse_frames(data: bytes) -> list[Frame]:
    """Server frames (unmasked); fails on leftover bytes."""
    frames = []
    i = 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        i += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        payload = data[i : i + n]
        assert len(payload) == n, "truncated frame"
        i += n
        frames.append(Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload))
    return frames


def sent_frames(conn: ServerConnection) -> list[tuple[int, bytes]]:
    """The opcode and payload of every frame ``conn`` sends now (taken)."""
    return [(f.opcode, f.payload) for f in parse_frames(flush(conn))]


# -- HTTP responses, read with an independent h11 client --------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v.decode("latin-1") for n, v in self.headers if n == name.encode()]
        return ", ".join(values) if values else None


def split_head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the rest, for one response head."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
    return int(status), headers, rest


def responses(data: bytes, methods: Sequence[str] = ("GET",)) -> list[Response]:
    """Parse one response per method in ``methods`` (as answers, in order)."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    out = []
    for method in methods:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = b""
        while True:
            event = client.next_event()
            assert event is not h11.NEED_DATA, "incomplete response"
            if isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append(Response(status, headers, body))
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    return out


def dechunk(data: bytes, *, complete: bool = False) -> bytes:
    """The payload of a chunked body read so far (``complete``: ends with 0)."""
    out = b""
    while data:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "truncated chunk size line"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert data == b"\r\n", "bytes after the last chunk"
            return out
        assert data[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
        out += data[:size]
        data = data[size + 2 :]
    assert not complete, "no last chunk"
    return out


def sse_body(conn: ServerConnection) -> bytes:
    """The event-stream bytes an SSE connection has queued (chunk framing removed)."""
    return dechunk(flush(conn))
