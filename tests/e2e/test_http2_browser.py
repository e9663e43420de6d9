"""HTTP/2 in a real browser: headless Chromium against trio-push over TLS.

The server runs in the test's Trio run (``start_server``) with a trustme
certificate (Chromium is told to ignore that it does not know the CA) and
the seed's clock (``tests/apps/h2_pages.py``).

- Twelve EventSources on one page all open over HTTP/2, as streams of one
  connection; the same page from the same server with ``http2=False`` (TLS,
  ALPN ``http/1.1`` only) gets six open, Chromium's limit of connections
  per origin, and the other six wait.
- The seed's websocket.html ticks over ``wss://`` on the HTTP/2 listener;
  the test says whether Chromium sent it as an extended CONNECT (RFC 8441)
  on the page's connection or on an HTTP/1.1 connection of its own.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trustme

from tests.apps.h2_pages import SOURCES, Clock
from tests.helpers.browser import browser, wait_for_js, wait_for_text
from tests.helpers.server import TIMEOUT, in_thread

TIME = re.compile(r"^\d\d:\d\d:\d\d$")
#: Chromium's connections per origin over HTTP/1.1.
HTTP1_LIMIT = 6
#: Every test here ends within this many seconds.
BOUND = 20.0


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    # The trustme certificate's CA is not one Chromium knows.
    with browser("--ignore-certificate-errors") as d:
        yield d


def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context of its own (the server sets its ALPN protocols)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def serve_clock(start_server: Any, ca: trustme.CA, **kwargs: Any) -> tuple[Any, Clock]:
    clock = Clock()
    server = await start_server(
        clock.app, ssl_context=tls_context(ca), background=clock.run, **kwargs
    )
    return server, clock


def ticking(times: list[str]) -> bool:
    """At least two ticks of the clock, each a time of day."""
    return len(times) >= 2 and all(TIME.match(t) for t in times)


PAGE_STATE = (
    "return [window.states, window.ticks,"
    " window.sources.map(function (s) { return s.readyState; })];"
)


async def twelve_eventsources(driver: Any, port: int, opened: int) -> tuple[Any, Any, Any]:
    """Load the twelve-EventSource page; once ``opened`` of them are
    connected with two ticks each (or after TIMEOUT: fewer shows in the
    test's assertions), what the page has: each source's state, ticks and
    readyState."""
    await in_thread(driver.get, f"https://127.0.0.1:{port}/twelve.html")
    with contextlib.suppress(AssertionError):
        await in_thread(
            wait_for_js,
            driver,
            "return window.states.filter(function (s, i) {"
            " return s === 'connected' && window.ticks[i].length >= 2; }).length"
            f" >= {opened};",
            TIMEOUT,
        )
    return tuple(await in_thread(driver.execute_script, PAGE_STATE))


async def test_twelve_eventsources_open_over_http2_and_six_over_http1(
    start_server: Any, ca: trustme.CA, driver: Any
) -> None:
    with trio.fail_after(BOUND):
        # HTTP/2 (on by default): all twelve open and tick, as streams of
        # the page's one connection.
        server, clock = await serve_clock(start_server, ca)
        states, ticks, ready = await twelve_eventsources(driver, server.port, SOURCES)
        await in_thread(driver.get, "about:blank")
    assert states == ["connected"] * SOURCES, states
    assert all(ticking(t) for t in ticks), ticks
    assert ready == [1] * SOURCES  # OPEN
    assert len(clock.clients) == SOURCES
    assert [c.protocol for c in clock.clients] == ["sse"] * SOURCES
    assert {c.env["SERVER_PROTOCOL"] for c in clock.clients} == {"HTTP/2"}
    page = clock.page("/twelve.html")
    assert page["SERVER_PROTOCOL"] == "HTTP/2"
    # Every request (page, streams, favicon) came on the page's connection.
    # (Counting server.connections would also count a spare connection
    # that Chromium's predictor may open to the origin and leave unused.)
    assert clock.ports() == {page["REMOTE_PORT"]}

    with trio.fail_after(BOUND):
        # The same server with HTTP/2 off: six open, each on a connection
        # of its own; the other six wait for a connection.
        server1, clock1 = await serve_clock(start_server, ca, http2=False)
        states, ticks, ready = await twelve_eventsources(driver, server1.port, HTTP1_LIMIT)
        connections = len(server1.connections)
        await in_thread(driver.get, "about:blank")
    connected = [i for i, s in enumerate(states) if s == "connected"]
    assert len(connected) == HTTP1_LIMIT, states
    assert all(ticking(ticks[i]) for i in connected), ticks
    waiting = [i for i in range(SOURCES) if i not in connected]
    assert [states[i] for i in waiting] == ["..."] * (SOURCES - HTTP1_LIMIT)
    assert [ready[i] for i in waiting] == [0] * (SOURCES - HTTP1_LIMIT)  # CONNECTING
    assert [ticks[i] for i in waiting] == [[]] * (SOURCES - HTTP1_LIMIT)
    assert len(clock1.clients) == HTTP1_LIMIT
    assert {c.env["SERVER_PROTOCOL"] for c in clock1.clients} == {"HTTP/1.1"}
    assert len({c.env["REMOTE_PORT"] for c in clock1.clients}) == HTTP1_LIMIT
    assert connections == HTTP1_LIMIT  # all Chromium opens to one origin


async def test_seed_websocket_page_ticks_over_wss_on_the_http2_listener(
    start_server: Any, ca: trustme.CA, driver: Any, record_property: Any
) -> None:
    server, clock = await serve_clock(start_server, ca)
    with trio.fail_after(BOUND):
        await in_thread(driver.get, f"https://127.0.0.1:{server.port}/websocket.html")
        await in_thread(wait_for_text, driver, "status", lambda t: t == "connected")
        first = await in_thread(wait_for_text, driver, "message", lambda t: bool(TIME.match(t)))
        await in_thread(
            wait_for_text, driver, "message", lambda t: bool(TIME.match(t)) and t != first
        )
        # What the page sends reaches the server (masked frames), and the
        # echo comes back.
        await in_thread(
            driver.execute_script,
            "window.seen = [];"
            " sock.addEventListener('message', function (e) { seen.push(e.data); });"
            " sock.send('hello over wss');",
        )
        await in_thread(
            wait_for_js, driver, "return window.seen.indexOf('echo: hello over wss') >= 0;"
        )
        await in_thread(driver.get, "about:blank")
    assert clock.received == ["hello over wss"]
    [client] = clock.clients
    assert client.protocol == "websocket"
    page = clock.page("/websocket.html")
    assert page["SERVER_PROTOCOL"] == "HTTP/2"
    protocol = client.env["SERVER_PROTOCOL"]
    how = "RFC 8441 (extended CONNECT)" if protocol == "HTTP/2" else "an HTTP/1.1 Upgrade"
    print(f"Chromium opened the seed's WebSocket over {protocol}: {how}")
    record_property("websocket_protocol", protocol)
    assert protocol in ("HTTP/2", "HTTP/1.1")
    if protocol == "HTTP/2":
        # A stream of the page's connection, as every other request.
        assert clock.ports() == {page["REMOTE_PORT"]}
    else:
        assert client.env["REMOTE_PORT"] != page["REMOTE_PORT"]
