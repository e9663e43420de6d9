"""Server-Sent Events encoding (WHATWG HTML, "Server-sent events")."""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _field(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain a line break: {value!r}")
    return f"{name}: {value}\n"


def encode_event(
    data: str | bytes | None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event block, ending with the blank line that dispatches it.

    ``data`` is split into ``data:`` lines on ``\\r\\n``, ``\\r`` and ``\\n`` so a
    browser rebuilds it with ``\\n`` line breaks. ``bytes`` data must be UTF-8
    (else ``UnicodeDecodeError``). With ``data`` None the block has only
    the fields: a client takes its ``id`` (and ``retry``) without
    dispatching an event. Raises ``ValueError`` for a line break in
    ``event`` or ``id``, a NUL in ``id`` (browsers ignore such an id) or a
    negative ``retry``. (A connection raises these as
    :class:`~sansio_push.LocalProtocolError`, also a ``ValueError``.)
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    out = []
    if event is not None:
        out.append(_field("event", event))
    if id is not None:
        if "\0" in id:
            raise ValueError(f"SSE id must not contain NUL: {id!r}")
        out.append(_field("id", id))
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int: {retry!r}")
        out.append(f"retry: {retry}\n")
    if data is not None:
        for line in _LINE_BREAK.split(data):
            out.append(f"data: {line}\n")
    out.append("\n")
    return "".join(out).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line (ignored by clients; used as a keepalive).

    It is one line, with no blank line after it: sent between events, a
    blank line would dispatch nothing by the spec, yet some clients
    (httpx-sse) report it as an empty event once an id has been seen.
    """
    if "\r" in text or "\n" in text:
        raise ValueError(f"SSE comment must not contain a line break: {text!r}")
    return f":{text}\n".encode()
