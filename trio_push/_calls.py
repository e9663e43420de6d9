"""Calling user code: plain or ``async def``, on the event loop or in a thread."""

from __future__ import annotations

import inspect
import logging
import time
import types
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("trio_push")

# Callables already reported as slow (each is reported once).
_reported_slow: set[str] = set()
# Whether a function is ``async def``, by its code: what inspect reads of a
# plain function or method, shared by every closure made from one ``def``,
# and never freed before the module (a function or method object may be made
# anew for every call). Bounded for code made at run time.
_async: dict[types.CodeType, bool] = {}
_ASYNC_KEPT = 4096


def is_async(fn: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction(fn)``, remembered for a plain function
    or method: it is asked for every request and every callback."""
    func = getattr(fn, "__func__", fn)
    # (A function marked by inspect.markcoroutinefunction, Python 3.12, is
    # asked each time: the mark is the function's, not its code's.)
    if type(func) is not types.FunctionType or hasattr(func, "_is_coroutine_marker"):
        return inspect.iscoroutinefunction(fn)
    code = func.__code__
    answer = _async.get(code)
    if answer is None:
        answer = inspect.iscoroutinefunction(fn)
        if len(_async) < _ASYNC_KEPT:
            _async[code] = answer
    return answer


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
    if is_async(fn):
        result = fn(*args)
    elif limiter is None:
        result = call_plain(fn, *args, slow=slow)
    else:
        result = await in_thread(fn, *args, limiter=limiter)
    return await result if is_awaitable(result) else result


def call_plain(fn: Callable[..., Any], *args: Any, slow: float) -> Any:
    """``fn(*args)`` on the event loop, as :func:`call` runs a plain function
    (its result, which :func:`is_awaitable` says whether to await), for a
    caller that knows the style and need not await."""
    started = time.perf_counter()
    result = fn(*args)
    held = time.perf_counter() - started
    if held > slow:
        _report_slow(fn, held)
    return result


def is_awaitable(result: Any) -> bool:
    """``inspect.isawaitable(result)``, at once for None (a callback's usual
    answer) and a tuple (an app's): the ABC check is the slow part of a call."""
    return not (result is None or type(result) is tuple) and inspect.isawaitable(result)


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
