"""A Starlette app for the ASGI tests (run with ``--asgi-loop trio`` too:
Starlette is anyio): JSON, a request body, a streamed response, an
sse-starlette stream, a WebSocket echo with a subprotocol, a denial, push
through ``trio_push.ASGIPush``, lifespan (logged as ``lifespan: ...``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import trio_push

log = logging.getLogger("trio_push")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    log.info("lifespan: startup")
    yield {"greeting": "hi"}
    log.info("lifespan: shutdown")


async def json_route(request: Request) -> Response:
    scope = request.scope
    return JSONResponse({"greeting": request.state.greeting, "root_path": scope["root_path"]})


async def echo(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(body[::-1])


async def stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[str]:
        for i in range(3):
            yield f"part {i}\n"
            await anyio.sleep(0.001)

    return StreamingResponse(parts(), media_type="text/plain")


async def sse(request: Request) -> Response:
    async def events() -> AsyncIterator[dict[str, str]]:
        for i in range(2):
            yield {"data": f"event {i}"}

    return EventSourceResponse(events())


async def ws_echo(websocket: WebSocket) -> None:
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="echo" if "echo" in offered else None)
    try:
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())
    except WebSocketDisconnect:
        pass


async def denied(websocket: WebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("go away", status_code=403))


class Echo:
    """A push handler: echoes through the push session."""

    def on_message(self, client: trio_push.Client, data: str | bytes) -> None:
        client.write(data)


app = Starlette(
    routes=[
        Route("/json", json_route),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/sse", sse),
        WebSocketRoute("/ws", ws_echo),
        WebSocketRoute("/denied", denied),
        Mount("/push", trio_push.ASGIPush(lambda scope: Echo())),
    ],
    lifespan=lifespan,
)
