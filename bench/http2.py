"""HTTP/2: trio-push against hypercorn on plain requests, and an SSE fan-out
over HTTP/2 against the same over HTTP/1.1, side by side in one run.

    .venv/bin/python bench/http2.py                  # both measures (about 4 minutes, quiet)
    .venv/bin/python bench/http2.py --measures rps --rps-protocol h1    # over HTTP/1.1

- ``rps``: ``h2load -c 10 -m 20 -D 10 --warm-up-time 2`` on ``GET /hello``
  (``servers.py``'s plain-text answer), h2c with prior knowledge (what h2load
  does with an ``http://`` URL; ``--rps-protocol h1`` makes it HTTP/1.1 with 20
  requests pipelined per connection), against trio-push and hypercorn (its
  Trio worker); requests/s, the median of ``--repeats``, and trio-push's ratio.
  h2load must report the protocol asked for and every request 2xx.
- ``fanout``: 5,000 event streams on one trio-push server, as 50 h2c
  connections of 100 streams (``h2client.py``) and as 5,000 HTTP/1.1
  connections (``loadclient.py --protocol sse``), a fresh server for each;
  100 messages of 64 bytes published in a burst (``/publish``), ``--rounds``
  rounds on the same connections, the median round; ``--runs`` such runs,
  HTTP/2 and HTTP/1.1 alternating, the median of their medians; deliveries/s
  (streams x messages / time) measured at the client, and HTTP/2 as a share of
  HTTP/1.1.

The server runs pinned to ``--server-cpu``, the load to ``--load-cpu``
(``compare.py``'s ``load``); hypercorn without its cap of 1,000 requests per
connection (see ``serve``). ``others`` is the CPU the
rest of the machine used meanwhile, in cores: other work slows a run, so each
run waits for a quiet machine and a disturbed one runs again (``--quiet``,
``--max-others``, ``--retries``, as ``history.py`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from compare import load, machine, pinned
from fanout import free_port, stop, wait_listening
from history import (
    add_quiet_arguments,
    busy_seconds,
    profile_top,
    profiled,
    run_time,
    wait_quiet,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LABELS = {"trio-push": "trio-push", "hypercorn": "hypercorn (trio)"}
PROTOCOLS = {"h2": ("h2c", []), "h1": ("http/1.1", ["--h1"])}


def serve(name: str, port: int) -> None:
    """Runs ``servers.py``'s server ``name``; hypercorn without its cap of 1,000
    requests per connection (``keep_alive_max_requests``): past it hypercorn
    closes the connection, and h2load, which does not reconnect, would then
    measure idle time."""
    import servers

    if name == "hypercorn":
        from hypercorn.config import Config

        Config.keep_alive_max_requests = 2**62
    servers.raise_fd_limit()
    servers.SERVERS[name](port)


class ServerProcess:
    """``serve(name)`` in a process of its own on a free port, pinned to
    ``--server-cpu``; its stderr in a file (a pipe could fill and block it)."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, str(self.port)],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=pinned(args.server_cpu),
        )
        try:
            wait_listening(self.port, self.process, 20)
        except RuntimeError:
            self.__exit__()
            raise

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.process)
        self.log.close()


class Others:
    """The CPU time the rest of the machine used from creation to
    :meth:`stop`, in cores: all of it minus the server's and this process's
    children's (the load clients, waited for)."""

    def __init__(self, server: ServerProcess) -> None:
        self.pid = server.process.pid
        self.t0 = time.perf_counter()
        self.busy = busy_seconds()
        self.server = run_time(self.pid)
        self.children = self.children_cpu()

    @staticmethod
    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> float:
        ours = run_time(self.pid) - self.server + self.children_cpu() - self.children
        elapsed = time.perf_counter() - self.t0
        return max(busy_seconds() - self.busy - ours, 0.0) / elapsed


def h2load(args: argparse.Namespace, port: int, seconds: int) -> dict[str, Any]:
    want, flags = PROTOCOLS[args.rps_protocol]
    cmd = ["h2load", *flags, "-c", str(args.clients), "-m", str(args.max_streams)]
    cmd += ["-D", str(seconds), "--warm-up-time", "2", f"http://127.0.0.1:{port}/hello"]
    out = load(args, cmd, seconds + 60)
    protocol = re.search(r"Application protocol: (\S+)", out)
    if not protocol or protocol.group(1) != want:
        tail = " / ".join(out.strip().splitlines()[-3:])
        raise RuntimeError(f"h2load spoke {protocol and protocol.group(1)}, not {want}: {tail}")
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    counts = re.search(
        r"requests: .* (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert counts and codes
    done, succeeded, failed, errored = (int(x) for x in counts.groups())
    # Stopping at the end of the duration, h2load counts the requests still in flight as
    # failed or errored: at most one per stream it keeps open. And over HTTP/1.1 it takes no
    # status line without a reason phrase (hypercorn's "HTTP/1.1 200 "): failed, not non-2xx.
    cut = errored + (failed if args.rps_protocol == "h2" else 0)
    if not done or any(x != "0" for x in codes.groups()) or cut > args.clients * args.max_streams:
        raise RuntimeError(f"h2load: {counts.group(0)}; {codes.group(0)}")
    return {"rps": rps, "done": done, "succeeded": succeeded, "cut": cut}


def undisturbed(args: argparse.Namespace, run: Any) -> dict[str, Any]:
    """``run()`` once the machine is quiet (``--quiet``), again (``--retries``)
    while other work used over ``--max-others`` cores during it; the least
    disturbed."""
    tries = []
    for _ in range(args.retries + 1):
        busy = wait_quiet(args)
        if busy >= args.quiet:
            print(f"    not quiet: {busy:.2f} cores busy", file=sys.stderr, flush=True)
        tries.append(run())
        if tries[-1]["others"] <= args.max_others:
            break
        print(f"    disturbed ({tries[-1]['others']:.2f} cores): again", file=sys.stderr)
    return min(tries, key=lambda r: float(r["others"]))


def rps(name: str, args: argparse.Namespace) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        # A fresh server per run: once h2load has dropped its connections with requests in
        # flight, hypercorn's Trio worker answers no more (BusyResourceError in its h2
        # send_task: two tasks sending on one stream). h2load warms up itself.
        with ServerProcess(name, args) as server:
            others = Others(server)
            result = h2load(args, server.port, args.rps_seconds)
            return {**result, "others": others.stop()}

    runs = [undisturbed(args, run) for _ in range(args.repeats)]
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "others": max(r["others"] for r in runs),
        "runs": runs,
    }


def fanout(name: str, protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    return undisturbed(args, lambda: fanout_run(name, protocol, args))


def fanout_run(name: str, protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    common = ["--messages", str(args.messages), "--size", "64", "--rounds", str(args.rounds)]
    common += ["--timeout", str(args.timeout)]
    if protocol == "h2":
        cmd = [sys.executable, str(HERE / "h2client.py"), "--connections", str(args.connections)]
        cmd += ["--streams", str(args.streams)]
    else:
        cmd = [sys.executable, str(HERE / "loadclient.py"), "--protocol", "sse"]
        cmd += ["--n", str(args.connections * args.streams)]
    with ServerProcess(name, args) as server, profiled(args, server, f"fanout-{protocol}"):  # type: ignore[arg-type]
        others = Others(server)
        out = load(args, [*cmd, *common, "--port", str(server.port)], args.timeout * 5 + 120)
        result: dict[str, Any] = json.loads(out)
        result["others"] = others.stop()
    if result["lost"] or result["extra"]:
        raise RuntimeError(f"{result['lost']} streams lost, {result['extra']} messages extra")
    median = statistics.median(result["rounds"])
    result["time"] = median
    result["rate"] = args.connections * args.streams * args.messages / median
    return result


def combined(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fresh-server runs of one fan-out: the median of their median rounds."""
    errors = [r for r in runs if "error" in r]
    if errors:
        return errors[0]
    median = statistics.median(r["time"] for r in runs)
    return {
        "time": median,
        "rate": args.connections * args.streams * args.messages / median,
        "client_cpu": max(max(r["client_cpu"]) for r in runs),
        "others": max(r["others"] for r in runs),
        "runs": runs,
    }


def attempt(what: str, run: Any, *params: Any) -> dict[str, Any]:
    print(f"... {what}", file=sys.stderr, flush=True)
    try:
        return run(*params)  # type: ignore[no-any-return]
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        print(f"    error: {exc}", file=sys.stderr, flush=True)
        return {"error": str(exc)[:300]}


def rps_table(args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    want = PROTOCOLS[args.rps_protocol][0]
    lines = [
        f"| server | protocol | req/s (median of {args.repeats}) | each run | others (cores) |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {LABELS[name]} | {want} | error: {r['error']} | | |")
            continue
        each = " / ".join(f"{run['rps']:,.0f}" for run in r["runs"])
        lines.append(f"| {LABELS[name]} | {want} | {r['rps']:,.0f} | {each} | {r['others']:.2f} |")
    tp, hc = results.get("trio-push", {}), results.get("hypercorn", {})
    if "rps" in tp and "rps" in hc:
        ratio = tp["rps"] / hc["rps"]
        ok = "met" if ratio >= 3 else "NOT met"
        lines += ["", f"- req/s trio-push / hypercorn: {ratio:.2f}x (target >= 3x): {ok}"]
    return lines


def fanout_table(args: argparse.Namespace, results: dict[tuple[str, str], Any]) -> list[str]:
    lines = [
        "| server | protocol | connections x streams | time (s) | deliveries/s | each run (s) "
        "| client CPU | others (cores) |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    total = args.connections * args.streams
    for (name, protocol), r in results.items():
        shape = f"{args.connections} x {args.streams}" if protocol == "h2" else f"{total:,} x 1"
        label = "HTTP/2 (h2c)" if protocol == "h2" else "HTTP/1.1"
        if "error" in r:
            lines.append(f"| {LABELS[name]} | {label} | {shape} | error: {r['error']} | | | | |")
            continue
        each = " / ".join(f"{run['time']:.3f}" for run in r["runs"])
        lines.append(
            f"| {LABELS[name]} | {label} | {shape} | {r['time']:.3f} | {r['rate']:,.0f} | {each} "
            f"| {r['client_cpu']:.0%} | {r['others']:.2f} |"
        )
    h2, h1 = results.get(("trio-push", "h2"), {}), results.get(("trio-push", "h1"), {})
    if "rate" in h2 and "rate" in h1:
        share = h2["rate"] / h1["rate"]
        ok = "met" if share >= 0.7 else "NOT met"
        lines += ["", f"- deliveries/s HTTP/2 / HTTP/1.1: {share:.0%} (target >= 70%): {ok}"]
    return lines


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measures", default="rps,fanout")
    parser.add_argument("--servers", default="trio-push,hypercorn", help="for rps")
    parser.add_argument("--fanout-servers", default="trio-push")
    parser.add_argument("--fanout-protocols", default="h2,h1")
    parser.add_argument("--rps-protocol", choices=sorted(PROTOCOLS), default="h2")
    parser.add_argument("--rps-seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10, help="h2load -c")
    parser.add_argument("--max-streams", type=int, default=20, help="h2load -m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50, help="fan-out, HTTP/2")
    parser.add_argument("--streams", type=int, default=100, help="fan-out, per connection")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds per run")
    parser.add_argument("--runs", type=int, default=3, help="fan-out runs per protocol")
    parser.add_argument("--timeout", type=float, default=120.0, help="per round, seconds")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    add_quiet_arguments(parser)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--profile", help="py-spy each fan-out run's server; raw profiles in this folder"
    )
    args = parser.parse_args()
    measures = args.measures.split(",")

    rps_results = {}
    if "rps" in measures:
        for name in args.servers.split(","):
            rps_results[name] = attempt(f"rps {name} {args.rps_protocol}", rps, name, args)
    fanout_runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if "fanout" in measures:
        # Alternating, a fresh server each time: a slow spell of the machine hits both.
        for i in range(args.runs):
            for name in args.fanout_servers.split(","):
                for protocol in args.fanout_protocols.split(","):
                    what = f"fanout {name} {protocol} ({i + 1}/{args.runs})"
                    result = attempt(what, fanout, name, protocol, args)
                    fanout_runs.setdefault((name, protocol), []).append(result)
    fanout_results = {key: combined(args, runs) for key, runs in fanout_runs.items()}

    facts = machine()
    version = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    lines = [
        " ".join([".venv/bin/python bench/http2.py", *sys.argv[1:]]),
        f"Run {time.strftime('%Y-%m-%d %H:%M')}; server on core {args.server_cpu}, load on core "
        f"{args.load_cpu}; {facts['cpu']}, {facts['memory']}, {facts['os']}; Python "
        f"{facts['python']}; {version.strip()}; {facts['versions']}.",
    ]
    if rps_results:
        lines += ["", *rps_table(args, rps_results)]
    if fanout_results:
        lines += ["", *fanout_table(args, fanout_results)]
    if args.profile:
        for path in sorted(Path(args.profile).glob("fanout-*.txt")):
            lines += ["", *profile_top(path)]
    print()
    print("\n".join(lines))
    if args.json:
        raw = {
            "args": vars(args),
            "rps": rps_results,
            "fanout": {f"{n} {p}": r for (n, p), r in fanout_results.items()},
        }
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
