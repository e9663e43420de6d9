"""What the WebSocket and SSE phases share: writable until they close.

A push phase encodes the app's messages (the connection queues them, within
its bounds) until it closes; it takes none of the HTTP calls.
"""

from __future__ import annotations

from typing import NoReturn

from ._config import Config
from ._errors import LocalProtocolError
from ._outbox import Outbox
from ._prepared import PreparedRun
from ._state import DONE, Headers, Phase, move


class PushPhase:
    """A phase after an upgrade; writable until it closes."""

    __slots__ = ("phase", "writable", "_out", "_config")
    compresses = False

    def __init__(self, phase: Phase, out: Outbox, config: Config) -> None:
        self.phase = phase
        self.writable = True
        self._out = out
        self._config = config

    def abort(self) -> None:
        self._end()

    def encode_run(self, run: PreparedRun) -> tuple[bytes, tuple[int, ...]] | None:
        """``run``'s messages joined, and where each ends; None when they
        cannot be queued in one piece (see ServerConnection.send_run)."""
        return None

    def _end(self) -> None:
        """Into DONE: nothing more is read, written or reported."""
        self.writable = False
        if self.phase is not DONE:
            self.phase = move(self.phase, DONE)

    def start_response(self, status: int, headers: Headers, upgrade: bool) -> NoReturn:
        raise LocalProtocolError("start_response() after the connection upgraded")

    def send_body(self, data: bytes) -> NoReturn:
        raise LocalProtocolError("send_body() after the connection upgraded")

    def end_response(self) -> NoReturn:
        raise LocalProtocolError("end_response() after the connection upgraded")
