"""trio-push against its peers on plain HTTP, WebSocket echo, idle memory and
connection count, side by side, in one run.

    .venv/bin/python bench/compare.py              # everything (about 10 minutes)
    .venv/bin/python bench/compare.py --measures http_rps --servers trio-push,uvicorn-h11

Every server (``servers.py``: trio-push with ``threads=0``, hypercorn with its
Trio worker, uvicorn with httptools and websockets, uvicorn ``--http h11``,
websockets' Trio server) runs on 127.0.0.1, pinned to one core
(``--server-cpu``); the load runs pinned to another (``--load-cpu``).

- ``http_rps``: ``wrk -t1 -c64 -d8s --latency`` on ``GET /hello`` (keep-alive),
  after a 2 s warm-up run; requests/s and p99 latency, median of ``--repeats``.
- ``ws_echo``: 50 WebSocket clients each doing 2,000 sequential round trips
  of 64 bytes (``compareclient.py echo``); round trips/s, median of ``--repeats``.
- ``mem_ws`` / ``mem_sse``: the server's RSS with 5,000 idle connections
  (``compareclient.py idle``) minus its RSS before, per connection; a fresh
  server for each of ``--repeats``, the median.
- ``conns_max``: 19,000 WebSocket subscribers on one server process
  (``loadclient.py``), then one published message must reach every one.

It prints a table, writes it into ``bench/RESULTS.md`` (the section between
the ``compare.py`` markers), the raw numbers into ``bench/compare.json`` and a
chart into ``docs/bench.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS_PY = HERE / "servers.py"
SERVERS = ["trio-push", "hypercorn", "uvicorn", "uvicorn-h11", "websockets"]
MEASURES = ["http_rps", "ws_echo", "mem_ws", "mem_sse", "conns_max"]
LABELS = {
    "trio-push": "trio-push",
    "hypercorn": "hypercorn (trio)",
    "uvicorn": "uvicorn (httptools)",
    "uvicorn-h11": "uvicorn --http h11",
    "websockets": "websockets (trio)",
}
# Which servers each measure runs: uvicorn-h11 differs from uvicorn only in its
# HTTP parser; websockets serves no SSE.
RUNS = {
    "http_rps": SERVERS,
    "ws_echo": ["trio-push", "hypercorn", "uvicorn", "websockets"],
    "mem_ws": ["trio-push", "hypercorn", "uvicorn", "websockets"],
    "mem_sse": ["trio-push", "hypercorn", "uvicorn"],
    "conns_max": ["trio-push", "hypercorn", "uvicorn", "websockets"],
}
PACKAGES = ["trio", "h11", "wsproto", "hypercorn", "uvicorn", "uvloop", "httptools", "websockets"]
BEGIN = "<!-- compare.py: begin -->"
END = "<!-- compare.py: end -->"


# -- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int) -> Any:
    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})

    return preexec


class ServerProcess:
    """``script NAME PORT`` (servers.py by default; bench/asgi.py has its own)."""

    def __init__(self, name: str, args: argparse.Namespace, script: Path = SERVERS_PY) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        # A file, not a pipe: a server that logs a lot would fill a pipe and block.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [sys.executable, str(script), name, str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=pinned(args.server_cpu),
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")[-500:]
                raise RuntimeError(f"{name} exited with {self.process.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start listening") from None
                time.sleep(0.05)
        time.sleep(0.3)

    def rss(self) -> int:
        """Resident set size in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def load(args: argparse.Namespace, cmd: list[str], timeout: float) -> str:
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=pinned(args.load_cpu),
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["?"]
        raise RuntimeError(lines[-1])
    return result.stdout


# -- measures ---------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(args: argparse.Namespace, port: int, seconds: int) -> dict[str, Any]:
    out = load(
        args,
        ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/hello"],
        seconds + 30,
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p99_ms": p99,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def http_rps(name: str, args: argparse.Namespace, script: Path = SERVERS_PY) -> dict[str, Any]:
    with ServerProcess(name, args, script) as server:
        wrk(args, server.port, 2)  # warm-up
        runs = [wrk(args, server.port, args.wrk_seconds) for _ in range(args.repeats)]
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "runs": runs,
    }


def ws_echo(name: str, args: argparse.Namespace, script: Path = SERVERS_PY) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "compareclient.py"), "echo"]
    runs = []
    with ServerProcess(name, args, script) as server:
        for _ in range(args.repeats):
            out = load(args, [*cmd, "--port", str(server.port)], 600)
            runs.append(json.loads(out))
    return {
        "rate": statistics.median(r["rate"] for r in runs),
        "client_cpu": max(r["cpu"] for r in runs),
        "runs": runs,
    }


def mem(protocol: str) -> Any:
    def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
        runs = []
        for _ in range(args.repeats):
            with ServerProcess(name, args) as server:
                before = server.rss()
                client = subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "compareclient.py"),
                        "idle",
                        "--port",
                        str(server.port),
                        "--n",
                        str(args.idle),
                        "--protocol",
                        protocol,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    preexec_fn=pinned(args.load_cpu),
                )
                assert client.stdin is not None and client.stdout is not None
                try:
                    line = client.stdout.readline()
                    if line.strip() != "ready":
                        raise RuntimeError(f"idle client: {client.stderr.read()[-300:]}")  # type: ignore[union-attr]
                    time.sleep(1.0)
                    after = server.rss()
                    client.stdin.write("\n")
                    client.stdin.flush()
                    result = json.loads(client.stdout.readline())
                    client.wait(30)
                finally:
                    if client.poll() is None:
                        client.kill()
                        client.wait()
                runs.append(
                    {
                        "before": before,
                        "after": after,
                        "per_conn_kib": (after - before) / args.idle / 1024,
                        "connect": result["connect"],
                    }
                )
        return {"kib": statistics.median(r["per_conn_kib"] for r in runs), "runs": runs}

    return measure


def conns_max(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE / "loadclient.py"),
        "--n",
        str(args.conns),
        "--protocol",
        "ws",
        "--messages",
        "1",
        "--rounds",
        "1",
        "--timeout",
        "180",
    ]
    with ServerProcess(name, args) as server:
        before = server.rss()
        result = json.loads(load(args, [*cmd, "--port", str(server.port)], 900))
        after = server.rss()
    ok = result["lost"] == 0 and result["extra"] == 0 and len(result["rounds"]) == 1
    return {
        "held": args.conns if ok else 0,
        "connect": result["connect"],
        "broadcast": result["rounds"][0],
        "rss_mib": (after - before) / 2**20,
        "raw": result,
    }


RUNNERS = {
    "http_rps": http_rps,
    "ws_echo": ws_echo,
    "mem_ws": mem("ws"),
    "mem_sse": mem("sse"),
    "conns_max": conns_max,
}


# -- reporting --------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = []
    for pkg in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{pkg} {metadata.version(pkg)}")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": f"{os.cpu_count()} cores ({model})",
        "memory": f"{mem_kib / 2**20:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(versions),
        "wrk": " ".join(wrk_version[:2]) if wrk_version else "wrk",
    }


def cell(measure: str, result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    if "error" in result:
        return "error"
    if measure == "http_rps":
        return f"{result['rps']:,.0f} ({result['p99_ms']:.1f} ms)"
    if measure == "ws_echo":
        return f"{result['rate']:,.0f}"
    if measure in ("mem_ws", "mem_sse"):
        return f"{result['kib']:.1f}"
    return f"{result['held']:,} ({result['broadcast']:.2f} s)"


HEADERS = {
    "http_rps": "http_rps: req/s (p99)",
    "ws_echo": "ws_echo: round trips/s",
    "mem_ws": "mem_ws: KiB/conn",
    "mem_sse": "mem_sse: KiB/conn",
    "conns_max": "conns_max: held (broadcast)",
}


def table(results: dict[str, dict[str, Any]], measures: list[str], servers: list[str]) -> str:
    lines = ["| server | " + " | ".join(HEADERS[m] for m in measures) + " |"]
    lines.append("| --- |" + " ---: |" * len(measures))
    for server in servers:
        cells = [cell(m, results.get(m, {}).get(server)) for m in measures]
        name = f"**{LABELS[server]}**" if server == "trio-push" else LABELS[server]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    out = []

    def get(measure: str, server: str, key: str) -> float | None:
        r = results.get(measure, {}).get(server)
        return None if r is None or "error" in r else float(r[key])

    # Issue 18's ratios (uvicorn's C stack), and the earlier issues' (Trio peers).
    ratios = (
        ("http_rps", "rps", "uvicorn", 0.7),
        ("http_rps", "rps", "uvicorn-h11", 2.0),
        ("http_rps", "rps", "hypercorn", 1.5),
        ("ws_echo", "rate", "uvicorn", 1.0),
        ("ws_echo", "rate", "websockets", 1.5),
    )
    for measure, key, peer, want in ratios:
        tp = get(measure, "trio-push", key)
        other = get(measure, peer, key)
        if tp and other:
            ratio = tp / other
            ok = "met" if ratio >= want else "NOT met"
            out.append(f"{measure} vs {LABELS[peer]}: {ratio:.2f}x (target >= {want}x): {ok}")
    for measure, limit in (("mem_ws", 6.0), ("mem_sse", 5.0)):
        kib = get(measure, "trio-push", "kib")
        if kib is not None:
            ok = "met" if kib <= limit else "NOT met"
            out.append(f"{measure}: {kib:.1f} KiB per connection (target <= {limit:.0f}): {ok}")
    held = get("conns_max", "trio-push", "held")
    if held is not None:
        ok = "met" if held >= 19000 else "NOT met"
        out.append(f"conns_max: {held:,.0f} held, broadcast reached all (target 19,000): {ok}")
    return out


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("http_rps", "rps", "HTTP keep-alive, requests/s (higher is better)"),
        ("ws_echo", "rate", "WebSocket echo, round trips/s (higher is better)"),
        ("mem_ws", "kib", "Idle WebSocket, KiB per connection (lower is better)"),
        ("mem_sse", "kib", "Idle SSE, KiB per connection (lower is better)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (measure, key, title) in zip(axes.flat, panels, strict=True):
        rows = [
            (LABELS[s], float(r[key]), s == "trio-push")
            for s, r in results.get(measure, {}).items()
            if "error" not in r
        ]
        names = [n for n, _, _ in rows]
        values = [v for _, v, _ in rows]
        colors = ["#2a7ab9" if mine else "#9aa5b1" for _, _, mine in rows]
        bars = ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in values])
        ax.margins(x=0.2)
        ax.tick_params(labelsize=9)
    fig.suptitle("trio-push and its peers (bench/compare.py; one core each for server and load)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_results(text: str, path: Path, begin: str = BEGIN, end_mark: str = END) -> None:
    """``text`` between the markers in ``path`` (at its end the first time)."""
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end_mark}"
    if begin in old and end_mark in old:
        start, end = old.index(begin), old.index(end_mark) + len(end_mark)
        new = old[:start] + block + old[end:]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--measures", default=",".join(MEASURES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=int, default=8)
    parser.add_argument("--idle", type=int, default=5000, help="idle connections for mem_*")
    parser.add_argument("--conns", type=int, default=19000, help="connections for conns_max")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "compare.json"))
    parser.add_argument(
        "--merge",
        action="store_true",
        help="re-measure only what is selected; keep the rest of --json's last run",
    )
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="'' to skip")
    parser.add_argument("--chart", default=str(ROOT / "docs" / "bench.png"), help="'' to skip")
    args = parser.parse_args()
    servers = args.servers.split(",")
    measures = args.measures.split(",")

    results: dict[str, dict[str, Any]] = {}
    commands = []
    if args.merge:
        # Keep the other figures of the last run; the table shows them all.
        last = json.loads(Path(args.json).read_text())
        results = last["results"]
        commands = last.get("commands", [])
    commands.append(" ".join([".venv/bin/python bench/compare.py", *sys.argv[1:]]))
    for measure in measures:
        for server in RUNS[measure]:
            if server not in servers:
                continue
            print(f"... {measure} {server}", file=sys.stderr, flush=True)
            try:
                result = RUNNERS[measure](server, args)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                result = {"error": str(exc)[:300]}
                print(f"    error: {exc}", file=sys.stderr, flush=True)
            results.setdefault(measure, {})[server] = result

    if args.merge:
        measures = [m for m in MEASURES if m in results]
        servers = SERVERS
    facts = machine()
    text = "\n".join(
        [
            "## Latest comparison (written by bench/compare.py)",
            "",
            *[f"    {c}" for c in commands],
            "",
            f"- **Run**: {time.strftime('%Y-%m-%d %H:%M')}; median of {args.repeats} "
            f"repeats; server on core {args.server_cpu}, load on core {args.load_cpu}.",
            f"- **Machine**: {facts['cpu']}, {facts['memory']}, {facts['os']}; "
            f"Python {facts['python']}; {facts['wrk']}.",
            f"- **Versions**: {facts['versions']}.",
            "",
            table(results, measures, servers),
            "",
            *[f"- {line}" for line in targets(results)],
            "",
        ]
    )
    print()
    print(text)
    Path(args.json).write_text(
        json.dumps(
            {"args": vars(args), "commands": commands, "machine": facts, "results": results},
            indent=1,
        )
    )
    if args.results:
        write_results(text, Path(args.results))
    if args.chart:
        chart(results, Path(args.chart))


if __name__ == "__main__":
    main()
