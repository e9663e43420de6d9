"""Bad WebSocket input after a good handshake: each gets its close code, the
connection ends, ``on_close`` runs, and a second client keeps being served."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
import zlib
from typing import Any

import pytest
import trio

from tests.helpers.frames import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    RSV1,
    RSV2,
    RSV3,
    TEXT,
    Bystander,
    RawWS,
    close_frame,
    frame,
)
from tests.helpers.server import Echo, connect, echo_app, read_until, wait_for, ws_handshake

MAX_MESSAGE = 1000


@pytest.fixture
async def served(start_server: Any) -> Any:
    echo = Echo()
    server = await start_server(echo_app(echo), max_message_size=MAX_MESSAGE)
    bystander = await Bystander.open(server.port)
    yield server.port, echo, bystander
    await bystander.aclose()


BAD = {
    # RFC 6455 5.1: a client frame must be masked.
    "unmasked text": (frame(TEXT, b"hi", masked=False), 1002),
    "unmasked close": (frame(CLOSE, struct.pack("!H", 1000), masked=False), 1002),
    # 5.2: reserved opcodes.
    "opcode 3": (frame(0x3, b"x"), 1002),
    "opcode 7": (frame(0x7, b"x"), 1002),
    "opcode 0xB": (frame(0xB, b"x"), 1002),
    "opcode 0xF": (frame(0xF, b""), 1002),
    # 5.2: RSV bits with no extension that defines them.
    "rsv1": (frame(TEXT, b"x", rsv=RSV1), 1002),
    "rsv2": (frame(TEXT, b"x", rsv=RSV2), 1002),
    "rsv3": (frame(BINARY, b"x", rsv=RSV3), 1002),
    "rsv on ping": (frame(PING, b"x", rsv=RSV2), 1002),
    # 5.5: control frames carry at most 125 bytes and are never fragmented.
    "ping of 126": (frame(PING, b"p" * 126), 1002),
    "pong of 126": (frame(PONG, b"p" * 126), 1002),
    "close of 126": (frame(CLOSE, struct.pack("!H", 1000) + b"r" * 124), 1002),
    "fragmented ping": (frame(PING, b"a", fin=False) + frame(CONT, b"b"), 1002),
    "fragmented close": (frame(CLOSE, b"\x03", fin=False) + frame(CONT, b"\xe8"), 1002),
    # 5.4: continuation with nothing to continue; a new message mid-message.
    "lone continuation": (frame(CONT, b"x"), 1002),
    "text inside a fragmented text": (
        frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),
        1002,
    ),
    # 8.1: text must be UTF-8.
    "invalid utf-8": (frame(TEXT, b"\xff\xfe"), 1007),
    "invalid utf-8 in a fragment": (
        frame(TEXT, b"ok", fin=False) + frame(CONT, b"\xc3\x28"),
        1007,
    ),
    "utf-8 cut short at the end": (frame(TEXT, b"ok\xe2\x82"), 1007),
    "utf-16 surrogate": (frame(TEXT, b"\xed\xa0\x80"), 1007),
    "invalid utf-8 in the close reason": (close_frame(1000, b"\xff"), 1007),
    # 7.4: close codes that must not be sent, and a one-byte close payload.
    "close code 0": (close_frame(0), 1002),
    "close code 999": (close_frame(999), 1002),
    "close code 1004": (close_frame(1004), 1002),
    "close code 1005": (close_frame(1005), 1002),
    "close code 1006": (close_frame(1006), 1002),
    "close code 1015": (close_frame(1015), 1002),
    "close code 1016": (close_frame(1016), 1002),
    "close code 2999": (close_frame(2999), 1002),
    "close code 5000": (close_frame(5000), 1002),
    "close code 65535": (close_frame(65535), 1002),
    "one-byte close": (frame(CLOSE, b"\x03"), 1002),
    # Past max_message_size: one frame, fragments, or a frame that only says so.
    "message too big": (frame(TEXT, b"a" * (MAX_MESSAGE + 1)), 1009),
    "binary too big": (frame(BINARY, b"\0" * (MAX_MESSAGE * 3)), 1009),
    "fragments too big": (
        b"".join(frame(TEXT if i == 0 else CONT, b"a" * 300, fin=False) for i in range(4))
        + frame(CONT, b"a"),
        1009,
    ),
    "declared 8 EiB": (frame(BINARY, b"\0" * (MAX_MESSAGE + 10), length=1 << 62), 1009),
    "multibyte text too big": (frame(TEXT, "é".encode() * (MAX_MESSAGE // 2 + 1)), 1009),
}


@pytest.mark.parametrize(("data", "code"), BAD.values(), ids=BAD.keys())
async def test_bad_frames_get_their_close_code(served: Any, data: bytes, code: int) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    # A good message first: the connection works until the bad bytes come.
    await ws.send(frame(TEXT, b"before"))
    assert await ws.message() == (TEXT, b"before")
    # The server may fail the connection before taking it all.
    with contextlib.suppress(trio.BrokenResourceError):
        await ws.send(data)
    assert await ws.close_code() == code
    # Failing the connection closes the TCP connection too.
    await ws.wait_eof()
    await ws.aclose()
    await wait_for(lambda: echo.closed == echo.opened - 1)  # all but the bystander
    await bystander.check()


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1008, 1011, 3000, 4999])
async def test_valid_close_codes_are_echoed(served: Any, code: int) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    await ws.send(close_frame(code, b"bye"))
    assert await ws.close_code() == code
    await ws.wait_eof()
    await ws.aclose()
    await bystander.check()


async def test_empty_close_is_answered_with_an_empty_close(served: Any) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    await ws.send(frame(CLOSE))
    assert await ws.close_code() is None
    await ws.wait_eof()
    await ws.aclose()


async def test_message_of_exactly_max_message_size_is_accepted(served: Any) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    await ws.send(frame(BINARY, b"\x01" * MAX_MESSAGE))
    assert await ws.message() == (BINARY, b"\x01" * MAX_MESSAGE)
    await ws.aclose()


async def test_frame_split_byte_by_byte_arrives_whole(served: Any) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    text = "héllo, wörld ✓".encode()
    # A fragmented text message with a ping between its fragments, every
    # byte sent on its own, the UTF-8 split in the middle of characters.
    data = (
        frame(TEXT, text[:2], fin=False)
        + frame(PING, b"mid")
        + frame(CONT, text[2:9], fin=False)
        + frame(CONT, text[9:])
    )
    for byte in data:
        await ws.send(bytes([byte]))
        await trio.sleep(0.001)
    got = await ws.next_frame()
    assert got == (PONG, True, b"mid")
    assert await ws.message() == (TEXT, text)
    # A 16-bit length frame, byte by byte too.
    big = bytes(range(256)) * 2
    for byte in frame(BINARY, big):
        await ws.send(bytes([byte]))
    assert await ws.message() == (BINARY, big)
    await bystander.check()
    await ws.aclose()


async def test_pings_are_answered_with_their_payload(served: Any) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    await ws.send(frame(PING, b"p" * 125))
    assert await ws.next_frame() == (PONG, True, b"p" * 125)
    await ws.aclose()


async def test_unsolicited_pong_is_ignored(served: Any) -> None:
    port, echo, bystander = served
    ws = await RawWS.open(port)
    await ws.send(frame(PONG, b"unasked"))
    await ws.send(frame(TEXT, b"after"))
    assert await ws.message() == (TEXT, b"after")
    await ws.aclose()


async def test_garbage_after_the_handshake_in_the_same_packet(served: Any) -> None:
    # Bytes pipelined behind the handshake are frames already: here a bad one.
    port, echo, bystander = served
    stream = await connect(port)
    request, _ = ws_handshake()
    await stream.send_all(request + frame(TEXT, b"x", masked=False))
    buf = bytearray()
    with trio.fail_after(5):
        head = await read_until(stream, b"\r\n\r\n", buf)
    assert head.startswith(b"HTTP/1.1 101 ")
    ws = RawWS(stream, buf)
    assert await ws.close_code() == 1002
    await ws.aclose()
    await bystander.check()


async def test_many_bad_clients_at_once_do_not_disturb_a_good_one(served: Any) -> None:
    port, echo, bystander = served
    cases = list(BAD.values())
    codes: list[int | None] = []

    async def abuse(data: bytes) -> None:
        ws = await RawWS.open(port)
        with contextlib.suppress(trio.BrokenResourceError):
            await ws.send(data)
        codes.append(await ws.close_code())
        await ws.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for data, _code in cases:
                nursery.start_soon(abuse, data)
            for _ in range(3):
                await bystander.check()
    assert sorted(codes) == sorted(code for _, code in cases)


# -- permessage-deflate -------------------------------------------------------------

DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate\r\n"


def deflate(data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692 7.2.1: no trailing 00 00 ff ff)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


@pytest.fixture
async def deflating(start_server: Any) -> Any:
    echo = Echo()
    server = await start_server(echo_app(echo), compression=True, max_message_size=64 * 1024)
    bystander = await Bystander.open(server.port)
    yield server.port, bystander
    await bystander.aclose()


async def test_compressed_message_under_the_limit_is_echoed(deflating: Any) -> None:
    port, bystander = deflating
    ws = await RawWS.open(port, extra=DEFLATE)
    await ws.send(frame(TEXT, deflate(b"a" * 60_000), rsv=RSV1))
    opcode, payload = await ws.message()
    assert opcode == TEXT
    # The echo is compressed too (RSV1 set on its frame): inflate it back.
    inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    assert inflated == b"a" * 60_000
    await ws.aclose()


async def test_compressed_message_that_inflates_past_the_limit_gets_1009(deflating: Any) -> None:
    port, bystander = deflating
    ws = await RawWS.open(port, extra=DEFLATE)
    await ws.send(frame(TEXT, deflate(b"a" * 70_000), rsv=RSV1))
    assert await ws.close_code() == 1009
    await ws.aclose()
    await bystander.check()


async def test_deflate_bomb_is_stopped_before_it_takes_the_memory(deflating: Any) -> None:
    # 200 MB of zeros deflate to 200 kB: inflating all of a 64 kB read at once
    # would take ~64 MB before any size check could run.
    port, bystander = deflating
    bomb = deflate(b"\0" * (200 * 1024 * 1024))
    ws = await RawWS.open(port, extra=DEFLATE)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with contextlib.suppress(trio.BrokenResourceError):
            await ws.send(frame(BINARY, bomb, rsv=RSV1))
        assert await ws.close_code() == 1009
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak // 1024} kB while inflating"
    await ws.aclose()
    await bystander.check()
