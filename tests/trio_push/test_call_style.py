"""The call style of a handler's on_message, decided once per function
(``_dispatch._is_async``), is what ``inspect.iscoroutinefunction`` says of
every kind of callable, however often it is asked and in whatever order."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trio_push import _dispatch


def plain(client: Any, message: Any) -> None:
    pass


async def coroutine(client: Any, message: Any) -> None:
    pass


class Handler:
    def on_message(self, client: Any, message: Any) -> None:
        pass

    async def on_async(self, client: Any, message: Any) -> None:
        pass

    @staticmethod
    async def static_async(client: Any, message: Any) -> None:
        pass

    @classmethod
    def class_plain(cls, client: Any, message: Any) -> None:
        pass


class CallableObject:
    def __call__(self, client: Any, message: Any) -> None:
        pass


class AsyncCallableObject:
    async def __call__(self, client: Any, message: Any) -> None:
        pass


def made_on_the_fly(is_async: bool) -> Callable[..., Any]:
    if is_async:

        async def fn(client: Any, message: Any) -> None:
            pass

        return fn
    return lambda client, message: None


KINDS: list[Callable[[], Callable[..., Any]]] = [
    lambda: plain,
    lambda: coroutine,
    lambda: Handler().on_message,
    lambda: Handler().on_async,
    lambda: Handler.static_async,
    lambda: Handler.class_plain,
    lambda: CallableObject(),
    lambda: AsyncCallableObject(),
    lambda: functools.partial(coroutine, None),
    lambda: functools.partial(plain, None),
    lambda: made_on_the_fly(True),
    lambda: made_on_the_fly(False),
    lambda: print,
]


@given(st.lists(st.sampled_from(range(len(KINDS))), max_size=60))
def test_the_remembered_style_is_inspects(order: list[int]) -> None:
    for i in order:
        fn = KINDS[i]()
        assert _dispatch._is_async(fn) == inspect.iscoroutinefunction(fn)


def test_functions_made_on_the_fly_are_not_kept_without_bound() -> None:
    for i in range(_dispatch._ASYNC_MAX * 2):
        assert _dispatch._is_async(made_on_the_fly(i % 2 == 0)) == (i % 2 == 0)
    assert len(_dispatch._ASYNC) <= _dispatch._ASYNC_MAX
