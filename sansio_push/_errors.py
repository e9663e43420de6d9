"""The errors trio-push raises on purpose, in one hierarchy::

    PushError
     ├── LocalProtocolError    the app asked for what the protocol or the
     │                         connection's state does not allow (a second
     │                         response, a close code no endpoint may send,
     │                         a line break in an SSE field...)
     └── RemoteProtocolError   the peer broke the protocol; ``status`` is the
                               HTTP answer it gets, ``code`` the WebSocket
                               close code

The app only ever sees :class:`LocalProtocolError`: what the peer does wrong
becomes an answer (4xx) or a close frame, never an exception in app code.
``LocalProtocolError`` is also a ``ValueError`` and a ``RuntimeError``, the
two exceptions these calls raised before the hierarchy existed, so code that
catches either keeps working.
"""

from __future__ import annotations

from ._codes import PROTOCOL_ERROR, CloseCode

_NAMED = frozenset(CloseCode)


class PushError(Exception):
    """The base of every error trio-push raises on purpose."""


class LocalProtocolError(PushError, ValueError, RuntimeError):
    """The app's call is not allowed here; nothing was sent."""


class RemoteProtocolError(PushError):
    """The peer broke the protocol: answer ``status`` (before an upgrade) or
    close with ``code`` (on a WebSocket)."""

    def __init__(self, message: str, *, status: int = 400, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status
        #: A :class:`CloseCode` member when it is one, else the int (3000-4999).
        self.code: int = CloseCode(code) if code in _NAMED else code
