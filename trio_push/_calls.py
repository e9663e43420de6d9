"""Calling user code: plain or ``async def``, on the event loop or in a thread."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("trio_push")

# Callables already reported as slow (each is reported once).
_reported_slow: set[str] = set()


async def call(
    fn: Callable[..., Any],
    *args: Any,
    limiter: trio.CapacityLimiter | None,
    slow: float = 0.25,
) -> Any:
    """Call ``fn(*args)`` and return its result.

    ``async def`` functions (and callables returning an awaitable) are awaited
    on the event loop. Plain functions run on the event loop when ``limiter``
    is None, else in a worker thread bounded by it. A plain function that
    holds the event loop longer than ``slow`` seconds is logged, once.

    Cancelled while ``fn`` runs in a thread, the call returns at once (see
    :func:`in_thread`).
    """
    if inspect.iscoroutinefunction(fn):
        result = fn(*args)
    elif limiter is None:
        started = time.perf_counter()
        result = fn(*args)
        held = time.perf_counter() - started
        if held > slow:
            _report_slow(fn, held)
    else:
        result = await in_thread(fn, *args, limiter=limiter)
    if inspect.isawaitable(result):
        result = await result
    return result


async def in_thread(fn: Callable[..., Any], *args: Any, limiter: trio.CapacityLimiter) -> Any:
    """``fn(*args)`` in a worker thread bounded by ``limiter``.

    Cancelled meanwhile, it returns at once: a thread cannot be cancelled,
    so it is abandoned (it runs on, and what it returns is dropped). The
    server is cancelled only once its shutdown's bound has passed, so an
    answer computed after that is never sent.
    """
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter, abandon_on_cancel=True)


def _report_slow(fn: Callable[..., Any], held: float) -> None:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if name not in _reported_slow:
        _reported_slow.add(name)
        log.warning(
            "%s held the event loop for %.2fs; make it async def, or run the "
            "server with threads > 0 (reported once)",
            name,
            held,
        )


def app_callable(app: Any) -> Callable[..., Any]:
    """The callable behind an app: its ``call`` method, or the app itself."""
    method = getattr(app, "call", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(app):
        return app  # type: ignore[no-any-return]
    raise TypeError(f"{app!r} is not an app: it has no call(env) method and is not callable")
