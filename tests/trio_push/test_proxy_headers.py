"""``proxy_headers`` / ``--proxy-headers``: the client's address and scheme
from ``X-Forwarded-For``/``X-Forwarded-Proto`` and ``Forwarded``, honoured
only from the peers in ``forwarded_allow_ips``, over HTTP/1.1 (httpx) and
HTTP/2 (curl), for plain requests and push clients (SSE, WebSocket), in
process and under the CLI; then the chain rules, case by case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from httpx_sse import aconnect_sse

from tests.apps import env_app
from tests.helpers.procs import APPS, MODULE, cli, run_cli
from tests.helpers.server import TIMEOUT, http_client, in_thread, ws_connect
from trio_push._proxy import TrustedProxies

#: What a proxy sends: the client 203.0.113.7 reached it over TLS.
XFF = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
#: The same in RFC 7239's words, with the client's port.
FORWARDED = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https;by=unknown'}


async def _get_env(url: str, headers: dict[str, str]) -> dict[str, Any]:
    async with http_client() as http:
        response = await http.get(url, headers=headers)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def _sse_env(url: str, headers: dict[str, str]) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", url, headers=dict(headers)) as sse,
        ):
            async for event in sse.aiter_sse():
                result: dict[str, Any] = json.loads(event.data)
                return result
    raise AssertionError("the event stream ended without a message")


def _ws_env(url: str, headers: dict[str, str]) -> dict[str, Any]:
    with ws_connect(url, additional_headers=headers) as ws:
        result: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        return result


async def _curl_h2(url: str, headers: dict[str, str]) -> str:
    args = ["curl", "-sS", "--http2-prior-knowledge", "-w", "\\n%{http_version}"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process([*args, url], capture_stdout=True)
    body, version = done.stdout.decode().rsplit("\n", 1)
    assert version == "2"
    return str(body)


async def _curl_h2_env(url: str, headers: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await _curl_h2(url, headers))
    assert result["SERVER_PROTOCOL"] == "HTTP/2"
    return result


async def _curl_h2_sse_env(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """A push client's env over HTTP/2: an event stream the app closes after
    its first event (``?once``), read to its end."""
    body = await _curl_h2(url + "?once", {**headers, "Accept": "text/event-stream"})
    data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    result: dict[str, Any] = json.loads("".join(data))
    assert result["SERVER_PROTOCOL"] == "HTTP/2"
    return result


async def test_trusted_peer_names_the_client_over_http1_h2_sse_and_websocket(
    start_server: Any,
) -> None:
    # The default forwarded_allow_ips is 127.0.0.1: the test's clients.
    server = await start_server(env_app.app, proxy_headers=True)
    url = f"http://127.0.0.1:{server.port}/"
    for headers, address, port in ((XFF, "203.0.113.7", "0"), (FORWARDED, "2001:db8::7", "4711")):
        for env in (
            await _get_env(url, headers),
            await _curl_h2_env(url, headers),
            await _sse_env(url, headers),
            await _curl_h2_sse_env(url, headers),
            await in_thread(_ws_env, f"ws://127.0.0.1:{server.port}/", headers),
        ):
            assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (address, port), env
            assert env["wsgi.url_scheme"] == "https", env


async def test_untrusted_peer_is_not_believed(start_server: Any) -> None:
    server = await start_server(
        env_app.app, proxy_headers=True, forwarded_allow_ips="10.0.0.1, 192.168.0.0/16"
    )
    url = f"http://127.0.0.1:{server.port}/"
    for headers in (XFF, FORWARDED):
        for env in (
            await _get_env(url, headers),
            await _curl_h2_env(url, headers),
            await _sse_env(url, headers),
            await _curl_h2_sse_env(url, headers),
            await in_thread(_ws_env, f"ws://127.0.0.1:{server.port}/", headers),
        ):
            assert env["REMOTE_ADDR"] == "127.0.0.1", env
            assert env["REMOTE_PORT"] not in ("0", "4711"), env
            assert env["wsgi.url_scheme"] == "http", env
    # The headers themselves are left for the app to see.
    assert (await _get_env(url, XFF))["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"


async def test_off_by_default(start_server: Any) -> None:
    server = await start_server(env_app.app)
    env = await _get_env(f"http://127.0.0.1:{server.port}/", XFF)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


async def test_cli_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(APPS / "env_app.py", tmp_path)
    async with cli(MODULE, tmp_path, "env_app:app", "--proxy-headers") as server:
        env = await _get_env(server.url + "/", XFF)
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")
    flags = ("--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8")
    async with cli(MODULE, tmp_path, "env_app:app", *flags) as server:
        env = await _get_env(server.url + "/", XFF)
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    # Without --forwarded-allow-ips: $FORWARDED_ALLOW_IPS, as uvicorn.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.1.1")
    async with cli(MODULE, tmp_path, "env_app:app", "--proxy-headers") as server:
        env = await _get_env(server.url + "/", XFF)
        assert env["REMOTE_ADDR"] == "127.0.0.1"


async def test_cli_refuses_a_bad_address(tmp_path: Path) -> None:
    shutil.copy(APPS / "env_app.py", tmp_path)
    done = await run_cli(
        MODULE, tmp_path, "env_app:app", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.300"
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "trio-push: --forwarded-allow-ips: '10.0.0.300' is not an address, a network, '*' or 'unix'"
    ]


# -- the rules, case by case ---------------------------------------------------------


def _apply(allow: str, peer: str | None, **headers: str) -> tuple[Any, Any, Any]:
    env: dict[str, Any] = {"wsgi.url_scheme": "http"}
    if peer is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = peer, "5000"
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    TrustedProxies(allow).apply(env)
    return env.get("REMOTE_ADDR"), env.get("REMOTE_PORT"), env["wsgi.url_scheme"]


@pytest.mark.parametrize(
    ("allow", "peer", "headers", "expected"),
    [
        # The right-most address that is not a trusted proxy is the client;
        # what is left of it may be the client's invention.
        (
            "127.0.0.1, 10.0.0.0/8",
            "127.0.0.1",
            {"x_forwarded_for": "6.6.6.6, 203.0.113.7, 10.1.2.3"},
            ("203.0.113.7", "0", "http"),
        ),
        # Some proxies give the port too.
        (
            "127.0.0.1",
            "127.0.0.1",
            {"x_forwarded_for": "192.0.2.1:4711, [2001:db8::7]:80"},
            ("2001:db8::7", "80", "http"),
        ),
        (
            "127.0.0.1",
            "127.0.0.1",
            {"x_forwarded_for": "2001:db8::7"},
            ("2001:db8::7", "0", "http"),
        ),
        # Every hop trusted: the left-most.
        (
            "10.0.0.0/8",
            "10.0.0.1",
            {"x_forwarded_for": "10.9.9.9, 10.1.2.3"},
            ("10.9.9.9", "0", "http"),
        ),
        # "*": any peer, and the left-most address.
        (
            "*",
            "198.51.100.1",
            {"x_forwarded_for": "6.6.6.6, 203.0.113.7"},
            ("6.6.6.6", "0", "http"),
        ),
        # An untrusted peer: nothing changes.
        (
            "127.0.0.1",
            "198.51.100.1",
            {"x_forwarded_for": "6.6.6.6", "x_forwarded_proto": "https"},
            ("198.51.100.1", "5000", "http"),
        ),
        # A dual-stack socket's IPv4-mapped peer is its IPv4 address.
        (
            "127.0.0.1",
            "::ffff:127.0.0.1",
            {"x_forwarded_for": "203.0.113.7"},
            ("203.0.113.7", "0", "http"),
        ),
        # One proto per hop: the client's own; else the right-most.
        (
            "127.0.0.1",
            "127.0.0.1",
            {"x_forwarded_for": "203.0.113.7, 127.0.0.1", "x_forwarded_proto": "https, http"},
            ("203.0.113.7", "0", "https"),
        ),
        (
            "127.0.0.1",
            "127.0.0.1",
            {"x_forwarded_for": "203.0.113.7, 127.0.0.1", "x_forwarded_proto": "wss"},
            ("203.0.113.7", "0", "https"),
        ),
        # The proto alone, and one we do not know (ignored).
        ("127.0.0.1", "127.0.0.1", {"x_forwarded_proto": "ws"}, ("127.0.0.1", "5000", "http")),
        ("127.0.0.1", "127.0.0.1", {"x_forwarded_proto": "https"}, ("127.0.0.1", "5000", "https")),
        ("127.0.0.1", "127.0.0.1", {"x_forwarded_proto": "gopher"}, ("127.0.0.1", "5000", "http")),
        # Forwarded: each element's for= and proto=; IPv4 with a port; obfuscated names.
        (
            "127.0.0.1",
            "127.0.0.1",
            {"forwarded": "for=6.6.6.6, for=192.0.2.43:47011;proto=https, for=127.0.0.1"},
            ("192.0.2.43", "47011", "https"),
        ),
        (
            "127.0.0.1",
            "127.0.0.1",
            {"forwarded": 'for="_hidden";proto=https'},
            ("_hidden", "0", "https"),
        ),
        (
            "127.0.0.1",
            "127.0.0.1",
            {"forwarded": "proto=https;host=example.com"},
            ("127.0.0.1", "5000", "https"),
        ),
        # X-Forwarded-For wins: nginx sets it and passes on a client's Forwarded.
        (
            "127.0.0.1",
            "127.0.0.1",
            {"x_forwarded_for": "203.0.113.7", "forwarded": "for=6.6.6.6"},
            ("203.0.113.7", "0", "http"),
        ),
        # A Unix socket's peer: trusted only with "unix" (or "*").
        ("127.0.0.1", None, {"x_forwarded_for": "203.0.113.7"}, (None, None, "http")),
        ("unix", None, {"x_forwarded_for": "203.0.113.7"}, ("203.0.113.7", "0", "http")),
    ],
)
def test_rules(
    allow: str, peer: str | None, headers: dict[str, str], expected: tuple[Any, ...]
) -> None:
    assert _apply(allow, peer, **headers) == expected
