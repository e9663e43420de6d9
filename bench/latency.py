"""Push latency: how long a published message takes to reach each of many
subscribers, trio-push against uvicorn running the same app, in one run.

    .venv/bin/python bench/latency.py          # 10,000 subscribers, 200 messages/s for 20 s
    .venv/bin/python bench/latency.py --n 500 --seconds 3 --results '' --chart '' --json ''

For each server (``servers.py``: trio-push; uvicorn with httptools and uvloop;
on request hypercorn's Trio worker or websockets' Trio server), on 127.0.0.1
and pinned to one core (``--server-cpu``), the load client
(``latencyclient.py``, asyncio on uvloop, pinned to the other core,
``--load-cpu``) opens ``--n`` WebSocket subscribers; once the server counts
them all, a publisher (its own process, on the load's core) sends ``--rate``
messages/s for ``--seconds`` on one WebSocket connection to ``/pub``, which
publishes each to every subscriber, the way each server is meant to be used
(trio-push: ``publish``; ASGI: a queue per subscriber).

Each message carries the time it was due on the publisher's fixed schedule
(CLOCK_MONOTONIC, one clock for all processes of the machine), and the
latency of a delivery is from then until the subscriber's read returned its
last byte. Counting from the due time, not from when the publisher got to
send it, keeps a late publisher from hiding latency; how late it was is in
the table too. A delivery that has not arrived ``--drain`` s after the last
publish is missing: it counts as arriving then, so with any missing every
percentile of that server is a lower bound (shown with ``≥``).

It prints a table (deliveries, missing, p50, p99, p99.9, max; the
publisher's lateness; each process's CPU use while publishing) and the
target (uvicorn's p99 / trio-push's >= 5), writes them into
``bench/RESULTS.md`` (between the ``latency.py`` markers), the raw figures
into ``--json`` and a percentile chart into ``--chart``. Every wait is
bounded; loopback only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import compare

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "latencyclient.py"
SERVERS = ["trio-push", "uvicorn"]
LABELS = compare.LABELS
BEGIN = "<!-- latency.py: begin -->"
END = "<!-- latency.py: end -->"
TARGET = 5.0


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_line(pipe: IO[bytes], timeout: float) -> bytes:
    """One line from ``pipe`` (read without its buffer), within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([pipe], [], [], left)[0]:
            raise RuntimeError(f"no line within {timeout:g} s")
        data = os.read(pipe.fileno(), 4096)
        if not data:
            break
        line += data
    return line


def last_line(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "?"


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(CLIENT)]
    with (
        compare.ServerProcess(name, args) as server,
        tempfile.TemporaryFile() as log,
    ):
        port = ["--port", str(server.port), "--size", str(args.size)]
        subscribers = subprocess.Popen(
            [*cmd, "subscribe", *port, "--n", str(args.n), "--drain", str(args.drain)]
            + ["--timeout", str(args.timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=compare.pinned(args.load_cpu),
        )
        assert subscribers.stdout is not None
        try:
            try:
                ready = read_line(subscribers.stdout, args.timeout + 10)
            except RuntimeError:
                ready = b""
            if ready != b"ready\n":
                raise RuntimeError(f"subscribers: {last_line(log)}")
            cpu0, t0 = cpu_seconds(server.process.pid), time.monotonic()
            publisher = compare.load(
                args,
                [*cmd, "publish", *port, "--rate", str(args.rate), "--seconds", str(args.seconds)],
                args.seconds + 30,
            )
            server_cpu = (cpu_seconds(server.process.pid) - cpu0) / (time.monotonic() - t0)
            published = json.loads(publisher)
            out, _ = subscribers.communicate(
                f"{published['sent']} {published['t0']} {published['rate']}\n".encode(),
                timeout=args.drain + 120,
            )
            if subscribers.returncode != 0:
                raise RuntimeError(f"subscribers: {last_line(log)}")
        finally:
            if subscribers.poll() is None:
                subscribers.kill()
                subscribers.wait()
    result: dict[str, Any] = json.loads(out)
    result["publisher"] = published
    result["server_cpu"] = server_cpu
    return result


# -- reporting --------------------------------------------------------------------


def ms(result: dict[str, Any], key: str) -> str:
    bound = "≥ " if result["censored"] else ""
    return f"{bound}{result[key]:,.1f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| server | deliveries | missing | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) "
        "| publisher late, p99 / max (ms) | server CPU | client CPU |",
        "| --- |" + " ---: |" * 9,
    ]
    for server, r in results.items():
        name = f"**{LABELS[server]}**" if server == "trio-push" else LABELS[server]
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} |" + " |" * 8)
            continue
        late = r["publisher"]
        lines.append(
            f"| {name} | {r['deliveries']:,} | {r['missing']:,} | {ms(r, 'p50_ms')} "
            f"| {ms(r, 'p99_ms')} | {ms(r, 'p999_ms')} | {ms(r, 'max_ms')} "
            f"| {late['late_p99_ms']:.2f} / {late['late_max_ms']:.2f} "
            f"| {r['server_cpu']:.0%} | {r['client_cpu']:.0%} |"
        )
    return "\n".join(lines)


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    ours = results.get("trio-push")
    if ours is None or "error" in ours:
        return []
    out = []
    problems = [k for k in ("missing", "extra", "disorder", "lost") if ours[k]]
    detail = ", ".join(f"{k} {ours[k]:,}" for k in problems) or "none missing, all in order"
    out.append(f"trio-push deliveries: {detail}: {'NOT met' if problems else 'met'}")
    for peer, r in results.items():
        if peer == "trio-push" or "error" in r:
            continue
        if ours["censored"]:
            out.append(f"p99 vs {LABELS[peer]}: unknown (trio-push missed deliveries): NOT met")
            continue
        ratio = r["p99_ms"] / ours["p99_ms"]
        bound = "≥ " if r["censored"] else ""
        ok = "met" if ratio >= TARGET else "NOT met"
        if r["censored"] and ratio < TARGET:
            ok = "unknown"
        out.append(
            f"p99 {LABELS[peer]} / trio-push: {ms(r, 'p99_ms')} / {ms(ours, 'p99_ms')} ms = "
            f"{bound}{ratio:,.1f}x (target >= {TARGET:g}x): {ok}"
        )
    return out


def chart(results: dict[str, dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = iter(["#d1762b", "#6b8e23", "#9aa5b1"])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for server, r in results.items():
        if "error" in r:
            continue
        xs = [-math.log10(1 - p) for p, _ in r["curve"]]
        ys = [max(v, 1e-3) for _, v in r["curve"]]
        label = LABELS[server]
        if r["censored"]:
            label += f": a lower bound, {r['missing']:,} deliveries missing"
        ax.plot(
            xs,
            ys,
            label=label,
            linestyle="--" if r["censored"] else "-",
            linewidth=2.2 if server == "trio-push" else 1.6,
            color="#2a7ab9" if server == "trio-push" else next(colors),
        )
    ax.set_yscale("log")
    ticks = [0.0, -math.log10(0.5), 1.0, 2.0, 3.0, 4.0]
    ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
    ax.set_xlabel("percentile of deliveries")
    ax.set_ylabel("latency from publish to receipt (ms, log scale)")
    ax.set_title(
        f"Push latency: {args.n:,} WebSocket subscribers, {args.rate:g} messages/s for "
        f"{args.seconds:g} s\n(bench/latency.py; one core each for server and load)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help="also: hypercorn, websockets")
    parser.add_argument("--n", type=int, default=10000, help="subscribers")
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to publish")
    parser.add_argument("--size", type=int, default=64, help="bytes per message (40 to 125)")
    parser.add_argument(
        "--drain", type=float, default=30.0, help="how long to wait for deliveries after"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="for connecting, seconds")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "latency.json"), help="'' to skip")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="'' to skip")
    parser.add_argument(
        "--chart", default=str(compare.ROOT / "docs" / "latency.png"), help="'' to skip"
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    for server in args.servers.split(","):
        print(f"... {server}", file=sys.stderr, flush=True)
        try:
            results[server] = run(server, args)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            results[server] = {"error": str(exc)[:300]}
            print(f"    error: {exc}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()[0]

    facts = compare.machine()
    command = " ".join([".venv/bin/python bench/latency.py", *sys.argv[1:]])
    text = "\n".join(
        [
            "## Latest run (written by bench/latency.py)",
            "",
            f"    {command}",
            "",
            f"- **Run**: {time.strftime('%Y-%m-%d %H:%M')}; {args.n:,} WebSocket subscribers, "
            f"{args.rate:g} messages/s of {args.size} bytes for {args.seconds:g} s, then at most "
            f"{args.drain:g} s for the rest; server on core {args.server_cpu}, subscribers and "
            f"publisher on core {args.load_cpu}; load average {load_before:.1f} before, "
            f"{load_after:.1f} after.",
            f"- **Machine**: {facts['cpu']}, {facts['memory']}, {facts['os']}; "
            f"Python {facts['python']}.",
            f"- **Versions**: {facts['versions']}.",
            "- **Latency**: from the time the message was due on the publisher's schedule to "
            "the subscriber's read of its last byte; a missing delivery counts as arriving at "
            "the end of the wait, so `≥` marks a lower bound.",
            "",
            table(results),
            "",
            *[f"- {line}" for line in targets(results)],
            "",
        ]
    )
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "machine": facts, "results": results}, indent=1)
        )
    if args.results:
        compare.write_results(text, Path(args.results), BEGIN, END)
    if args.chart:
        chart(results, args, Path(args.chart))


if __name__ == "__main__":
    main()
