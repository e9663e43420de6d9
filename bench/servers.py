"""The servers under test, each with the same broadcast app.

    python bench/servers.py NAME PORT

NAME is one of ``trio-push``, ``trio-push-redis`` (pub/sub through the Redis
at ``BENCH_REDIS_URL``), ``hypercorn``, ``uvicorn``, ``uvicorn-h11``,
``websockets``, ``reference``. Every app answers:

- ``/ws`` (WebSocket) and ``/sse`` (Server-Sent Events; not websockets): a
  subscriber of the one channel;
- ``/count``: how many subscribers there are;
- ``/publish?n=N&size=S&round=R``: publishes N messages of S bytes to every
  subscriber, in a burst, the way each server is meant to be used (trio-push:
  ``publish``; ASGI: a queue per connection; websockets: ``broadcast``);
- ``/hello``: a plain ``Hello, world!`` (bench/compare.py's ``http_rps``);
- ``/echo`` (WebSocket): sends back every message it receives; as SSE (not
  websockets), an event stream that stays open and idle (``mem_sse``);
- ``/pub`` (WebSocket): publishes every message it receives, as it is, to every
  subscriber, the same way as ``/publish`` (``bench/latency.py``'s publisher,
  whose messages carry their send time).

``reference`` is not a server to compare but the ceiling of the fan-out
measure (``bench/fanout.py``): a minimal asyncio server (uvloop when installed)
that answers ``/ws``, ``/sse``, ``/count`` and ``/publish`` only, and on a
publish writes each subscriber the burst's bytes, precomputed once, in one
write: the bytes trio-push sends (WebSocket frames; SSE events ``event: msg``
in chunks), at the least cost per connection a server can have.

trio-push only (``bench/history.py``): ``BENCH_HISTORY=N`` gives the channel a
history of N messages, and ``/envelope`` (WebSocket) subscribes with the
envelope, resuming from the position of the ``since`` query parameter.

Keepalive pings are off everywhere (the load client does not answer them).
Each message is ASCII, starts with its number and ends with ``~`` (the byte
the load client counts).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs


def message(round_: int, i: int, size: int) -> str:
    head = f"{round_}:{i}:"
    return head + "x" * (size - len(head) - 1) + "~"


def messages(query: str) -> list[str]:
    q = parse_qs(query)
    n, size, round_ = int(q["n"][0]), int(q["size"][0]), int(q.get("round", ["0"])[0])
    return [message(round_, i, size) for i in range(n)]


HELLO = b"Hello, world!"


def raise_fd_limit() -> None:
    """The soft limit on open files up to the hard one (conns_max)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def peer_gc() -> None:
    """BENCH_PEER_GC=tuned: the peers get trio-push's collector settings."""
    if os.environ.get("BENCH_PEER_GC") == "tuned":
        import gc

        from trio_push._server import TUNED_GC_THRESHOLD

        gc.set_threshold(*TUNED_GC_THRESHOLD)
        gc.freeze()


# -- trio-push -----------------------------------------------------------------------


def run_trio_push(port: int, pubsub: Any = None) -> None:
    import trio

    import trio_push

    class Subscriber:
        def on_open(self, client: trio_push.Client) -> None:
            client.subscribe("bench")

    class Enveloped:
        def on_open(self, client: trio_push.Client) -> None:
            client.subscribe("bench", since=client.since("bench"), envelope=True)

    class Echo:
        def on_message(self, client: trio_push.Client, message: str | bytes) -> None:
            client.write(message)

    class Publisher:
        def on_message(self, client: trio_push.Client, message: str | bytes) -> None:
            trio_push.publish("bench", message)

    subscriber = Subscriber()
    echo = Echo()
    upgrades = {"/echo": echo, "/envelope": Enveloped(), "/pub": Publisher()}
    hello = (200, [("content-type", "text/plain")], HELLO)

    def app(env: dict[str, Any]) -> Any:
        path = env["PATH_INFO"]
        if path == "/hello":
            return hello
        if env["rack.upgrade?"] is not None:
            env["rack.upgrade"] = upgrades.get(path, subscriber)
            return 200, {}, b""
        if path == "/count":
            return 200, {}, str(trio_push.subscriber_count("bench"))
        if path == "/publish":
            for msg in messages(env["QUERY_STRING"]):
                trio_push.publish("bench", msg)
            return 200, {}, b"ok"
        return 404, {}, b""

    # BENCH_GC=default: Python's default collector thresholds (no tune_gc).
    tune = os.environ.get("BENCH_GC") != "default"
    server = trio_push.Server(
        app,
        port,
        host="127.0.0.1",
        tune_gc=tune,
        ping_interval=3600,
        max_connections=20000,
        pubsub=pubsub,
        history=int(os.environ.get("BENCH_HISTORY", "0")),
    )
    trio.run(server.serve)


def run_trio_push_redis(port: int) -> None:
    """trio-push with pub/sub through Redis (BENCH_REDIS_URL): each publish
    goes to Redis and comes back before the same local fan-out."""
    import trio_push

    run_trio_push(port, trio_push.RedisPubSub(os.environ["BENCH_REDIS_URL"]))


# -- ASGI: one app for hypercorn (on Trio) and uvicorn (on asyncio) ---------------------------


def asgi_app(make_queue: Callable[[], Any], put: Callable[[Any, str], None]) -> Any:
    """A broadcast ASGI app: a queue per subscriber, a publish puts the
    message on every queue, each connection's task sends what its queue
    holds."""
    subscribers: set[Any] = set()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/hello":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": HELLO})
            return
        if scope["type"] == "websocket" and path == "/echo":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                event = await receive()
                if event["type"] != "websocket.receive":
                    return
                if event.get("text") is not None:
                    await send({"type": "websocket.send", "text": event["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": event["bytes"]})
        if scope["type"] == "websocket" and path == "/pub":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while (event := await receive())["type"] == "websocket.receive":
                for queue in subscribers:
                    put(queue, event["text"])
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            queue = make_queue()
            subscribers.add(queue)
            try:
                while True:
                    msg = await queue.get()
                    await send({"type": "websocket.send", "text": msg})
            finally:
                subscribers.discard(queue)
        elif path == "/echo":  # an idle event stream: open until the client goes
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            # A comment, so that the head goes out now (ASGI servers may hold it).
            await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass  # the (empty) request body comes first
        elif path == "/sse":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            queue = make_queue()
            subscribers.add(queue)
            try:
                while True:
                    msg = await queue.get()
                    body = f"data: {msg}\n\n".encode()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            finally:
                subscribers.discard(queue)
        else:
            if path == "/count":
                body = str(len(subscribers)).encode()
            elif path == "/publish":
                for msg in messages(scope["query_string"].decode()):
                    for queue in subscribers:
                        put(queue, msg)
                body = b"ok"
            else:
                body = b""
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    return app


class TrioQueue:
    """An unbounded queue on Trio primitives (for hypercorn's trio worker)."""

    def __init__(self) -> None:
        import trio

        self.send, self.receive = trio.open_memory_channel[str](float("inf"))

    async def get(self) -> str:
        return await self.receive.receive()


def serve_hypercorn(app: Any, port: int) -> None:
    """``app`` under hypercorn's Trio worker (also bench/asgi.py's)."""
    peer_gc()
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.backlog = 4096
    trio.run(serve, app, config)


def serve_uvicorn(app: Any, port: int, http: str = "httptools") -> None:
    """``app`` under uvicorn on uvloop (also bench/asgi.py's)."""
    peer_gc()
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        ws_ping_interval=None,
        lifespan="on",
        http=http,
    )


def run_hypercorn(port: int) -> None:
    serve_hypercorn(asgi_app(TrioQueue, lambda q, m: q.send.send_nowait(m)), port)


def run_uvicorn(port: int, http: str = "httptools") -> None:
    import asyncio

    serve_uvicorn(asgi_app(asyncio.Queue, lambda q, m: q.put_nowait(m)), port, http)


def run_uvicorn_h11(port: int) -> None:
    run_uvicorn(port, http="h11")


# -- websockets (its Trio server) ---------------------------------------------------------


def run_websockets(port: int) -> None:
    peer_gc()
    import trio
    from websockets.datastructures import Headers
    from websockets.http11 import Response
    from websockets.trio.connection import broadcast
    from websockets.trio.server import serve

    subscribers: set[Any] = set()

    async def handler(ws: Any) -> None:
        if ws.request.path == "/echo":
            async for msg in ws:
                await ws.send(msg)
            return
        if ws.request.path == "/pub":
            async for msg in ws:
                await broadcast(subscribers, msg)
            return
        subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)

    async def publish(msgs: list[str]) -> None:
        for msg in msgs:
            await broadcast(subscribers, msg)

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def process_request(connection: Any, request: Any) -> Any:
                path, _, query = request.path.partition("?")
                if path == "/hello":
                    # websockets answers HTTP only this way, then closes.
                    return connection.respond(200, HELLO.decode())
                if path == "/count":
                    return Response(200, "OK", Headers(), str(len(subscribers)).encode())
                if path == "/publish":
                    # In the background: process_request is bounded by open_timeout.
                    nursery.start_soon(publish, messages(query))
                    return Response(200, "OK", Headers(), b"ok")
                return None

            await serve(
                handler,
                port,
                host="127.0.0.1",
                process_request=process_request,
                compression=None,
                backlog=4096,
                ping_interval=None,
            )

    trio.run(main)


# -- reference: the fan-out ceiling ------------------------------------------------------


def ws_frame(payload: bytes) -> bytes:
    """An unmasked WebSocket text frame (what a server sends)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, n])
    elif n < 65536:
        head = bytes([0x81, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 127]) + n.to_bytes(8, "big")
    return head + payload


def sse_chunk(message: str) -> bytes:
    """One event as trio-push sends it on a chunked stream."""
    block = f"event: msg\ndata: {message}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(block), block)


def run_reference(port: int) -> None:
    import asyncio
    import base64
    import hashlib

    subscribers: dict[str, set[asyncio.Transport]] = {"ws": set(), "sse": set()}
    sse_head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def publish(query: str) -> None:
        msgs = messages(query)
        bursts = {
            "ws": b"".join(ws_frame(m.encode()) for m in msgs),
            "sse": b"".join(sse_chunk(m) for m in msgs),
        }
        for kind, transports in subscribers.items():
            burst = bursts[kind]
            for transport in transports:
                transport.write(burst)

    def answer(path: str, query: str, head: bytes) -> tuple[bytes, str | None]:
        """The response to a request, and the subscriber kind it makes."""
        if path == "/ws":
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            accept = base64.b64encode(digest)
            return (
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-accept: " + accept + b"\r\n\r\n",
                "ws",
            )
        if path == "/sse":
            return sse_head, "sse"
        if path == "/count":
            body = str(sum(len(s) for s in subscribers.values())).encode()
        elif path == "/publish":
            publish(query)
            body = b"ok"
        else:
            body = b""
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
            len(body),
            body,
        ), None

    class Reference(asyncio.Protocol):
        def __init__(self) -> None:
            self.head = b""
            self.kind: str | None = None
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            if self.kind is not None or self.transport is None:
                return  # a subscriber's bytes (a WebSocket close) are not read
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            target = self.head.split(b" ", 2)[1].decode()
            path, _, query = target.partition("?")
            response, self.kind = answer(path, query, self.head)
            self.transport.write(response)
            if self.kind is None:
                self.transport.close()
            else:
                subscribers[self.kind].add(self.transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.kind is not None and self.transport is not None:
                subscribers[self.kind].discard(self.transport)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Reference, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


SERVERS = {
    "trio-push": run_trio_push,
    "trio-push-redis": run_trio_push_redis,
    "hypercorn": run_hypercorn,
    "uvicorn": run_uvicorn,
    "uvicorn-h11": run_uvicorn_h11,
    "websockets": run_websockets,
    "reference": run_reference,
}

if __name__ == "__main__":
    raise_fd_limit()
    SERVERS[sys.argv[1]](int(sys.argv[2]))
