"""examples/django_push as its tests drive it: under WSGI
(tests/e2e/test_django_example.py) and under ASGI (tests/e2e/test_asgi_django.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from httpx_sse import connect_sse
from selenium import webdriver
from websockets.sync.client import connect

from tests.helpers.browser import wait_for_text
from tests.helpers.procs import ROOT
from tests.helpers.server import TIMEOUT

DJANGO = ROOT / "examples" / "django_push"
_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS`` in the example's folder, as its README says."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=DJANGO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def csrf(client: httpx.Client, base: str) -> str:
    """GET the page (which sets the CSRF cookie); the form's token."""
    page = client.get(base + "/")
    assert page.status_code == 200
    assert "csrftoken" in client.cookies
    match = _TOKEN.search(page.text)
    assert match is not None
    return match.group(1)


def post_note(client: httpx.Client, base: str, text: str) -> httpx.Response:
    """The form's POST, with the CSRF cookie and token."""
    token = csrf(client, base)
    return client.post(base + "/notes", data={"text": text, "csrfmiddlewaretoken": token})


@dataclass
class Heard:
    websocket: str
    sse: str


@contextmanager
def listening(base: str) -> Iterator[Heard]:
    """A WebSocket and an event stream on /live, both subscribed before the
    body runs; after it, what each received first (the body publishes once)."""
    heard = Heard("", "")
    sse_subscribed = threading.Event()

    def listen_sse() -> None:
        with (
            httpx.Client(timeout=TIMEOUT) as client,
            connect_sse(client, "GET", base + "/live") as src,
        ):
            for event in src.iter_sse():
                if event.event == "ready":
                    sse_subscribed.set()
                else:
                    heard.sse = f"{event.event} {event.data}"
                    return

    thread = threading.Thread(target=listen_sse, daemon=True)
    thread.start()
    with connect(base.replace("http", "ws") + "/live", max_size=2**20) as ws:
        assert ws.recv(timeout=TIMEOUT) == "subscribed"
        assert sse_subscribed.wait(TIMEOUT)
        yield heard
        heard.websocket = str(ws.recv(timeout=TIMEOUT))
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def post_in_browser(driver: webdriver.Chrome, base: str, text: str) -> None:
    """Open the page, wait until both push connections are subscribed, post
    ``text`` with the form (a fetch with the X-CSRFToken header) and wait
    until both have shown it."""
    driver.get(base + "/")
    wait_for_text(driver, "sse-status", lambda t: t == "connected")
    wait_for_text(driver, "ws-status", lambda t: t == "connected")
    driver.find_element("id", "text").send_keys(text)
    driver.find_element("id", "post").click()
    wait_for_text(driver, "sse-last", lambda t: t.endswith(" " + text))
    wait_for_text(driver, "ws-last", lambda t: t.endswith(" " + text))


def page_notes(driver: webdriver.Chrome) -> list[str]:
    """The notes the page lists."""
    items: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#notes li'), li => li.textContent)"
    )
    return items
