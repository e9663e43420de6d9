"""The PEP 3333 environ built from a request head."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sansio_wire import env_of, request

from sansio_push import Config
from sansio_push._env import build_env, env_base
from sansio_push._http_fast import SimpleRequest


def test_env_has_the_pep_3333_keys() -> None:
    env = env_of(request("POST", "/a/b?x=1&y=2", [("Content-Type", "text/plain")], b"hi"))
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "9292"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "5000"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "2"
    assert env["HTTP_HOST"] == "example.com"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multiprocess"] is False and env["wsgi.run_once"] is False
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_env_values_are_native_strings() -> None:
    env = env_of(request("GET", "/x", [("X-Thing", "v")]))
    for key, value in env.items():
        if key.isupper():
            assert isinstance(value, str), key


def test_path_info_is_percent_decoded_as_latin_1() -> None:
    env = env_of(request("GET", "/caf%C3%A9%20x?q=%20"))
    assert env["PATH_INFO"] == "/caf\xc3\xa9 x"
    assert env["QUERY_STRING"] == "q=%20"


def test_absolute_form_target_keeps_only_the_path() -> None:
    env = env_of(request("GET", "http://example.com/p/q?z=1"))
    assert env["PATH_INFO"] == "/p/q" and env["QUERY_STRING"] == "z=1"


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a%20b#frag", "/a b", ""),
        ("/p?q=1#f", "/p", "q=1"),
        ("/p#f?q=1", "/p", ""),
        ("http://h/p?q#f", "/p", "q"),
    ],
)
def test_fragment_is_not_part_of_path_or_query(target: str, path: str, query: str) -> None:
    env = env_of(request("GET", target))
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["RAW_URI"]) == (path, query, target)


@pytest.mark.parametrize(
    ("target", "host", "path", "query"),
    [
        ("http://other.example:8080/p?z=1", "other.example:8080", "/p", "z=1"),
        ("https://other.example", "other.example", "/", ""),
        ("http://other.example?z=1", "other.example", "/", "z=1"),
    ],
)
def test_absolute_form_host_wins_over_the_host_header(
    target: str, host: str, path: str, query: str
) -> None:
    env = env_of(request("GET", target))  # Host: example.com
    assert (env["HTTP_HOST"], env["PATH_INFO"], env["QUERY_STRING"]) == (host, path, query)


def test_url_scheme_comes_from_config() -> None:
    assert env_of(request(), Config(scheme="https"))["wsgi.url_scheme"] == "https"


def test_repeated_headers_are_joined_with_commas() -> None:
    env = env_of(request("GET", "/", [("X-A", "1"), ("X-A", "2")]))
    assert env["HTTP_X_A"] == "1, 2"


def test_headers_with_underscores_are_dropped_so_they_cannot_pass_for_dashed_ones() -> None:
    env = env_of(request("GET", "/", [("X_Forwarded_For", "6.6.6.6"), ("X-Real", "1")]))
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["HTTP_X_REAL"] == "1"


def test_repeated_cookie_headers_are_joined_with_semicolons() -> None:
    env = env_of(request("GET", "/", [("Cookie", "a=1"), ("Cookie", "b=2")]))
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def reference_env(
    request: Any,
    *,
    kind: str | None,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    scheme: str,
) -> dict[str, Any]:
    """The environ as PEP 3333 words it, one header at a time (what
    build_env computed before it kept decoded strings)."""
    path, _, query = request.target.partition(b"#")[0].partition(b"?")
    authority = None
    if path.startswith(b"http://") or path.startswith(b"https://"):
        authority, _, path = path.partition(b"//")[2].partition(b"/")
        path = b"/" + path
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": request.target.decode("latin-1"),
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
        elif name == b"content-length":
            env["CONTENT_LENGTH"] = value.decode("latin-1")
        elif b"_" not in name:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            old = env.get(key)
            sep = "; " if key == "HTTP_COOKIE" else ", "
            env[key] = text if old is None else old + sep + text
    if authority is not None:
        env["HTTP_HOST"] = authority.decode("latin-1")
    env["SERVER_NAME"], env["SERVER_PORT"] = (server[0], str(server[1])) if server else ("", "")
    if client is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = client[0], str(client[1])
    return env


_TARGET_PIECE = st.sampled_from(
    [b"/", b"a", b"%20", b"%C3%A9", b"%", b"?", b"#", b"=", b"&", b"http://h", b"https://", b"\xe9"]
)
_HEADER_NAME = st.sampled_from(
    [b"host", b"content-type", b"content-length", b"cookie", b"x-a", b"x_a", b"accept", b"a" * 70]
)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PROPFIND", b"M-SEARCH"]),
    st.lists(_TARGET_PIECE, max_size=6).map(b"".join),
    st.sampled_from([b"1.1", b"1.0", b"2", b"0.9"]),
    st.lists(st.tuples(_HEADER_NAME, st.binary(max_size=6)), max_size=6),
    st.sampled_from([None, "websocket", "sse"]),
    st.sampled_from([None, ("127.0.0.1", 80)]),
    st.sampled_from([None, ("::1", 5000)]),
    st.sampled_from(["http", "https"]),
)
def test_build_env_is_the_environ_pep_3333_words(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    kind: str | None,
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    scheme: str,
) -> None:
    head = SimpleRequest(method, target, headers, version)
    expected = reference_env(head, kind=kind, server=server, client=client, scheme=scheme)
    base = env_base(server, client, scheme)
    assert build_env(head, kind=kind, base=base) == expected
    assert build_env(head, kind=kind, base=base) == expected  # names now remembered
    assert base == env_base(server, client, scheme)  # copied, not changed
