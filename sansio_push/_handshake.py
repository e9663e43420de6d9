"""The upgrade: which requests ask for one, and the answers that accept them.

A request asks for a WebSocket when its ``Upgrade`` header names
``websocket``; one that does so as RFC 6455 4.2.1 does not allow is refused
with :class:`UpgradeRefused` (400, or 426 naming version 13). A ``GET``
that accepts ``text/event-stream`` asks for SSE. Neither is upgraded unless
the app accepts (``start_response(..., upgrade=True)``); then these are the
headers of the 101 or of the stream's 200, the app's own headers with ours
in place of those we must own.
"""

from __future__ import annotations

import base64
import binascii

from wsproto.utilities import generate_accept_token

from ._config import Config
from ._deflate import PerMessageDeflate, accept_offer
from ._env import RequestHead
from ._errors import LocalProtocolError, RemoteProtocolError

WEBSOCKET = "websocket"
SSE = "sse"

Pairs = list[tuple[bytes, bytes]]

# The handshake headers are ours; a 1xx has no body, so a framework's
# Content-Type / Content-Length (Flask sends both) is dropped too.
_NOT_ON_A_101 = frozenset(
    (
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"content-type",
        b"content-length",
        b"transfer-encoding",
    )
)
# The stream's framing and type are ours: a WSGI framework's default
# "text/html" or "Content-Length: 0" must not reach the browser.
_NOT_ON_A_STREAM = frozenset(
    (b"content-length", b"connection", b"content-type", b"transfer-encoding")
)


class UpgradeRefused(RemoteProtocolError):
    """A WebSocket upgrade request that cannot be honoured: answered with
    ``status`` and the ``headers`` that say why (426: the version we speak).
    Internal: the HTTP phase turns it into a :class:`~sansio_push.Rejected`."""

    def __init__(self, status: int, reason: str, headers: Pairs | None = None) -> None:
        super().__init__(reason, status=status)
        self.headers: Pairs = headers or []


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


def upgrade_kind(request: RequestHead) -> str | None:
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


def validate_websocket(request: RequestHead, connection: bytes) -> None:
    """Raise :class:`UpgradeRefused` unless this is a valid RFC 6455 handshake."""
    if request.method != b"GET":
        raise UpgradeRefused(400, "WebSocket upgrade needs GET")
    if request.http_version != b"1.1":
        raise UpgradeRefused(400, "WebSocket upgrade needs HTTP/1.1")
    if b"upgrade" not in _tokens(connection):
        raise UpgradeRefused(400, "WebSocket upgrade needs 'Connection: upgrade'")
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
        raise UpgradeRefused(400, "invalid Sec-WebSocket-Key") from None


def websocket_accept(
    request: RequestHead, pairs: Pairs, config: Config
) -> tuple[Pairs, PerMessageDeflate | None]:
    """The headers of the 101 that accepts ``request`` with the app's
    ``pairs`` (names lower-case), and the permessage-deflate extension
    agreed, if any. Raises :class:`LocalProtocolError` for a subprotocol
    the client did not offer."""
    offered = [
        p.strip()
        for n, v in request.headers
        if n == b"sec-websocket-protocol"
        for p in v.split(b",")
    ]
    for name, value in pairs:
        if name == b"sec-websocket-protocol" and value not in offered:
            raise LocalProtocolError(f"subprotocol {value!r} was not offered by the client")
    key = dict(request.headers)[b"sec-websocket-key"].strip()
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key)),
    ]
    deflate = None
    offer = b", ".join(v for n, v in request.headers if n == b"sec-websocket-extensions")
    if config.compression and offer:
        agreed = accept_offer(offer, config.max_message_size)
        if agreed is not None:
            deflate, value = agreed
            headers.append((b"sec-websocket-extensions", value))
    headers += [(n, v) for n, v in pairs if n not in _NOT_ON_A_101]
    return headers, deflate


def sse_accept(pairs: Pairs) -> Pairs:
    """The headers of the 200 that starts an event stream, from the app's
    ``pairs`` (names lower-case)."""
    headers = [(n, v) for n, v in pairs if n not in _NOT_ON_A_STREAM]
    headers.append((b"content-type", b"text/event-stream"))
    if all(n != b"cache-control" for n, _ in pairs):
        headers.append((b"cache-control", b"no-cache"))
    # The connection ends with the stream: no client may reuse it after.
    headers.append((b"connection", b"close"))
    # Tell nginx not to buffer the stream.
    headers.append((b"x-accel-buffering", b"no"))
    return headers
