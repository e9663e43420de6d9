"""sansio_push: the protocol core of trio-push, with no I/O.

One :class:`ServerConnection` per TCP connection carries it from HTTP/1.1
(through h11) to a WebSocket (through wsproto) or Server-Sent Events stream,
with exact backpressure accounting; over HTTP/2 (through h2) one
:class:`H2Connection` carries many :class:`H2Stream` s, each read and
answered like a ServerConnection. Bytes in, events out; answers in, bytes
out. It imports no socket, thread, asyncio or trio module, so any event loop
can drive it.
"""

from ._codes import (
    ABNORMAL,
    GOING_AWAY,
    INTERNAL_ERROR,
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    NORMAL,
    POLICY_VIOLATION,
    PROTOCOL_ERROR,
    CloseCode,
    can_send_close_code,
    error_response,
)
from ._config import Config
from ._connection import ServerConnection
from ._errors import LocalProtocolError, PushError, RemoteProtocolError
from ._events import (
    Body,
    Closed,
    Drained,
    EndOfRequest,
    Event,
    Message,
    Pong,
    Rejected,
    Request,
)
from ._frames import encode_message
from ._h2 import PREFACE, H2Connection, StreamInput, StreamOpened, WindowOpened, is_h2_preface
from ._h2_stream import H2Stream
from ._outbox import Outbox
from ._prepared import DEFAULT_EVENT, DefaultEvent, Prepared, PreparedRun, prepare
from ._sse import encode_comment, encode_event

__all__ = [
    "ABNORMAL",
    "DEFAULT_EVENT",
    "GOING_AWAY",
    "PREFACE",
    "INTERNAL_ERROR",
    "INVALID_DATA",
    "MESSAGE_TOO_BIG",
    "NORMAL",
    "POLICY_VIOLATION",
    "PROTOCOL_ERROR",
    "Body",
    "CloseCode",
    "Closed",
    "Config",
    "DefaultEvent",
    "Drained",
    "EndOfRequest",
    "Event",
    "H2Connection",
    "H2Stream",
    "LocalProtocolError",
    "Message",
    "Outbox",
    "Pong",
    "PushError",
    "Prepared",
    "PreparedRun",
    "Rejected",
    "RemoteProtocolError",
    "Request",
    "ServerConnection",
    "StreamInput",
    "StreamOpened",
    "WindowOpened",
    "can_send_close_code",
    "encode_comment",
    "encode_event",
    "encode_message",
    "error_response",
    "is_h2_preface",
    "prepare",
]
