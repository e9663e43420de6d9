"""Agoo-style demultiplexing: a handler per method and path pattern."""

from __future__ import annotations

import re
from typing import Any


def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    for i, segment in enumerate(pattern.strip("/").split("/")):
        if segment == "**":
            out.append("(?:/.*)?" if i else "/.*")
            break
        out.append("/" + ("[^/]+" if segment == "*" else re.escape(segment)))
    return re.compile("".join(out) or "/")


class Router:
    """Routes requests to handlers, as ``Agoo::Server.handle`` does.

    ``handle('GET', '/hello', app)`` registers an app (an object with
    ``call(env)`` or a callable) for a method and a path. In a pattern ``*``
    matches one path segment and ``**`` the rest of the path. Routes are
    tried in the order they were added. Give the Router to the server as the
    app; what no route matches goes to the static root, then gets 404.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Any]] = []

    def handle(self, method: str, pattern: str, app: Any) -> None:
        """Send ``method`` requests (``'*'`` for any) matching ``pattern`` to ``app``."""
        self._routes.append((method.upper(), _compile(pattern), app))

    def match(self, env: dict[str, Any]) -> Any | None:
        """The app for this request, or None."""
        method = env["REQUEST_METHOD"]
        path = env["SCRIPT_NAME"] + env["PATH_INFO"]
        for route_method, regex, app in self._routes:
            method_matches = route_method in ("*", method) or (
                route_method == "GET" and method == "HEAD"
            )
            if method_matches and regex.fullmatch(path):
                return app
        return None
