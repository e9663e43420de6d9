"""Headless Chromium for the browser-level tests."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_available() -> bool:
    """Return True if Debian's chromium and chromedriver are installed."""
    return all(os.path.isfile(p) and os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


@contextmanager
def browser(*flags: str) -> Iterator[webdriver.Chrome]:
    """Yield a headless Chromium WebDriver (with ``flags`` besides ours);
    always quit it and drop its profile."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager go online
    profile = tempfile.mkdtemp(prefix="trio-push-chromium-")
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*_FLAGS, *flags):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_text(
    driver: webdriver.Chrome,
    element_id: str,
    predicate: Callable[[str], bool],
    timeout: float = 10.0,
) -> str:
    """Poll the element's textContent until predicate(text) holds; return it."""
    deadline = time.monotonic() + timeout
    last: str | None = None
    while True:
        text = driver.execute_script(
            "var e = document.getElementById(arguments[0]);"
            " return e === null ? null : e.textContent;",
            element_id,
        )
        if text is not None:
            last = text
            if predicate(text):
                return text
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"#{element_id} text never satisfied predicate within "
                f"{timeout}s; last seen: {last!r}"
            )
        time.sleep(0.05)


def send_ws_from_page(driver: webdriver.Chrome, text: str) -> None:
    """Send text over the page's global WebSocket `sock` (websocket.html)."""
    driver.execute_script("sock.send(arguments[0]);", text)


def wait_for_js(driver: webdriver.Chrome, script: str, timeout: float = 10.0, *args: object) -> Any:
    """Run ``script`` (a function body: ``return ...``) in the page until it
    returns something truthy; return that. Fails after ``timeout`` seconds
    with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{script!r} still {value!r} after {timeout}s")
        time.sleep(0.02)


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The page's script errors so far (uncaught exceptions included), as
    the page recorded them with :data:`RECORD_ERRORS`."""
    return list(driver.execute_script("return window.__errors || [];"))


#: A script tag's body that makes the page record its uncaught errors (for
#: :func:`console_errors`): put it first in the page.
RECORD_ERRORS = (
    "window.__errors = [];"
    " window.addEventListener('error', function (e) {"
    " window.__errors.push(String(e.message || e)); });"
)
