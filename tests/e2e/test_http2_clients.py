"""HTTP/2 with real clients we did not write: curl (--http2 over TLS, and
--http2-prior-knowledge), httpx with http2=True (plain, streamed, SSE through
httpx-sse), nghttp and h2load (Debian's nghttp2-client), against a trio-push
server in the test's own run; and a Flask (WSGI) app, the Router and static
files over HTTP/2, with the same app code as over HTTP/1.1.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
import trio
import trustme
from httpx_sse import aconnect_sse

import trio_push
from tests.helpers.h2client import h2_connect
from tests.helpers.server import TIMEOUT, wait_for

EVENTS = 5
BODY = bytes(range(256)) * 2048  # 512 KiB


class Ticks:
    """SSE: ``EVENTS`` events at once, then the stream stays open (as a clock's)."""

    def __init__(self) -> None:
        self.clients: list[Any] = []

    def on_open(self, client: Any) -> None:
        self.clients.append(client)
        for i in range(EVENTS):
            client.write(f"tick {i}")


class Echo:
    def on_message(self, client: Any, data: Any) -> None:
        client.write(data)


class App:
    """The push-style app: ``/`` hello, ``/proto`` the SERVER_PROTOCOL, ``/echo``
    the request body, ``/stream`` a streamed body (its second half waits for
    ``go``, so a client that gets the first half saw it streamed), push for
    SSE (:class:`Ticks`) and WebSocket (echo)."""

    def __init__(self) -> None:
        self.ticks = Ticks()
        self.go = trio.Event()

    async def streamed(self) -> Any:
        for i in range(100):
            yield f"first {i:03d}\n"
        await self.go.wait()
        for i in range(1000):
            yield f"rest {i:04d}\n"

    def call(self, env: dict[str, Any]) -> Any:
        upgrade = env["rack.upgrade?"]
        if upgrade is not None:
            env["rack.upgrade"] = self.ticks if upgrade == "sse" else Echo()
            return 200, {}, b""
        path = env["PATH_INFO"]
        if path == "/proto":
            return 200, {"content-type": "text/plain"}, env["SERVER_PROTOCOL"]
        if path == "/echo":
            return 200, {"content-type": "application/octet-stream"}, env["wsgi.input"].read()
        if path == "/stream":
            return 200, {"content-type": "text/plain"}, self.streamed()
        return 200, {"content-type": "text/plain"}, b"hello"


STREAMED = "".join(f"first {i:03d}\n" for i in range(100)) + "".join(
    f"rest {i:04d}\n" for i in range(1000)
)


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def urls(start_server: Any, server_context: ssl.SSLContext) -> tuple[App, str, str]:
    """One app served twice: ``https://localhost:P`` (TLS, ALPN) and
    ``http://127.0.0.1:Q`` (cleartext, h2c with prior knowledge)."""
    app = App()
    tls = await start_server(app, ssl_context=server_context)
    plain = await start_server(app)
    return app, f"https://localhost:{tls.port}", f"http://127.0.0.1:{plain.port}"


async def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a client to its end (bounded); its output, whatever its exit status."""
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            list(args), capture_stdout=True, capture_stderr=True, check=False, env=env
        )


def curl_args(url: str, ca_file: Path) -> list[str]:
    """curl over HTTP/2: negotiated by ALPN (https) or by prior knowledge (http)."""
    if url.startswith("https:"):
        return ["curl", "-sS", "--http2", "--cacert", str(ca_file)]
    return ["curl", "-sS", "--http2-prior-knowledge"]


# -- curl -------------------------------------------------------------------------


async def test_curl_get_post_and_streamed_over_tls_and_h2c(
    urls: tuple[App, str, str], ca_file: Path, tmp_path: Path
) -> None:
    app, tls, plain = urls
    app.go.set()
    body = tmp_path / "body.bin"
    body.write_bytes(BODY)
    for url in (tls, plain):
        args = curl_args(url, ca_file)
        got = await run(*args, "-w", "\n%{http_version} %{response_code}", url + "/proto")
        assert got.stdout.decode() == "HTTP/2\n2 200", got.stderr
        out = tmp_path / "echo.out"
        got = await run(
            *args,
            "--data-binary",
            f"@{body}",
            "-o",
            str(out),
            "-w",
            "%{http_version}",
            url + "/echo",
        )
        assert got.stdout == b"2", got.stderr
        assert out.read_bytes() == BODY
        got = await run(*args, "-w", "%{http_version}", url + "/stream")
        assert got.stdout.decode() == STREAMED + "2", got.stderr


async def test_curl_reads_sse_events_over_tls_and_h2c(
    urls: tuple[App, str, str], ca_file: Path
) -> None:
    app, tls, plain = urls
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def sse(url: str) -> None:
        results[url] = await run(
            *curl_args(url, ca_file),
            "-N",
            "--max-time",
            "1.5",
            "-H",
            "Accept: text/event-stream",
            "-w",
            "\nversion %{http_version} %{content_type}",
            url + "/events",
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sse, tls)
        nursery.start_soon(sse, plain)
    for got in results.values():
        # 28: stopped by --max-time, the stream was still open.
        assert got.returncode == 28, got.stderr
        text = got.stdout.decode()
        assert [line for line in text.splitlines() if line.startswith("data:")] == [
            f"data: tick {i}" for i in range(EVENTS)
        ]
        assert text.endswith("version 2 text/event-stream"), text
    assert [c.env["SERVER_PROTOCOL"] for c in app.ticks.clients] == ["HTTP/2"] * 2


# -- httpx -------------------------------------------------------------------------


def h2_client(url: str, ca: trustme.CA) -> httpx.AsyncClient:
    """httpx with HTTP/2: by ALPN over TLS, by prior knowledge (http1=False) in clear."""
    if url.startswith("https:"):
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return httpx.AsyncClient(http2=True, verify=context, timeout=TIMEOUT, trust_env=False)
    return httpx.AsyncClient(http1=False, http2=True, timeout=TIMEOUT, trust_env=False)


async def get_into(http: httpx.AsyncClient, url: str, got: list[httpx.Response]) -> None:
    got.append(await http.get(url))


async def test_httpx_plain_post_and_concurrent_requests(
    urls: tuple[App, str, str], ca: trustme.CA
) -> None:
    _, tls, plain = urls
    for url in (tls, plain):
        async with h2_client(url, ca) as http:
            response = await http.get(url + "/")
            assert (response.http_version, response.status_code) == ("HTTP/2", 200)
            assert response.text == "hello"
            response = await http.post(url + "/echo", content=BODY)
            assert response.http_version == "HTTP/2" and response.content == BODY
            # Twenty at once, multiplexed on the client's connection.
            got: list[httpx.Response] = []
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(get_into, http, url + "/proto", got)
            assert [(r.http_version, r.text) for r in got] == [("HTTP/2", "HTTP/2")] * 20


async def test_httpx_gets_a_streamed_response_as_it_is_produced(
    urls: tuple[App, str, str], ca: trustme.CA
) -> None:
    app, tls, plain = urls
    for url in (tls, plain):
        app.go = trio.Event()
        async with h2_client(url, ca) as http, http.stream("GET", url + "/stream") as response:
            assert response.http_version == "HTTP/2"
            text = ""
            chunks = response.aiter_text()
            # The first half comes before the app may write the second.
            while not text.endswith("first 099\n"):
                text += await chunks.__anext__()
            app.go.set()
            async for chunk in chunks:
                text += chunk
        assert text == STREAMED


async def test_httpx_sse_reads_events_over_h2(urls: tuple[App, str, str], ca: trustme.CA) -> None:
    app, tls, plain = urls
    for url in (tls, plain):
        async with (
            h2_client(url, ca) as http,
            aconnect_sse(http, "GET", url + "/events") as source,
        ):
            assert source.response.http_version == "HTTP/2"
            assert source.response.headers["content-type"].startswith("text/event-stream")
            got = []
            async for event in source.aiter_sse():
                got.append((event.event, event.data))
                if len(got) == EVENTS:
                    break
        assert got == [("msg", f"tick {i}") for i in range(EVENTS)]
    assert [c.env["SERVER_PROTOCOL"] for c in app.ticks.clients] == ["HTTP/2"] * 2


# -- nghttp and h2load ---------------------------------------------------------------


async def test_nghttp_several_uris_on_one_connection(
    urls: tuple[App, str, str], ca_file: Path, tmp_path: Path
) -> None:
    app, tls, plain = urls
    app.go.set()
    env = {"SSL_CERT_FILE": str(ca_file), "PATH": "/usr/bin:/bin"}
    for url in (tls, plain):
        paths = ["/", "/proto", "/stream", "/echo?x=1"]
        got = await run("nghttp", "-nv", *(url + p for p in paths), env=env)
        out = got.stdout.decode()
        assert got.returncode == 0, out + got.stderr.decode()
        assert "Certificate verification failed" not in out + got.stderr.decode()
        if url.startswith("https:"):
            assert "The negotiated protocol: h2" in out
        # Four requests, four 200 responses, each stream ended by the server.
        assert out.count("recv (stream_id=") >= 4
        assert out.count(":status: 200") == 4
        # Bodies, with -d as POST.
        body = tmp_path / "body.bin"
        body.write_bytes(BODY)
        got = await run("nghttp", "-d", str(body), url + "/echo", env=env)
        assert got.returncode == 0, got.stderr
        assert got.stdout == BODY
        got = await run("nghttp", url + "/stream", env=env)
        assert got.stdout.decode() == STREAMED


async def test_h2load_all_requests_succeed(urls: tuple[App, str, str]) -> None:
    _, tls, plain = urls
    for url, protocol in ((tls, "h2"), (plain, "h2c")):
        # (h2load tries only the first address of localhost.)
        url = url.replace("localhost", "127.0.0.1")
        got = await run("h2load", "-n", "2000", "-c", "4", "-m", "10", url + "/")
        out = got.stdout.decode()
        assert got.returncode == 0, out + got.stderr.decode()
        assert f"Application protocol: {protocol}\n" in out, out
        assert (
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, "
            "0 failed, 0 errored, 0 timeout" in out
        ), out
        assert "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out


# -- the same app code: WSGI (Flask), the Router, static files ----------------------


def flask_app() -> flask.Flask:
    """Pages, a streamed body, a POST, and push through rack.upgrade, as in
    examples/flask_push."""
    app = flask.Flask(__name__)

    class Updates:
        def on_open(self, client: Any) -> None:
            client.subscribe("notes")
            client.write("subscribed", event="ready")

        def on_message(self, client: Any, data: Any) -> None:
            client.write(f"echo {data}")

    updates = Updates()

    @app.get("/")
    def index() -> str:
        return f"flask over {flask.request.environ['SERVER_PROTOCOL']}"

    @app.post("/notes")
    def add_note() -> Any:
        text = flask.request.get_json()["text"]
        trio_push.publish("notes", text)
        return flask.jsonify({"text": text}), 201

    @app.get("/lines")
    def lines() -> Any:
        return flask.Response((f"line {i}\n" for i in range(2000)), mimetype="text/plain")

    @app.get("/events")
    def events() -> Any:
        if flask.request.environ["rack.upgrade?"] != "sse":
            return "this URL is for EventSource\n", 400
        flask.request.environ["rack.upgrade"] = updates
        return ""

    @app.route("/ws", websocket=True)
    def ws() -> Any:
        if flask.request.environ["rack.upgrade?"] != "websocket":
            return "this URL is for WebSocket\n", 400
        flask.request.environ["rack.upgrade"] = updates
        return ""

    return app


async def test_flask_app_over_h2(
    start_server: Any, server_context: ssl.SSLContext, ca: trustme.CA
) -> None:
    tls = await start_server(flask_app(), ssl_context=server_context)
    assert tls.interface == "wsgi"
    url = f"https://localhost:{tls.port}"
    with trio.fail_after(TIMEOUT):
        async with h2_client(url, ca) as http:
            page = await http.get(url + "/")
            assert (page.http_version, page.text) == ("HTTP/2", "flask over HTTP/2")
            lines = await http.get(url + "/lines")
            assert lines.text == "".join(f"line {i}\n" for i in range(2000))
            assert (await http.get(url + "/events")).status_code == 400
            async with aconnect_sse(http, "GET", url + "/events") as source:
                events = source.aiter_sse()
                ready = await events.__anext__()
                assert (ready.event, ready.data) == ("ready", "subscribed")
                posted = await http.post(url + "/notes", json={"text": "over h2"})
                assert (posted.status_code, posted.json()) == (201, {"text": "over h2"})
                note = await events.__anext__()
                assert (note.event, note.data) == ("msg", "over h2")


async def test_flask_websocket_route_over_rfc8441(start_server: Any) -> None:
    # Werkzeug matches a rule marked websocket=True only for what looks like
    # a WebSocket handshake: over HTTP/2 the env must still say so.
    server = await start_server(flask_app())
    with trio.fail_after(TIMEOUT):
        async with h2_connect(server.port) as h2:
            ws = await h2.websocket("/ws")
            assert await ws.receive() == "subscribed"
            await ws.send("hi")
            assert await ws.receive() == "echo hi"
            await wait_for(lambda: trio_push.subscriber_count("notes") == 1)
            status, _, _ = await h2.fetch(
                "POST",
                "/notes",
                headers=[("content-type", "application/json")],
                body=b'{"text":"n"}',
            )
            assert status == 201
            assert await ws.receive() == "n"
            assert await ws.close_and_wait() == 1000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "big.bin").write_bytes(bytes(range(251)) * 1200)  # 301,200 bytes
    return root


async def test_router_and_static_files_over_h2(
    start_server: Any,
    server_context: ssl.SSLContext,
    ca: trustme.CA,
    ca_file: Path,
    root: Path,
) -> None:
    router = trio_push.Router()
    router.handle("GET", "/users/*", lambda env: (200, {}, f"user {env['PATH_INFO']}"))
    router.handle("POST", "/submit", lambda env: (200, {}, env["wsgi.input"].read()))
    tls = await start_server(router, root=str(root), ssl_context=server_context)
    url = f"https://localhost:{tls.port}"
    big = (root / "big.bin").read_bytes()
    with trio.fail_after(TIMEOUT):
        async with h2_client(url, ca) as http:
            user = await http.get(url + "/users/7")
            assert (user.http_version, user.text) == ("HTTP/2", "user /users/7")
            assert (await http.post(url + "/submit", content=b"form")).text == "form"
            assert (await http.get(url + "/users/7/x")).status_code == 404
            page = await http.get(url + "/index.html")
            assert page.text == "<h1>home</h1>"
            assert page.headers["content-type"].startswith("text/html")
            response = await http.get(url + "/big.bin")
            assert response.content == big
            assert int(response.headers["content-length"]) == len(big)
            again = await http.get(
                url + "/big.bin", headers={"if-modified-since": response.headers["last-modified"]}
            )
            assert (again.status_code, again.content) == (304, b"")
            head = await http.head(url + "/big.bin")
            assert (head.status_code, head.headers["content-length"], head.content) == (
                200,
                str(len(big)),
                b"",
            )
    got = await run(*curl_args(url, ca_file), "-w", "%{http_version}", url + "/big.bin")
    assert got.stdout == big + b"2", got.stderr
    url = url.replace("localhost", "127.0.0.1")
    got = await run("h2load", "-n", "500", "-c", "2", "-m", "10", url + "/big.bin")
    assert "500 succeeded, 0 failed, 0 errored" in got.stdout.decode(), got.stdout


async def test_http2_off_serves_http_1_1_to_the_same_clients(
    start_server: Any, server_context: ssl.SSLContext, ca_file: Path
) -> None:
    tls = await start_server(App(), ssl_context=server_context, http2=False)
    plain = await start_server(App(), http2=False)
    url = f"https://localhost:{tls.port}/proto"
    got = await run(*curl_args(url, ca_file), "-w", " %{http_version}", url)
    assert got.stdout == b"HTTP/1.1 1.1", got.stderr
    got = await run("curl", "-sS", "-w", " %{http_version}", f"http://127.0.0.1:{plain.port}/proto")
    assert got.stdout == b"HTTP/1.1 1.1", got.stderr
    # A client that insists on HTTP/2 in clear is not answered in HTTP/2.
    url = f"http://127.0.0.1:{plain.port}/proto"
    got = await run(*curl_args(url, ca_file), "-w", " %{http_version}", url)
    assert got.returncode != 0 and not got.stdout.startswith(b"HTTP/2"), got
