"""One ASGI app (Starlette) under trio-push, uvicorn and hypercorn, side by side in one run.

    .venv/bin/python bench/asgi.py                      # everything (about 5 minutes)
    .venv/bin/python bench/asgi.py --measures json_rps --servers uvicorn,hypercorn
    .venv/bin/python bench/asgi.py uvicorn PORT         # one server, as the run starts it

The app (``make_app``) has three parts:

- ``GET /hello``: a ``JSONResponse``;
- ``/echo`` (WebSocket): sends back every message it receives;
- ``/ws`` (WebSocket): a subscriber; ``/count`` says how many there are, and
  ``/publish?n=N&size=S&round=R`` sends N messages of S bytes to every one of
  them, the way the app is written for its server. Under uvicorn and hypercorn
  that is the app's own loop of sends (FastAPI's ``ConnectionManager.broadcast``:
  ``for ws in clients: await ws.send_text(msg)``); under trio-push the
  subscriber is handed to a push handler through the ASGI push extension and
  the publish is one ``trio_push.publish`` per message.

The servers: uvicorn (httptools, uvloop), hypercorn (its Trio worker), trio-push
(``interface="asgi"``) twice: ``trio-push`` with the app on its default asyncio
loop (a thread of its own, uvloop's), ``trio-push-trio`` with the app in the
server's Trio run (``asgi_loop="trio"``, for anyio apps such as this one). Each
runs pinned to one core, the load to the other (as bench/compare.py does, whose
measures this reuses):

- ``json_rps``: wrk on ``GET /hello``, requests/s and p99 (compare.py's http_rps);
- ``ws_echo``: 50 clients x 2,000 round trips of 64 bytes (compare.py's ws_echo);
- ``broadcast``: 5,000 WebSocket subscribers (bench/loadclient.py), ``--messages``
  of 64 bytes each to all of them, ``--rounds`` times: the median round's time
  and deliveries per second.

It prints a table and writes it into bench/RESULTS.md (the section between the
``asgi.py`` markers) with the machine's load average before and after the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import compare
import servers

HERE = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
SERVERS = ["trio-push", "trio-push-trio", "hypercorn", "uvicorn"]
LABELS = {
    "trio-push": "trio-push (app on asyncio)",
    "trio-push-trio": "trio-push (app on trio)",
    "hypercorn": "hypercorn (trio)",
    "uvicorn": "uvicorn (httptools, uvloop)",
}
MEASURES = ["json_rps", "ws_echo", "broadcast"]
HEADERS = {
    "json_rps": "JSON GET: req/s (p99)",
    "ws_echo": "WebSocket echo: round trips/s",
    "broadcast": "broadcast to {n:,}: s per round (deliveries/s)",
}
BEGIN = "<!-- asgi.py: begin -->"
END = "<!-- asgi.py: end -->"
CHANNEL = "bench"


# -- the app ----------------------------------------------------------------------


class Subscriber:
    """trio-push's push handler for a ``/ws`` client."""

    def on_open(self, client: Any) -> None:
        client.subscribe(CHANNEL)


def has_push(scope: dict[str, Any]) -> bool:
    """Whether the server offers trio-push's push extension."""
    return "trio_push.upgrade" in scope.get("extensions", {})


def make_app() -> Any:
    """The Starlette app. A subscriber goes to a push handler where the server
    offers the push extension (trio-push), to the app's own set elsewhere."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    import trio_push

    clients: set[WebSocket] = set()
    subscriber = Subscriber()

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"message": "Hello, world!"})

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            event = await ws.receive()
            if event["type"] == "websocket.disconnect":
                return
            if event.get("text") is not None:
                await ws.send_text(event["text"])
            else:
                await ws.send_bytes(event["bytes"])

    class Subscribe:
        """``/ws``, a plain ASGI endpoint: Starlette's ``WebSocket`` sends only
        the standard messages, and the push extension's is not one."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if has_push(scope):
                await receive()  # websocket.connect
                await send({"type": "trio_push.upgrade", "handler": subscriber})
                return
            ws = WebSocket(scope, receive, send)
            await ws.accept()
            clients.add(ws)
            try:
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
            finally:
                clients.discard(ws)

    # The subscribers are the push clients of the trio-push servers in this
    # process (none elsewhere) and the app's own.
    async def count(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(trio_push.subscriber_count(CHANNEL) + len(clients)))

    async def publish(request: Request) -> PlainTextResponse:
        for msg in servers.messages(request.url.query):
            trio_push.publish(CHANNEL, msg)  # False where no trio-push server runs
            for ws in list(clients):
                await ws.send_text(msg)
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/hello", hello),
            Route("/count", count),
            Route("/publish", publish),
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/ws", Subscribe()),
        ]
    )


def serve_trio_push(port: int, loop: str) -> None:
    import trio

    import trio_push

    server = trio_push.Server(
        make_app(),
        port,
        host="127.0.0.1",
        interface="asgi",
        asgi_loop=loop,
        ping_interval=3600,
        max_connections=20000,
    )
    trio.run(server.serve)


def serve(name: str, port: int) -> None:
    servers.raise_fd_limit()
    if name == "uvicorn":
        servers.serve_uvicorn(make_app(), port)
    elif name == "hypercorn":
        servers.serve_hypercorn(make_app(), port)
    else:
        serve_trio_push(port, "trio" if name == "trio-push-trio" else "asyncio")


# -- the run ----------------------------------------------------------------------


def broadcast(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE / "loadclient.py"),
        "--n",
        str(args.clients),
        "--protocol",
        "ws",
        "--messages",
        str(args.messages),
        "--size",
        "64",
        "--rounds",
        str(args.rounds),
        "--timeout",
        str(args.timeout),
    ]
    with compare.ServerProcess(name, args, SCRIPT) as server:
        result = json.loads(
            compare.load(args, [*cmd, "--port", str(server.port)], args.timeout * 5)
        )
    if result["lost"] or result["extra"]:
        raise RuntimeError(f"{result['lost']} connections lost, {result['extra']} extra messages")
    median = statistics.median(result["rounds"])
    return {
        "seconds": median,
        "rate": args.clients * args.messages / median,
        "client_cpu": max(result["client_cpu"]),
        "raw": result,
    }


def run_measure(measure: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    if measure == "json_rps":
        return compare.http_rps(name, args, SCRIPT)
    if measure == "ws_echo":
        return compare.ws_echo(name, args, SCRIPT)
    return broadcast(name, args)


def cell(measure: str, result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    if "error" in result:
        return "error"
    if measure == "json_rps":
        return f"{result['rps']:,.0f} ({result['p99_ms']:.1f} ms)"
    if measure == "ws_echo":
        return f"{result['rate']:,.0f}"
    return f"{result['seconds']:.3f} ({result['rate']:,.0f})"


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    measures = [m for m in MEASURES if m in results]
    heads = [HEADERS[m].format(n=args.clients) for m in measures]
    lines = ["| server | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(measures)]
    for server in SERVERS:
        if not any(server in results[m] for m in measures):
            continue
        cells = [cell(m, results[m].get(server)) for m in measures]
        lines.append(f"| {LABELS[server]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets: >= hypercorn-trio on req/s and echo, and the push
    extension's broadcast >= 5x uvicorn's app-driven one."""

    def get(measure: str, server: str, key: str) -> float | None:
        r = results.get(measure, {}).get(server)
        return None if r is None or "error" in r else float(r[key])

    out = []
    for measure, key, peer, want in (
        ("json_rps", "rps", "hypercorn", 1.0),
        ("ws_echo", "rate", "hypercorn", 1.0),
        ("broadcast", "rate", "uvicorn", 5.0),
    ):
        for server in ("trio-push", "trio-push-trio"):
            mine, theirs = get(measure, server, key), get(measure, peer, key)
            if mine and theirs:
                ratio = mine / theirs
                ok = "met" if ratio >= want else "NOT met"
                out.append(
                    f"{measure}, {LABELS[server]} vs {LABELS[peer]}: {ratio:.2f}x"
                    f" (target >= {want:g}x): {ok}"
                )
    return out


def versions() -> str:
    found = []
    for pkg in ("trio-push", "starlette", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{pkg} {metadata.version(pkg)}")
    return ", ".join(found)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in SERVERS:  # compare.ServerProcess: NAME PORT
        serve(sys.argv[1], int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--measures", default=",".join(MEASURES))
    parser.add_argument("--repeats", type=int, default=3, help="for json_rps and ws_echo")
    parser.add_argument("--wrk-seconds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=5000, help="broadcast subscribers")
    parser.add_argument("--messages", type=int, default=100, help="per broadcast round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="per broadcast round")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "asgi.json"))
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="'' to skip")
    args = parser.parse_args()
    chosen = args.servers.split(",")
    load_before = load_average()
    results: dict[str, dict[str, Any]] = {}
    for measure in args.measures.split(","):
        for server in (s for s in SERVERS if s in chosen):
            print(f"... {measure} {server}", file=sys.stderr, flush=True)
            try:
                result = run_measure(measure, server, args)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                result = {"error": str(exc)[:300]}
                print(f"    error: {exc}", file=sys.stderr, flush=True)
            results.setdefault(measure, {})[server] = result
    facts = compare.machine()
    text = "\n".join(
        [
            "### Latest run (written by bench/asgi.py)",
            "",
            "    " + " ".join([".venv/bin/python bench/asgi.py", *sys.argv[1:]]),
            "",
            f"- **Run**: {time.strftime('%Y-%m-%d %H:%M')}; median of {args.repeats} repeats"
            f" (broadcast: of {args.rounds} rounds of {args.messages} messages); server on core"
            f" {args.server_cpu}, load on core {args.load_cpu}.",
            f"- **Load average** (1, 5, 15 min): {load_before} before, {load_average()} after"
            " (other work shared the machine).",
            f"- **Machine**: {facts['cpu']}, {facts['memory']}, {facts['os']}; "
            f"Python {facts['python']}; {facts['wrk']}.",
            f"- **Versions**: {facts['versions']}, {versions()}.",
            "",
            table(results, args),
            "",
            *[f"- {line}" for line in targets(results)],
            "",
        ]
    )
    print()
    print(text)
    Path(args.json).write_text(
        json.dumps({"args": vars(args), "machine": facts, "results": results}, indent=1)
    )
    if args.results:
        compare.write_results(text, Path(args.results), BEGIN, END)


if __name__ == "__main__":
    main()
