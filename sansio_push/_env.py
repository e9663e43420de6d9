"""The one place a PEP 3333 environ is built, from a request head."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes


class RequestHead(Protocol):
    """What :func:`build_env` reads of a request head: an ``h11.Request``,
    or the simple-head reader's ``SimpleRequest`` (header names lower-case)."""

    @property
    def method(self) -> bytes: ...

    @property
    def target(self) -> bytes: ...

    @property
    def http_version(self) -> bytes: ...

    @property
    def headers(self) -> Iterable[tuple[bytes, bytes]]: ...


def build_env(
    request: RequestHead,
    *,
    kind: str | None,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    scheme: str,
) -> dict[str, Any]:
    """The PEP 3333 environ for ``request`` plus ``rack.upgrade?``.

    ``wsgi.input`` and ``wsgi.errors`` are I/O objects, so the driver adds
    them. ``PATH_INFO`` is percent-decoded and carried as latin-1, as PEP 3333
    asks.
    """
    target = request.target
    # A fragment is the client's own (RFC 9110 4.2.5), not part of the path
    # or query; a client should not send one, a raw one may.
    path, _, query = target.partition(b"#")[0].partition(b"?")
    authority = None
    if path.startswith(b"http://") or path.startswith(b"https://"):
        # Absolute form (RFC 9112 3.2.2): keep only the path; the host is the
        # target's, whatever the Host header says (set after the headers).
        authority, _, path = path.partition(b"//")[2].partition(b"/")
        path = b"/" + path
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": target.decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "rack.upgrade?": kind,
    }
    for name, value in request.headers:
        if name == b"content-type":
            env["CONTENT_TYPE"] = value.decode("latin-1")
            continue
        if name == b"content-length":
            env["CONTENT_LENGTH"] = value.decode("latin-1")
            continue
        if b"_" in name:
            # X_Foo would become HTTP_X_FOO like X-Foo: drop it, so a client
            # cannot pass off a header a proxy in front of us has set.
            continue
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        old = env.get(key)
        if old is None:
            env[key] = text
        else:
            env[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + text
    if authority is not None:
        env["HTTP_HOST"] = authority.decode("latin-1")
    if server is not None:
        env["SERVER_NAME"], env["SERVER_PORT"] = server[0], str(server[1])
    else:
        env["SERVER_NAME"], env["SERVER_PORT"] = "", ""
    if client is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = client[0], str(client[1])
    return env
