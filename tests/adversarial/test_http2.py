"""The known HTTP/2 attacks, sent frame by frame (tests/helpers/h2raw.py) over
h2c with prior knowledge: each gets its GOAWAY or RST_STREAM code, the
attacker's connection is closed where it must be, the server's work and
memory stay bounded, and a bystander on connections of its own (HTTP/2 with
an SSE stream it receives pushes on, and HTTP/1.1) is served throughout and
after."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from tests.helpers.h2raw import (
    MAX_WINDOW,
    PREFACE,
    SSE_ACCEPT,
    Bystander,
    ContinuationFrame,
    DataFrame,
    ErrorCodes,
    GoAwayFrame,
    HeadersFrame,
    Peaks,
    PingFrame,
    RawH2,
    RstStreamFrame,
    SettingCodes,
    SettingsFrame,
    WindowUpdateFrame,
    request_headers,
)
from tests.helpers.server import Recorder, wait_for

MB = 1024 * 1024
KB = 1024
#: What an attack may add to the process' resident set (the attacks would
#: take tens of MiB if unbounded: 48 MiB of decoded headers, 6 MiB queued).
RSS_BOUND_KIB = 24 * 1024


class App:
    """The app under attack. ``/`` answers ``hello`` (the bystander's);
    ``/slow`` after ``delay``; ``/hold`` once :attr:`release` is set (and
    ``/busy`` too, shielded from cancellation, like a sync app in a thread);
    ``/large`` 1 MiB; a GET accepting SSE gets :attr:`sse` (``/bystander``:
    :attr:`bystander`); anything else ``hello``. Counts the calls by path,
    and how many run at once (but for ``/``)."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.running = 0
        self.most_running = 0
        self.release = trio.Event()
        self.sse = Recorder()
        self.bystander = Recorder()

    async def __call__(self, env: dict[str, Any]) -> Any:
        path = env["PATH_INFO"]
        self.calls[path] += 1
        if env["rack.upgrade?"] == "sse":
            env["rack.upgrade"] = self.bystander if path == "/bystander" else self.sse
            return 200, {}, b""
        if path == "/":
            return 200, {"content-type": "text/plain"}, b"hello"
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if path == "/slow":
                await trio.sleep(self.delay)
            elif path == "/hold":
                await self.release.wait()
            elif path == "/busy":
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 10):
                    await self.release.wait()
            elif path == "/large":
                return 200, {"content-type": "application/octet-stream"}, b"L" * MB
            return 200, {"content-type": "text/plain"}, b"hello"
        finally:
            self.running -= 1


async def serve(start_server: Any, **kwargs: Any) -> tuple[Any, App]:
    app = App()
    kwargs.setdefault("write_timeout", 1.0)
    return await start_server(app, **kwargs), app


class Attack:
    """An attacked server: ``async with attack.running() as raw:`` opens the
    attacker's connection (``open`` arguments) while the bystander is served
    and the peaks watched; on the way out, checks the bounds and that all the
    connections end once the clients go."""

    def __init__(self, server: Any, app: App) -> None:
        self.server = server
        self.app = app
        self.peaks = Peaks(server)
        #: The bounds on what the server holds at once: the attacker's
        #: connection and the bystander's two; the bystander's SSE stream and
        #: one of the attacker's.
        self.max_connections = 3
        self.max_sessions = 2

    @property
    def port(self) -> int:
        return int(self.server.port)

    @contextlib.asynccontextmanager
    async def running(self, **open_args: Any) -> AsyncIterator[RawH2]:
        async with Bystander(self.port, self.app.bystander).serving(), self.peaks.watching():
            raw = await RawH2.open(self.port, **open_args)
            yield raw
        assert self.peaks.growth_kib < RSS_BOUND_KIB, f"RSS grew {self.peaks.growth_kib} KiB"
        assert self.peaks.connections <= self.max_connections, self.peaks.connections
        assert self.peaks.sessions <= self.max_sessions, self.peaks.sessions
        await raw.aclose()
        await wait_for(lambda: not self.server.connections and not self.server.push_connections)
        await wait_for(lambda: self.app.running == 0)


@pytest.fixture
async def attack(start_server: Any) -> Attack:
    """A server with write_timeout 1 s and default HTTP/2 limits."""
    return Attack(*await serve(start_server))


def server_settings(raw: RawH2) -> dict[int, int]:
    """The settings of the server's first SETTINGS frame."""
    first = next(f for f in raw.of_type(SettingsFrame) if "ACK" not in f.flags)
    return dict(first.settings)


def literals(total: int, width: int = 128) -> bytes:
    """A valid HPACK fragment of ``total`` bytes (a multiple of ``width``, at
    most 130): literal fields without indexing (RFC 7541 6.2.2), ``x: aaa…``,
    ``width`` bytes each on the wire and ``width + 29`` in the header list."""
    field = b"\x00\x01x" + bytes([width - 4]) + b"a" * (width - 4)
    return field * -(-total // width)


# -- Rapid Reset (CVE-2023-44487) ----------------------------------------------------


async def open_and_reset(raw: RawH2, path: str, streams: int, batch: int = 100) -> int:
    """HEADERS then RST_STREAM (CANCEL) on ``streams`` new streams, ``batch``
    pairs a write, reading what comes meanwhile; stops at the server's GOAWAY
    or the end of the connection. How many streams went out."""
    sent = 0
    done = trio.Event()

    async def read() -> None:
        while not raw.eof and not raw.of_type(GoAwayFrame):
            await raw.receive()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        while sent < streams and not done.is_set():
            frames: list[Any] = []
            for stream_id in range(2 * sent + 1, 2 * (sent + batch) + 1, 2):
                reset = RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL)
                frames += [raw.headers(stream_id, path), reset]
            try:
                await raw.send(*frames)
            except trio.BrokenResourceError:
                break
            sent += batch
            await trio.sleep(0)
        with trio.move_on_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    return sent


@pytest.mark.parametrize("path", ["/fast", "/slow"])
async def test_rapid_reset_gets_enhance_your_calm_with_bounded_work(
    attack: Attack, path: str
) -> None:
    limit = attack.server.options.protocol.h2_max_concurrent_streams
    async with attack.running() as raw:
        sent = await open_and_reset(raw, path, streams=5000)
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, raw.summary()
    # Cut off long before its 5000: past 2 x the limit of streams reset before
    # their response started (plus what was in flight).
    assert sent < 5000, (sent, raw.summary())
    # The app ran a bounded number of times, never more than the limit at once.
    assert attack.app.calls[path] <= 3 * limit, attack.app.calls
    assert attack.app.most_running <= limit, attack.app.most_running


async def test_reset_streams_still_worked_on_count_against_the_limit(start_server: Any) -> None:
    # Streams reset while their app still runs (it cannot be cancelled) hold
    # their place: the stream past the limit is refused.
    attack = Attack(*await serve(start_server, h2_max_concurrent_streams=10))
    streams = range(1, 21, 2)
    async with attack.running() as raw:
        await raw.send(*(raw.headers(s, "/busy") for s in streams))
        await wait_for(lambda: attack.app.calls["/busy"] == 10)
        await raw.send(*(RstStreamFrame(s, error_code=ErrorCodes.CANCEL) for s in streams))
        await raw.request(21, "/busy")
        assert await raw.reset_of(21) == ErrorCodes.REFUSED_STREAM, raw.summary()
        attack.app.release.set()
        await wait_for(lambda: attack.app.running == 0)
        await raw.request(23)
        assert await raw.ended(23) == b"hello"
    assert attack.app.calls["/busy"] == 10


# -- CONTINUATION flood (CVE-2024-27316) ---------------------------------------------


async def continuation_flood(raw: RawH2, size: int, frames: int) -> int:
    """HEADERS without END_HEADERS, then up to ``frames`` CONTINUATION frames
    of ``size`` bytes each (whole literal fields, never ended); stops when
    the server closes. How many went out."""
    block = raw.block(request_headers(raw.port, "/flood"))
    await raw.send(HeadersFrame(1, block, flags=["END_STREAM"]))
    continuation = ContinuationFrame(1, literals(size, min(size, 128))).serialize()
    for n in range(frames):
        try:
            await raw.send_raw(continuation)
        except trio.BrokenResourceError:
            return n
    return frames


@pytest.mark.parametrize(
    ("size", "code"),
    [
        (16, ErrorCodes.PROTOCOL_ERROR),
        (16384, ErrorCodes.ENHANCE_YOUR_CALM),
        (MB, ErrorCodes.ENHANCE_YOUR_CALM),
    ],
    ids=["small frames", "max-size frames", "1 MiB frames"],
)
async def test_continuation_flood_is_cut_off(start_server: Any, size: int, code: int) -> None:
    # Small frames: past 64 CONTINUATION frames, PROTOCOL_ERROR. Frames of the
    # largest size (16 KiB, or 1 MiB with h2_max_frame_size=1 MiB): the header
    # list passes h2_max_header_list_size (64 KiB) within five frames,
    # ENHANCE_YOUR_CALM, long before 64 of them (1 or 64 MiB) are buffered.
    attack = Attack(*await serve(start_server, h2_max_frame_size=max(size, 16384)))
    async with attack.running() as raw:
        await continuation_flood(raw, size, frames=1000 if size < 100 else 80)
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == code, raw.summary()
    assert attack.app.calls["/flood"] == 0


async def test_header_list_over_the_limit_gets_enhance_your_calm(attack: Attack) -> None:
    # A complete block (END_HEADERS) of 80 KiB of literal fields.
    async with attack.running() as raw:
        block = raw.block(request_headers(raw.port, "/flood")) + literals(80 * KB)
        chunks = [block[i : i + 16384] for i in range(0, len(block), 16384)]
        await raw.send(
            HeadersFrame(1, chunks[0], flags=["END_STREAM"]),
            *(ContinuationFrame(1, c) for c in chunks[1:-1]),
            ContinuationFrame(1, chunks[-1], flags=["END_HEADERS"]),
        )
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, raw.summary()
    assert attack.app.calls["/flood"] == 0


# -- HPACK bomb --------------------------------------------------------------------------


async def test_hpack_bomb_gets_enhance_your_calm(attack: Attack) -> None:
    # A 4 KiB field goes into the dynamic table (literal with incremental
    # indexing: index 62), then 12,000 one-byte references to it: 12 KiB on
    # the wire that would decode to 48 MiB of headers.
    async with attack.running() as raw:
        bomb = raw.block(request_headers(raw.port, "/bomb"))
        bomb += raw.block([("x-bomb", "b" * 4000)]) + b"\xbe" * 12000
        assert len(bomb) < 16384
        await raw.send(HeadersFrame(1, bomb, flags=["END_HEADERS", "END_STREAM"]))
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, raw.summary()
    assert attack.app.calls["/bomb"] == 0


# -- SETTINGS and PING floods --------------------------------------------------------------

FLOODS = {"settings": SettingsFrame(0), "ping": PingFrame(0, b"12345678")}


@pytest.mark.parametrize("kind", FLOODS)
async def test_flood_from_a_peer_that_never_reads_gets_enhance_your_calm(
    start_server: Any, kind: str
) -> None:
    # Small segments and a small receive buffer keep what the kernel holds of
    # the server's acks to ~128 KiB; past its 128 KiB of unsent replies the
    # server gives up on the peer: GOAWAY, close. write_timeout (5 s) is not
    # what ends it. Up to 400,000 frames, until the server stops taking them
    # for 0.25 s; then the peer reads what came, to its end.
    attack = Attack(*await serve(start_server, write_timeout=5.0))
    chunk = FLOODS[kind].serialize() * 4000
    sent = 0
    async with attack.running(handshake=False, rcvbuf=4096, mss=536) as raw:
        while sent < 400_000:
            with trio.move_on_after(0.25) as stalled:
                try:
                    await raw.send_raw(chunk)
                except trio.BrokenResourceError:
                    break
            if stalled.cancelled_caught:
                break
            sent += 4000
        await raw.wait_closed(4)
    goaways = raw.of_type(GoAwayFrame)
    assert [g.error_code for g in goaways] == [ErrorCodes.ENHANCE_YOUR_CALM], raw.summary()
    assert sent < 400_000, raw.summary()


async def test_pings_from_a_peer_that_reads_its_acks_are_answered(attack: Attack) -> None:
    async with attack.running() as raw:
        for n in range(20):
            await raw.send(*(PingFrame(0, b"%08d" % (n * 100 + i)) for i in range(100)))
            last = b"%08d" % (n * 100 + 99)
            await raw.until(lambda f, last=last: isinstance(f, PingFrame) and f.opaque_data == last)
        await raw.request(1)
        assert await raw.ended(1) == b"hello"
    acks = [f for f in raw.of_type(PingFrame) if "ACK" in f.flags]
    assert len(acks) == 2000 and not raw.of_type(GoAwayFrame), raw.summary()


# -- WINDOW_UPDATE overflow ------------------------------------------------------------


async def test_window_update_overflowing_the_connection_window(attack: Attack) -> None:
    async with attack.running() as raw:
        await raw.send(WindowUpdateFrame(0, MAX_WINDOW))
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR, raw.summary()


async def test_window_update_overflowing_a_stream_window(attack: Attack) -> None:
    # The stream is reset; the connection goes on serving.
    async with attack.running() as raw:
        await raw.request(1, "/sse", extra=SSE_ACCEPT)
        await wait_for(lambda: len(attack.app.sse.clients) == 1)
        await raw.send(WindowUpdateFrame(1, MAX_WINDOW))
        assert await raw.reset_of(1) == ErrorCodes.FLOW_CONTROL_ERROR, raw.summary()
        await wait_for(lambda: attack.app.sse.closed.is_set())
        await raw.request(3)
        assert await raw.ended(3) == b"hello"
    assert not raw.of_type(GoAwayFrame), raw.summary()


# -- push streams the peer leaves ---------------------------------------------------------


async def sessions_closed(attack: Attack, n: int) -> None:
    """Until the attacker's SSE sessions have seen ``n`` on_close calls in
    all and no session but the bystander's is left (bounded: a session
    leaves the server's set once its on_close has returned)."""
    with trio.move_on_after(5):
        while attack.app.sse.names().count("close") < n or len(attack.server.push_connections) > 1:
            await trio.sleep(0.01)
    closes = attack.app.sse.names().count("close")
    live = len(attack.server.push_connections)
    assert closes == n and live == 1, f"{closes} of {n} sessions closed, {live} live"


@pytest.mark.parametrize("how", ["reset", "gone"])
async def test_push_streams_the_peer_resets_or_leaves_are_closed(attack: Attack, how: str) -> None:
    # 10 rounds of 20 SSE streams: reset by the peer (RST_STREAM CANCEL) on
    # one connection, or left by their connection, closed under them. Each
    # session ends (on_close) and none is left over; on one connection the
    # streams never pile up to h2_max_concurrent_streams (100).
    ids = range(1, 41, 2)
    attack.max_connections, attack.max_sessions = 4, 21
    async with attack.running() as raw:
        for n in range(10):
            conn = raw if how == "reset" else await RawH2.open(attack.port)
            first = 40 * n if how == "reset" else 0
            streams = [first + s for s in ids]
            await conn.send(*(conn.headers(s, "/sse", extra=SSE_ACCEPT) for s in streams))
            await wait_for(lambda n=n: len(attack.app.sse.clients) == 20 * (n + 1))
            if how == "reset":
                await conn.send(*(RstStreamFrame(s, error_code=ErrorCodes.CANCEL) for s in streams))
            else:
                await conn.aclose()
            await sessions_closed(attack, 20 * (n + 1))
    assert not raw.of_type(GoAwayFrame) and not raw.of_type(RstStreamFrame), raw.summary()


# -- zero-window slowloris ---------------------------------------------------------------


async def stall(attack: Attack, raw: RawH2, path: str) -> int:
    """Start a response on stream 1 that the peer's windows will hold up: 1
    MiB, or 64 KiB events written to the SSE stream until they are refused
    (at most 100). The bytes of events the server took."""
    await raw.request(1, path, extra=SSE_ACCEPT if path == "/sse" else ())
    await raw.until(lambda f: isinstance(f, HeadersFrame) and f.stream_id == 1)
    if path != "/sse":
        return MB
    await wait_for(lambda: len(attack.app.sse.clients) == 1)
    client = attack.app.sse.clients[0]
    accepted = 0
    for _ in range(100):
        if not client.write("e" * (64 * KB)):
            break
        accepted += 64 * KB
        await trio.sleep(0.005)
    return accepted


@pytest.mark.parametrize("path", ["/sse", "/large"])
async def test_zero_stream_window_resets_the_stream_after_write_timeout(
    start_server: Any, path: str
) -> None:
    # SETTINGS_INITIAL_WINDOW_SIZE=0 and no WINDOW_UPDATE: the stream is reset
    # (CANCEL) after write_timeout; the connection still serves a stream whose
    # window the peer opens.
    write_timeout = 1.0
    server, app = await serve(start_server, write_timeout=write_timeout, overflow="drop")
    attack = Attack(server, app)
    async with attack.running(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}) as raw:
        started = trio.current_time()
        accepted = await stall(attack, raw, path)
        assert await raw.reset_of(1, write_timeout + 4) == ErrorCodes.CANCEL, raw.summary()
        assert trio.current_time() - started >= write_timeout / 2
        assert not raw.bodies.get(1), raw.summary()
        await raw.send(raw.headers(3), WindowUpdateFrame(3, 100))
        assert await raw.ended(3) == b"hello"
    assert not raw.of_type(GoAwayFrame), raw.summary()
    assert accepted <= server.options.protocol.max_queue_bytes + MB, accepted
    if path == "/sse":
        assert app.sse.closed.is_set()


@pytest.mark.parametrize("path", ["/sse", "/large"])
async def test_connection_window_never_opened_closes_the_connection(
    start_server: Any, path: str
) -> None:
    # Stream windows of 2^31-1 but the connection's 64 KiB never reopened:
    # after write_timeout with data waiting, GOAWAY ENHANCE_YOUR_CALM and close.
    write_timeout = 1.0
    server, app = await serve(start_server, write_timeout=write_timeout, overflow="drop")
    attack = Attack(server, app)
    async with attack.running(settings={SettingCodes.INITIAL_WINDOW_SIZE: MAX_WINDOW}) as raw:
        started = trio.current_time()
        accepted = await stall(attack, raw, path)
        goaway = await raw.goaway(write_timeout + 4)
        assert trio.current_time() - started >= write_timeout / 2
        await raw.wait_closed(3)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, raw.summary()
    # It got what the connection window allowed, no more.
    assert len(raw.bodies.get(1, b"")) <= 65535, raw.summary()
    assert accepted <= server.options.protocol.max_queue_bytes + MB, accepted


# -- closed streams and stream ids ---------------------------------------------------------


async def test_data_on_a_closed_stream_gets_stream_closed(attack: Attack) -> None:
    async with attack.running() as raw:
        await raw.request(1)
        assert await raw.ended(1) == b"hello"
        await raw.send(DataFrame(1, b"late", flags=["END_STREAM"]))
        assert await raw.reset_of(1) == ErrorCodes.STREAM_CLOSED, raw.summary()
        await raw.request(3)
        assert await raw.ended(3) == b"hello"
    assert not raw.of_type(GoAwayFrame), raw.summary()


@pytest.mark.parametrize("late", [3, 2], ids=["backwards", "even"])
async def test_stream_id_going_backwards_or_even_gets_protocol_error(
    attack: Attack, late: int
) -> None:
    async with attack.running() as raw:
        await raw.request(5)
        assert await raw.ended(5) == b"hello"
        await raw.request(late, "/late")
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR, raw.summary()
    assert goaway.last_stream_id == 5
    assert attack.app.calls["/late"] == 0


# -- max concurrent streams ---------------------------------------------------------------


async def test_streams_past_the_limit_are_refused_the_others_served(start_server: Any) -> None:
    attack = Attack(*await serve(start_server, h2_max_concurrent_streams=10))
    async with attack.running() as raw:
        assert server_settings(raw)[SettingCodes.MAX_CONCURRENT_STREAMS] == 10
        streams = list(range(1, 31, 2))
        await raw.send(*(raw.headers(s, "/hold") for s in streams))
        for s in streams[10:]:
            assert await raw.reset_of(s) == ErrorCodes.REFUSED_STREAM, raw.summary()
        await wait_for(lambda: attack.app.calls["/hold"] == 10)
        attack.app.release.set()
        for s in streams[:10]:
            assert await raw.ended(s) == b"hello"
            assert raw.status(s) == 200
        await raw.request(31)
        assert await raw.ended(31) == b"hello"
    assert attack.app.calls["/hold"] == 10 and attack.app.most_running == 10
    refused = {f.stream_id for f in raw.of_type(RstStreamFrame)}
    assert refused == set(streams[10:]), raw.summary()


# -- malformed frames ------------------------------------------------------------------------

MALFORMED = {
    # RFC 9113 3.4: the preface is the magic then a SETTINGS frame.
    "ping before settings": PREFACE + PingFrame(0).serialize(),
    # An HTTP/1.1 request after the preface reads as the header of a 4.6 MB
    # frame: refused on sight too, not buffered up to 16 MiB.
    "garbage": PREFACE + SettingsFrame(0).serialize() + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}
MALFORMED_CODES = {
    "ping before settings": ErrorCodes.PROTOCOL_ERROR,
    "garbage": ErrorCodes.FRAME_SIZE_ERROR,
}


def bystander_only(app: App) -> bool:
    """Whether only the bystander's requests reached the app."""
    return sum(app.calls.values()) == app.calls["/"] + app.calls["/bystander"]


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_start_gets_goaway(attack: Attack, name: str) -> None:
    # The attacker opens a plain TCP connection (no preface of ours), sends
    # these bytes and nothing more: the server answers within the bound.
    async with attack.running(handshake=False, preface=False) as raw:
        await raw.send_raw(MALFORMED[name])
        goaway = await raw.goaway(5)
        await raw.wait_closed(5)
    assert goaway.error_code == MALFORMED_CODES[name], raw.summary()
    assert bystander_only(attack.app), attack.app.calls


async def test_bad_preface_magic_is_answered_as_http1(attack: Attack) -> None:
    # A connection that does not start with the whole preface is HTTP/1.1 (the
    # interface: h2c is prior knowledge of the preface): "PRI * HTTP/2.0" is
    # answered 505 and the connection closed, as over HTTP/1.1.
    async with attack.running(handshake=False, preface=False) as raw:
        await raw.send_raw(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + SettingsFrame(0).serialize())
        await raw.wait_closed(5)
    assert bytes(raw.buf).startswith(b"HTTP/1.1 505 "), bytes(raw.buf[:200])
    assert bystander_only(attack.app), attack.app.calls


async def test_frame_header_over_the_limit_is_refused_before_its_body(attack: Attack) -> None:
    # The header of a frame of 16 MiB - 1 (of an unknown type, which would be
    # ignored), then 8 MiB of its body: refused on sight, FRAME_SIZE_ERROR,
    # without holding the body (h2 alone waits for the whole frame).
    chunk = bytes(64 * KB)
    async with attack.running() as raw:
        await raw.send_raw(b"\xff\xff\xff\xfa" + bytes(5))
        with contextlib.suppress(trio.BrokenResourceError), trio.move_on_after(5):
            for _ in range(128):
                await raw.send_raw(chunk)
        goaway = await raw.goaway(5)
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR, raw.summary()


@pytest.mark.parametrize("max_frame", [16384, 32768])
async def test_data_frame_over_h2_max_frame_size_gets_frame_size_error(
    start_server: Any, max_frame: int
) -> None:
    attack = Attack(*await serve(start_server, h2_max_frame_size=max_frame))
    async with attack.running() as raw:
        assert server_settings(raw).get(SettingCodes.MAX_FRAME_SIZE, 16384) == max_frame
        await raw.request(1, "/upload", method="POST", end_stream=False)
        await raw.send(DataFrame(1, b"u" * (max_frame + 1)))
        goaway = await raw.goaway()
        await raw.wait_closed(5)
    assert goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR, raw.summary()


@pytest.mark.parametrize("together", [True, False], ids=["one write", "a read each"])
async def test_data_frame_of_exactly_h2_max_frame_size_is_taken(
    start_server: Any, together: bool
) -> None:
    # The request's HEADERS and its one DATA frame (END_STREAM) come in one
    # read, or in two (as clients send bodies): answered either way.
    attack = Attack(*await serve(start_server, h2_max_frame_size=32768))
    async with attack.running() as raw:
        headers = raw.headers(1, "/upload", method="POST", end_stream=False)
        data = DataFrame(1, b"u" * 32768, flags=["END_STREAM"])
        if together:
            await raw.send(headers, data)
        else:
            await raw.send(headers)
            await trio.sleep(0.05)  # so that the server reads the HEADERS alone
            await raw.send(data)
        assert await raw.ended(1, 5) == b"hello"
    assert not raw.of_type(GoAwayFrame) and not raw.of_type(RstStreamFrame), raw.summary()
