"""The ``client`` object every handler callback receives."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import trio

from sansio_push import DEFAULT_EVENT, NORMAL, prepare
from sansio_push._frames import _Default

if TYPE_CHECKING:
    from ._connection import Connection


class Client:
    """One push connection, as the app sees it.

    ``write`` and ``close`` may be called from any Trio task of the server's
    run and from any other thread; they never block and never raise because
    the connection has closed. From another thread a message is encoded in
    that thread and handed to the event loop in call order.
    """

    __slots__ = ("_conn", "env", "protocol", "__weakref__")

    def __init__(self, conn: Connection, env: dict[str, Any], protocol: str) -> None:
        self._conn = conn
        #: The env of the request that opened this connection.
        self.env = env
        #: ``'websocket'`` or ``'sse'``.
        self.protocol = protocol

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"<Client {self.protocol} {self.env.get('PATH_INFO', '')} {state}>"

    @property
    def open(self) -> bool:
        """True until the connection starts closing."""
        return self._conn.core.open

    @property
    def pending(self) -> int:
        """Messages queued and not yet handed to the OS."""
        return self._conn.core.pending

    @property
    def dropped(self) -> int:
        """Messages refused because the queue was full (``overflow='drop'``)."""
        return self._conn.core.dropped

    def write(
        self,
        message: str | bytes,
        *,
        event: str | None | _Default = DEFAULT_EVENT,
        id: str | None = None,
        retry: int | None = None,
    ) -> bool:
        """Queue ``message``: ``str`` as a WebSocket text frame, bytes-like as
        binary; on SSE one event (``event``, ``id``, ``retry`` set its fields;
        the default event name is the server's ``sse_event``, ``msg``).

        Returns True if queued, False if the client is closed (or, with the
        ``drop`` overflow policy, its queue is full). Raises ``ValueError`` for
        SSE fields that cannot be sent (a line break in ``event`` or ``id``).
        """
        conn = self._conn
        if threading.get_ident() == conn.server.thread_id:
            return conn.write(message, event, id, retry)
        if not conn.core.open:
            return False
        prepared = prepare(message, event=event, id=id, retry=retry)
        try:
            conn.server.token.run_sync_soon(conn.write_prepared, prepared)
        except trio.RunFinishedError:
            return False
        return True

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Flush what is queued, then close (WebSocket ``code``; SSE ends the
        stream). Idempotent; safe from any thread."""
        conn = self._conn
        if threading.get_ident() == conn.server.thread_id:
            conn.close(code, reason)
            return
        with contextlib.suppress(trio.RunFinishedError):
            conn.server.token.run_sync_soon(conn.close, code, reason)

    def subscribe(self, channel: str) -> None:
        """Receive every message published to ``channel`` (a glob pattern
        such as ``chat.*`` matches as Redis ``PSUBSCRIBE`` does)."""
        self._conn.server.pubsub.subscribe(self, channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` (the same string given to subscribe)."""
        self._conn.server.pubsub.unsubscribe(self, channel)

    def publish(self, channel: str, message: str | bytes) -> bool:
        """Publish ``message`` to every subscriber of ``channel``."""
        return self._conn.server.pubsub.publish(channel, message)
