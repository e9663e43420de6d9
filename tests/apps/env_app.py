"""The app the deployment tests serve (``tests/trio_push/test_proxy_headers.py``,
``test_listen_uds_fd.py``), in the test's run or under the CLI
(``trio-push env_app:app``): it answers what the server put in the environ
about where the request came from.

- any plain request: a JSON object of :data:`KEYS` (absent ones: null).
- a push request (WebSocket or SSE): a client whose first message is that
  object, from ``client.env``; a WebSocket echoes what it is sent. With
  ``?once`` the server closes it after that first message (so that a
  client which reads to the end, as curl, can read an event stream).
"""

from __future__ import annotations

import json
from typing import Any

KEYS = (
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "wsgi.url_scheme",
    "HTTP_X_FORWARDED_FOR",
)


def describe(env: dict[str, Any]) -> str:
    return json.dumps({key: env.get(key) for key in KEYS})


class Client:
    def on_open(self, client: Any) -> None:
        client.write(describe(client.env))
        if client.env["QUERY_STRING"] == "once":
            client.close()

    def on_message(self, client: Any, data: Any) -> None:
        client.write(data)


def app(env: dict[str, Any]) -> Any:
    if env["rack.upgrade?"] is not None:
        env["rack.upgrade"] = Client()
        return 200, {}, b""
    return 200, {"content-type": "application/json"}, describe(env)
