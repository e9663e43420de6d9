"""The app contract: what an app returns, made into a response.

An app returns ``(status, headers, body)``. :func:`normalize` checks that
shape and makes the headers a list of pairs. A body is *fixed* (``None``,
bytes, str, or a list or tuple of them: :func:`fixed_body`, sent with a
``Content-Length``, :func:`with_length`) or *streamed* (any other iterable,
or an async iterable: sent as produced, in chunks); :func:`close_body`
closes it afterwards, as PEP 3333 asks. An answer that breaks the contract
raises :class:`AppError`, which the server answers with a 500 while it can.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Iterable
from typing import Any

import trio

import sansio_push as sp

from ._calls import in_thread

# Statuses whose responses have no body (RFC 9110 6.4.1).
NO_BODY = (204, 304)


class AppError(sp.LocalProtocolError):
    """The app returned something that is not a response."""


def normalize(result: Any) -> tuple[int, list[tuple[str, str]], Any]:
    """``(status, headers, body)`` with the headers as a list of pairs (a
    Rack-style ``Set-Cookie`` value with newlines is several headers)."""
    try:
        status, headers, body = result
    except (TypeError, ValueError):
        raise AppError(f"the app must return (status, headers, body), not {result!r}") from None
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    expanded: list[tuple[str, str]] = []
    for pair in pairs:
        name, value = pair
        if type(value) is str and "\n" not in value and type(pair) is tuple:
            expanded.append(pair)  # (most headers: kept as they are)
        elif isinstance(value, str) and "\n" in value and name.lower() == "set-cookie":
            expanded += [(name, v) for v in value.split("\n")]
        else:
            expanded.append((name, value if isinstance(value, (str, bytes)) else str(value)))
    return int(status), expanded, body


def is_body(body: Any) -> bool:
    """Whether ``body`` is something a response can send."""
    return body is None or isinstance(
        body, (bytes, str, bytearray, memoryview, Iterable, AsyncIterable)
    )


def fixed_body(body: Any) -> bytes | None:
    """The body as bytes if it is not a stream, else None."""
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, (list, tuple)):
        return b"".join(as_bytes(p) for p in body)
    return None


def as_bytes(chunk: Any) -> bytes:
    """A piece of a body as bytes (str as UTF-8)."""
    return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


def with_length(
    headers: list[tuple[str, str]], length: int, *, head: bool = False
) -> list[tuple[str, str]]:
    """``headers`` with ``Content-Length``, checked against the body if the
    app set one (a mismatch is the app's error, answered 500 while we can).
    For ``head`` (a HEAD request) the app's own length is kept unchecked: it
    may give GET's length and no body."""
    for name, value in headers:
        lower = name.lower() if isinstance(name, str) else name.decode("latin-1").lower()
        if lower == "transfer-encoding":
            return headers
        if lower == "content-length":
            if int(value) != length and not head:
                raise AppError(f"Content-Length {value} but the body has {length} bytes")
            return headers
    return [*headers, ("content-length", str(length))]


async def close_body(body: Any, limiter: trio.CapacityLimiter | None = None) -> None:
    """Close a response body that has ``aclose()`` or ``close()`` (PEP 3333);
    a plain ``close()`` in the pool when there is one, as the body's rows."""
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(body, "close", None)
    if close is not None:
        if limiter is None:
            result = close()
            if inspect.isawaitable(result):
                await result
        else:
            await in_thread(close, limiter=limiter)
