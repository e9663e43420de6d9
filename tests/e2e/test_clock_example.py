"""The seed's acceptance test: its two pages tick in a real browser.

Both clock programs are started as a user starts them (the CLI in
examples/clock, and ``python push.py``), and Debian's headless Chromium
loads the pages unchanged.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator

import pytest

from tests.helpers.browser import browser, send_ws_from_page, wait_for_text
from tests.helpers.procs import ROOT, VENV_BIN, free_port, running

CLOCK = ROOT / "examples" / "clock"
TIME = re.compile(r"^\d\d:\d\d:\d\d$")


@pytest.fixture(scope="module", params=["cli", "push.py"])
def clock_url(request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    if request.param == "cli":
        args = [str(VENV_BIN / "trio-push"), "app:Listen", "--port", str(port)]
        env = None
    else:
        args = [sys.executable, "push.py"]
        env = {"PORT": str(port)}
    with running(args, cwd=CLOCK, port=port, env=env):
        yield f"http://127.0.0.1:{port}"


def _seconds_apart(shown: str, local: str) -> int:
    """How far apart two ``HH:MM:SS`` times of day are, across midnight too."""

    def seconds(hms: str) -> int:
        h, m, s = (int(part) for part in hms.split(":"))
        return h * 3600 + m * 60 + s

    diff = abs(seconds(shown) - seconds(local))
    return min(diff, 86400 - diff)


def _sees_ticking_clock(driver: object) -> None:
    wait_for_text(driver, "status", lambda t: t == "connected")  # type: ignore[arg-type]
    first = wait_for_text(driver, "message", lambda t: bool(TIME.match(t)))  # type: ignore[arg-type]
    second = wait_for_text(  # type: ignore[arg-type]
        driver, "message", lambda t: bool(TIME.match(t)) and t != first, timeout=5
    )
    local = time.strftime("%H:%M:%S")
    assert second > first or first.startswith("23:59")
    # The time shown is the current time (the server runs on this machine,
    # in this time zone), not a stale or made-up one: it ticks once a second,
    # so it may lag the local clock by a second or two.
    assert _seconds_apart(second, local) <= 3, f"page shows {second}, local clock {local}"


def test_websocket_page_shows_the_time_ticking(clock_url: str) -> None:
    with browser() as driver:
        driver.get(clock_url + "/websocket.html")
        _sees_ticking_clock(driver)


def test_websocket_page_echoes_what_it_sends(clock_url: str) -> None:
    with browser() as driver:
        driver.get(clock_url + "/websocket.html")
        wait_for_text(driver, "status", lambda t: t == "connected")
        # Record every text the page shows, so a clock tick that replaces
        # the echo within a poll interval cannot hide it.
        driver.execute_script(
            "window.shown = [];"
            "var m = document.getElementById('message');"
            "new MutationObserver(function() { window.shown.push(m.textContent); })"
            ".observe(m, {childList: true, characterData: true, subtree: true});"
        )
        send_ws_from_page(driver, "hello from chromium")
        deadline = time.monotonic() + 5
        while "echo: hello from chromium" not in driver.execute_script("return window.shown"):
            assert time.monotonic() < deadline, driver.execute_script("return window.shown")
            time.sleep(0.05)


def test_sse_page_shows_the_time_ticking(clock_url: str) -> None:
    with browser() as driver:
        driver.get(clock_url + "/sse.html")
        _sees_ticking_clock(driver)
