"""Building the PEP 3333 environ, and telling push requests apart."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_to_bytes

import h11

WEBSOCKET = "websocket"
SSE = "sse"


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


class UpgradeRefused(Exception):
    """An upgrade request that cannot be honoured; answered with ``status``."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def upgrade_kind(request: h11.Request) -> str | None:
    """``'websocket'``, ``'sse'`` or ``None`` for a request.

    A request asking for a WebSocket upgrade that RFC 6455 section 4.2.1 does
    not allow raises :class:`UpgradeRefused` (400, or 426 with
    ``Sec-WebSocket-Version: 13`` for another version).
    """
    upgrade = b""
    connection = b""
    accept = b""
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = value
        elif name == b"connection":
            connection += b"," + value
        elif name == b"accept":
            accept += b"," + value
    if upgrade and WEBSOCKET.encode() in _tokens(upgrade):
        validate_websocket(request, connection)
        return WEBSOCKET
    if request.method == b"GET" and b"text/event-stream" in accept.lower():
        return SSE
    return None


def validate_websocket(request: h11.Request, connection: bytes) -> None:
    """Raise :class:`UpgradeRefused` unless this is a valid RFC 6455 handshake."""
    if request.method != b"GET":
        raise UpgradeRefused(400, "WebSocket upgrade needs GET", [])
    if request.http_version != b"1.1":
        raise UpgradeRefused(400, "WebSocket upgrade needs HTTP/1.1", [])
    if b"upgrade" not in _tokens(connection):
        raise UpgradeRefused(400, "WebSocket upgrade needs 'Connection: upgrade'", [])
    headers = dict(request.headers)
    version = headers.get(b"sec-websocket-version", b"")
    if version.strip() != b"13":
        raise UpgradeRefused(
            426,
            "unsupported Sec-WebSocket-Version (only 13)",
            [(b"sec-websocket-version", b"13")],
        )
    # RFC 6455 11.3.1: one key, never two (a dict would keep the last).
    keys = [v for n, v in request.headers if n == b"sec-websocket-key"]
    key = keys[0].strip() if len(keys) == 1 else b""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (binascii.Error, ValueError):
        raise UpgradeRefused(400, "invalid Sec-WebSocket-Key", []) from None


def build_env(
    request: h11.Request,
    *,
    kind: str | None,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    scheme: str,
) -> dict[str, Any]:
    """The PEP 3333 environ for ``request`` plus ``rack.upgrade?``.

    ``wsgi.input`` and ``wsgi.errors`` are I/O objects, so the driver adds
    them. ``PATH_INFO`` is percent-decoded and carried as latin-1, as PEP 3333
    asks.
    """
    target = request.target
    # A fragment is the client's own (RFC 9110 4.2.5), not part of the path
    # or query; a client should not send one, a raw one may.
    path, _, query = target.partition(b"#")[0].partition(b"?")
    authority = None
    if path.startswith(b"http://") or path.startswith(b"https://"):
        # Absolute form (RFC 9112 3.2.2): keep only the path; the host is the
        # target's, whatever the Host header says (set after the headers).
        authority, _, path = path.partition(b"//")[2].partition(b"/")
        path = b"/" + path
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": target.decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "rack.upgrade?": kind,
    }
    for name, value in request.headers:
        if name == b"content-type":
            env["CONTENT_TYPE"] = value.decode("latin-1")
            continue
        if name == b"content-length":
            env["CONTENT_LENGTH"] = value.decode("latin-1")
            continue
        if b"_" in name:
            # X_Foo would become HTTP_X_FOO like X-Foo: drop it, so a client
            # cannot pass off a header a proxy in front of us has set.
            continue
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        old = env.get(key)
        if old is None:
            env[key] = text
        else:
            env[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + text
    if authority is not None:
        env["HTTP_HOST"] = authority.decode("latin-1")
    if server is not None:
        env["SERVER_NAME"], env["SERVER_PORT"] = server[0], str(server[1])
    else:
        env["SERVER_NAME"], env["SERVER_PORT"] = "", ""
    if client is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = client[0], str(client[1])
    return env
