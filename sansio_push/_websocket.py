"""The WebSocket phase: messages both ways, after the 101.

Frames are read by :func:`~sansio_push._frames.read_frame` while they are
small, whole and of the kinds it takes; from the first frame it leaves to
wsproto (see ``_frames.py``), and from our own close frame, wsproto reads
the connection for good. With permessage-deflate wsproto reads and writes
everything from the start.

The close handshake: the peer's close frame is echoed with its code, then
:class:`Closed` carries that code; after our :meth:`~WebSocketPhase.close`
the peer's answer gives :class:`Closed` with its code. A protocol error
wsproto finds (1002, 1007...) or a message over ``max_message_size``
(1009) is answered with a close frame with that code, and :class:`Closed`
carries it. The peer's end without a close frame gives ``Closed(1006)``.
Each of those ends the phase (DONE).
"""

from __future__ import annotations

from typing import Any

import wsproto.events as ws
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.connection import ConnectionType
from wsproto.utilities import LocalProtocolError as WSLocalProtocolError

from ._codes import MESSAGE_TOO_BIG, can_send_close_code
from ._config import Config
from ._deflate import PerMessageDeflate
from ._errors import LocalProtocolError
from ._events import Closed, Event, Message, Pong
from ._frames import OP_BINARY, OP_PING, OP_PONG, encode_frame, encode_message, read_frame
from ._handshake import WEBSOCKET
from ._outbox import Outbox
from ._prepared import DEFAULT_EVENT, EventName, Prepared, PreparedRun
from ._push import PushPhase
from ._state import DONE, Phase


class WebSocketPhase(PushPhase):
    """A WebSocket, its frames read without wsproto while they are small."""

    __slots__ = ("_in", "_pos", "_ws", "_peer_eof", "_fragments", "_fragments_size")
    protocol = WEBSOCKET

    def __init__(self, out: Outbox, config: Config, received: bytes) -> None:
        super().__init__(Phase.WEBSOCKET, out, config)
        # While frames are read without wsproto: the bytes received and not
        # yet read, and where reading is in them.
        self._in = received
        self._pos = 0
        self._ws: WSConnection | None = None
        # The peer's end, held back until the frames before it are read.
        self._peer_eof = False
        # wsproto's side: the fragments of the message it is reassembling
        # (a list only while there are some: most connections never have any).
        self._fragments: list[Any] | None = None
        self._fragments_size = 0

    # -- bytes in -----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.phase is DONE:
            return
        if not data:
            # Frames already received come first (wsproto would report the
            # 1006 ahead of them): the end is taken once they are read.
            self._peer_eof = True
        elif self._ws is not None:
            self._ws.receive_data(data)
        else:
            # What is left of a frame not yet whole, then the new bytes.
            rest = self._in[self._pos :]
            self._in = rest + data if rest else data
            self._pos = 0

    def next_event(self) -> Event | None:
        if self.phase is DONE:
            return None
        if self._ws is None:
            while True:
                buf = self._in
                got = read_frame(buf, self._pos, self._config.max_message_size)
                if got is None and not self._peer_eof:
                    if self._pos == len(buf):
                        self._in, self._pos = b"", 0  # what was read is let go
                    return None
                if not isinstance(got, tuple):  # a frame wsproto must judge, or the end
                    self._to_wsproto()
                    break
                opcode, payload, self._pos = got
                if isinstance(payload, str) or opcode == OP_BINARY:
                    return Message(payload)
                if opcode == OP_PING:
                    self._out.put(encode_frame(OP_PONG, payload), message=False)
                else:
                    return Pong(payload)
        return self._next_wsproto_event()

    def _to_wsproto(self) -> None:
        """From here on wsproto reads the connection, from the first byte
        not yet read."""
        if self._ws is None:
            rest = self._in[self._pos :]
            self._in, self._pos = b"", 0
            self._ws = WSConnection(ConnectionType.SERVER, [], trailing_data=rest)

    def _next_wsproto_event(self) -> Event | None:
        conn = self._ws
        assert conn is not None
        for event in conn.events():
            if isinstance(event, ws.Message):
                result = self._on_fragment(event)
                if result is not None:
                    return result
            elif isinstance(event, ws.Ping):
                if conn.state is WSState.OPEN:
                    self._out.put(conn.send(event.response()), message=False)
            elif isinstance(event, ws.Pong):
                return Pong(bytes(event.payload))
            elif isinstance(event, ws.CloseConnection):
                return self._on_close(event)
        if self._peer_eof:
            self._peer_eof = False
            conn.receive_data(None)
            return self._next_wsproto_event()
        return None

    def _on_fragment(self, event: ws.Message[Any]) -> Event | None:
        data = event.data
        # The limit is in bytes: text counts as its UTF-8 encoding.
        self._fragments_size += (
            len(data.encode()) if isinstance(data, str) and not data.isascii() else len(data)
        )
        if self._fragments_size > self._config.max_message_size:
            return self._fail(MESSAGE_TOO_BIG, "message too big")
        if event.message_finished:
            parts, self._fragments = self._fragments, None
            self._fragments_size = 0
            if isinstance(data, str):
                return Message("".join(parts) + data if parts else data)
            return Message(b"".join(parts) + data if parts else bytes(data))
        if self._fragments is None:
            self._fragments = [data]
        else:
            self._fragments.append(data)
        return None

    def _on_close(self, event: ws.CloseConnection) -> Event:
        conn = self._ws
        assert conn is not None
        state = conn.state
        if state is WSState.REMOTE_CLOSING:
            # The peer closes first: echo its code (RFC 6455 5.5.1).
            self._out.put(conn.send(event.response()), message=False)
        elif state is WSState.OPEN:
            # wsproto found a protocol error (1002, 1007, ...): close with it.
            return self._fail(int(event.code), event.reason or "")
        self._end()
        return Closed(int(event.code), event.reason or "")

    def _fail(self, code: int, reason: str) -> Event:
        """Close with ``code`` for what the peer did wrong, and report it."""
        conn = self._ws
        assert conn is not None
        if conn.state in (WSState.OPEN, WSState.REMOTE_CLOSING):
            self._out.put(conn.send(ws.CloseConnection(code=code, reason=reason)), message=False)
        self._end()
        return Closed(code, reason)

    def _end(self) -> None:
        super()._end()
        if self._ws is not None:
            # wsproto reads frames with a generator kept on its FrameProtocol,
            # whose frame refers back to it: a reference cycle until the
            # generator returns, which it does only when asked for a frame
            # after the close frame (never, on an abort or a lost peer). Nothing
            # more is read from here: end it, so that reference counting frees
            # wsproto's objects (its sends do not use it).
            self._ws._proto._parse_more.close()

    # -- bytes out ----------------------------------------------------------

    def encode(
        self, message: str | bytes, event: EventName, id: str | None, retry: int | None
    ) -> bytes | None:
        if not self.writable:
            return None
        return encode_message(message)

    def encode_prepared(self, prepared: Prepared) -> bytes | None:
        if not self.writable:
            return None
        return prepared.ws_frame

    def encode_run(self, run: PreparedRun) -> tuple[bytes, tuple[int, ...]] | None:
        return run.ws_frames() if self.writable else None

    def send_keepalive(self, payload: bytes) -> None:
        if not self.writable:
            return
        if len(payload) > 125:
            raise LocalProtocolError("a ping's payload is at most 125 bytes")
        self._out.put(encode_frame(OP_PING, payload), message=False)

    def send_event_id(self, id: str) -> None:
        """SSE only: a WebSocket has no event ids."""

    def close(self, code: int, reason: str) -> None:
        if not can_send_close_code(code):
            raise LocalProtocolError(
                f"{code} is not a close code an endpoint may send (RFC 6455 7.4)"
            )
        if not self.writable:
            return
        self.writable = False
        self._to_wsproto()
        self._out.put(self._send(ws.CloseConnection(code=code, reason=reason)), message=False)

    def _send(self, event: ws.Event) -> bytes:
        assert self._ws is not None
        try:
            return self._ws.send(event)
        except WSLocalProtocolError as exc:  # pragma: no cover - guarded by writable
            raise LocalProtocolError(str(exc)) from exc


class DeflateWebSocketPhase(WebSocketPhase):
    """A WebSocket with permessage-deflate: wsproto reads and writes every
    message (each connection compresses its own, prepared or not)."""

    __slots__ = ()
    compresses = True

    def __init__(
        self, out: Outbox, config: Config, received: bytes, deflate: PerMessageDeflate
    ) -> None:
        super().__init__(out, config, b"")
        self._ws = WSConnection(ConnectionType.SERVER, [deflate], trailing_data=received)

    def encode(
        self, message: str | bytes, event: EventName, id: str | None, retry: int | None
    ) -> bytes | None:
        if not self.writable:
            return None
        if isinstance(message, str):
            return self._send(ws.TextMessage(data=message))
        return self._send(ws.BytesMessage(data=bytes(message)))

    def encode_prepared(self, prepared: Prepared) -> bytes | None:
        return self.encode(prepared.message, DEFAULT_EVENT, None, None)

    def encode_run(self, run: PreparedRun) -> tuple[bytes, tuple[int, ...]] | None:
        return None  # each message is compressed in turn
