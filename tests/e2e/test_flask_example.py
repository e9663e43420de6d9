"""examples/flask_push: a Flask app served as WSGI, with SSE and WebSocket updates."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect

from tests.helpers.browser import browser, wait_for_text
from tests.helpers.procs import ROOT, VENV_BIN, free_port, running

FLASK = ROOT / "examples" / "flask_push"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    port = free_port()
    with running(
        [str(VENV_BIN / "trio-push"), "app:app", "--port", str(port)], cwd=FLASK, port=port
    ):
        yield f"http://127.0.0.1:{port}"


def test_ordinary_page_and_json_are_served(base: str) -> None:
    page = httpx.get(base + "/")
    assert page.status_code == 200
    assert "<h1>Notes</h1>" in page.text
    assert page.headers["content-type"].startswith("text/html")
    notes = httpx.get(base + "/notes.json")
    assert notes.status_code == 200
    assert isinstance(notes.json(), list)


def test_push_urls_refuse_plain_requests(base: str) -> None:
    assert httpx.get(base + "/events").status_code == 400
    assert httpx.get(base + "/ws").status_code == 400


def test_a_post_reaches_sse_and_websocket_clients(base: str) -> None:
    got: dict[str, str] = {}
    sse_subscribed = threading.Event()

    def listen_sse() -> None:
        with (
            httpx.Client(timeout=10) as client,
            connect_sse(client, "GET", base + "/events") as src,
        ):
            for event in src.iter_sse():
                if event.event == "ready":
                    sse_subscribed.set()
                else:
                    got["sse"] = f"{event.event} {event.data}"
                    return

    thread = threading.Thread(target=listen_sse)
    thread.start()
    with connect(base.replace("http", "ws") + "/ws") as ws:
        assert ws.recv(timeout=10) == "subscribed"
        assert sse_subscribed.wait(10)
        posted = httpx.post(
            base + "/notes", data={"text": "from a test"}, headers={"accept": "application/json"}
        )
        assert posted.status_code == 201
        note = posted.json()
        assert ws.recv(timeout=10) == f"{note['at']} from a test"
    thread.join(10)
    assert got["sse"] == f"msg {note['at']} from a test"
    assert {"text": "from a test", "at": note["at"]} in httpx.get(base + "/notes.json").json()


def test_the_page_updates_live_in_chromium(base: str) -> None:
    with browser() as driver:
        driver.get(base + "/")
        wait_for_text(driver, "sse-status", lambda t: t == "connected")
        wait_for_text(driver, "ws-status", lambda t: t == "connected")
        driver.find_element("id", "text").send_keys("typed in chromium")
        driver.find_element("id", "post").click()
        wait_for_text(driver, "sse-last", lambda t: t.endswith(" typed in chromium"))
        wait_for_text(driver, "ws-last", lambda t: t.endswith(" typed in chromium"))
    assert any(
        n["text"] == "typed in chromium" for n in json.loads(httpx.get(base + "/notes.json").text)
    )
