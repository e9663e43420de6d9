"""The app of the rolling-restart and paced-drain tests (``drain_app:app``).

- ``/sub`` (WebSocket or SSE): says ``hello <pid>`` on open and
  ``bye <pid>`` in ``on_shutdown``.
- ``/pid``: this process's id.
"""

from __future__ import annotations

import os
from typing import Any

import trio_push


class Greeter:
    def on_open(self, client: trio_push.Client) -> None:
        client.write(f"hello {os.getpid()}")

    def on_shutdown(self, client: trio_push.Client) -> None:
        client.write(f"bye {os.getpid()}")


def app(env: dict[str, Any]) -> Any:
    if env["PATH_INFO"] == "/sub" and env["rack.upgrade?"] is not None:
        env["rack.upgrade"] = Greeter()
        return 200, {}, b""
    if env["PATH_INFO"] == "/pid":
        return 200, {"content-type": "text/plain"}, str(os.getpid())
    return 404, {}, b"not found"
