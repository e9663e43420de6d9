"""Close codes, status phrases and the server's own error answers.

WebSocket close codes (RFC 6455 7.4.1) are a :class:`CloseCode` IntEnum, so a
code compares equal to its number and prints with its name; the module-level
names (``NORMAL``...) are its members. :func:`can_send_close_code` says which
codes may go in a close frame. :func:`error_response` builds the complete
HTTP/1.1 answer the server gives on its own (400, 413, 426, 503 ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from http import HTTPStatus


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


NORMAL = CloseCode.NORMAL
GOING_AWAY = CloseCode.GOING_AWAY
PROTOCOL_ERROR = CloseCode.PROTOCOL_ERROR
INVALID_DATA = CloseCode.INVALID_DATA
POLICY_VIOLATION = CloseCode.POLICY_VIOLATION
MESSAGE_TOO_BIG = CloseCode.MESSAGE_TOO_BIG
INTERNAL_ERROR = CloseCode.INTERNAL_ERROR
ABNORMAL = CloseCode.ABNORMAL


def can_send_close_code(code: int) -> bool:
    """1000-1014 less the codes only for reports (1004-1006), and 3000-4999."""
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


# The reason phrase of every status HTTP names: HTTPStatus(status) is an
# enum call, a microsecond on every response.
_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


def phrase(status: int) -> bytes:
    """The reason phrase of ``status`` (empty for a status HTTP does not name)."""
    return _PHRASES.get(status, b"")


def error_response(status: int, reason: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole ``status`` answer with a plain-text body naming ``reason``,
    the ``extra`` headers and ``connection: close``."""
    body = f"{status} {HTTPStatus(status).phrase}: {reason}\n".encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    head += [n + b": " + v for n, v in extra]
    head += [
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body
