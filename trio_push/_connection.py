"""One TCP connection: its transport, HTTP/1.1 or HTTP/2, push sessions.

:class:`Connection` ties the layers together: a :class:`Transport` (bytes),
then, for HTTP/1.1, the request loop (``_http.py``) until the connection
ends or upgrades, then one push session (``_push.py``) and its
:class:`~trio_push.Client`, fed by this module's reader. An idle push
connection is this one task; a writer and a dispatcher exist only while they
have work (see ``_push.py`` and ``_dispatch.py``). A client that speaks
HTTP/2 (``h2`` chosen in TLS's ALPN, or the preface on a cleartext
connection) is handed to ``_h2.py`` instead: one push session per stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

import sansio_push as sp

from ._client import Client
from ._context import Context
from ._h2 import H2Driver
from ._http import RequestLoop
from ._push import PushSession
from ._transport import Transport

log = logging.getLogger("trio_push")


class Connection:
    """Drives one :class:`sansio_push.ServerConnection` over a transport."""

    __slots__ = ("transport", "session", "h2", "_ctx", "_ended", "_http", "_scope")

    def __init__(
        self, ctx: Context, transport: Transport, ended: Callable[[Connection], None]
    ) -> None:
        self._ctx = ctx
        self.transport = transport
        # Called last, once the connection has ended (the server's count).
        self._ended = ended
        #: The push session, once the connection has upgraded.
        self.session: PushSession | None = None
        #: The HTTP/2 driver, if the client speaks HTTP/2.
        self.h2: H2Driver | None = None
        self._http: RequestLoop | None = None
        # The server's graceful stop cancels this scope to end an idle HTTP
        # connection; a push session is stopped by its handler (on_shutdown).
        self._scope: trio.CancelScope | None = None

    @property
    def peer(self) -> str:
        return self.transport.peer

    def expire(self, now: float) -> None:
        """End the wait for an HTTP request if its deadline is before ``now``
        (the server's reaper asks every connection)."""
        http = self._http
        if http is not None and http.deadline <= now:
            http.expire()

    async def run(self, core: sp.ServerConnection) -> None:
        """Serve the connection, with ``core`` as its protocol, until it
        ends; then call ``ended``. (The root of the connection's task.)"""
        try:
            session = await self._serve_http(core)
            if session is None:
                return
            # The push session's reader is here, not in a method of its own:
            # every idle push connection would keep that method's frame.
            transport = self.transport
            try:
                while not session.state:
                    if not session.receive_all():
                        if core.finished or session.state:
                            return  # the socket must not be waited for again
                        await session.resume_reading()
                        continue
                    if not transport.plain:
                        core.receive_data(await transport.receive())
                        continue
                    # Plain TCP: trio's wait right here, not in receive(),
                    # whose frame every idle connection would keep.
                    try:
                        await transport.readable()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        core.receive_data(b"")
                    else:
                        transport.read(core.receive_data)
            finally:
                await session.finish()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # A bug of ours must cost one connection, never the server.
            log.exception("%s: internal error, closing the connection", self.peer)
        finally:
            try:
                await self._close()
            finally:
                self._ended(self)

    async def _serve_http(self, core: sp.ServerConnection) -> PushSession | None:
        """Answer requests until the connection ends (None) or upgrades:
        then its push session, started."""
        http = self._http = RequestLoop(self._ctx, self.transport, core)
        upgrade = None
        with trio.CancelScope() as self._scope:
            started = None
            if core.config.http2:
                done, started = await self._sniff(core)
                if done:
                    return None
            self.transport.use_poller(self._ctx.poller, http)
            upgrade = await http.serve(started)
        # Nothing of the HTTP phase is kept: a push session lasts long.
        self._scope = self._http = None
        if upgrade is None:
            return None
        kind, handler, env = upgrade
        session = self.session = PushSession(self._ctx, self.transport, core, handler)
        session.client = Client(session, env, kind)
        session.start()
        self.transport.use_poller(self._ctx.poller, self)
        return session

    def ready(self) -> bool:
        """Bytes came while the push reader waits for them: the read poller
        asks this first, before it wakes the reader's task, and the bytes are
        read and handled here, by the reader's own PushSession.receive_all.
        Whether the reader may go on waiting: False if it has more to do (the
        connection ends, its callbacks pile up, or the read filled the
        buffer, and the poller then looks at that)."""
        session = self.session
        assert session is not None
        core = session.core
        data = self.transport.read_now()
        if not data:
            # Nothing after all (so wait on), or the peer's end, which the
            # reader reads itself.
            return data is None
        core.receive_data(data)
        return session.receive_all()

    async def _close(self) -> None:
        session = self.session
        if session is not None:
            # Cancelled before the dispatcher got to it: on_close still
            # runs, exactly once (shielded, within close_timeout).
            await session.ensure_on_close()
        await self.transport.aclose()
        if session is not None:
            session.release()

    async def _first_bytes(self) -> tuple[bool, bytes] | None:
        """Whether the client speaks HTTP/2 (TLS: it chose ``h2`` in ALPN;
        cleartext: it sent the preface), and the bytes it sent to tell, to
        be read as the protocol's. None if it sent nothing in time."""
        transport = self.transport
        stream = transport.stream
        options = self._ctx.options
        if isinstance(stream, trio.SSLStream):
            # Until its handshake a client has sent nothing: the idle bound.
            with trio.move_on_after(options.idle_timeout):
                await stream.do_handshake()
                return stream.selected_alpn_protocol() == "h2", b""
            return None
        # A client mostly sends at once: what it sent is often here already,
        # and then no timeout is needed (a timeout's scope stays in trio's
        # deadlines, 220 bytes, until idle_timeout has passed).
        data = (transport.read_now() if transport.plain else None) or b""
        if data and sp.is_h2_preface(data) is not None:
            return bool(sp.is_h2_preface(data)), data
        with trio.move_on_after(options.idle_timeout):
            while True:
                more = await transport.receive()
                data += more
                if not more or sp.is_h2_preface(data) is not None:
                    return bool(sp.is_h2_preface(data)), data
        return (False, data) if data else None

    async def _sniff(self, core: sp.ServerConnection) -> tuple[bool, float | None]:
        """Serve the connection as HTTP/2 if the client speaks it; else feed
        ``core`` what it sent. Whether the connection is done (served, or
        nothing came in time), and when its first bytes came. (A method of
        its own: the bytes read are not kept by run's frame for as long as
        the connection lives.)"""
        first = await self._first_bytes()
        if first is None:
            return True, None
        h2, data = first
        if h2:
            self._scope = self._http = None
            h2core = sp.H2Connection(core.config, client=core.client, server=core.server)
            self.h2 = H2Driver(self._ctx, self.transport, h2core)
            await self.h2.run(data)
            return True, None
        if not data:
            return False, None
        core.receive_data(data)
        return False, trio.current_time()

    def shutdown(self) -> None:
        """The server stops gracefully: a push session gets ``on_shutdown``,
        an HTTP connection waiting between requests is closed, an ASGI app's
        streamed response is ended."""
        if self.session is not None:
            self.session.shutdown()
        elif self.h2 is not None:
            self.h2.shutdown()
        elif self._http is not None and self._http.idle and self._scope is not None:
            self._scope.cancel()
        elif self._http is not None and self._http.streaming is not None:
            self._http.streaming.shutdown()

    def drain_expired(self) -> bool:
        """The shutdown's drain is over: see :meth:`PushSession.drain_expired`."""
        if self.h2 is not None:
            return self.h2.drain_expired()
        return self.session.drain_expired() if self.session is not None else False
