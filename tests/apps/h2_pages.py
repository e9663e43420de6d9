"""The app the HTTP/2 browser tests serve (``tests/e2e/test_http2_browser.py``).

The seed's clock (``examples/clock``), with what the tests need to see on
the server side: every push client it opened (``clock.clients``, whose
``env`` says the protocol and the peer's port) and every request
(``clock.requests``, their envs: pages, push requests, the favicon).

- ``/websocket.html``: the seed's page, with one change: it connects to
  ``wss://`` when the page came over https (the seed's page says ``ws://``,
  which Chromium refuses from an https page as mixed content).
- ``/twelve.html``: twelve ``EventSource`` s to ``/sse?i=0`` ... ``/sse?i=11``;
  ``window.states[i]`` is ``connected`` once the i-th opened (``onopen``),
  ``window.ticks[i]`` the times it received.
- ``/sse`` and ``/listen``: push connections to the clock, which writes the
  time (``HH:MM:SS``) to each, every second, and echoes what it is sent
  (``echo: ...``).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from tests.helpers.procs import ROOT

#: How many EventSources the page opens: twice Chromium's six connections
#: per origin over HTTP/1.1.
SOURCES = 12

SEED_WS_URL = '"ws://"'
WS_URL = '(location.protocol === "https:" ? "wss://" : "ws://")'


def websocket_page() -> bytes:
    """The seed's websocket.html, connecting with wss:// from an https page."""
    seed = (ROOT / "examples" / "clock" / "websocket.html").read_text()
    assert seed.count(SEED_WS_URL) == 1, "the seed's websocket.html changed"
    return seed.replace(SEED_WS_URL, WS_URL).encode()


TWELVE_PAGE = f"""<!doctype html>
<html>
  <body>
    <pre id="states"></pre>
    <script>
    window.states = []; window.ticks = []; window.sources = [];
    function show() {{
      document.getElementById("states").textContent = states.join("\\n");
    }}
    for (var i = 0; i < {SOURCES}; i++) (function (i) {{
      states.push("..."); ticks.push([]);
      var src = new EventSource("sse?i=" + i);
      src.onopen = function () {{ states[i] = "connected"; show(); }};
      src.onerror = function () {{ states[i] = "not connected"; show(); }};
      src.addEventListener("msg", function (e) {{ ticks[i].push(e.data); }}, false);
      sources.push(src);
    }})(i);
    show();
    </script>
  </body>
</html>
""".encode()


def twelve_page() -> bytes:
    return TWELVE_PAGE


class Clock:
    """The seed's clock handler; keeps what the tests look at."""

    def __init__(self) -> None:
        #: Every client it opened, in order (closed ones too).
        self.clients: list[Any] = []
        #: Every message a client sent.
        self.received: list[Any] = []
        #: The env of every request, in order.
        self.requests: list[dict[str, Any]] = []
        self._open: set[Any] = set()

    def on_open(self, client: Any) -> None:
        self.clients.append(client)
        self._open.add(client)

    def on_close(self, client: Any) -> None:
        self._open.discard(client)

    def page(self, path: str) -> dict[str, Any]:
        """The env of the one request for ``path``."""
        [env] = [env for env in self.requests if env["PATH_INFO"] == path]
        return env

    def ports(self) -> set[str]:
        """The peer ports of every request: one per connection that carried any."""
        return {env["REMOTE_PORT"] for env in self.requests}

    def on_message(self, client: Any, data: Any) -> None:
        self.received.append(data)
        client.write(f"echo: {data}")

    async def run(self) -> None:
        """Every second, write the time to every open client."""
        while True:
            msg = time.strftime("%H:%M:%S")
            for client in list(self._open):
                client.write(msg)
            await trio.sleep(1)

    def app(self, env: dict[str, Any]) -> Any:
        """The pages, and the push connections to the clock."""
        self.requests.append(env)
        path = env["PATH_INFO"]
        if path in ("/sse", "/listen") and env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = self
            return 200, {}, b""
        pages = {"/websocket.html": websocket_page, "/twelve.html": twelve_page}
        if path in pages:
            return 200, {"content-type": "text/html; charset=utf-8"}, pages[path]()
        return 404, {}, b""
