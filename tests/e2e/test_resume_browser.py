"""Channel history in a real browser: Chromium's EventSource and the shipped
WebSocket helper (``trio_push/push.js``) resume across dropped connections
and get every published message once, in order.

The server runs in the test's Trio run (``start_server``) with
``history=20000``; a publisher publishes 10,000 messages at full rate (a
turn of the loop every 100) while the connection is dropped 20 times: by
the server (reset, or a clean close) or by the page. The page collects what
it got; the test compares it with what was published.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import trio

import trio_push
from tests.helpers.browser import (
    RECORD_ERRORS,
    browser,
    console_errors,
    wait_for_js,
)
from tests.helpers.procs import ROOT
from tests.helpers.server import TIMEOUT, get, http_client, in_thread, push_app, wait_for

CHANNEL = "feed"
WELCOME = json.dumps({"welcome": True})
N = 10_000
DROPS = 20
ROUND = N // DROPS
#: Every browser test ends within this many seconds.
BOUND = 45.0


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser() as d:
        yield d


def published(binary: bool) -> list[str | bytes]:
    """What is published: short texts, a 64 KiB one every 1000, and (on a
    WebSocket) every 7th as bytes."""
    out: list[str | bytes] = []
    for i in range(N):
        if i % 1000 == 999:
            out.append(f"t{i} " + "x" * 65536)
        elif binary and i % 7 == 3:
            out.append(f"b{i}".encode())
        else:
            out.append(f"t{i}")
    return out


def as_page_sees(messages: list[str | bytes]) -> list[str]:
    return [m if isinstance(m, str) else "bin:" + m.decode() for m in messages]


class Feed:
    """Every connection subscribes to the channel from where the page was:
    on SSE from its ``Last-Event-ID`` (the default), on a WebSocket from the
    helper's ``since`` (with the envelope)."""

    def __init__(self, channels: tuple[str, ...] = (CHANNEL,)) -> None:
        self.channels = channels
        self.clients: list[Any] = []
        self.envs: list[dict[str, Any]] = []
        self.gaps: list[str] = []
        self.received: list[Any] = []
        #: Set (and replaced) by each on_open.
        self.opened = trio.Event()

    def on_open(self, client: Any) -> None:
        self.opened.set()
        self.opened = trio.Event()
        self.clients.append(client)
        self.envs.append(client.env)
        if client.protocol == "sse":
            for channel in self.channels:
                client.subscribe(channel)
            # After the subscription's announcement: once the page has this,
            # it knows where it is. retry: reconnect after 0.1 s, not 3.
            client.write("", event="hello", retry=100)
        else:
            client.write(WELCOME)  # the app's own message, not an envelope
            for channel in self.channels:
                client.subscribe(channel, since=client.since(channel), envelope=True)

    def on_message(self, client: Any, data: Any) -> None:
        self.received.append(data)

    def on_gap(self, client: Any, channel: str, reason: str) -> None:
        self.gaps.append(reason)


def html(body: str) -> Callable[[dict[str, Any]], Any]:
    page = f"<!doctype html><html><body><script>{RECORD_ERRORS}</script>{body}</body></html>"

    def app(env: dict[str, Any]) -> Any:
        return 200, {"content-type": "text/html; charset=utf-8"}, page

    return app


def router(feed: Any, **pages: str) -> trio_push.Router:
    """The helper at /push.js, ``feed`` at /feed (a handler, or an app), the pages."""
    r = trio_push.Router()
    r.handle("GET", "/push.js", trio_push.js_helper_app)
    r.handle("GET", "/feed", feed if callable(feed) else push_app(feed))
    for name, body in pages.items():
        r.handle("GET", f"/{name}.html", html(body))
    return r


SSE_PAGE = """<script>
window.got = []; window.hello = 0;
var es = new EventSource("/feed");
es.addEventListener("msg", function (e) { got.push(e.data); });
es.addEventListener("hello", function () { hello++; });
</script>"""

# The page drops the stream itself: it closes the EventSource in the middle
# of each round and opens a new one, saying where it was in the query.
SSE_REOPEN_PAGE = (
    f"<script>var ROUND = {ROUND}, DROPS = {DROPS};</script>"
    + """<script>
window.got = []; window.hello = 0; window.reopened = 0;
function connect(url) {
  var es = new EventSource(url);
  es.addEventListener("hello", function () { hello++; });
  es.addEventListener("msg", function (e) {
    got.push(e.data);
    if (got.length % ROUND === ROUND / 2 && reopened < DROPS) {
      es.close();
      reopened++;
      connect("/feed?lastEventId=" + encodeURIComponent(e.lastEventId));
    }
  });
}
connect("/feed");
</script>"""
)

WS_PAGE = """<script src="/push.js"></script><script>
window.got = []; window.codes = []; window.opens = 0; window.bad = []; window.plain = [];
var text = new TextDecoder();
window.sock = pushSocket("/feed", {
  onmessage: function (data, channel, position) {
    if (channel === null && position === null) return plain.push(data);
    if (typeof channel !== "string" || typeof position !== "string") bad.push([channel, position]);
    got.push(typeof data === "string" ? data : "bin:" + text.decode(data));
  },
  onopen: function () { opens++; },
  onclose: function (e) { codes.push(e.code); }
});
</script>"""


# -- the server side ----------------------------------------------------------


def session_of(server: trio_push.Server, client: Any) -> Any:
    """The push session behind ``client`` (None once it has ended)."""
    return next((s for s in server.push_connections if s.client is client), None)


def reset(server: trio_push.Server, client: Any) -> None:
    """Drop the connection abruptly, as a crash would: no close frame (the
    browser sees 1006), no end of stream; the socket is closed with a reset."""
    session = session_of(server, client)
    conn = next(c for c in server.connections if c.session is session)
    conn.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.end()


def close(server: trio_push.Server, client: Any) -> None:
    """Drop it cleanly: what is queued, then close 1000 (SSE: the stream's end)."""
    client.close()


async def ready(server: trio_push.Server, feed: Feed, dropped: int) -> Any:
    """The page's connection after ``dropped`` drops, as soon as it is
    subscribed (woken by its on_open: no polling delay)."""
    with trio.fail_after(TIMEOUT):
        while len(feed.clients) <= dropped:
            await feed.opened.wait()
    client = feed.clients[dropped]
    session = session_of(server, client)
    assert session is not None and session.cursors and not session.loading
    return client


async def caught_up(server: trio_push.Server, feed: Feed, *lasts: trio_push.Position) -> None:
    """Until the newest connection has handed all up to ``lasts`` (the last
    position of each channel) to the OS."""
    wanted = {p.channel: p for p in lasts}

    def done() -> bool:
        session = session_of(server, feed.clients[-1])
        return (
            session is not None
            and len(session.cursors) == len(wanted)
            and all(c.last == wanted[c.topic.key] for c in session.cursors)
            and session.pending == 0
        )

    await wait_for(done)


async def publish_all(
    server: trio_push.Server,
    feed: Feed,
    messages: list[str | bytes],
    drops: list[Callable[[trio_push.Server, Any], None]] | None,
) -> list[trio_push.Position]:
    """Publish ``messages`` at full rate, in turn on each of the feed's
    channels; the last position of each. With ``drops``, drop the page's
    connection in the middle of each round of ``len(messages) // len(drops)``,
    with the round's drop: in even rounds as soon as the page has
    reconnected (what history brought is on its way: handed to the OS, or
    queued), in odd ones once it is live again, with a quarter round of live
    messages just published (some sent, some still in the log). Without,
    wait at the end of each round of 500 until the page has all of it (it
    drops the connection itself)."""
    channels = feed.channels
    lasts: dict[str, trio_push.Position] = {}
    size = len(messages) // len(drops) if drops else ROUND
    for n, message in enumerate(messages):
        r, i = divmod(n, size)
        channel = channels[n % len(channels)]
        last = trio_push.publish(channel, message)
        assert isinstance(last, trio_push.Position)
        lasts[channel] = last
        if i % 100 == 99:
            await trio.sleep(0)
        if drops is None:
            if i == size - 1:
                await caught_up(server, feed, *lasts.values())
            continue
        if r % 2 and i == size // 4:
            await caught_up(server, feed, *lasts.values())
        if i == size // 2:
            client = await ready(server, feed, r)
            drops[r](server, client)
    return list(lasts.values())


async def collected(
    driver: Any, server: trio_push.Server, feed: Feed, lasts: list[trio_push.Position]
) -> list[str]:
    """What the page got, once the server has sent it all and the page has
    read it (or, if something was lost, after a few seconds of nothing more)."""
    await caught_up(server, feed, *lasts)
    total = sum(p.offset for p in lasts)
    with contextlib.suppress(AssertionError):
        await in_thread(wait_for_js, driver, f"return window.got.length >= {total};", 5.0)
    return list(await in_thread(driver.execute_script, "return window.got;"))


def check_sequence(got: list[str], expected: list[str]) -> None:
    """``got`` is ``expected``, with a readable failure: where it first differs."""
    if got != expected:
        first = next(
            (i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e),
            min(len(got), len(expected)),
        )
        raise AssertionError(
            f"{len(got)} received, {len(expected)} published; first difference at {first}:"
            f" got {[g[:20] for g in got[first : first + 3]]},"
            f" published {[e[:20] for e in expected[first : first + 3]]}"
        )


# -- the tests ----------------------------------------------------------------


DROP_KINDS = [reset, reset, close, close]  # even rounds: reading history; odd: live


async def test_eventsource_resumes_exactly_after_20_drops_by_the_server(
    start_server: Any, driver: Any
) -> None:
    feed = Feed()
    server = await start_server(router(feed, sse=SSE_PAGE), history=20000)
    messages = published(binary=False)
    drops = [DROP_KINDS[r % 4] for r in range(DROPS)]
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/sse.html")
        await in_thread(wait_for_js, driver, "return window.hello > 0;")
        lasts = await publish_all(server, feed, messages, drops)
        got = await collected(driver, server, feed, lasts)
    check_sequence(got, as_page_sees(messages))
    # One connection per drop, each after the first resuming with the
    # Last-Event-ID that Chromium sent by itself; nothing was lost to history.
    assert len(feed.clients) == DROPS + 1
    assert "HTTP_LAST_EVENT_ID" not in feed.envs[0]
    assert all(env.get("HTTP_LAST_EVENT_ID") for env in feed.envs[1:])
    assert feed.gaps == []
    assert console_errors(driver) == []


async def test_eventsource_reopened_by_the_page_20_times_resumes_exactly(
    start_server: Any, driver: Any
) -> None:
    feed = Feed()
    server = await start_server(router(feed, reopen=SSE_REOPEN_PAGE), history=20000)
    messages = published(binary=False)
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/reopen.html")
        await in_thread(wait_for_js, driver, "return window.hello > 0;")
        lasts = await publish_all(server, feed, messages, None)
        got = await collected(driver, server, feed, lasts)
        reopened = await in_thread(driver.execute_script, "return window.reopened;")
    check_sequence(got, as_page_sees(messages))
    assert reopened == DROPS
    assert len(feed.clients) == DROPS + 1
    # A page cannot set Last-Event-ID: the query parameter stands for it.
    assert all("HTTP_LAST_EVENT_ID" not in env for env in feed.envs)
    queries = [parse_qs(env["QUERY_STRING"]).get("lastEventId") for env in feed.envs]
    assert queries[0] is None and all(q and len(q) == 1 for q in queries[1:])
    assert feed.gaps == []
    assert console_errors(driver) == []


async def test_websocket_helper_resumes_exactly_after_20_drops_by_the_server(
    start_server: Any, driver: Any
) -> None:
    feed = Feed()
    server = await start_server(router(feed, ws=WS_PAGE), history=20000)
    messages = published(binary=True)
    drops = [DROP_KINDS[r % 4] for r in range(DROPS)]
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/ws.html")
        # The announcement: the page knows where it starts before anything is published.
        await in_thread(wait_for_js, driver, "return window.sock.positions.feed;")
        lasts = await publish_all(server, feed, messages, drops)
        got = await collected(driver, server, feed, lasts)
        codes, bad, plain, positions = await in_thread(
            driver.execute_script,
            "return [window.codes, window.bad, window.plain, window.sock.positions];",
        )
        # send() goes through; close() closes for good (1000, no reconnect).
        assert await in_thread(driver.execute_script, "return window.sock.send('bye');")
        await wait_for(lambda: feed.received == ["bye"])
        await in_thread(driver.execute_script, "window.sock.close();")
        await wait_for(lambda: not feed.clients[-1].open)
        assert feed.clients[-1].close_code == 1000
        assert not await in_thread(driver.execute_script, "return window.sock.send('more');")
        await trio.sleep(0.5)  # (the helper would reconnect within 0.25 s)
    check_sequence(got, as_page_sees(messages))
    # The resets were abrupt (1006: no close frame), the closes clean.
    assert codes == [1006 if drop is reset else 1000 for drop in drops]
    assert bad == []
    # What is not an envelope reaches onmessage as it is (channel and position
    # null): the first connection's welcome at least (a reset may take others).
    assert 1 <= len(plain) <= DROPS + 1 and set(plain) == {WELCOME}
    assert positions == {CHANNEL: str(lasts[0])}
    assert len(feed.clients) == DROPS + 1  # none after the page's close
    # The helper says where it was in one since parameter, the old one replaced.
    sinces = [parse_qs(env["QUERY_STRING"]).get("since") for env in feed.envs]
    assert sinces[0] is None
    for since in sinces[1:]:
        assert since is not None and len(since) == 1
        assert list(json.loads(since[0])) == [CHANNEL]
    assert feed.gaps == []
    assert console_errors(driver) == []


@pytest.mark.parametrize(
    ("page", "started"),
    [
        (SSE_PAGE, "return window.hello > 0;"),
        (WS_PAGE, "return Object.keys(window.sock.positions).length == 2;"),
    ],
    ids=["eventsource", "websocket"],
)
async def test_a_connection_on_two_channels_resumes_each_exactly(
    start_server: Any, driver: Any, page: str, started: str
) -> None:
    """One connection, two history channels, published in turn, 10 drops:
    an SSE id carries both positions (``tag1=pos1,tag2=pos2``), the helper's
    since both; each channel's messages arrive once, in order."""
    feed = Feed((CHANNEL, "other"))
    server = await start_server(router(feed, page=page), history=20000)
    messages: list[str | bytes] = [f"{feed.channels[n % 2]} {n}" for n in range(4000)]
    drops = [DROP_KINDS[r % 4] for r in range(10)]
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/page.html")
        await in_thread(wait_for_js, driver, started)
        lasts = await publish_all(server, feed, messages, drops)
        got = await collected(driver, server, feed, lasts)
    for channel in feed.channels:
        mine = [m for m in messages if isinstance(m, str) and m.startswith(channel + " ")]
        check_sequence([g for g in got if g.startswith(channel + " ")], mine)
    assert len(got) == len(messages)
    assert len(feed.clients) == len(drops) + 1
    assert feed.gaps == []


@pytest.mark.parametrize(
    ("page", "started"),
    [
        (SSE_PAGE, "return window.hello > 0;"),
        (WS_PAGE, "return window.sock.positions.feed;"),
    ],
    ids=["eventsource", "websocket"],
)
async def test_a_page_that_got_only_the_announcement_resumes_from_it(
    start_server: Any, driver: Any, page: str, started: str
) -> None:
    """Before any message, the page knows where its subscription starts (SSE:
    an id-only block, which Chromium keeps as its Last-Event-ID; WebSocket:
    an envelope without data): what is published while it is away reaches it."""
    feed = Feed()
    server = await start_server(router(feed, page=page), history=100)
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/page.html")
        await in_thread(wait_for_js, driver, started)
        reset(server, feed.clients[0])
        await wait_for(lambda: session_of(server, feed.clients[0]) is None)
        for i in range(5):
            assert trio_push.publish(CHANNEL, f"while away {i}")
        await ready(server, feed, 1)
        got = await in_thread(wait_for_js, driver, "return window.got.length >= 5 && window.got;")
    assert got == [f"while away {i}" for i in range(5)]
    assert feed.gaps == []


async def test_a_page_too_slow_for_the_queue_bound_is_closed_and_the_helper_resumes_it(
    start_server: Any, driver: Any
) -> None:
    """The page stops reading for half a second (its script is busy) while
    2,000 messages of 2 KiB are published: past the queue bound the server
    closes the socket (overflow 'close': 1008), and the helper reconnects and
    reads on from history, exactly."""
    feed = Feed()
    busy = "if (got.length === 500) { var t = Date.now(); while (Date.now() - t < 500) {} }\n"
    page = WS_PAGE.replace("    got.push(", "    " + busy + "    got.push(")
    assert page != WS_PAGE
    server = await start_server(
        router(feed, page=page), history=20000, max_queue_messages=50, max_queue_bytes=65536
    )
    messages: list[str | bytes] = [f"t{i} " + "y" * 2048 for i in range(2000)]
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/page.html")
        await in_thread(wait_for_js, driver, "return window.sock.positions.feed;")
        for i, message in enumerate(messages):
            last = trio_push.publish(CHANNEL, message)
            if i % 100 == 99:
                await trio.sleep(0)
        assert isinstance(last, trio_push.Position)
        got = await collected(driver, server, feed, [last])
        codes = await in_thread(driver.execute_script, "return window.codes;")
    check_sequence(got, as_page_sees(messages))
    assert codes and set(codes) == {1008}
    assert len(feed.clients) == len(codes) + 1
    assert feed.gaps == []


# -- the helper's file and its route ----------------------------------------------


def test_the_helper_is_small_plain_javascript_shipped_with_the_package() -> None:
    text = trio_push.JS_HELPER.read_text("utf-8")
    assert len(text.splitlines()) <= 80
    assert "import " not in text and "require(" not in text
    # Package data, so that a wheel has it (an editable install reads the source).
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = re.search(
        r"^\[tool\.setuptools\.package-data\]\n(.*?)(?=^\[|\Z)", pyproject, re.M | re.S
    )
    assert section is not None and re.search(r'^trio_push = \[.*"push\.js"', section[1], re.M)


async def test_the_helper_route_answers_with_the_file_and_revalidates(start_server: Any) -> None:
    server = await start_server(router(Feed()))
    url = f"http://127.0.0.1:{server.port}/push.js"
    response = await get(url)
    assert response.status_code == 200
    assert response.content == trio_push.JS_HELPER.read_bytes()
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    head = await get(url, "HEAD")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
    async with http_client() as http:
        again = await http.get(url, headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        other = await http.get(url, headers={"if-none-match": '"other"'})
        assert other.status_code == 200 and other.content == response.content
    # Mounted for every method, it answers only GET and HEAD.
    r = trio_push.Router()
    r.handle("*", "/push.js", trio_push.js_helper_app)
    server = await start_server(r)
    post = await get(f"http://127.0.0.1:{server.port}/push.js", "POST")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_the_helper_backs_off_with_jitter_and_starts_again_once_open(
    start_server: Any, driver: Any
) -> None:
    """The delays the helper asks setTimeout for (recorded, then run at once,
    so no time passes): 250 ms doubling to 10 s while the server refuses,
    each with jitter (between half and all of it); 250 again after each
    open; none once the page closes it."""
    flaky = Flaky()
    server = await start_server(router(flaky, backoff=BACKOFF_PAGE))
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"http://127.0.0.1:{server.port}/backoff.html")
        refused = await in_thread(
            wait_for_js, driver, "return window.delays.length >= 9 && window.delays;"
        )
        flaky.refuse = False  # from now on it opens (and closes at once)
        await in_thread(driver.execute_script, "window.delays = [];")
        reopened = await in_thread(
            wait_for_js, driver, "return window.delays.length >= 8 && window.delays;"
        )
        await in_thread(driver.execute_script, "window.sock.close();")
        await trio.sleep(0.1)
        await in_thread(driver.execute_script, "window.delays = [];")
        await trio.sleep(0.2)
        after_close = await in_thread(driver.execute_script, "return window.delays;")
    full = [250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]
    for delay, bound in zip(refused, full, strict=False):
        assert bound / 2 <= delay <= bound, (refused, full)
    assert len(set(refused)) == len(refused)  # jitter: no two alike
    assert flaky.opened >= 6
    # The first two may be of attempts refused before the switch.
    assert all(125 <= d <= 250 for d in reopened[2:]), reopened
    assert after_close == []


class Flaky:
    """An app for /feed: refuses the upgrade while ``refuse``; then accepts,
    and closes each connection as soon as it opens."""

    def __init__(self) -> None:
        self.refuse = True
        self.opened = 0

    def __call__(self, env: dict[str, Any]) -> Any:
        if self.refuse or env["rack.upgrade?"] is None:
            return 403, {"content-type": "text/plain"}, b"not now"
        env["rack.upgrade"] = self
        return 200, {}, b""

    def on_open(self, client: Any) -> None:
        self.opened += 1
        client.close()


# The page records the delays the helper asks setTimeout for, and runs them at once.
BACKOFF_PAGE = """<script>
window.delays = [];
var realTimeout = window.setTimeout;
window.setTimeout = function (f, ms) { delays.push(ms); return realTimeout(f, 0); };
</script><script src="/push.js"></script><script>
window.sock = pushSocket("/feed", {});
</script>"""
