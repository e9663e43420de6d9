"""The app's side of ASGI: the loop an ASGI app runs on, and its ``receive``/``send``.

An ASGI app runs on an *app loop*: by default an asyncio loop (uvloop's when
it is installed) in one thread of its own, so that asyncio code (asgiref and
Django, ``redis.asyncio``, asyncpg, ``asyncio.Queue``) works; with
``asgi_loop='trio'`` the app runs in the server's own Trio run (anyio apps:
Starlette, FastAPI), without the thread hop. The network side (``_asgi.py``)
always runs on Trio and keeps every bound.

:class:`AppChannel` is one scope's ``receive`` and ``send``, on the app
loop. It checks the app's messages against the protocol's order there, in
the app's task (a wrong message raises in the app, as uvicorn's and
hypercorn's do), and turns each into an *item* for the network side,
handed over with :meth:`~trio_push._loop.Loop.call` without waiting. The
network side hands events back with :meth:`AppLoop.to_app`. A hop costs a
wakeup of the other thread, so neither side waits for the other's answer
unless it must: ``send`` waits only when the bytes it handed over since the
network side last said it took them pass a window (:meth:`AppChannel.grant`),
and ``receive`` asks for the next event only when none is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._loop import Loop

log = logging.getLogger("trio_push")

# What the app's messages become for the network side (the first field of
# an item tuple).
START = "start"  # (START, status, headers)
BODY = "body"  # (BODY, data, more_body, wants_grant)
UPGRADE = "upgrade"  # (UPGRADE, handler, headers)
ACCEPT = "accept"  # (ACCEPT, subprotocol, headers)
SEND = "send"  # (SEND, data, wants_grant)
CLOSE = "close"  # (CLOSE, code, reason)
LIFESPAN = "lifespan"  # (LIFESPAN, message type, message)
DONE = "done"  # (DONE, exception or None): the app returned or raised

#: The push extension's name, and its message's type (docs/asgi.md).
UPGRADE_MESSAGE = "trio_push.upgrade"

# Events the network side hands the app, without a field that changes.
HTTP_DISCONNECT = {"type": "http.disconnect"}

# The channel's states (_HANDED: the app handed the connection to a push
# handler with trio_push.upgrade).
_WAIT, _OPEN, _DENYING, _OVER, _HANDED = 0, 1, 2, 3, 4


class ClientDisconnected(OSError):
    """Raised by an ASGI ``send`` once the client has gone (ASGI 2.4: "a
    server-specific subclass of OSError")."""


class AppLoop:
    """Where ASGI apps run: :class:`TrioAppLoop` or :class:`AsyncioAppLoop`."""

    name = ""

    def to_app(self, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` on the app loop, soon, in call order."""
        raise NotImplementedError

    def event(self) -> Any:
        """A new one-shot event of the app loop (``set()``, ``await wait()``)."""
        raise NotImplementedError

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the app loop (it reports its own end)."""
        raise NotImplementedError

    async def start(self, nursery: trio.Nursery) -> None:
        """Get ready to run apps (called in the server's run)."""

    async def stop(self, grace: float) -> None:
        """Give what still runs ``grace`` seconds to end (an app told of its
        client's end may have cleaning up to do), cancel what is left, and
        let go of the loop."""


class TrioAppLoop(AppLoop):
    """The app runs in the server's Trio run, as tasks of the server's nursery."""

    name = "trio"

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    def to_app(self, fn: Callable[..., object], *args: Any) -> None:
        fn(*args)

    def event(self) -> Any:
        return trio.Event()

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    async def stop(self, grace: float) -> None:
        nursery = self._nursery
        if nursery is None:
            return
        with trio.move_on_after(grace):
            while nursery.child_tasks:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


def _new_asyncio_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


class AsyncioAppLoop(AppLoop):
    """The app runs on an asyncio loop (uvloop's if installed) in a thread of its own."""

    name = "asyncio"

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # The tasks it runs for the server (scopes), which a stop waits for.
        self._tasks: set[asyncio.Task[None]] = set()

    def to_app(self, fn: Callable[..., object], *args: Any) -> None:
        loop = self.loop
        if loop is None:
            return  # stopped: the server is over
        with contextlib.suppress(RuntimeError):  # closed: the same
            loop.call_soon_threadsafe(fn, *args)

    def event(self) -> Any:
        return asyncio.Event()

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.to_app(self._create_task, fn, args)

    def _create_task(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        assert self.loop is not None
        task = self.loop.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, nursery: trio.Nursery) -> None:
        loop = self.loop = _new_asyncio_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="trio-push-asgi", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(ready.wait)

    async def stop(self, grace: float) -> None:
        loop = self.loop
        if loop is None or self._thread is None:
            return
        loop.call_soon_threadsafe(self._create_task, self._end, (grace,))
        await trio.to_thread.run_sync(self._thread.join)
        loop.close()
        self.loop = None

    async def _end(self, grace: float) -> None:
        """On the loop: wait for the scopes' tasks for ``grace`` seconds,
        then cancel every task left (the app's own background ones too,
        as ``asyncio.run`` does), then stop the loop."""
        loop = asyncio.get_running_loop()
        try:
            ours = self._tasks - {asyncio.current_task()}
            if ours:
                await asyncio.wait(ours, timeout=grace)
            late = asyncio.all_tasks(loop) - {asyncio.current_task()}
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        finally:
            loop.stop()


def app_loop(name: str) -> AppLoop:
    """The app loop called ``name`` (``'asyncio'`` or ``'trio'``)."""
    if name == "asyncio":
        return AsyncioAppLoop()
    if name == "trio":
        return TrioAppLoop()
    raise ValueError(f"asgi_loop must be 'asyncio' or 'trio', not {name!r}")


class AppChannel:
    """One scope's ``receive`` and ``send``, on the app loop (see the module).

    ``peer`` is the network side: its ``post(item)`` takes the app's items
    and its ``want()`` asks for the next event, both called on the server's
    loop through ``server_loop``. ``kind`` is the scope's type.
    """

    __slots__ = (
        "_kind",
        "_peer",
        "_server",
        "_app",
        "_inbox",
        "_waiter",
        "_wanted",
        "_state",
        "_gone",
        "_extensions",
        "_in_flight",
        "_messages",
        "_window",
        "_window_messages",
        "_granted",
    )

    def __init__(
        self,
        kind: str,
        peer: Any,
        server_loop: Loop,
        app: AppLoop,
        window: int,
        window_messages: int,
        extensions: frozenset[str] = frozenset(),
    ) -> None:
        self._kind = kind
        self._peer = peer
        self._server = server_loop
        self._app = app
        self._inbox: deque[tuple[dict[str, Any], bool]] = deque()
        self._waiter: Any = None
        self._wanted = 0
        self._state = _WAIT
        #: The event the client's end gave (it has gone): sends raise, and
        #: receive gives this once its queue is empty.
        self._gone: dict[str, Any] | None = None
        self._extensions = extensions
        # Bytes and messages handed over since the last grant, and the
        # window past which send waits for the next one.
        self._in_flight = 0
        self._messages = 0
        self._window = window
        self._window_messages = window_messages
        self._granted: Any = None

    # -- from the network side (on the app loop) ------------------------------

    def deliver(self, event: dict[str, Any], resume: bool = False) -> None:
        """Queue ``event`` for ``receive``; with ``resume``, tell the network
        side once the app has taken it (it waits to read on)."""
        if self._wanted:
            self._wanted -= 1
        self._inbox.append((event, resume))
        self.wake()

    def gone(self, event: dict[str, Any]) -> None:
        """The client has gone (``event``: the disconnect receive gives)."""
        if self._gone is None:
            self._gone = event
        self.grant()
        self.wake()

    def grant(self) -> None:
        """The network side took what was handed over: send goes on."""
        self._in_flight = self._messages = 0
        granted, self._granted = self._granted, None
        if granted is not None:
            granted.set()

    def wake(self) -> None:
        """Have a waiting ``receive`` look again (the response is complete)."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()

    # -- receive ---------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while True:
            if self._state == _HANDED or (self._state == _OVER and self._kind == "http"):
                # The response is complete (what is left of the body is not
                # the app's any more, as with uvicorn), or the connection is
                # a push handler's.
                return self._disconnect_event(1000)
            if self._inbox:
                event, resume = self._inbox.popleft()
                if resume:
                    self._server.call(self._peer.resume)
                return event
            if self._gone is not None:
                return self._gone
            if not self._wanted:
                self._wanted += 1
                if not self._server.call(self._peer.want):
                    return self._disconnect_event()
            # Concurrent receives (rare) wait on the same event.
            waiter = self._waiter = self._waiter or self._app.event()
            await waiter.wait()

    def _disconnect_event(self, code: int = 1006) -> dict[str, Any]:
        if self._kind == "websocket":
            return {"type": "websocket.disconnect", "code": code, "reason": ""}
        return HTTP_DISCONNECT

    # -- send --------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self._kind == "lifespan":
            self._post((LIFESPAN, kind, message))
            return
        if self._gone is not None:
            raise ClientDisconnected(f"the client has gone: {kind!r} not sent")
        item = self._item(kind, message)
        if item[0] in (BODY, SEND):
            size = len(item[1])
            self._in_flight += size
            self._messages += 1
            if self._in_flight > self._window or self._messages >= self._window_messages:
                granted = self._granted = self._app.event()
                self._post((*item[:-1], True))
                await granted.wait()
                if self._gone is not None:
                    raise ClientDisconnected(f"the client has gone: {kind!r} may be lost")
                return
        self._post(item)

    def _post(self, item: tuple[Any, ...]) -> None:
        if not self._server.call(self._peer.post, item):
            raise ClientDisconnected("the server has stopped")

    def _item(self, kind: str, message: dict[str, Any]) -> tuple[Any, ...]:
        """The item for ``message``, if the protocol allows it now; else
        raise ``RuntimeError`` (as uvicorn and hypercorn do)."""
        state = self._state
        if kind == UPGRADE_MESSAGE and state == _WAIT and UPGRADE_MESSAGE in self._extensions:
            self._state = _HANDED
            return (UPGRADE, message["handler"], list(message.get("headers", ())))
        if self._kind == "http":
            if kind == "http.response.start" and state == _WAIT:
                self._state = _OPEN
                return (START, int(message["status"]), list(message.get("headers", ())))
            if kind == "http.response.body" and state == _OPEN:
                return self._body(message)
        elif state == _WAIT:
            if kind == "websocket.accept":
                self._state = _OPEN
                return (ACCEPT, message.get("subprotocol"), list(message.get("headers", ())))
            if kind == "websocket.close":
                self._state = _OVER
                return (CLOSE, message.get("code", 1000), message.get("reason") or "")
            if kind == "websocket.http.response.start":
                self._state = _DENYING
                return (START, int(message["status"]), list(message.get("headers", ())))
        elif state == _OPEN:
            if kind == "websocket.send":
                return (SEND, _ws_data(message), False)
            if kind == "websocket.close":
                self._state = _OVER
                return (CLOSE, message.get("code", 1000), message.get("reason") or "")
        elif state == _DENYING and kind == "websocket.http.response.body":
            return self._body(message)
        raise RuntimeError(f"unexpected ASGI message {kind!r} {_WHEN[state]}")

    def _body(self, message: dict[str, Any]) -> tuple[Any, ...]:
        more = bool(message.get("more_body", False))
        if not more:
            self._state = _OVER
        return (BODY, bytes(message.get("body", b"")), more, False)


_WHEN = {
    _WAIT: "before the response started",
    _OPEN: "in this state",
    _DENYING: "while sending the denial response",
    _OVER: "after the response completed (or the connection closed)",
    _HANDED: "after trio_push.upgrade",
}


def _ws_data(message: dict[str, Any]) -> str | bytes:
    data = message.get("bytes")
    text = message.get("text")
    if (data is None) == (text is None):
        raise RuntimeError("websocket.send needs exactly one of 'bytes' and 'text'")
    if text is not None:
        return str(text)
    assert data is not None
    return bytes(data)


async def run_app(app: Any, scope: dict[str, Any], channel: AppChannel, peer: Any) -> None:
    """The app for ``scope``, on the app loop; its end (an exception, or
    None) is posted to the network side as ``(DONE, exc)``."""
    error: BaseException | None = None
    try:
        await app(scope, channel.receive, channel.send)
    except BaseException as exc:  # reported to the network side, which logs it
        error = exc
        if not isinstance(exc, Exception):
            raise
    finally:
        channel._server.call(peer.post, (DONE, error))
