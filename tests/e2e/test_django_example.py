"""examples/django_push: a Django project served as WSGI, with SSE and WebSocket
updates published by a view and by a management command (through Redis)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect

from tests.helpers.browser import browser, wait_for_text
from tests.helpers.procs import ROOT, VENV_BIN, free_port, running
from tests.helpers.pubsub import RedisServer
from tests.helpers.server import TIMEOUT

DJANGO = ROOT / "examples" / "django_push"
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Site:
    url: str
    redis: str


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with RedisServer() as redis:
        port = free_port()
        command = [str(VENV_BIN / "trio-push"), "pushsite.wsgi:application", "--port", str(port)]
        with running([*command, "--redis", redis.url], cwd=DJANGO, port=port):
            yield Site(f"http://127.0.0.1:{port}", redis.url)


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


def csrf(client: httpx.Client, base: str) -> str:
    """GET the page (which sets the CSRF cookie); the form's token."""
    page = client.get(base + "/")
    assert page.status_code == 200
    assert "csrftoken" in client.cookies
    match = TOKEN.search(page.text)
    assert match is not None
    return match.group(1)


def test_plain_django_pages_are_served(site: Site) -> None:
    page = httpx.get(site.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Notes</h1>" in page.text
    assert page.headers["set-cookie"].startswith("csrftoken=")
    missing = httpx.get(site.url + "/no/such/page")
    assert missing.status_code == 404
    assert "Not Found" in missing.text
    listed = httpx.get(site.url + "/notes.json")  # an async view, run by Django under WSGI
    assert listed.status_code == 200
    assert isinstance(listed.json()["notes"], list)
    assert httpx.get(site.url + "/notes").status_code == 405  # POST only
    assert httpx.get(site.url + "/live").status_code == 400  # push only


def test_a_form_post_without_its_csrf_token_is_refused(site: Site) -> None:
    with httpx.Client() as client:
        csrf(client, site.url)
        refused = client.post(site.url + "/notes", data={"text": "forged"})
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    assert "forged" not in httpx.get(site.url + "/").text


def test_a_form_post_reaches_websocket_and_sse_and_the_page(site: Site) -> None:
    with httpx.Client() as client:
        token = csrf(client, site.url)
        with listening(site.url) as heard:
            posted = client.post(
                site.url + "/notes", data={"text": "from a form", "csrfmiddlewaretoken": token}
            )
            assert posted.status_code == 302
            assert posted.headers["location"] == "/"
        page = client.get(site.url + "/")
    assert heard.websocket.endswith(" from a form")
    assert heard.sse == f"msg {heard.websocket}"
    assert f"<li>{heard.websocket}</li>" in page.text
    at = heard.websocket.split()[0]
    assert {"text": "from a form", "at": at} in httpx.get(site.url + "/notes.json").json()["notes"]


def test_the_management_command_publishes_through_redis(site: Site) -> None:
    message = "from manage.py " + "x" * 65536  # 64 KiB in one argument
    with listening(site.url) as heard:
        done = manage("publish", "notes", message, "--redis", site.redis)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "published to 1 server process(es)"
    assert heard.websocket == message
    assert heard.sse == f"msg {message}"


def test_the_management_command_says_when_it_cannot_publish(site: Site) -> None:
    nowhere = manage("publish", "notes", "lost", "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert nowhere.returncode == 1
    assert "CommandError: not published: not connected to redis" in nowhere.stderr
    unheard = manage("publish", "nobody.listens", "hello", "--redis", site.redis)
    assert unheard.returncode == 0
    assert "no server listens to 'nobody.listens'" in unheard.stderr


def test_the_page_hears_a_view_and_the_command_in_chromium(site: Site) -> None:
    with browser() as driver:
        driver.get(site.url + "/")
        wait_for_text(driver, "sse-status", lambda t: t == "connected")
        wait_for_text(driver, "ws-status", lambda t: t == "connected")
        driver.find_element("id", "text").send_keys("typed in chromium")
        driver.find_element("id", "post").click()  # a fetch with the X-CSRFToken header
        wait_for_text(driver, "sse-last", lambda t: t.endswith(" typed in chromium"))
        wait_for_text(driver, "ws-last", lambda t: t.endswith(" typed in chromium"))
        done = manage("publish", "notes", "from the command line", "--redis", site.redis)
        assert done.returncode == 0, done.stderr
        wait_for_text(driver, "sse-last", lambda t: t == "from the command line")
        wait_for_text(driver, "ws-last", lambda t: t == "from the command line")
        items = driver.execute_script(
            "return Array.from(document.querySelectorAll('#notes li'), li => li.textContent)"
        )
    assert items[-2].endswith(" typed in chromium")
    assert items[-1] == "from the command line"
