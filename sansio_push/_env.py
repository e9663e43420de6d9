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


# What most requests carry, decoded once: a request's strings are most of
# the work of its environ.
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH")}
_PROTOCOLS = {b"1.1": "HTTP/1.1", b"1.0": "HTTP/1.0", b"2": "HTTP/2"}
# A header name -> its environ key ("" for a name that is dropped). The
# names are the clients', so only the first short ones seen are kept.
_KEYS = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_KEYS_KEPT = 512


def _env_key(name: bytes) -> str:
    """The environ key of the header ``name`` (lower-case)."""
    # X_Foo would become HTTP_X_FOO like X-Foo: drop it, so a client cannot
    # pass off a header a proxy in front of us has set.
    key = "" if b"_" in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_KEYS) < _KEYS_KEPT and len(name) <= 64:
        _KEYS[name] = key
    return key


def env_base(
    server: tuple[str, int] | None, client: tuple[str, int] | None, scheme: str
) -> dict[str, Any]:
    """What every environ of a connection has, whatever the request: made
    once per connection, copied for each request (:func:`build_env`)."""
    base: dict[str, Any] = {
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if server is not None:
        base["SERVER_NAME"], base["SERVER_PORT"] = server[0], str(server[1])
    else:
        base["SERVER_NAME"], base["SERVER_PORT"] = "", ""
    if client is not None:
        base["REMOTE_ADDR"], base["REMOTE_PORT"] = client[0], str(client[1])
    return base


def build_env(request: RequestHead, *, kind: str | None, base: dict[str, Any]) -> dict[str, Any]:
    """The PEP 3333 environ for ``request`` plus ``rack.upgrade?``: the
    connection's ``base`` (:func:`env_base`) and the request's keys.

    ``wsgi.input`` and ``wsgi.errors`` are I/O objects, so the driver adds
    them. ``PATH_INFO`` is percent-decoded and carried as latin-1, as PEP 3333
    asks. ``CONTENT_TYPE`` and ``CONTENT_LENGTH`` come from their headers (the
    last one, if repeated); every other header is ``HTTP_`` and its name, a
    repeated one's values joined.
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
    method = request.method
    version = request.http_version
    env = base.copy()
    env["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("ascii")
    env["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    env["QUERY_STRING"] = query.decode("latin-1")
    env["RAW_URI"] = target.decode("latin-1")
    env["SERVER_PROTOCOL"] = _PROTOCOLS.get(version) or "HTTP/" + version.decode("ascii")
    env["rack.upgrade?"] = kind
    for name, value in request.headers:
        key = _KEYS.get(name)
        if key is None:
            key = _env_key(name)
        if not key:
            continue
        text = value.decode("latin-1")
        old = env.get(key)
        if old is None or key[0] == "C":  # CONTENT_TYPE, CONTENT_LENGTH: the last one
            env[key] = text
        else:
            env[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + text
    if authority is not None:
        env["HTTP_HOST"] = authority.decode("latin-1")
    return env
