"""Calling user code (trio_push/_calls.py): the call style remembered per
function answers as ``inspect`` does every time, and ``call`` awaits exactly
what is awaitable."""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_push import _calls
from trio_push._calls import call, is_async


def plain(x: Any = None) -> Any:
    return x


async def coro(x: Any = None) -> Any:
    return x


async def agen(x: Any = None) -> Any:
    yield x


class Handler:
    def on_message(self, x: Any = None) -> Any:
        return x

    async def on_open(self, x: Any = None) -> Any:
        return x

    @staticmethod
    async def static(x: Any = None) -> Any:
        return x

    @classmethod
    def klass(cls, x: Any = None) -> Any:
        return x


class AsyncCallable:
    async def __call__(self, x: Any = None) -> Any:
        return x


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self, x: Any = None) -> Any:
        return x


def closures() -> list[Any]:
    n = 1

    def sync_closure(x: Any = None) -> Any:
        return x, n

    async def async_closure(x: Any = None) -> Any:
        return x, n

    return [sync_closure, async_closure]


def callables() -> list[Any]:
    handler = Handler()
    found = [
        plain,
        coro,
        agen,
        lambda x=None: x,
        handler.on_message,
        handler.on_open,
        Handler.on_open,
        handler.static,
        handler.klass,
        functools.partial(coro, 1),
        functools.partial(plain, 1),
        AsyncCallable(),
        Unhashable(),
        len,
        Handler,
        *closures(),
    ]
    if sys.version_info >= (3, 12):

        def marked(x: Any = None) -> Any:
            return coro(x)

        found.append(inspect.markcoroutinefunction(marked))  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize("fn", callables(), ids=repr)
def test_the_remembered_call_style_is_what_inspect_says_every_time(fn: Any) -> None:
    expected = inspect.iscoroutinefunction(fn)
    assert [is_async(fn) for _ in range(3)] == [expected] * 3


async def test_call_awaits_what_is_awaitable_and_only_that() -> None:
    async def later() -> str:
        return "awaited"

    def returns_awaitable() -> Any:
        return later()

    answer = (200, [], b"")
    assert await call(plain, answer, limiter=None) is answer
    assert await call(plain, None, limiter=None) is None
    assert await call(coro, answer, limiter=None) is answer
    assert await call(returns_awaitable, limiter=None) == "awaited"
    assert await call(Handler().on_open, [1], limiter=None) == [1]


@given(st.lists(st.integers(0, 100), max_size=60))
def test_asked_in_any_order_the_answers_stay_inspects(order: list[int]) -> None:
    found = callables()
    for i in order:
        fn = found[i % len(found)]
        assert is_async(fn) == inspect.iscoroutinefunction(fn)


def test_functions_made_on_the_fly_share_one_answer_and_keep_nothing() -> None:
    kept = len(_calls._async)
    for _ in range(3000):
        for fn in closures():
            assert is_async(fn) == inspect.iscoroutinefunction(fn)
    assert len(_calls._async) <= kept + 2  # one code object for each def
