"""The limits and options a server shares among its connections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Config:
    """Limits and options shared by many connections (kept once, not per connection).

    - ``max_head_size``: request line plus headers; over it the answer is 431.
    - ``max_body_size``: request body; over it the answer is 413.
    - ``max_message_size``: incoming WebSocket message; over it, close 1009.
    - ``max_queue_messages`` / ``max_queue_bytes``: the send queue of a push
      connection, counting what was queued since the socket refused bytes
      (:meth:`ServerConnection.refused`): a peer that reads is never cut off
      by what the app writes in one go. Over either, ``overflow`` applies:
      ``'close'`` closes with 1008 (SSE: ends the stream), ``'drop'`` refuses
      the new message and counts it in :attr:`ServerConnection.dropped`;
      ``'resync'`` does what ``'drop'`` does here, and tells the driver to
      send what it refused again later, from the channel's history.
    - ``sse_event``: the SSE event name for messages written without one
      (``'msg'``, as Agoo sends; ``None`` for the browser's ``message``).
    - ``compression``: offer permessage-deflate to WebSocket clients.
    - ``scheme``: ``'http'`` or ``'https'``, for ``wsgi.url_scheme``.
    """

    max_head_size: int = 64 * 1024
    max_body_size: int = 1024 * 1024
    max_message_size: int = 1024 * 1024
    max_queue_messages: int = 1000
    max_queue_bytes: int = 4 * 1024 * 1024
    overflow: Literal["close", "drop", "resync"] = "close"
    sse_event: str | None = "msg"
    compression: bool = False
    scheme: str = "http"


DEFAULT_CONFIG = Config()
