"""WSGI (PEP 3333): the environ's I/O objects, and running WSGI apps.

The protocol core builds each request's environ (``sansio_push``); what it
leaves to the driver, ``wsgi.input`` and ``wsgi.errors``, and the server's
own keys are added here, by :func:`finish_environ`, for every kind of app.
A WSGI app runs through :class:`WSGIAdapter`, and accepts a push connection
through the same env keys as a push-style app.
"""

from __future__ import annotations

import inspect
import io
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import trio

import sansio_push as sp

from ._calls import in_thread
from ._proxy import TrustedProxies

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def finish_environ(
    env: dict[str, Any],
    wsgi_input: Any,
    extra: dict[str, Any],
    proxy: TrustedProxies | None = None,
) -> None:
    """Complete the core's environ: ``wsgi.input``, ``wsgi.errors``, the
    server's ``extra`` keys (``trio_push.server``, ``wsgi.multiprocess``),
    and with ``proxy`` (``proxy_headers``) the client a trusted proxy names."""
    env["wsgi.input"] = wsgi_input
    env["wsgi.errors"] = sys.stderr
    env.update(extra)
    if proxy is not None:
        proxy.apply(env)


class _EmptyInput(io.BytesIO):
    """``wsgi.input`` of a push-style request without a body: one empty,
    read-only ``BytesIO`` shared by all of them (a ``BytesIO`` of its own
    would cost every idle push connection 0.8 KiB, kept in its env)."""

    def writable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        raise io.UnsupportedOperation("wsgi.input is not writable")

    def writelines(self, lines: Any) -> None:
        raise io.UnsupportedOperation("wsgi.input is not writable")

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("wsgi.input is not writable")

    def close(self) -> None:
        """Shared: closing it would close it for every request."""


EMPTY_INPUT = _EmptyInput()


class BodyReader:
    """``wsgi.input`` for an app running in a worker thread: reads the
    request body from the event loop (``read_chunk``: the next piece, ``b""``
    at the end) as the app asks for it."""

    def __init__(self, read_chunk: Callable[[], Awaitable[bytes]]) -> None:
        self._read_chunk = read_chunk
        self._buffer = b""
        self._eof = False

    def _fill(self, size: int) -> None:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = trio.from_thread.run(self._read_chunk)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True

    def _take(self, n: int) -> bytes:
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        self._fill(size)
        return self._take(len(self._buffer) if size < 0 else size)

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        while b"\n" not in self._buffer and not self._eof and not 0 <= size <= len(self._buffer):
            self._fill(len(self._buffer) + 1)
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        return self._take(end if size < 0 else min(end, size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


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
                raise sp.LocalProtocolError("start_response() called twice without exc_info")
            started[:] = [status, headers]
            return written.append

        result = await in_thread(self.app, env, start_response, limiter=self.limiter)
        iterator = iter(result)
        first = await in_thread(next, iterator, _DONE, limiter=self.limiter)
        if not started:
            _close(result)
            raise sp.LocalProtocolError("the WSGI app returned without calling start_response()")
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
