"""examples/django_push under ASGI: Django's get_asgi_application() on trio-push,
serving sync views and async views, and push accepted from an async view."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers.browser import browser
from tests.helpers.django_site import (
    DJANGO,
    csrf,
    listening,
    page_notes,
    post_in_browser,
    post_note,
)
from tests.helpers.procs import VENV_BIN, free_port, running

#: The asyncio loop trio-push runs ASGI apps on by default: uvloop's if installed.
LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio.unix_events"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    port = free_port()
    # No --interface: Django's application is detected as ASGI.
    command = [str(VENV_BIN / "trio-push"), "pushsite.asgi:application", "--port", str(port)]
    with running(command, cwd=DJANGO, port=port):
        yield f"http://127.0.0.1:{port}"


def test_a_sync_view_and_an_async_view_are_served(base: str) -> None:
    page = httpx.get(base + "/")  # a sync view: Django runs it in a thread
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Notes</h1>" in page.text
    assert page.headers["set-cookie"].startswith("csrftoken=")
    listed = httpx.get(base + "/notes.json")  # an async view: on the server's asyncio loop
    assert listed.status_code == 200
    assert listed.json()["loop"] == LOOP
    missing = httpx.get(base + "/no/such/page")
    assert missing.status_code == 404
    assert "Not Found" in missing.text
    assert httpx.get(base + "/notes").status_code == 405


def test_csrf_is_checked_on_a_streamed_request_body(base: str) -> None:
    with httpx.Client() as client:
        csrf(client, base)
        refused = client.post(base + "/notes", data={"text": "forged " + "y" * 65536})
    assert refused.status_code == 403
    assert "CSRF" in refused.text


def test_a_post_reaches_the_event_stream_an_async_view_accepted(base: str) -> None:
    text = "over ASGI " + "x" * 65536  # 64 KiB, read by Django through receive()
    with httpx.Client() as client:
        with listening(base) as heard:  # SSE through the async view, WebSocket through ASGIPush
            posted = post_note(client, base, text)
            assert posted.status_code == 302
        page = client.get(base + "/")
    assert heard.websocket.endswith(" " + text)
    assert heard.sse == f"msg {heard.websocket}"
    assert f"<li>{heard.websocket}</li>" in page.text
    at = heard.websocket.split()[0]
    assert {"text": text, "at": at} in httpx.get(base + "/notes.json").json()["notes"]


def test_requests_push_does_not_take_are_refused(base: str) -> None:
    assert httpx.get(base + "/live").status_code == 400  # not a push request
    with pytest.raises(InvalidStatus) as refused:  # a WebSocket where no handler is
        connect(base.replace("http", "ws") + "/elsewhere").close()
    assert refused.value.response.status_code == 403


def test_the_page_updates_live_in_chromium(base: str) -> None:
    with browser() as driver:
        post_in_browser(driver, base, "typed over ASGI")
        items = page_notes(driver)
    assert items[-1].endswith(" typed over ASGI")
