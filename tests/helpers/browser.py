"""Headless Chromium for the browser-level tests."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
def browser() -> Iterator[webdriver.Chrome]:
    """Yield a headless Chromium WebDriver; always quit it and drop its profile."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager go online
    profile = tempfile.mkdtemp(prefix="trio-push-chromium-")
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in _FLAGS:
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
