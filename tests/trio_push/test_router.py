"""The Router: exact paths, ``*``, ``**``, methods, then static files, then 404."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

import trio_push
from tests.helpers.server import TIMEOUT, Recorder, get


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def call(self, env: dict[str, Any]) -> Any:
        return 200, {"content-type": "text/plain"}, f"{self.name} {env['PATH_INFO']}"


@pytest.fixture
async def routed(start_server: Any, tmp_path: Any) -> str:
    root = tmp_path / "root"
    root.mkdir()
    (root / "page.html").write_text("<p>static page</p>")
    (root / "hello").mkdir()
    (root / "hello" / "extra.txt").write_text("static under /hello")
    router = trio_push.Router()
    router.handle("GET", "/hello", Named("hello"))
    router.handle("GET", "/users/*", Named("user"))
    router.handle("GET", "/files/**", Named("files"))
    router.handle("POST", "/submit", Named("submit"))
    router.handle("*", "/any", Named("any"))

    async def async_app(env: dict[str, Any]) -> Any:
        return 200, {}, b"async route"

    router.handle("GET", "/async", async_app)
    server = await start_server(router, root=str(root))
    return f"http://127.0.0.1:{server.port}"


async def test_exact_path_routes(routed: str) -> None:
    response = await get(routed + "/hello")
    assert (response.status_code, response.text) == (200, "hello /hello")


async def test_exact_path_does_not_match_a_longer_path(routed: str) -> None:
    response = await get(routed + "/hello/world")
    assert response.status_code == 404


async def test_star_matches_one_segment(routed: str) -> None:
    response = await get(routed + "/users/42")
    assert (response.status_code, response.text) == (200, "user /users/42")


async def test_star_does_not_match_two_segments(routed: str) -> None:
    response = await get(routed + "/users/42/posts")
    assert response.status_code == 404


async def test_star_does_not_match_an_empty_segment(routed: str) -> None:
    response = await get(routed + "/users/")
    assert response.status_code == 404


async def test_double_star_matches_the_rest(routed: str) -> None:
    response = await get(routed + "/files/a/b/c.txt")
    assert (response.status_code, response.text) == (200, "files /files/a/b/c.txt")


async def test_double_star_does_not_match_a_prefix_of_a_segment(routed: str) -> None:
    response = await get(routed + "/filesystem")
    assert response.status_code == 404


async def test_method_must_match(routed: str) -> None:
    assert (await get(routed + "/submit", "POST")).text == "submit /submit"
    assert (await get(routed + "/submit")).status_code == 404
    assert (await get(routed + "/hello", "POST")).status_code == 404


async def test_star_method_matches_any_method(routed: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        response = await get(routed + "/any", method)
        assert (response.status_code, response.text) == (200, "any /any")


async def test_head_uses_the_get_route_without_a_body(routed: str) -> None:
    response = await get(routed + "/hello", "HEAD")
    assert response.status_code == 200
    assert response.content == b""


async def test_async_app_as_a_route(routed: str) -> None:
    assert (await get(routed + "/async")).text == "async route"


async def test_unmatched_path_falls_back_to_a_static_file(routed: str) -> None:
    response = await get(routed + "/page.html")
    assert (response.status_code, response.text) == (200, "<p>static page</p>")
    assert (await get(routed + "/hello/extra.txt")).text == "static under /hello"


async def test_unmatched_path_without_a_file_is_404(routed: str) -> None:
    response = await get(routed + "/nowhere")
    assert response.status_code == 404


async def test_router_without_root_gives_404(start_server: Any) -> None:
    router = trio_push.Router()
    router.handle("GET", "/hello", Named("hello"))
    server = await start_server(router)
    response = await get(f"http://127.0.0.1:{server.port}/other")
    assert response.status_code == 404


async def test_route_can_accept_a_websocket(start_server: Any) -> None:
    rec = Recorder()

    class Listen:
        def call(self, env: dict[str, Any]) -> Any:
            env["rack.upgrade"] = rec
            return 200, {}, b""

    router = trio_push.Router()
    router.handle("GET", "/listen", Listen())
    server = await start_server(router)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/listen") as ws:
            await rec.opened.wait()
            rec.clients[0].write("routed")
            assert await ws.get_message() == "routed"
