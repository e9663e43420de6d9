"""Calling user code: plain or ``async def``, on the event loop or in a thread."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import trio


async def call(fn: Callable[..., Any], *args: Any, limiter: trio.CapacityLimiter | None) -> Any:
    """Call ``fn(*args)`` and return its result.

    ``async def`` functions (and callables returning an awaitable) are awaited
    on the event loop. Plain functions run on the event loop when ``limiter``
    is None, else in a worker thread bounded by it.
    """
    if inspect.iscoroutinefunction(fn) or limiter is None:
        result = fn(*args)
    else:
        result = await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    if inspect.isawaitable(result):
        result = await result
    return result


def app_callable(app: Any) -> Callable[..., Any]:
    """The callable behind an app: its ``call`` method, or the app itself."""
    method = getattr(app, "call", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(app):
        return app  # type: ignore[no-any-return]
    raise TypeError(f"{app!r} is not an app: it has no call(env) method and is not callable")
