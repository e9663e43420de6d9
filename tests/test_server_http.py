"""Plain HTTP/1.1: keep-alive, pipelining, streamed bodies, errors."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers.server import (
    TIMEOUT,
    connect,
    exchange,
    http_client,
    parse_responses,
    read_all,
    read_until,
)


def echo_app(env: dict[str, Any]) -> Any:
    body = env["wsgi.input"].read()
    text = f"{env['REQUEST_METHOD']} {env['PATH_INFO']} {env['REMOTE_PORT']} {body.decode()}"
    return 200, [("content-type", "text/plain")], text


async def test_keep_alive_serves_several_requests_on_one_connection(start_server: Any) -> None:
    server = await start_server(echo_app)
    with trio.fail_after(TIMEOUT):
        async with http_client() as http:
            answers = [
                (await http.get(f"http://127.0.0.1:{server.port}/{i}")).text for i in range(3)
            ]
    assert [a.split()[1] for a in answers] == ["/0", "/1", "/2"]
    # One TCP connection: one client port for all three.
    assert len({a.split()[2] for a in answers}) == 1


async def test_pipelined_requests_are_answered_in_order(start_server: Any) -> None:
    async def app(env: dict[str, Any]) -> Any:
        if env["PATH_INFO"] == "/slow":
            await trio.sleep(0.05)
        return 200, {}, env["PATH_INFO"]

    server = await start_server(app)
    requests = (
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange(server.port, requests)
    responses = parse_responses(raw)
    assert [(s, b) for s, _, b in responses] == [
        (200, b"/slow"),
        (200, b"/fast"),
        (200, b"/last"),
    ]


async def test_request_body_reaches_the_app(start_server: Any) -> None:
    server = await start_server(echo_app)
    async with http_client() as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/p", content=b"payload")
    assert response.text.endswith(" payload")


async def test_one_process_says_so_in_the_env(start_server: Any) -> None:
    def app(env: dict[str, Any]) -> Any:
        return 200, {}, f"{env['wsgi.multiprocess']} {env['wsgi.multithread']}"

    server = await start_server(app)
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")
    # One process (--workers makes it True); threads may call the app.
    assert response.text == "False True"


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


async def test_malformed_request_gives_400(start_server: Any) -> None:
    server = await start_server(echo_app)
    raw = await exchange(server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


async def test_bad_header_gives_400(start_server: Any) -> None:
    server = await start_server(echo_app)
    raw = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


async def test_server_keeps_serving_after_a_malformed_request(start_server: Any) -> None:
    server = await start_server(echo_app)
    await exchange(server.port, b"\x00\x01garbage\r\n\r\n")
    async with http_client() as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/after")
    assert response.status_code == 200


async def test_idle_keep_alive_connection_is_closed(start_server: Any) -> None:
    server = await start_server(echo_app, idle_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        stream = await connect(server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = bytearray()
            await read_until(stream, b"\r\n\r\n", buf)
            rest = await read_all(stream)  # returns once the server closes
    assert b"GET /" in bytes(buf) + rest


async def test_http_1_0_request_is_answered_and_closed(start_server: Any) -> None:
    server = await start_server(echo_app)
    # exchange reads until EOF: it returns only because the server closes.
    raw = await exchange(server.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.partition(b"\r\n\r\n")[2].startswith(b"GET /old ")
