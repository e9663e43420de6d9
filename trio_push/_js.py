"""The browser helper, ``push.js``: where it is, and an app that serves it."""

from __future__ import annotations

import os
from functools import lru_cache
from hashlib import blake2b
from pathlib import Path
from typing import Any

from ._static import _not_modified

JS_HELPER = Path(__file__).with_name("push.js")
"""The path of the shipped browser helper, ``push.js`` (installed with the
package): a WebSocket that reconnects by itself, with backoff, and resumes
each channel from where the page was (``?since=``, which the app reads with
``client.since(channel)``). Under 80 lines of plain JavaScript with no
dependency; its header comment is its manual. Copy it next to your pages,
or serve it with :func:`js_helper_app`."""

_TYPE = "text/javascript; charset=utf-8"


@lru_cache(maxsize=1)
def _read(mtime_ns: int, size: int) -> tuple[bytes, str]:
    """The helper's bytes and ETag, read again only when the file changes."""
    body = JS_HELPER.read_bytes()
    return body, f'"{blake2b(body, digest_size=8).hexdigest()}"'


def js_helper_app(env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """A push-style app that answers ``GET`` (and ``HEAD``) with the helper,
    :data:`JS_HELPER`: mount it on a route of your choosing,
    ``router.handle("GET", "/push.js", trio_push.js_helper_app)``, and load
    it with ``<script src="/push.js"></script>``. The answer is
    ``text/javascript; charset=utf-8`` with an ``ETag`` and
    ``Cache-Control: no-cache`` (browsers revalidate it, and get ``304 Not
    Modified`` while it is the same file, so a new version of trio-push
    reaches them at once). Other methods get ``405``."""
    if env["REQUEST_METHOD"] not in ("GET", "HEAD"):
        return 405, [("allow", "GET, HEAD"), ("content-type", "text/plain")], b"GET only\n"
    st = os.stat(JS_HELPER)
    body, etag = _read(st.st_mtime_ns, st.st_size)
    headers = [("etag", etag), ("cache-control", "no-cache")]
    if _not_modified(env, etag, st.st_mtime):
        return 304, headers, b""
    return 200, [*headers, ("content-type", _TYPE)], body
