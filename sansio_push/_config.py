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
    - ``http2``: speak HTTP/2 to a client that asks (docs/http2.md): one that
      starts with the HTTP/2 preface (h2c with prior knowledge), or chose
      ``h2`` in TLS's ALPN.
    - ``h2_max_concurrent_streams``: streams one HTTP/2 connection may have
      open (SETTINGS_MAX_CONCURRENT_STREAMS); streams still being answered
      after the client reset them count too.
    - ``h2_max_header_list_size``: a request's headers, decoded
      (SETTINGS_MAX_HEADER_LIST_SIZE); past it the connection gets GOAWAY
      ENHANCE_YOUR_CALM (HPACK bombs included).
    - ``h2_max_frame_size``: the largest frame a client may send
      (SETTINGS_MAX_FRAME_SIZE, 16384 to 16777215).
    - ``h2_stream_window`` / ``h2_connection_window``: how much a client may
      send on a stream, and on the whole connection, before we have read it
      (our receive windows, and so the bound on what we hold for it).
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
    http2: bool = True
    h2_max_concurrent_streams: int = 100
    h2_max_header_list_size: int = 64 * 1024
    h2_max_frame_size: int = 16 * 1024
    h2_stream_window: int = 1024 * 1024
    h2_connection_window: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        # What HTTP/2 allows (RFC 9113 6.5.2), refused here rather than by
        # h2 on the first connection.
        if not 16384 <= self.h2_max_frame_size <= 16777215:
            raise ValueError("h2_max_frame_size must be from 16384 to 16777215")
        if self.h2_max_concurrent_streams < 1 or self.h2_max_header_list_size < 1:
            raise ValueError("h2_max_concurrent_streams and h2_max_header_list_size must be >= 1")
        if not 65535 <= self.h2_stream_window <= 2**31 - 1:
            raise ValueError("h2_stream_window must be from 65535 to 2**31-1")
        if not 65535 <= self.h2_connection_window <= 2**31 - 1:
            raise ValueError("h2_connection_window must be from 65535 to 2**31-1")


DEFAULT_CONFIG = Config()
