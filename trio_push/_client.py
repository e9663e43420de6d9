"""The ``client`` object every handler callback receives."""

from __future__ import annotations

from typing import Any

import sansio_push as sp

from ._glob import is_pattern
from ._history import Position
from ._push import PushSession

#: The env keys whose values push connections mostly share (the same page,
#: host, browser...): each such value is kept once (in _KEPT), not once per
#: connection. Not those that differ per connection (a WebSocket key, a
#: cookie, a query with a token): keeping one costs a slot.
_SHARED_VALUES = frozenset(
    {
        "REQUEST_METHOD",
        "PATH_INFO",
        "SERVER_PROTOCOL",
        "SERVER_NAME",
        "SERVER_PORT",
        "REMOTE_ADDR",
        "HTTP_HOST",
        "HTTP_UPGRADE",
        "HTTP_CONNECTION",
        "HTTP_SEC_WEBSOCKET_VERSION",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS",
        "HTTP_SEC_WEBSOCKET_PROTOCOL",
        "HTTP_ACCEPT",
        "HTTP_ACCEPT_ENCODING",
        "HTTP_ACCEPT_LANGUAGE",
        "HTTP_CACHE_CONTROL",
        "HTTP_PRAGMA",
        "HTTP_ORIGIN",
        "HTTP_USER_AGENT",
        "HTTP_X_FORWARDED_PROTO",
    }
)


# The strings kept once for every connection, each its own key. Bounded, and
# only short ones: they are the clients' (not sys.intern: on Python 3.12 an
# interned string is never freed, so a client sending new values would grow
# the process for good).
_KEPT: dict[str, str] = {}
_KEPT_MAX = 4096
_KEPT_SIZE = 256


def _one(text: str) -> str:
    """The string kept for ``text``'s value (``text`` itself, kept, if none
    is yet and there is room)."""
    kept = _KEPT.get(text)
    if kept is None:
        if len(_KEPT) >= _KEPT_MAX or len(text) > _KEPT_SIZE:
            return text
        kept = _KEPT[text] = text
    return kept


def _share(env: dict[str, Any]) -> None:
    """Keep ``env``'s keys, and the values of :data:`_SHARED_VALUES` (and
    a ``RAW_URI`` without a query), once for all connections: made for each
    request, they would be kept by every push connection for its life. The
    same dict, in the same order, with equal strings."""
    items = [
        (
            _one(key),
            _one(value)
            if type(value) is str
            and (key in _SHARED_VALUES or (key == "RAW_URI" and "?" not in value))
            else value,
        )
        for key, value in env.items()
    ]
    env.clear()
    env.update(items)


class Client:
    """One push connection, as the app sees it.

    ``write`` and ``close`` may be called from any Trio task of the server's
    run and from any other thread; they never block and never raise because
    the connection has closed. From another thread a message is checked
    in that thread (a WebSocket frame encoded there too) and handed to the
    event loop in call order.
    """

    __slots__ = ("_session", "env", "protocol", "__weakref__")

    def __init__(self, session: PushSession, env: dict[str, Any], protocol: str) -> None:
        self._session = session
        _share(env)
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
        return self._session.core.open

    @property
    def pending(self) -> int:
        """Messages queued and not yet handed to the OS."""
        return self._session.pending

    @property
    def close_code(self) -> int | None:
        """How a WebSocket closed, set before ``on_close`` runs: the peer's
        close code if it closed first, the code the server closed with
        (``client.close()``, 1001 at shutdown, 1008 past the queue bound,
        1011 after a callback's error, 1002/1007/1009 for what the peer
        sent), or 1006 if the connection ended without a close frame. A
        :class:`sansio_push.CloseCode` when the code has a name. None while
        open, and for SSE (an event stream has no close codes)."""
        return self._session.close_code

    @property
    def close_reason(self) -> str:
        """The reason that came with :attr:`close_code` (``""`` if none)."""
        return self._session.close_reason

    @property
    def dropped(self) -> int:
        """Messages refused because the queue was full (``overflow='drop'``)."""
        return self._session.core.dropped

    def write(
        self,
        message: str | bytes,
        *,
        event: str | None | sp.DefaultEvent = sp.DEFAULT_EVENT,
        id: str | None = None,
        retry: int | None = None,
    ) -> bool:
        """Queue ``message``: ``str`` as a WebSocket text frame, bytes-like as
        binary; on SSE one event (``event``, ``id``, ``retry`` set its fields;
        the default event name is the server's ``sse_event``, ``msg``).

        Returns True if queued, False if the client is closed (or, with the
        ``drop`` overflow policy, its queue is full). From another thread,
        True means handed to the event loop, in call order: if the client
        closes (or its queue fills) first, the message goes where any message
        to a closed client goes. What a callback writes from its worker thread
        is that callback's burst: the queue bounds do not cut it short.
        Raises ``ValueError`` for what cannot be sent (a line break in an SSE
        ``event`` or ``id``, bytes that are not UTF-8 on SSE), in the calling
        thread.
        """
        return self._session.write(message, event, id, retry)

    def close(self, code: int = sp.CloseCode.NORMAL, reason: str = "") -> None:
        """Flush what is queued, then close (WebSocket ``code``; SSE ends the
        stream). Idempotent; safe from any thread. Raises
        :class:`sansio_push.LocalProtocolError` (a ``ValueError``) for a code
        an endpoint may not send (RFC 6455 7.4), in the calling thread."""
        if self.protocol == "websocket" and not sp.can_send_close_code(code):
            raise sp.LocalProtocolError(
                f"{code} is not a close code an endpoint may send (RFC 6455 7.4)"
            )
        session = self._session
        session.ctx.loop.call(session.close, code, reason)

    def subscribe(
        self,
        channel: str,
        *,
        since: str | Position | None = None,
        envelope: bool = False,
    ) -> None:
        """Receive every message published to ``channel``. A glob pattern
        (``chat.*``, ``room.?``, ``[ab]``) matches channels as Redis
        ``PSUBSCRIBE`` does. Subscribing twice is subscribing once; a closed
        client is not subscribed; closing unsubscribes from everything.
        Safe from any thread (applied on the event loop, in call order).

        On a channel with history (docs/pubsub.md), ``since`` (a position,
        or its text) first sends every message published after it, in
        order, then the live ones; if history no longer holds them all, the
        handler's ``on_gap(client, channel, reason)`` runs first instead.
        On SSE, ``since`` defaults to the page's ``Last-Event-ID``. With
        ``envelope``, WebSocket messages carry their channel and position
        (``{"channel", "position", "data"}``; see docs/pubsub.md). Raises
        ``ValueError`` for a malformed ``since``, or one on a pattern.
        """
        if isinstance(since, Position):
            since = str(since)
        if since is not None:
            if is_pattern(channel):
                raise ValueError(f"a pattern subscription cannot resume: {channel!r}")
            Position.parse(channel, since)
        session = self._session
        session.ctx.loop.call(session.subscribe, channel, since, envelope)

    def since(self, channel: str) -> str | None:
        """The position the page says it has on ``channel``: from the SSE
        ``Last-Event-ID``, or on a WebSocket from the ``since`` query
        parameter the shipped helper sends (``trio_push.JS_HELPER``); None
        if it says nothing, or nothing that is a position (then a
        subscription to ``channel`` without ``since`` gets on_gap
        ``'unknown'``, as with an SSE id that is not ours). Event loop only
        (callbacks)."""
        return self._session.positions().get(channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` (the same string given to subscribe).
        Safe from any thread."""
        session = self._session
        session.ctx.loop.call(session.unsubscribe, channel)

    def publish(self, channel: str, message: str | bytes) -> Position | bool:
        """Publish ``message`` to every subscriber of ``channel``, on every
        process sharing the server's pub/sub engine (this client too, if
        subscribed). Never blocks; safe from any thread. Returns what the
        engine's ``publish`` returns: False if it could not take the message
        (Redis unreachable), else the message's :class:`Position` on a
        channel with history, else True."""
        return self._session.ctx.pubsub.publish(channel, message)
