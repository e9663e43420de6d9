"""A FastAPI app for the ASGI tests: JSON routes, a request body, a streamed
response, an sse-starlette event stream, a WebSocket echo with a
subprotocol, a denial, lifespan, push through the ``trio_push.upgrade``
extension (``/push/...``) and a publish from an endpoint, and asyncio-only
code (``asyncio.Queue``, ``asyncio.sleep``, ``redis.asyncio`` when
``REDIS_URL`` is set).

The lifespan logs ``lifespan: startup`` and ``lifespan: shutdown`` (and
appends them to ``$LIFESPAN_FILE`` if set); ``LIFESPAN_FAIL=1`` makes the
startup fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from sse_starlette.sse import EventSourceResponse

import trio_push

log = logging.getLogger("trio_push")


def _note(text: str) -> None:
    log.info("lifespan: %s", text)
    path = os.environ.get("LIFESPAN_FILE")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    if os.environ.get("LIFESPAN_FAIL"):
        raise RuntimeError("no database")
    _note("startup")
    redis = None
    if os.environ.get("REDIS_URL"):
        import redis.asyncio as aioredis

        redis = aioredis.from_url(os.environ["REDIS_URL"])
    yield {"started": "yes", "redis": redis}
    if redis is not None:
        await redis.aclose()
    _note("shutdown")


app = FastAPI(lifespan=lifespan)


@app.get("/json")
async def json_route(request: Request) -> dict[str, Any]:
    return {"hello": "world", "started": request.state.started, "path": request.url.path}


@app.get("/items/{item_id}")
def item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/echo")
async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)}:{body[:16].decode('latin-1')}")


@app.post("/upload")
async def upload(request: Request) -> dict[str, int]:
    """Reads the body as it streams in (http.request with more_body)."""
    chunks = 0
    size = 0
    async for chunk in request.stream():
        if chunk:
            chunks += 1
            size += len(chunk)
    return {"chunks": chunks, "size": size}


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"row {i}\n".encode()
            await asyncio.sleep(0.001)

    return StreamingResponse(rows(), media_type="text/plain")


@app.get("/sse")
async def sse(n: int = 3) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        for i in range(n):
            yield {"event": "tick", "data": f"tick {i}", "id": str(i)}
            await asyncio.sleep(0.01)

    return EventSourceResponse(events())


@app.get("/asyncio")
async def asyncio_only() -> dict[str, Any]:
    """asyncio-only code: a Queue between two tasks, asyncio.sleep."""
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def producer() -> None:
        for i in range(3):
            await asyncio.sleep(0.001)
            await queue.put(i)

    task = asyncio.create_task(producer())
    got = [await queue.get() for _ in range(3)]
    await task
    return {"got": got, "loop": type(asyncio.get_running_loop()).__module__}


@app.get("/redis")
async def redis_route(request: Request, key: str = "k") -> dict[str, Any]:
    """redis.asyncio (redis-py), from the lifespan's connection pool."""
    redis = request.state.redis
    await redis.set(key, "v1")
    value = await redis.get(key)
    return {"value": value.decode()}


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket) -> None:
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="echo" if "echo" in offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await websocket.close(code=4000, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


@app.websocket("/denied")
async def denied(websocket: WebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("no entry", status_code=401))


@app.websocket("/refused")
async def refused(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


@app.websocket("/flood")
async def flood(websocket: WebSocket) -> None:
    """Sends 64 KiB messages as fast as the client takes them; logs how the
    sends end (for the never-reading client test)."""
    await websocket.accept()
    sent = 0
    try:
        while True:
            await websocket.send_bytes(b"x" * 65536)
            sent += 1
    except (WebSocketDisconnect, OSError, RuntimeError) as exc:
        log.info("flood: stopped after %d sends: %s", sent, type(exc).__name__)


@app.get("/boom")
async def boom() -> None:
    raise ValueError("boom")


# -- push through the extension ---------------------------------------------


class Subscriber:
    """Subscribes its client to the channel named by the path; tells it
    which worker it is on."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def on_open(self, client: trio_push.Client) -> None:
        client.subscribe(self.channel)
        client.write(f"pid {os.getpid()}")


def _subscriber(scope: dict[str, Any]) -> Subscriber | None:
    channel = scope["path"].rsplit("/", 1)[-1]
    return Subscriber(channel) if channel else None


app.mount("/push", trio_push.ASGIPush(_subscriber))


@app.post("/publish/{channel}")
async def publish(channel: str, request: Request) -> dict[str, Any]:
    body = (await request.body()).decode()
    return {"published": bool(trio_push.publish(channel, body)), "pid": os.getpid()}


@app.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


PAGE = """<!doctype html>
<title>asgi</title>
<p id="ws">-</p><p id="sse">-</p>
<script>
const ws = new WebSocket(`ws://${location.host}/ws`, ["echo"]);
ws.onopen = () => ws.send("hello from the page");
ws.onmessage = (e) => { document.getElementById("ws").textContent = ws.protocol + ":" + e.data; };
const es = new EventSource("/sse?n=2");
const seen = [];
es.addEventListener("tick", (e) => {
  seen.push(e.data);
  document.getElementById("sse").textContent = seen.join(",");
  if (seen.length == 2) es.close();
});
</script>
"""


@app.get("/page")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE)
