"""What an app is and what it returns, as a client sees it: plain or
``async def`` apps (functions, or objects with ``call``), in worker threads with
``threads``; bodies of every kind, and apps that fail; and the answer to an
upgrade request (accepted or refused, its headers, subprotocols)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
from httpx_sse import aconnect_sse
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import open_websocket_url
from websockets.exceptions import InvalidStatus

from tests.helpers.server import (
    TIMEOUT,
    Recorder,
    connect,
    exchange,
    http_client,
    in_thread,
    parse_responses,
    push_app,
    read_until,
    ws_connect,
    ws_handshake,
)
from trio_push._app import normalize

# -- plain and async apps, in worker threads ------------------------------------------


def plain_function(env: dict[str, Any]) -> Any:
    return 200, {}, b"plain function"


async def async_function(env: dict[str, Any]) -> Any:
    await trio.sleep(0)
    return 200, {}, b"async function"


class PlainCall:
    def call(self, env: dict[str, Any]) -> Any:
        return 200, {}, b"plain call"


class AsyncCall:
    async def call(self, env: dict[str, Any]) -> Any:
        await trio.sleep(0)
        return 200, {}, b"async call"


@pytest.mark.parametrize(
    ("app", "text"),
    [
        (plain_function, "plain function"),
        (async_function, "async function"),
        (PlainCall(), "plain call"),
        (AsyncCall(), "async call"),
    ],
    ids=["plain-function", "async-function", "plain-call", "async-call"],
)
async def test_plain_and_async_apps_answer(start_server: Any, app: Any, text: str) -> None:
    server = await start_server(app)
    async with http_client() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 200
    assert response.text == text


async def test_threads_run_plain_apps_in_worker_threads(start_server: Any) -> None:
    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []

    def app(env: dict[str, Any]) -> Any:
        threads.append(threading.current_thread())
        return 200, {}, b"ok"

    server = await start_server(app, threads=2)
    async with http_client() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.text == "ok"
    assert threads and threads[0] is not loop_thread


# -- what an app returns: bodies, failures ------------------------------------------


async def test_sync_generator_body_is_chunked_and_whole(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        def body() -> Any:
            yield "part one, "
            yield b"part two, "
            yield "part three"

        return 200, {"content-type": "text/plain"}, body()

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "part one, part two, part three"


async def test_async_generator_body_is_chunked_and_whole(start_server: Any) -> None:
    async def app(env: dict[str, Any]) -> Any:
        async def body() -> Any:
            for i in range(50):
                await trio.sleep(0)
                yield f"{i},"

        return 200, {"content-type": "text/plain"}, body()

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "".join(f"{i}," for i in range(50))


async def test_streamed_body_is_flushed_as_produced(start_server: Any) -> None:
    release = trio.Event()

    async def app(env: dict[str, Any]) -> Any:
        async def body() -> Any:
            yield b"first"
            await release.wait()
            yield b"second"

        return 200, {}, body()

    server = await start_server(app)
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            http.stream("GET", f"http://127.0.0.1:{server.port}/") as response,
        ):
            chunks = response.aiter_bytes()
            first = await chunks.__anext__()
            release.set()
            rest = b"".join([c async for c in chunks])
    assert first == b"first"
    assert rest == b"second"


async def test_fixed_body_kinds(start_server: Any) -> None:
    bodies = {
        "/bytes": b"bytes",
        "/str": "str \u00e9",
        "/list": ["li", b"st"],
        "/none": None,
    }

    def app(env: dict[str, Any]) -> Any:
        return 200, {}, bodies[env["PATH_INFO"]]

    server = await start_server(app)
    async with http_client(base_url=f"http://127.0.0.1:{server.port}") as http:
        got = {path: (await http.get(path)).content for path in bodies}
    assert got == {"/bytes": b"bytes", "/str": "str é".encode(), "/list": b"list", "/none": b""}


async def test_app_exception_gives_500_without_a_traceback(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        raise KeyError("secret-detail")

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 500
    assert "Traceback" not in response.text
    assert "secret-detail" not in response.text
    assert "KeyError" not in response.text


async def test_server_keeps_serving_after_an_app_exception(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        if env["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        return 200, {}, b"fine"

    server = await start_server(app)
    async with http_client(base_url=f"http://127.0.0.1:{server.port}") as http:
        assert (await http.get("/boom")).status_code == 500
        response = await http.get("/")
    assert (response.status_code, response.text) == (200, "fine")


async def test_bad_app_return_value_gives_500(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        return "not a triple"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert response.status_code == 500


class Rows:
    """A sync streaming body that records where its code runs."""

    def __init__(self) -> None:
        self.threads: list[bool] = []

    def _on_loop(self) -> bool:
        return threading.current_thread() is threading.main_thread()

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> bytes:
        self.threads.append(self._on_loop())
        if len(self.threads) > 3:
            raise StopIteration
        return b"row\n"

    def close(self) -> None:
        self.threads.append(self._on_loop())


async def test_with_threads_a_sync_body_is_iterated_and_closed_in_the_pool(
    start_server: Any,
) -> None:
    rows = Rows()

    def app(env: dict[str, Any]) -> Any:
        return 200, {"content-type": "text/plain"}, rows

    server = await start_server(app, threads=2)
    response = await exchange(
        server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert response.endswith(b"0\r\n\r\n") and response.count(b"row\n") == 3
    # Three rows, the end, and close(): none of them on the event loop.
    assert rows.threads == [False] * 5


# -- the answer to an upgrade request ----------------------------------------------


def choose_subprotocol(handler: Any) -> Any:
    def app(env: dict[str, Any]) -> Any:
        offered = [p.strip() for p in env.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")]
        env["rack.upgrade"] = handler
        headers = {"Sec-WebSocket-Protocol": "chat"} if "chat" in offered else {}
        return 200, headers, b""

    return app


async def test_subprotocol_chosen_by_the_app_header(start_server: Any) -> None:
    server = await start_server(choose_subprotocol(Recorder()))

    def client() -> str | None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["superchat", "chat"]) as ws:
            return ws.subprotocol  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(client) == "chat"


async def test_subprotocol_with_trio_websocket(start_server: Any) -> None:
    server = await start_server(choose_subprotocol(Recorder()))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/", subprotocols=["chat"]
        ) as ws:
            assert ws.subprotocol == "chat"


async def test_app_headers_go_out_on_the_101(start_server: Any) -> None:
    server = await start_server(
        push_app(Recorder(), headers=[("Set-Cookie", "session=abc"), ("X-App", "yes")])
    )

    def client() -> Any:
        with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
            return ws.response

    with trio.fail_after(TIMEOUT):
        response = await in_thread(client)
    assert response.status_code == 101
    assert response.headers["Set-Cookie"] == "session=abc"
    assert response.headers["X-App"] == "yes"


async def test_app_headers_go_out_on_the_sse_200(start_server: Any) -> None:
    server = await start_server(push_app(Recorder(), headers={"Set-Cookie": "session=abc"}))
    with trio.fail_after(TIMEOUT):
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            headers = es.response.headers
            status = es.response.status_code
    assert status == 200
    assert headers["set-cookie"] == "session=abc"
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"


def refusing(handler: Any, status: int) -> Any:
    def app(env: dict[str, Any]) -> Any:
        env["rack.upgrade"] = handler
        return status, {"content-type": "text/plain"}, b"go away"

    return app


async def test_status_300_or_more_with_a_handler_is_a_normal_response_for_websocket(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(refusing(rec, 403))

    def client() -> None:
        with ws_connect(f"ws://127.0.0.1:{server.port}/"):
            pass

    with trio.fail_after(TIMEOUT), pytest.raises(InvalidStatus) as info:
        await in_thread(client)
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"go away"
    assert rec.events == []


async def test_status_300_or_more_with_a_handler_is_a_normal_response_for_sse(
    start_server: Any,
) -> None:
    rec = Recorder()
    server = await start_server(refusing(rec, 401))
    async with http_client() as http:
        response = await http.get(
            f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"}
        )
    assert response.status_code == 401
    assert response.text == "go away"
    assert rec.events == []


async def test_no_handler_gives_a_normal_response_to_a_websocket_request(
    start_server: Any,
) -> None:
    def app(env: dict[str, Any]) -> Any:
        assert env["rack.upgrade?"] == "websocket"
        return 200, {"content-type": "text/plain"}, b"no push here"

    server = await start_server(app)
    # A second Connection header (the tokens add up): close after answering.
    request, _key = ws_handshake("/", "Connection: close\r\n")
    [(status, _headers, body)] = parse_responses(await exchange(server.port, request))
    assert status == 200
    assert body == b"no push here"


async def test_no_handler_gives_a_normal_response_to_an_sse_request(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        assert env["rack.upgrade?"] == "sse"
        return 200, {"content-type": "text/plain"}, b"no stream here"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(
            f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"}
        )
    assert response.status_code == 200
    assert response.text == "no stream here"


async def test_status_0_with_a_handler_upgrades(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec, status=0))
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await rec.opened.wait()
            rec.clients[0].write("upgraded")
            assert await ws.get_message() == "upgraded"
        async with (
            http_client() as http,
            aconnect_sse(http, "GET", f"http://127.0.0.1:{server.port}/") as es,
        ):
            status = es.response.status_code
    assert status == 200
    assert [c.protocol for c in rec.clients] == ["websocket", "sse"]


async def test_upgrade_query_is_none_for_plain_requests(start_server: Any) -> None:
    seen: list[Any] = []

    def app(env: dict[str, Any]) -> Any:
        seen.append(env["rack.upgrade?"])
        return 200, {}, b"ok"

    server = await start_server(app)
    async with http_client() as http:
        await http.get(f"http://127.0.0.1:{server.port}/")
        await http.post(f"http://127.0.0.1:{server.port}/", headers={"accept": "text/event-stream"})
    assert seen == [None, None]


async def test_handler_on_a_plain_request_is_ignored(start_server: Any) -> None:
    rec = Recorder()

    def app(env: dict[str, Any]) -> Any:
        env["rack.upgrade"] = rec
        return 200, {"content-type": "text/plain"}, b"just a page"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    assert (response.status_code, response.text) == (200, "just a page")
    assert rec.events == []


async def test_upgrade_pipelined_after_a_plain_request(start_server: Any) -> None:
    rec = Recorder()
    server = await start_server(push_app(rec))
    handshake, _key = ws_handshake("/ws")
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n" + handshake)
            buf = bytearray()
            received = await read_until(stream, b"HTTP/1.1 101 ", buf)
            await read_until(stream, b"\r\n\r\n", buf)
            await rec.opened.wait()
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"hello" in received
    assert rec.clients[0].env["PATH_INFO"] == "/ws"


def reference_normalize(result: Any) -> tuple[int, list[tuple[Any, Any]], Any]:
    """The app contract's headers, one pair at a time (normalize before it kept
    the app's own pairs)."""
    status, headers, body = result
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    expanded: list[tuple[Any, Any]] = []
    for name, value in pairs:
        if isinstance(value, str) and "\n" in value and name.lower() == "set-cookie":
            expanded += [(name, v) for v in value.split("\n")]
        else:
            expanded.append((name, value if isinstance(value, (str, bytes)) else str(value)))
    return int(status), expanded, body


_HEADER_VALUE = st.one_of(
    st.sampled_from(["text/plain", "a=1\nb=2", "", "x\n", b"raw", 13, None]), st.text(max_size=4)
)
_PAIR = st.tuples(st.sampled_from(["Set-Cookie", "set-cookie", "X-A", b"x-b"]), _HEADER_VALUE)


@given(
    st.sampled_from([200, "404", 204.0]),
    st.one_of(
        st.lists(_PAIR, max_size=4),
        st.lists(_PAIR.map(list), max_size=3),
        st.dictionaries(st.sampled_from(["Set-Cookie", "X-A"]), _HEADER_VALUE, max_size=2),
        st.none(),
    ),
)
def test_normalize_answers_as_one_pair_at_a_time_does(status: Any, headers: Any) -> None:
    assert normalize((status, headers, b"")) == reference_normalize((status, headers, b""))
