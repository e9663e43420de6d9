"""Fan-out benchmark: trio-push against its peers, side by side, in one run.

    .venv/bin/python bench/fanout.py                 # everything (a few minutes)
    .venv/bin/python bench/fanout.py --n 1000 --servers trio-push,uvicorn
    .venv/bin/python bench/fanout.py --servers trio-push,trio-push-redis

For each server (``servers.py``: trio-push, hypercorn with its Trio worker,
uvicorn, websockets' Trio server; on request ``trio-push-redis``, trio-push
with pub/sub through a redis-server started for the run), each client count
and each protocol (SSE where the server can do it), it starts the server on
127.0.0.1, runs the load client (``loadclient.py``: asyncio + uvloop, counting bytes) in another
process, and has the server publish ``--messages`` messages of ``--size``
bytes to every client, ``--rounds`` times on the same connections. It
reports the median round (a server whose round takes over 10 s gets one round
only): the time from the publish request until every
client has every message, and deliveries per second (clients x messages /
time). The load client's CPU use during the round is printed too: well
under 100% means it was not the bottleneck.

Each client count and protocol also runs ``reference`` (``servers.py``): a
server that writes each subscriber the burst's bytes, precomputed once, in
one write. It is the ceiling of what the load client can absorb, and every
server's deliveries/s is also given as a percentage of it, from the same run
(``--no-reference`` leaves it out).

Loopback only; every wait is bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = ["trio-push", "hypercorn", "uvicorn", "websockets"]
# websockets serves WebSocket only.
SSE_CAPABLE = {"trio-push", "trio-push-redis", "hypercorn", "uvicorn", "reference"}
REFERENCE = "reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of its own on 127.0.0.1 (no persistence); its URL."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, process, 15)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


def run_one(server: str, n: int, protocol: str, args: argparse.Namespace) -> dict[str, object]:
    with contextlib.ExitStack() as stack:
        env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_PEER_GC=args.peer_gc)
        if args.trio_push_gc == "default":
            env["BENCH_GC"] = "default"
        if server == "trio-push-redis":
            env["BENCH_REDIS_URL"] = stack.enter_context(redis_server())
        return run_server(server, n, protocol, args, env)


def run_server(
    server: str, n: int, protocol: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, object]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "servers.py"), server, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, process, 15)
        client = subprocess.run(
            [
                sys.executable,
                str(HERE / "loadclient.py"),
                "--port",
                str(port),
                "--n",
                str(n),
                "--protocol",
                protocol,
                "--messages",
                str(args.messages),
                "--size",
                str(args.size),
                "--rounds",
                str(args.rounds),
                "--timeout",
                str(args.timeout),
            ],
            capture_output=True,
            text=True,
            timeout=args.timeout * (args.rounds + 2) + 120,
        )
        if client.returncode != 0:
            error = client.stderr.strip().splitlines()[-1] if client.stderr.strip() else "?"
            return {"error": error}
        return json.loads(client.stdout)  # type: ignore[no-any-return]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--n", default="1000,5000", help="client counts (default 1000,5000)")
    parser.add_argument("--protocols", default="ws,sse")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=240.0, help="per round, seconds")
    parser.add_argument(
        "--peer-gc",
        choices=["default", "tuned"],
        default="default",
        help="the peers' collector: Python's defaults, or trio-push's tune_gc settings",
    )
    parser.add_argument(
        "--trio-push-gc",
        choices=["tuned", "default"],
        default="tuned",
        help="trio-push as shipped (tune_gc), or with Python's default collector",
    )
    parser.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the byte-blasting reference server too (the ceiling)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    results = []
    header = f"{'server':<15} {'proto':<5} {'clients':>7} {'time (s)':>9} "
    header += f"{'deliveries/s':>13} {'vs best peer':>12} {'vs reference':>12} "
    header += f"{'client CPU':>10} {'connect (s)':>11}"
    servers = [s for s in args.servers.split(",") if s != REFERENCE]
    if args.reference:
        servers.insert(0, REFERENCE)
    rows: list[tuple[str, str, int, dict[str, object]]] = []
    for n in [int(x) for x in args.n.split(",")]:
        for protocol in args.protocols.split(","):
            for server in servers:
                if protocol == "sse" and server not in SSE_CAPABLE:
                    continue
                print(f"... {server} {protocol} {n}", file=sys.stderr, flush=True)
                result = run_one(server, n, protocol, args)
                rows.append((server, protocol, n, result))
                results.append({"server": server, "protocol": protocol, "clients": n, **result})

    print()
    print(header)
    print("-" * len(header))
    for n in sorted({r[2] for r in rows}):
        for protocol in args.protocols.split(","):
            group = [r for r in rows if r[1] == protocol and r[2] == n]
            rates = {}
            for server, _, _, result in group:
                if "rounds" in result:
                    median = statistics.median(result["rounds"])  # type: ignore[arg-type]
                    rates[server] = n * args.messages / median
            best_peer = max(
                (v for k, v in rates.items() if not k.startswith(("trio-push", REFERENCE))),
                default=None,
            )
            reference = rates.get(REFERENCE)
            for server, _, _, result in group:
                if "error" in result:
                    print(f"{server:<15} {protocol:<5} {n:>7}   error: {result['error']}")
                    continue
                median = statistics.median(result["rounds"])  # type: ignore[arg-type]
                cpu = max(result["client_cpu"])  # type: ignore[type-var]
                ratio = f"{rates[server] / best_peer:.1f}x" if best_peer else "-"
                share = f"{rates[server] / reference:.0%}" if reference else "-"
                print(
                    f"{server:<15} {protocol:<5} {n:>7} {median:>9.3f} {rates[server]:>13,.0f} "
                    f"{ratio:>12} {share:>12} {cpu:>10.0%} {result['connect']:>11.1f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
