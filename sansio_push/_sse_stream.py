"""The SSE phase: an event stream, after its 200.

The body is ours to write: one event block per message, a comment line per
keepalive, each wrapped in a chunk on HTTP/1.1 (h11 framed the 200 so) and
bare on HTTP/1.0, whose stream ends with the connection. The peer sends
nothing we read but its end, which gives ``Closed(1006)``; our
:meth:`~SsePhase.close` ends the stream (the last chunk) and the phase, with
no event.
"""

from __future__ import annotations

from ._codes import ABNORMAL
from ._config import Config
from ._errors import LocalProtocolError
from ._events import Closed, Event
from ._frames import LAST_CHUNK, chunk
from ._handshake import SSE
from ._outbox import Outbox
from ._prepared import DefaultEvent, EventName, Prepared, PreparedRun
from ._push import PushPhase
from ._sse import encode_comment, encode_event
from ._state import DONE, Phase


class SsePhase(PushPhase):
    """An event stream; ``chunked`` for an HTTP/1.1 client."""

    __slots__ = ("_chunked", "_eof")
    protocol = SSE

    def __init__(self, out: Outbox, config: Config, chunked: bool) -> None:
        super().__init__(Phase.SSE, out, config)
        self._chunked = chunked
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True

    def next_event(self) -> Event | None:
        if self._eof and self.phase is not DONE:
            self._end()
            return Closed(ABNORMAL, "peer closed")
        return None

    def encode(
        self, message: str | bytes, event: EventName, id: str | None, retry: int | None
    ) -> bytes | None:
        if not self.writable:
            return None
        name = self._config.sse_event if isinstance(event, DefaultEvent) else event
        try:
            data = encode_event(message, event=name, id=id, retry=retry)
        except ValueError as exc:  # a field, or bytes, that cannot be an event
            raise LocalProtocolError(str(exc)) from exc
        return chunk(data) if self._chunked else data

    def encode_prepared(self, prepared: Prepared) -> bytes | None:
        if not self.writable:
            return None
        try:
            return prepared.sse_block(self._config.sse_event, self._chunked)
        except ValueError as exc:  # bytes that are not UTF-8
            raise LocalProtocolError(str(exc)) from exc

    def encode_run(self, run: PreparedRun) -> tuple[bytes, tuple[int, ...]] | None:
        if not self.writable:
            return None
        return run.sse_blocks(self._config.sse_event, self._chunked)

    def send_event_id(self, id: str) -> None:
        if not self.writable:
            return
        try:
            block = encode_event(None, id=id)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self._out.put(chunk(block) if self._chunked else block, message=False)

    def send_keepalive(self, payload: bytes) -> None:
        if not self.writable:
            return
        comment = encode_comment()
        self._out.put(chunk(comment) if self._chunked else comment, message=False)

    def close(self, code: int, reason: str) -> None:
        if not self.writable:
            return
        if self._chunked:
            self._out.put(LAST_CHUNK, message=False)
        self._end()
