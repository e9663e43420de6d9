"""The ordered callback queue of a push session.

A handler's callbacks (``on_open``, ``on_message``, ``on_drained``,
``on_subscribe_error``, ``on_gap``, ``on_shutdown``, ``on_close``) run one at
a time, in the order of their events, ``on_close`` last and exactly once.
Three ways:

- **inline**: a plain ``on_message`` (``threads=0``) with nothing queued or
  running before it runs in the reader itself (or in the read poller, which
  reads for a reader that waits: ``Connection.ready``), with no task switch;
  what it writes is flushed once the read is handled. An awaitable it
  returns is awaited by the dispatcher, before any callback after it.
- **queued**: anything else waits in a list, and a *dispatcher* task, started
  only while the list is not empty, runs it (in a worker thread for a plain
  callback when ``threads > 0``).
- **last**: ``on_close`` is queued by the session's ``end()``; if the server
  is cancelled before the dispatcher gets to it, the connection runs it
  (:meth:`CallbackQueue.ensure_on_close`).

The reader pauses (:attr:`CallbackQueue.reading_paused`) while callbacks,
or the session's own answers, pile up. The dispatcher and the writer are the
session's *helpers*: tasks in the server's connection nursery, counted here
and waited for before the socket closes (a nursery per connection would cost
every idle one 1.3 KiB).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import sansio_push as sp

from ._calls import call, call_plain, is_async, is_awaitable
from ._context import Context

log = logging.getLogger("trio_push")

# Incoming WebSocket messages waiting for on_message, and their bytes,
# past which the reader stops reading (one message is always taken: see
# docs/limits-and-timeouts.md for the arithmetic).
MAX_QUEUED_CALLBACKS = 64
MAX_QUEUED_INBOUND_BYTES = 1024 * 1024
# Callbacks that are nothing but the handler's (on_shutdown is followed by a
# close, on_close by the end): not queued when the handler has no such method.
_SKIPPABLE = frozenset(("on_message", "on_drained", "on_open", "on_subscribe_error"))

# The session's life: open, then over (the transport is done, on_close is
# queued, nothing else is), then done (its helpers have ended, and no new one
# may start). A session the server cancels goes from open to done.
OPEN, OVER, DONE = 0, 1, 2


class CallbackQueue:
    """The callbacks of one push session; the base of ``PushSession``,
    which provides ``core``, ``peer``, ``close(code, reason)`` and ``end()``.
    Event loop thread only."""

    __slots__ = (
        "ctx",
        "handler",
        "client",
        "state",
        "callback_thread",
        "_callbacks",
        "_dispatching",
        "_inline",
        "_inbound_bytes",
        "_messages_in",
        "_close_called",
        "_helpers",
        "_lot",
    )

    # Provided by the session.
    core: sp.ServerConnection
    peer: str
    close: Callable[[int, str], None]
    end: Callable[[], None]
    gap_told: Callable[[], None]

    def __init__(self, ctx: Context, handler: Any) -> None:
        self.ctx = ctx
        self.handler = handler
        #: The Client given to every callback (set by the connection).
        self.client: Any = None
        #: OPEN, OVER or DONE (see above).
        self.state = OPEN
        #: The worker thread running one of these callbacks (0: none).
        self.callback_thread = 0
        # A list, not a deque: an empty deque costs 600 bytes per connection.
        self._callbacks: list[tuple[str, tuple[Any, ...]]] = []
        # True while callbacks run: by a dispatcher task, or inline in the
        # reader (then _inline too: what it writes is sent when it returns).
        self._dispatching = False
        self._inline = False
        # Bytes of the messages queued for on_message.
        self._inbound_bytes = 0
        self._messages_in = 0
        self._close_called = False
        # Helper tasks running (a dispatcher, a writer).
        self._helpers = 0
        # Where the reader waits (for callbacks to drain) and the session's
        # end waits (for its helpers); made when first needed.
        self._lot: trio.lowlevel.ParkingLot | None = None

    # -- queueing -------------------------------------------------------------

    def queue(self, name: str, args: tuple[Any, ...] = ()) -> None:
        """Queue callback ``name``; nothing is queued once the session is over."""
        if self.state:
            return  # nothing runs after on_close
        if name in _SKIPPABLE and getattr(self.handler, name, None) is None:
            return  # a callback the handler lacks: no task to start for it
        if name == "on_message":
            self._inbound_bytes += len(args[0])
        self._append(name, args)

    def _append(self, name: str, args: tuple[Any, ...]) -> None:
        self._callbacks.append((name, args))
        if not self._dispatching:
            self._start_dispatcher()

    def message(self, data: str | bytes) -> None:
        """A message from the peer, for ``on_message``: run here when it
        keeps the order (nothing queued or running before it) and is a plain
        call on the event loop; else queued. (Not a coroutine: a reader, or
        the read poller for a reader that waits, hands messages on without
        one per message.) An awaitable that a plain ``on_message`` returns
        is awaited by the dispatcher, before what comes after it."""
        self._messages_in += 1
        counters = self.ctx.counters
        counters.messages_in += 1
        counters.bytes_in += len(data)
        fn = getattr(self.handler, "on_message", None)
        if self._dispatching or fn is None or self.ctx.limiter is not None or is_async(fn):
            self.queue("on_message", (data,))  # (none: queue() skips it)
            return
        self._dispatching = self._inline = True
        try:
            result = call_plain(fn, self.client, data, slow=self.ctx.options.slow_callback)
        except Exception:
            result = None
            self._failed("on_message")
        finally:
            self._inline = False
        if is_awaitable(result):
            self._start_dispatcher(result)
            return
        self._dispatching = False
        if self._callbacks:
            self._start_dispatcher()

    @property
    def reading_paused(self) -> bool:
        """Whether the reader should wait: callbacks pile up, or our own
        answers do (pongs to a ping flood from a peer that does not read are
        not messages, so no queue bound refuses them)."""
        core = self.core
        return (
            len(self._callbacks) > MAX_QUEUED_CALLBACKS
            or self._inbound_bytes > MAX_QUEUED_INBOUND_BYTES
            or core.pending_bytes > core.config.max_queue_bytes
        )

    async def resume_reading(self) -> None:
        """Wait while :attr:`reading_paused`, or until the session is over."""
        while self.reading_paused and not self.state:
            await self.park()

    # -- running them -----------------------------------------------------------

    def _start_dispatcher(self, first: Awaitable[Any] | None = None) -> None:
        # Once the session is done, the connection runs on_close.
        self._dispatching = self.start_helper(lambda: self._dispatch(first))
        if not self._dispatching and inspect.iscoroutine(first):
            first.close()  # nothing runs after on_close

    async def _dispatch(self, first: Awaitable[Any] | None) -> None:
        """Await ``first`` (what an inline ``on_message`` returned), then run
        queued callbacks one at a time, in order; end when none is left."""
        callbacks = self._callbacks
        try:
            if first is not None:
                try:
                    await first
                except Exception:
                    self._failed("on_message")
            while callbacks:
                name, args = callbacks.pop(0)
                if name == "on_message":
                    self._inbound_bytes -= len(args[0])
                self.unpark()
                await self._run_callback(name, args)
                if name == "on_close":
                    return
                if name == "on_shutdown":
                    self.close(sp.CloseCode.GOING_AWAY, "server shutting down")
                elif name == "on_gap":
                    self.gap_told()
        finally:
            self._dispatching = False

    async def _run_callback(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "on_close":
            if not self._close_called:
                self._close_called = True
                await self._run_on_close()
            return
        fn = getattr(self.handler, name, None)
        if fn is None:
            return
        ctx = self.ctx
        if ctx.limiter is not None and not inspect.iscoroutinefunction(fn):
            fn = self._marking_thread(fn)
        try:
            await call(fn, self.client, *args, limiter=ctx.limiter, slow=ctx.options.slow_callback)
        except Exception:
            self._failed(name)

    def _failed(self, name: str) -> None:
        """Callback ``name`` raised: log it, close with 1011."""
        self.ctx.counters.callback_errors += 1
        log.exception("error in %s.%s", type(self.handler).__name__, name)
        self.close(sp.CloseCode.INTERNAL_ERROR, "internal error")

    def _marking_thread(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, noting the worker thread it runs in as the callback's."""

        def run(*args: Any) -> Any:
            self.callback_thread = threading.get_ident()
            try:
                return fn(*args)
            finally:
                self.callback_thread = 0

        return run

    async def ensure_on_close(self) -> None:
        """Run ``on_close`` unless it has run (the server was cancelled
        before the dispatcher got to it): exactly once, shielded, within
        ``close_timeout``."""
        await self._run_callback("on_close", ())

    async def _run_on_close(self) -> None:
        """``on_close``, exactly once: shielded, so the server's cancellation
        at the end of a shutdown does not cut it short, and given until
        ``close_timeout`` after the drain's deadline (Context.close_deadline).
        A plain one that has no worker thread by then (they are busy) runs
        here, on the event loop, instead."""
        fn = getattr(self.handler, "on_close", None)
        if fn is None:
            return
        ctx = self.ctx
        options = ctx.options
        limiter = ctx.limiter
        threaded = limiter is not None and not inspect.iscoroutinefunction(fn)
        # Whoever takes it runs on_close: the worker thread, or this task
        # if the thread has not started it by the deadline.
        claim = threading.Lock()

        def claimed(client: Any) -> Any:
            return fn(client) if claim.acquire(blocking=False) else None

        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = ctx.close_deadline
                ctx.closing.add(scope)
                try:
                    await call(
                        claimed if threaded else fn,
                        self.client,
                        limiter=limiter,
                        slow=options.slow_callback,
                    )
                finally:
                    ctx.closing.discard(scope)
            if scope.cancelled_caught:
                if threaded and claim.acquire(blocking=False):
                    log.warning(
                        "%s: no worker thread free for on_close %ss after the drain;"
                        " running it on the event loop",
                        self.peer,
                        options.close_timeout,
                    )
                    await call(fn, self.client, limiter=None, slow=options.slow_callback)
                else:
                    log.warning(
                        "%s: on_close still running %ss after the drain; no longer waited for",
                        self.peer,
                        options.close_timeout,
                    )
        except Exception:
            self.ctx.counters.callback_errors += 1
            log.exception("error in %s.on_close", type(self.handler).__name__)

    # -- helper tasks -------------------------------------------------------------

    def start_helper(self, fn: Callable[[], Awaitable[None]]) -> bool:
        """Start ``fn`` as a helper task; False once the session is done."""
        if self.state == DONE:
            return False
        self._helpers += 1
        nursery = self.ctx.nursery
        assert nursery is not None
        nursery.start_soon(self._helper, fn)
        return True

    async def _helper(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except Exception:
            # A bug of ours must cost one connection, never the server.
            log.exception("%s: internal error, closing the connection", self.peer)
            self.end()
        finally:
            self._helpers -= 1
            if not self._helpers:
                self.unpark()

    async def wait_for_helpers(self) -> None:
        """Until every helper has ended, shielded (as a nursery's exit waits
        for its children; when cancelled, they are too); then the session is
        done."""
        with trio.CancelScope(shield=True):
            while self._helpers:
                await self.park()
        self.state = DONE

    def unpark(self) -> None:
        if self._lot is not None:
            self._lot.unpark_all()

    async def park(self) -> None:
        """Until :meth:`unpark` (the caller checks what it waits for)."""
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()
