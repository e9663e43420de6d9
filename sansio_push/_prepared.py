"""Messages encoded once, for any number of WebSocket and SSE connections."""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

from ._frames import chunk, encode_message
from ._sse import encode_event


class DefaultEvent:
    """The type of :data:`DEFAULT_EVENT` (for annotations); it has one value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT_EVENT"


#: Stands for "the connection's default SSE event name" (``msg`` unless set).
DEFAULT_EVENT = DefaultEvent()

#: What the ``event`` of a message may be: a name, ``None`` for none, or
#: :data:`DEFAULT_EVENT`.
EventName = str | None | DefaultEvent


class Prepared:
    """A message encoded once, queued as the same bytes on many connections.

    The WebSocket frame and each SSE block are built on first use and kept,
    so a publish to thousands of subscribers encodes at most once per form.
    Connections with permessage-deflate compress the message themselves.
    """

    __slots__ = ("message", "event", "id", "retry", "_ws", "_sse")

    def __init__(
        self,
        message: str | bytes,
        *,
        event: str | None | DefaultEvent = DEFAULT_EVENT,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        if not isinstance(message, str):
            message = bytes(message)
        self.message: str | bytes = message
        self.event = event
        self.id = id
        self.retry = retry
        self._ws: bytes | None = None
        self._sse: dict[tuple[str | None, bool], bytes] = {}
        # Validate the SSE fields now, so a bad one fails the caller at once.
        encode_event(
            "", event=None if isinstance(event, DefaultEvent) else event, id=id, retry=retry
        )

    @property
    def ws_frame(self) -> bytes:
        """The message as one uncompressed WebSocket frame."""
        if self._ws is None:
            self._ws = encode_message(self.message)
        return self._ws

    def sse_block(self, default_event: str | None, chunked: bool = False) -> bytes:
        """The message as an SSE event block, ``default_event`` filling in
        when the message was prepared without an explicit ``event``; with
        ``chunked``, framed as one HTTP/1.1 chunk."""
        name = default_event if isinstance(self.event, DefaultEvent) else self.event
        key = (name, chunked)
        block = self._sse.get(key)
        if block is None:
            block = encode_event(self.message, event=name, id=self.id, retry=self.retry)
            if chunked:
                block = chunk(block)
            self._sse[key] = block
        return block


def prepare(
    message: str | bytes,
    *,
    event: str | None | DefaultEvent = DEFAULT_EVENT,
    id: str | None = None,
    retry: int | None = None,
) -> Prepared:
    """Encode ``message`` once for queueing on any number of connections."""
    return Prepared(message, event=event, id=id, retry=retry)


class PreparedRun:
    """Consecutive prepared messages whose bytes are joined once per form.

    A burst published to many subscribers is queued on each as one piece,
    with where each message ends in it (see
    :meth:`~sansio_push.ServerConnection.send_run`), instead of one message
    at a time: the frames (or the SSE blocks of a stream's framing) are
    joined on first use and kept.
    """

    __slots__ = ("messages", "_joined")

    def __init__(self, messages: list[Prepared]) -> None:
        #: The messages, in order (the list is not copied: do not change it).
        self.messages = messages
        self._joined: dict[tuple[str | None, bool] | None, tuple[bytes, tuple[int, ...]] | None]
        self._joined = {}

    def ws_frames(self) -> tuple[bytes, tuple[int, ...]]:
        """Every message as an uncompressed WebSocket frame, joined, and the
        offset where each ends."""
        joined = self._join(None, _ws_frame)
        assert joined is not None  # a frame can always be made
        return joined

    def sse_blocks(
        self, default_event: str | None, chunked: bool
    ) -> tuple[bytes, tuple[int, ...]] | None:
        """Every message as :meth:`Prepared.sse_block` makes it, joined, and
        the offset where each ends; None if one cannot be an SSE event
        (bytes that are not UTF-8)."""
        return self._join((default_event, chunked), lambda p: p.sse_block(default_event, chunked))

    def _join(
        self, key: tuple[str | None, bool] | None, encode: Callable[[Prepared], bytes]
    ) -> tuple[bytes, tuple[int, ...]] | None:
        if key in self._joined:
            return self._joined[key]
        try:
            pieces = [encode(p) for p in self.messages]
        except ValueError:
            joined = None
        else:
            joined = b"".join(pieces), tuple(accumulate(map(len, pieces)))
        self._joined[key] = joined
        return joined


def _ws_frame(prepared: Prepared) -> bytes:
    return prepared.ws_frame
