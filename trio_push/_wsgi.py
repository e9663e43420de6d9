"""Running WSGI (PEP 3333) apps, with push through the same env keys."""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import trio

from ._calls import in_thread

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def is_wsgi(app: Any) -> bool:
    """True when ``app`` takes ``(environ, start_response)``.

    A push-style app takes one argument (or has a ``call(env)`` method).
    """
    if callable(getattr(app, "call", None)):
        return False
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 2 or (
        len(positional) < 2 and any(p.kind is p.VAR_POSITIONAL for p in params)
    )


class WSGIAdapter:
    """Wraps a WSGI app as an async push-style app.

    The app, and every ``next()`` on the iterable it returns, run in worker
    threads bounded by ``limiter``; each chunk is sent as it is produced.
    ``write()`` from ``start_response`` buffers, and what it buffered goes
    out ahead of the iterable. ``close()`` is called on the result, whatever
    happens. A view accepts a push connection as a push-style app does: it
    sets ``environ['rack.upgrade'] = handler`` and returns a 2xx.
    """

    def __init__(self, app: WSGIApp, limiter: trio.CapacityLimiter) -> None:
        self.app = app
        self.limiter = limiter

    def __repr__(self) -> str:
        return f"WSGIAdapter({self.app!r})"

    async def __call__(self, env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], Any]:
        started: list[Any] = []
        written: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None:
                try:
                    if written:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif started:
                raise AssertionError("start_response() called twice without exc_info")
            started[:] = [status, headers]
            return written.append

        env.setdefault("wsgi.errors", sys.stderr)
        env["wsgi.multithread"] = True
        result = await in_thread(self.app, env, start_response, limiter=self.limiter)
        iterator = iter(result)
        first = await in_thread(next, iterator, _DONE, limiter=self.limiter)
        if not started:
            _close(result)
            raise RuntimeError("the WSGI app returned without calling start_response()")
        status_line, headers = started
        status = int(status_line.split(" ", 1)[0])
        return status, headers, self._body(result, iterator, written, first)

    async def _body(
        self, result: Any, iterator: Any, written: list[bytes], first: Any
    ) -> AsyncIterator[bytes]:
        try:
            for data in written:
                yield data
            chunk = first
            while chunk is not _DONE:
                if chunk:
                    yield chunk
                chunk = await in_thread(next, iterator, _DONE, limiter=self.limiter)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_close, result, limiter=self.limiter)


_DONE = object()


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()
