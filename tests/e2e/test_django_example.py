"""examples/django_push: a Django project served as WSGI, with SSE and WebSocket
updates published by a view and by a management command (through Redis)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers.browser import browser, wait_for_text
from tests.helpers.django_site import (
    DJANGO,
    csrf,
    listening,
    manage,
    page_notes,
    post_in_browser,
    post_note,
)
from tests.helpers.procs import VENV_BIN, free_port, running
from tests.helpers.pubsub import RedisServer
from tests.helpers.server import TIMEOUT


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
        with listening(site.url) as heard:
            posted = post_note(client, site.url, "from a form")
            assert posted.status_code == 302
            assert posted.headers["location"] == "/"
        page = client.get(site.url + "/")
    assert heard.websocket.endswith(" from a form")
    assert heard.sse == f"msg {heard.websocket}"
    assert f"<li>{heard.websocket}</li>" in page.text
    at = heard.websocket.split()[0]
    assert {"text": "from a form", "at": at} in httpx.get(site.url + "/notes.json").json()["notes"]


def test_an_empty_note_is_refused(site: Site) -> None:
    with httpx.Client() as client:
        assert post_note(client, site.url, "   ").status_code == 400


def test_a_post_while_redis_is_down_is_refused_not_lost() -> None:
    with RedisServer() as redis:
        port = free_port()
        command = [str(VENV_BIN / "trio-push"), "pushsite.wsgi:application", "--port", str(port)]
        with running([*command, "--redis", redis.url], cwd=DJANGO, port=port), httpx.Client() as c:
            base = f"http://127.0.0.1:{port}"
            assert post_note(c, base, "while up").status_code == 302
            redis.kill()
            deadline = time.monotonic() + TIMEOUT
            for i in itertools.count():  # until the server has seen Redis go
                posted = post_note(c, base, f"while down {i}")
                if posted.status_code != 302 or time.monotonic() > deadline:
                    break
            assert posted.status_code == 503
            assert "not published" in posted.text
            texts = [n["text"] for n in c.get(base + "/notes.json").json()["notes"]]
    assert texts[0] == "while up"
    assert f"while down {i}" not in texts


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
        post_in_browser(driver, site.url, "typed in chromium")
        done = manage("publish", "notes", "from the command line", "--redis", site.redis)
        assert done.returncode == 0, done.stderr
        wait_for_text(driver, "sse-last", lambda t: t == "from the command line")
        wait_for_text(driver, "ws-last", lambda t: t == "from the command line")
        items = page_notes(driver)
    assert items[-2].endswith(" typed in chromium")
    assert items[-1] == "from the command line"
