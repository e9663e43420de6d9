"""Fixtures shared by the tests: servers, Redis, TLS, an app for the CLI.

``start_server`` and ``serve_scope`` run the server in the test's own Trio
run (pytest-trio's ``nursery`` fixture) on 127.0.0.1, port 0. Helpers that
are not fixtures live in ``tests.helpers``.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import trio_push
from tests.helpers.procs import APP_SOURCE
from tests.helpers.pubsub import RedisServer, ServerProcess
from tests.helpers.server import FAST, TIMEOUT

StartServer = Callable[..., Awaitable[trio_push.Server]]


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> StartServer:
    """``await start_server(app, **kwargs)``: serve ``app`` on 127.0.0.1:0
    until the test ends; returns the :class:`trio_push.Server`."""

    async def start(app: Any, **kwargs: Any) -> trio_push.Server:
        for key, value in FAST.items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("host", "127.0.0.1")
        with trio.fail_after(TIMEOUT):
            serve = functools.partial(trio_push.serve, app, 0, **kwargs)
            return await nursery.start(serve)  # type: ignore[no-any-return]

    return start


@pytest.fixture
async def serve_scope(nursery: trio.Nursery) -> Callable[..., Awaitable[Any]]:
    """``server, scope = await serve_scope(app, **kw)``: like ``start_server``
    but serve runs in a cancel scope of its own, so a test can cancel it and
    wait for serve to return (``await done.wait()``)."""

    async def start(
        app: Any, **kwargs: Any
    ) -> tuple[trio_push.Server, trio.CancelScope, trio.Event]:
        for key, value in FAST.items():
            kwargs.setdefault(key, value)
        done = trio.Event()
        scope = trio.CancelScope()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await trio_push.serve(app, 0, task_status=task_status, **kwargs)
            finally:
                done.set()

        with trio.fail_after(TIMEOUT):
            server = await nursery.start(run)
        return server, scope, done

    return start


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Server processes a test starts (append them): stopped at its end."""
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A throwaway ``redis-server`` on a free port, killed after the test."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority of the tests' own (trustme)."""
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server's TLS context, with a certificate from ``ca`` for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client's TLS context that trusts ``ca``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A folder with ``pushapp.py`` (``APP_SOURCE``) to run the CLI in."""
    (tmp_path / "pushapp.py").write_text(APP_SOURCE)
    return tmp_path
