"""Hand-built WebSocket traffic for the tests of hostile peers.

Raw WebSocket frames built by hand (clients refuse to send the garbage these
tests need), a reader for the server's frames, and a bystander: a second
client whose answers prove the server keeps serving others.
"""

from __future__ import annotations

import contextlib
import os
import struct

import h11
import trio

from tests.helpers.server import TIMEOUT, connect, exchange, read_until, status_line, ws_handshake

# -- raw WebSocket frames -----------------------------------------------------

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame, as the tests want it (even when RFC 6455 does not).
    ``length`` overrides the length in the header."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", n)
    if masked:
        key = os.urandom(4)
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason)


def parse_frames(buf: bytearray) -> list[tuple[int, bool, bytes]]:
    """Take the whole server frames (unmasked) off ``buf``: (opcode, fin, payload)."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            pos = 10
        if len(buf) < pos + n:
            break
        out.append((b0 & 0x0F, bool(b0 & 0x80), bytes(buf[pos : pos + n])))
        del buf[: pos + n]
    return out


class RawWS:
    """A WebSocket client on a raw socket that sends whatever bytes it is told."""

    def __init__(self, stream: trio.SocketStream, buf: bytearray) -> None:
        self.stream = stream
        self.buf = buf
        self.frames: list[tuple[int, bool, bytes]] = []
        self.eof = False

    @classmethod
    async def open(
        cls, port: int, path: str = "/", extra: str = "", rcvbuf: int | None = None
    ) -> RawWS:
        with trio.fail_after(TIMEOUT):
            stream = await connect(port, rcvbuf)
            request, _key = ws_handshake(path, extra)
            await stream.send_all(request)
            buf = bytearray()
            head = await read_until(stream, b"\r\n\r\n", buf)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(stream, buf)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_frame(self) -> tuple[int, bool, bytes] | None:
        """The next server frame, or None at EOF (or a reset)."""
        while not self.frames:
            self.frames += parse_frames(self.buf)
            if self.frames:
                break
            if self.eof:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof = True
            self.buf += data
        return self.frames.pop(0)

    async def message(self) -> tuple[int, bytes]:
        """The next whole data message (pings are answered, skipped)."""
        parts: list[bytes] = []
        first = 0
        with trio.fail_after(TIMEOUT):
            while True:
                got = await self.next_frame()
                assert got is not None, "EOF before a message"
                opcode, fin, payload = got
                if opcode == PING:
                    await self.send(frame(PONG, payload))
                    continue
                assert opcode in (TEXT, BINARY, CONT), (opcode, payload)
                first = first or opcode
                parts.append(payload)
                if fin:
                    return first, b"".join(parts)

    async def close_code(self, *, answer: bool = False) -> int | None:
        """Read to the server's close frame; its code (None for an empty one).
        Data frames before it are skipped. Fails on EOF with no close frame."""
        with trio.fail_after(TIMEOUT):
            while True:
                got = await self.next_frame()
                assert got is not None, "EOF with no close frame"
                opcode, _fin, payload = got
                if opcode == CLOSE:
                    if answer:
                        with contextlib.suppress(trio.BrokenResourceError):
                            await self.send(frame(CLOSE, payload[:2]))
                    return struct.unpack("!H", payload[:2])[0] if payload else None

    async def wait_eof(self, timeout: float = TIMEOUT) -> None:
        """Read (and drop) until the server closes the TCP connection."""
        with trio.fail_after(timeout):
            while await self.next_frame() is not None:
                pass

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- a second client ------------------------------------------------------------


class Bystander:
    """A keep-alive HTTP connection and a WebSocket, opened before the abuse
    starts, which must go on getting answers while it happens."""

    def __init__(self, port: int, http: trio.SocketStream, ws: RawWS) -> None:
        self.port = port
        self.http = http
        self.h11 = h11.Connection(h11.CLIENT)
        self.ws = ws
        self.rounds = 0

    @classmethod
    async def open(cls, port: int) -> Bystander:
        http = await connect(port)
        ws = await RawWS.open(port, "/bystander")
        self = cls(port, http, ws)
        await self.check()
        return self

    async def check(self) -> None:
        """A request on the kept-alive connection, an echo on the WebSocket and
        a request on a new connection all get their answers."""
        self.rounds += 1
        with trio.fail_after(TIMEOUT):
            await self.http.send_all(b"GET /still-there HTTP/1.1\r\nHost: x\r\n\r\n")
            self.h11.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            self.h11.send(h11.EndOfMessage())
            status, body = 0, b""
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await self.http.receive_some(65536)
                    assert data, "the kept-alive connection was closed"
                    self.h11.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert (status, body) == (200, b"hello")
            self.h11.start_next_cycle()
            text = f"still here {self.rounds}".encode()
            await self.ws.send(frame(TEXT, text))
            assert await self.ws.message() == (TEXT, text)
            fresh = await exchange(
                self.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert status_line(fresh) == 200 and b"hello" in fresh, fresh

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.ws.aclose()
