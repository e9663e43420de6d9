"""What the listeners take: TLS with certificates from trustme (https, wss and
SSE with real clients, ALPN, plain HTTP or no handshake on the TLS port, a
refused upgrade over TLS, the CLI's --certfile/--keyfile), and max_connections."""

from __future__ import annotations

import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url
from websockets.exceptions import InvalidStatus

from tests.helpers.frames import TEXT, RawWS, frame
from tests.helpers.procs import free_port, running
from tests.helpers.server import (
    TIMEOUT,
    Echo,
    Recorder,
    echo_app,
    exchange,
    http_client,
    in_thread,
    push_app,
    status_line,
    ws_connect,
)


class Handler:
    def on_open(self, client: Any) -> None:
        if client.protocol == "sse":
            for i in range(3):
                client.write(f"event {i}", id=str(i))
            client.close()

    def on_message(self, client: Any, data: Any) -> None:
        client.write(data)


def app(env: dict[str, Any]) -> Any:
    if env["rack.upgrade?"] is not None:
        env["rack.upgrade"] = Handler()
        return 200, {}, b""
    body = f"{env['wsgi.url_scheme']} {env['SERVER_PROTOCOL']}".encode()
    return 200, {"content-type": "text/plain", "content-length": str(len(body))}, body


@pytest.fixture
async def tls_port(start_server: Any, server_context: ssl.SSLContext) -> int:
    server = await start_server(app, ssl_context=server_context, idle_timeout=1.0)
    return int(server.port)


async def test_https_get_with_httpx(tls_port: int, client_context: ssl.SSLContext) -> None:
    async with httpx.AsyncClient(verify=client_context, trust_env=False, timeout=TIMEOUT) as http:
        for _ in range(3):  # keep-alive over TLS
            response = await http.get(f"https://127.0.0.1:{tls_port}/")
            assert response.status_code == 200
            assert response.text == "https HTTP/1.1"
            assert response.http_version == "HTTP/1.1"


async def test_https_refused_by_a_client_that_does_not_trust_the_ca(tls_port: int) -> None:
    # The certificate is really checked: without the CA, no connection.
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"https://127.0.0.1:{tls_port}/")


async def test_wss_with_websockets(tls_port: int, client_context: ssl.SSLContext) -> None:
    def talk() -> list[Any]:
        with ws_connect(f"wss://127.0.0.1:{tls_port}/ws", ssl=client_context) as ws:
            out = []
            for message in ("hello", b"\x00\x01 binary", "x" * 100_000):
                ws.send(message)
                out.append(ws.recv())
            return out

    assert await in_thread(talk) == ["hello", b"\x00\x01 binary", "x" * 100_000]


async def test_wss_with_trio_websocket(tls_port: int, client_context: ssl.SSLContext) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            f"wss://127.0.0.1:{tls_port}/ws", ssl_context=client_context
        ) as ws:
            await ws.send_message("over tls")
            assert await ws.get_message() == "over tls"


async def test_sse_over_tls_with_httpx_sse(tls_port: int, client_context: ssl.SSLContext) -> None:
    url = f"https://127.0.0.1:{tls_port}/events"
    async with (
        httpx.AsyncClient(verify=client_context, trust_env=False, timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", url) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = [event async for event in source.aiter_sse()]
    assert [(e.event, e.data, e.id) for e in events] == [
        ("msg", f"event {i}", str(i)) for i in range(3)
    ]


async def test_alpn_prefers_h2_and_serves_http_1_1_to_who_asks_for_it(
    tls_port: int, ca: trustme.CA
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["http/1.1", "h2"])
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", tls_port, ssl_context=context)
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "h2"
        await stream.aclose()
    context.set_alpn_protocols(["http/1.1"])
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", tls_port, ssl_context=context)
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "http/1.1"
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass  # a close without TLS close_notify, after the whole answer
        await trio.aclose_forcefully(stream)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"https HTTP/1.1"), data


async def test_plain_http_on_the_tls_port_is_closed_and_harms_nothing(
    tls_port: int, client_context: ssl.SSLContext
) -> None:
    response = await exchange(
        tls_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5
    )
    assert not response.startswith(b"HTTP/1.1 200")
    async with httpx.AsyncClient(verify=client_context, trust_env=False, timeout=TIMEOUT) as http:
        assert (await http.get(f"https://127.0.0.1:{tls_port}/")).status_code == 200


async def test_tls_client_that_never_handshakes_is_closed(tls_port: int) -> None:
    # A TCP connection that sends nothing: the idle bound (1 s here) ends it.
    stream = await trio.open_tcp_stream("127.0.0.1", tls_port)
    started = trio.current_time()
    with trio.fail_after(5):
        try:
            data = await stream.receive_some(100)
        except trio.BrokenResourceError:
            data = b""
    assert data == b""
    assert trio.current_time() - started < 3.0
    await stream.aclose()


def test_cli_serves_https_with_certfile_and_keyfile(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "tlsapp.py").write_text(
        "def app(env):\n"
        "    body = env['wsgi.url_scheme'].encode()\n"
        "    return 200, {'content-length': str(len(body))}, body\n"
    )
    port = free_port()
    args = [sys.executable, "-m", "trio_push", "tlsapp:app", "--port", str(port)]
    args += ["--certfile", "cert.pem", "--keyfile", "key.pem"]
    with running(args, cwd=tmp_path, port=port):
        context = ssl.create_default_context(cafile=str(ca_file))
        response = httpx.get(
            f"https://127.0.0.1:{port}/", verify=context, trust_env=False, timeout=TIMEOUT
        )
        assert response.status_code == 200
        assert response.text == "https"
        # Plain http on that port gets no answer.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=TIMEOUT)


# -- TLS, with an echoing Recorder --------------------------------------------------


@pytest.fixture
async def tls_server(start_server: Any, server_context: ssl.SSLContext) -> Any:
    class Echo(Recorder):
        def on_message(self, client: Any, data: Any) -> None:
            client.write(data)

    handler = Echo()
    server = await start_server(push_app(handler), ssl_context=server_context)
    server.handler = handler  # for the tests to reach the clients
    return server


async def test_https_request(tls_server: Any, client_context: ssl.SSLContext) -> None:
    async with http_client(verify=client_context) as http:
        response = await http.get(f"https://127.0.0.1:{tls_server.port}/")
    assert (response.status_code, response.text) == (200, "hello")


async def test_wss_echo_with_websockets(tls_server: Any, client_context: ssl.SSLContext) -> None:
    def client() -> str:
        with ws_connect(f"wss://127.0.0.1:{tls_server.port}/", ssl=client_context) as ws:
            ws.send("secure")
            return ws.recv(timeout=TIMEOUT)  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == "secure"


async def test_https_sse(tls_server: Any, client_context: ssl.SSLContext) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            http_client(verify=client_context) as http,
            aconnect_sse(http, "GET", f"https://127.0.0.1:{tls_server.port}/") as es,
        ):
            await tls_server.handler.opened.wait()
            env = tls_server.handler.clients[0].env
            tls_server.handler.clients[0].write("over tls")
            event = await es.aiter_sse().__anext__()
    assert event.data == "over tls"
    assert env["wsgi.url_scheme"] == "https"


async def test_plain_http_to_a_tls_port_does_not_hurt_the_server(
    tls_server: Any, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(TIMEOUT):
        await exchange(tls_server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with http_client(verify=client_context) as http:
            response = await http.get(f"https://127.0.0.1:{tls_server.port}/")
    assert response.status_code == 200


async def test_wss_refused_upgrade_is_a_normal_response(
    start_server: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def app(env: dict[str, Any]) -> Any:
        return 401, {}, b"who are you"

    server = await start_server(app, ssl_context=server_context)

    def client() -> None:
        with ws_connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context):
            pass

    with trio.fail_after(TIMEOUT), pytest.raises(InvalidStatus) as info:
        await in_thread(client)
    assert info.value.response.status_code == 401


# -- max_connections ----------------------------------------------------------------


async def test_max_connections_answers_503_past_it(start_server: Any) -> None:
    server = await start_server(echo_app(Echo()), max_connections=3)
    port = server.port
    kept = [await RawWS.open(port) for _ in range(3)]
    response = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_line(response) == 503, response
    # The ones in go on being served.
    for ws in kept:
        await ws.send(frame(TEXT, b"in"))
        assert await ws.message() == (TEXT, b"in")
    # One leaves: a new one gets in.
    await kept.pop().aclose()
    with trio.fail_after(5):
        while len(server.connections) >= 3:
            await trio.sleep(0.01)
    response = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_line(response) == 200, response
    for ws in kept:
        await ws.aclose()


async def test_max_connections_holds_for_a_burst(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Twenty connections at once: no more than max_connections get in.
    caplog.set_level(logging.WARNING, logger="trio_push")
    server = await start_server(echo_app(Echo()), max_connections=5, idle_timeout=30)
    port = server.port
    socks = []
    for _ in range(20):
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        socks.append(trio.SocketStream(sock))
    statuses: list[int] = []

    async def ask(stream: trio.SocketStream) -> None:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, "closed without an answer"
            data += chunk
        statuses.append(status_line(data))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for stream in socks:
                nursery.start_soon(ask, stream)
    assert sorted(statuses).count(200) == 5, statuses
    assert sorted(statuses).count(503) == 15, statuses
    # A flood of refusals is one warning, not one per connection.
    warnings = [r.getMessage() for r in caplog.records if "max_connections" in r.getMessage()]
    assert warnings == [
        "max_connections (5) reached: answering 503 (further refusals are logged at most"
        " every 10 s)"
    ]
    for stream in socks:
        await stream.aclose()
