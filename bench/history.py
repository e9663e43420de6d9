"""Channel history (issue 13): what it costs a fan-out, and a reconnect storm.

    .venv/bin/python bench/history.py                    # everything (30-40 minutes)
    .venv/bin/python bench/history.py --engines memory --measures fanout --repeats 1
    .venv/bin/python bench/history.py --pythonpath /tmp/patched     # the server from another tree
    .venv/bin/python bench/history.py --profile /tmp/prof           # py-spy each server

Two measures, side by side in one run, each ``--repeats`` times (a fresh
server every time, history off and on alternating), medians reported:

- **fanout**: ``--n`` subscribers of one channel, ``--messages`` messages of
  ``--size`` bytes published in a burst, ``--rounds`` times on the same
  connections (the median round kept, and the first apart: a subscription's
  first burst after its history load takes the slower path), with no
  history and with ``--history`` messages of it; on WebSocket plain
  (``/ws``) and with the envelope (``/envelope``, what a page that resumes
  uses), and on SSE (``/sse``, where every message then carries its id).
- **storm**: ``--storm-n`` clients read ``--warmup`` messages, disconnect;
  ``--behind`` messages are published; they all reconnect at once, SSE with
  ``Last-Event-ID``, WebSocket (envelope) with ``?since=``: the time from
  the first connect until every one has every message up to the last
  published, and the server's peak RSS meanwhile (its ``VmHWM``, reset just
  before through ``/proc/PID/clear_refs``; and ``VmRSS`` sampled every 5 ms).

Both through the in-process engine (``memory``) and through Redis
(``redis``: a redis-server started for the run on a free loopback port,
``--save '' --appendonly no``, stopped at the end); if the Redis engine
keeps no history the Redis rows say so (a probe subscription must get its
starting position first), they are not left out.

Every client keeps what it receives and, after each round (untimed), checks
that it got exactly the messages published, in order, and with history
their positions: one epoch, offsets following each other from where it was.
A client that did not counts as a mismatch, shown in the table. The server
is pinned to ``--server-cpu``, the load client and redis-server to
``--load-cpu``. Besides the wall time, each round's server CPU time
(``/proc/PID/task/*/schedstat``) is reported, and what the rest of the
machine ran meanwhile (``others``, in cores): other work on these few cores
lengthens a round, not the CPU the server spends on it. Before each run the
script waits (at most ``--quiet-wait`` s) for the machine to be quiet, and
runs again (``--retries``) a run that other work disturbed all the same
(``--max-others``). Loopback only; every wait is bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from compare import pinned
from fanout import free_port, stop, wait_listening
from loadclient import Handshaking, handshake, http_get

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# -- the load client (``history.py client ...``, in its own process) ------------------------

# What each subscription mode connects to, and the bytes that end each message in it
# (``~`` alone is in a WebSocket header: 126, the 16-bit length form, is 0x7e).
PATHS = {"ws": "/ws", "envelope": "/envelope", "sse": "/sse"}
MARKS = {"ws": b"~", "envelope": b'~"', "sse": b"~\n"}
# A message's round and number (servers.py: "round:i:xxx~"), by mode.
DATA = {
    "ws": re.compile(rb"\x81[\x00-\x7d](\d+):(\d+):x*~"),
    "envelope": re.compile(rb'"data": "(\d+):(\d+):x*~"'),
    "sse": re.compile(rb"\ndata: (\d+):(\d+):x*~\n"),
}
# Every position it was told (the start of a subscription, then each message's).
POSITIONS = {
    "ws": None,
    "envelope": re.compile(rb'"position": "(([0-9a-z]+):\d+-(\d+))"'),
    "sse": re.compile(rb"\nid: ([0-9a-f]{8}=([0-9a-z]+):\d+-(\d+))\n"),
}


class Subscription(Handshaking):
    """One subscriber: keeps what it receives (checked after the round) and
    counts the messages in it (``MARKS``) to know when it has them all."""

    __slots__ = (
        "bench",
        "mark",
        "count",
        "target",
        "buf",
        "reads",
        "last",
        "epoch",
        "offset",
        "lost",
    )

    def __init__(self, bench: Bench, request: bytes, status: bytes, mark: bytes) -> None:
        super().__init__(request, status)
        self.bench = bench
        self.mark = mark
        self.count = 0
        self.target = 0
        self.buf = bytearray()
        self.reads = 0  # how many pieces it came in (about the server's sends)
        # The last position it was given: its text (as the page sends it back), epoch, offset.
        self.last: str | None = None
        self.epoch: bytes | None = None
        self.offset = -1
        self.lost = False

    def received(self, data: bytes) -> None:
        self.reads += 1
        self.buf += data
        count = self.count + data.count(self.mark)
        if self.count < self.target <= count:
            self.bench.arrived()
        self.count = count

    def connection_lost(self, exc: Exception | None) -> None:
        if self.opened.done() and self.count < self.target:
            self.lost = True
            self.bench.lost += 1
        super().connection_lost(exc)

    def check(self, mode: str, expected: list[tuple[bytes, bytes]], history: bool) -> str | None:
        """Whether what came since the last check is ``expected`` ((round, i)
        pairs), in order, with positions that follow on from the last one; why
        not, if not. Empties the buffer."""
        buf, self.buf = bytes(self.buf), bytearray()
        pairs = DATA[mode].findall(buf)
        if pairs != expected:
            return f"{len(pairs)} messages, {len(expected)} expected, or out of order"
        pattern = POSITIONS[mode]
        if not history or pattern is None:
            return None
        positions = pattern.findall(buf)
        # The announcement of where the subscription starts (the position it
        # resumed from, or the channel's top), then one position per message.
        if positions and (self.offset < 0 or int(positions[0][2]) == self.offset):
            text, epoch, offset = positions.pop(0)
            if self.epoch is not None and epoch != self.epoch:
                return f"resumed in epoch {epoch!r}, was {self.epoch!r}"
            self.epoch, self.offset, self.last = epoch, int(offset), text.decode()
        if len(positions) != len(pairs):
            return f"{len(positions)} positions for {len(pairs)} messages"
        if any(epoch != self.epoch for _, epoch, _ in positions):
            return "a position of another epoch"
        offsets = [int(offset) for _, _, offset in positions]
        if offsets != list(range(self.offset + 1, self.offset + 1 + len(offsets))):
            return f"offsets {offsets[:3]}... after {self.offset}"
        if positions:
            self.offset = offsets[-1]
            self.last = positions[-1][0].decode()
        return None


class Bench:
    def __init__(self) -> None:
        self.waiting = 0
        self.all_in = asyncio.Event()
        self.lost = 0
        #: When each client had all it waited for (perf_counter).
        self.times: list[float] = []

    def arrived(self) -> None:
        self.times.append(time.perf_counter())
        self.waiting -= 1
        if self.waiting == 0:
            self.all_in.set()

    def expect(self, clients: list[Subscription], messages: int) -> None:
        """Each of ``clients`` is to get ``messages`` more."""
        self.wait_for(len(clients))
        for client in clients:
            client.target = client.count + messages

    def wait_for(self, n: int) -> None:
        self.waiting = n
        self.all_in = asyncio.Event()
        self.lost = 0
        self.times = []


def resume_request(mode: str, client: Subscription | None) -> tuple[bytes, bytes]:
    """The handshake of a subscriber of ``mode``, resuming from where
    ``client`` was (None: a new one)."""
    path = PATHS[mode]
    if client is None or client.last is None:
        return handshake("sse" if mode == "sse" else "ws", path)
    if mode == "sse":
        request, status = handshake("sse", path)
        header = f"Last-Event-ID: {client.last}\r\n\r\n".encode()
        return request[:-2] + header, status
    since = quote(json.dumps({"bench": client.last}), safe="")
    return handshake("ws", f"{path}?since={since}")


async def connect_all(
    port: int,
    mode: str,
    bench: Bench,
    old: list[Subscription | None] | list[Subscription],
    concurrency: int,
    target: int = 0,
) -> list[Subscription]:
    """A subscriber for each of ``old`` (resuming from where it was), at most
    ``concurrency`` handshakes at a time (0: all at once), each to get
    ``target`` messages (see Bench.wait_for)."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(concurrency or len(old))

    def make(request: bytes, status: bytes) -> Subscription:
        client = Subscription(bench, request, status, MARKS[mode])
        client.target = target
        return client

    async def one(before: Subscription | None) -> Subscription:
        request, status = resume_request(mode, before)
        async with limit:
            _, client = await loop.create_connection(
                lambda: make(request, status), "127.0.0.1", port
            )
            await client.opened
        if before is not None:
            client.last, client.epoch, client.offset = before.last, before.epoch, before.offset
        return client

    return list(await asyncio.gather(*(one(c) for c in old)))


async def wait_count(port: int, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(await http_get(port, "/count")) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server never counted {n} subscribers")
        await asyncio.sleep(0.05)


async def publish_and_wait(
    args: argparse.Namespace, bench: Bench, clients: list[Subscription], n: int, round_: int
) -> float:
    """Publish ``n`` messages; the time until every client has them."""
    bench.expect(clients, n)
    t0 = time.perf_counter()
    publish = asyncio.ensure_future(
        http_get(args.port, f"/publish?n={n}&size={args.size}&round={round_}")
    )
    await wait_all(args, bench, clients, f"round {round_}")
    elapsed = time.perf_counter() - t0
    await publish
    return elapsed


async def wait_all(args: argparse.Namespace, bench: Bench, clients: list[Subscription], what: str):
    try:
        await asyncio.wait_for(bench.all_in.wait(), args.timeout)
    except asyncio.TimeoutError:
        short = sum(1 for c in clients if c.count < c.target)
        raise RuntimeError(
            f"{what}: {short} clients short after {args.timeout} s ({bench.lost} closed)"
        ) from None


def check_all(
    args: argparse.Namespace, clients: list[Subscription], round_: int, n: int
) -> tuple[int, str | None]:
    """Clients that did not get exactly round ``round_``'s ``n`` messages in
    order (with their positions), and the first one's reason."""
    expected = [(str(round_).encode(), str(i).encode()) for i in range(n)]
    bad, first = 0, None
    for client in clients:
        why = client.check(args.mode, expected, args.history)
        if why is not None:
            bad += 1
            first = first or why
    return bad, first


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def busy_seconds() -> float:
    """CPU time every process on the machine has run (/proc/stat), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_time(pid: int) -> float:
    """CPU time the threads of process ``pid`` have run, in seconds
    (schedstat: in nanoseconds, where getrusage would round to clock ticks);
    0 for pid 0. Other processes on the machine lengthen a round, not this."""
    if not pid:
        return 0.0
    tasks = Path(f"/proc/{pid}/task").glob("*/schedstat")
    return sum(int(path.read_text().split()[0]) for path in tasks) / 1e9


async def run_fanout(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench()
    t0 = time.perf_counter()
    clients = await connect_all(args.port, args.mode, bench, [None] * args.n, 200)
    connect = time.perf_counter() - t0
    await wait_count(args.port, args.n, args.timeout)
    await asyncio.sleep(0.5)  # history loads and announcements: not part of a round
    check_all(args, clients, 0, 0)  # each notes where it starts
    rounds, cpu, served, redis, others, reads, mismatches, why = [], [], [], [], [], [], 0, None
    for r in range(args.rounds):
        usage = Usage(args)
        reads0 = sum(c.reads for c in clients)
        elapsed = await publish_and_wait(args, bench, clients, args.messages, r)
        usage.stop(elapsed)
        reads.append((sum(c.reads for c in clients) - reads0) / len(clients))
        cpu.append(usage.client / elapsed)
        served.append(usage.server)
        redis.append(usage.redis)
        others.append(usage.others)
        rounds.append(elapsed)
        bad, reason = check_all(args, clients, r, args.messages)
        mismatches += bad
        why = why or reason
        await asyncio.sleep(0.2)
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    return {
        "connect": connect,
        "rounds": rounds,
        "client_cpu": cpu,
        "server_cpu": served,
        "redis_cpu": redis,
        "others": others,
        "reads": reads,
        "mismatches": mismatches,
        "why": why,
        "lost": bench.lost,
    }


class Usage:
    """CPU time used from its creation to :meth:`stop`: by this client, the
    server, redis-server, and the rest of the machine (``others``, in cores:
    other work slows a round)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.pids = args.server_pid, args.redis_pid
        self.client = cpu_seconds()
        self.server, self.redis = run_time(self.pids[0]), run_time(self.pids[1])
        self.busy = busy_seconds()
        self.others = 0.0

    def stop(self, elapsed: float) -> None:
        self.client = cpu_seconds() - self.client
        self.server = run_time(self.pids[0]) - self.server
        self.redis = run_time(self.pids[1]) - self.redis
        ours = self.client + self.server + self.redis
        self.others = max(busy_seconds() - self.busy - ours, 0) / elapsed


def proc_status(pid: int, field: str) -> int:
    """``field`` (VmRSS, VmHWM) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


async def sample_rss(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], proc_status(pid, "VmRSS"))
        await asyncio.sleep(0.005)


async def disconnect(args: argparse.Namespace, clients: list[Subscription]) -> None:
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    await wait_count(args.port, 0, args.timeout)


async def run_storm(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench()
    clients = await connect_all(args.port, args.mode, bench, [None] * args.n, 200)
    await wait_count(args.port, args.n, args.timeout)
    await publish_and_wait(args, bench, clients, args.warmup, 0)
    bad, why = check_all(args, clients, 0, args.warmup)
    if bad:
        raise RuntimeError(f"warm-up: {bad} clients wrong: {why}")
    await disconnect(args, clients)
    # Published while every client is away: history only.
    await http_get(args.port, f"/publish?n={args.behind}&size={args.size}&round=1")
    # One client resumes first: through Redis, the publishes above are in
    # history only once Redis has answered them; this one sees that they are.
    bench.wait_for(1)
    probe = await connect_all(args.port, args.mode, bench, clients[:1], 0, args.behind)
    await wait_all(args, bench, probe, "probe")
    if check_all(args, probe, 1, args.behind)[0]:
        raise RuntimeError("the probe did not resume correctly")
    await disconnect(args, probe)

    Path(f"/proc/{args.server_pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = proc_status(args.server_pid, "VmRSS")
    peak = [before]
    sampler = asyncio.ensure_future(sample_rss(args.server_pid, peak))
    bench.wait_for(args.n)
    t0 = time.perf_counter()
    usage = Usage(args)
    clients = await connect_all(args.port, args.mode, bench, clients, 0, args.behind)
    connected = time.perf_counter() - t0
    await wait_all(args, bench, clients, "storm")
    elapsed = time.perf_counter() - t0
    usage.stop(elapsed)
    sampler.cancel()
    hwm = proc_status(args.server_pid, "VmHWM")
    after = proc_status(args.server_pid, "VmRSS")
    bad, why = check_all(args, clients, 1, args.behind)
    await disconnect(args, clients)
    return {
        "time": elapsed,
        "connected": connected,
        "median_client": statistics.median(bench.times) - t0,
        "client_cpu": usage.client / elapsed,
        "server_cpu": usage.server,
        "redis_cpu": usage.redis,
        "others": usage.others,
        "rss_before": before,
        "rss_hwm": hwm,
        "rss_sampled": peak[0],
        "rss_after": after,
        "mismatches": bad,
        "why": why,
        "lost": bench.lost,
    }


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="history.py client")
    parser.add_argument("measure", choices=["fanout", "storm"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--redis-pid", type=int, default=0, help="0: no Redis")
    parser.add_argument("--mode", choices=list(PATHS), required=True)
    parser.add_argument("--history", action="store_true", help="check positions too")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--behind", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    run = run_fanout if args.measure == "fanout" else run_storm
    json.dump(uvloop.run(run(args)), sys.stdout)


# -- the runs (this process) ----------------------------------------------------------

ENGINES = ["memory", "redis"]
FANOUT_MODES = ["ws", "envelope", "sse"]
STORM_MODES = ["sse", "envelope"]
LABELS = {"ws": "WebSocket", "envelope": "WebSocket, envelope", "sse": "SSE"}


@contextlib.contextmanager
def redis_server(cpu: int) -> Iterator[tuple[str, int]]:
    """A redis-server of its own on a free loopback port, without
    persistence, on core ``cpu``; its URL and process id."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpu),
    )
    try:
        wait_listening(port, process, 15)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        stop(process)


def redis_flush(url: str) -> None:
    """FLUSHALL: each run starts from an empty Redis."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        if not s.recv(64).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


class Server:
    """``servers.py``'s trio-push (through Redis if ``redis_url``) with a
    history of ``history`` messages, on core ``cpu``, its packages from ``root``."""

    def __init__(self, history: int, redis_url: str | None, cpu: int, root: str) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=root, BENCH_HISTORY=str(history))
        name = "trio-push"
        if redis_url is not None:
            redis_flush(redis_url)
            env["BENCH_REDIS_URL"] = redis_url
            name = "trio-push-redis"
        # A file, not a pipe: a server that logs a lot would fill a pipe and block.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "servers.py"), name, str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=pinned(cpu),
        )
        try:
            wait_listening(self.port, self.process, 20)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.log_tail()}") from None

    def log_tail(self, lines: int = 3) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(nothing logged)"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.process)
        self.log.close()


def probe_history(server: Server, timeout: float = 5.0) -> None:
    """An SSE subscription on the history channel must be told its starting
    position (an id-only block) within ``timeout``; else the engine keeps no
    history, and the run says so."""
    request, _ = handshake("sse", "/sse")
    data = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(request)
        while b"\nid: " not in data and time.monotonic() < deadline:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    if b"\nid: " not in data:
        raise RuntimeError(
            f"no history: a subscription got no position in {timeout:.0f} s"
            f" (server log: {server.log_tail()})"
        )


def load(
    args: argparse.Namespace, server: Server, measure: str, mode: str, history: int, redis_pid: int
) -> Any:
    cmd = [sys.executable, str(Path(__file__).resolve()), "client", measure]
    cmd += ["--port", str(server.port), "--server-pid", str(server.process.pid)]
    cmd += ["--redis-pid", str(redis_pid)]
    cmd += ["--mode", mode, "--size", str(args.size), "--timeout", str(args.timeout)]
    if history:
        cmd.append("--history")
    if measure == "fanout":
        cmd += ["--n", str(args.n), "--messages", str(args.messages), "--rounds", str(args.rounds)]
    else:
        cmd += ["--n", str(args.storm_n), "--warmup", str(args.warmup)]
        cmd += ["--behind", str(args.behind)]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=args.timeout * (args.rounds + 6) + 60,
        preexec_fn=pinned(args.load_cpu),
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["?"]
        raise RuntimeError(f"{lines[-1]} (server log: {server.log_tail()})")
    return json.loads(result.stdout)


@contextlib.contextmanager
def profiled(args: argparse.Namespace, server: Server, name: str) -> Iterator[None]:
    """With ``--profile DIR``: ``py-spy record`` on the server meanwhile, its
    raw (folded) output in DIR/name.txt."""
    if not args.profile:
        yield
        return
    out = Path(args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy",
            "record",
            "-r",
            "250",
            "--format",
            "raw",
            "-o",
            str(out),
        ]
        + ["-p", str(server.process.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pinned(args.load_cpu),
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)


def profile_top(path: Path, count: int = 12) -> list[str]:
    """The functions with the most samples in a py-spy raw profile: of the
    server's busy samples, the share in the function itself and below it."""
    own: dict[str, int] = {}
    below: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        # "function (file:line)" -> "function (file)": a function's lines together.
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        total += int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
        for frame in set(frames):
            below[frame] = below.get(frame, 0) + int(n)
    lines = [f"{path.name}: {total} samples; self %, total %, function"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"  {n / total:6.1%} {below[frame] / total:6.1%}  {frame}")
    return lines


def disturbance(result: dict[str, Any]) -> float:
    """How much other work ran during a run's rounds (the median), in cores."""
    others = result["others"]
    return float(statistics.median(others) if isinstance(others, list) else others)


def add_quiet_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of waiting for a quiet machine and of running a disturbed
    run again (``wait_quiet``, ``run_one``), for the benches that do so."""
    parser.add_argument(
        "--quiet", type=float, default=0.2, help="before each run, wait until others use under"
    )
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="... this long at most")
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.3,
        help="a run during which other work used more cores than this is run again ...",
    )
    parser.add_argument("--retries", type=int, default=2, help="... at most this many times")


def wait_quiet(args: argparse.Namespace) -> float:
    """Until the rest of the machine uses under ``--quiet`` cores (over half a
    second), at most ``--quiet-wait`` seconds: other work on these few cores
    slows a round. The load it last saw."""
    deadline = time.monotonic() + args.quiet_wait
    while True:
        busy0 = busy_seconds()
        time.sleep(0.5)
        busy = (busy_seconds() - busy0) / 0.5
        if busy < args.quiet or time.monotonic() > deadline:
            return busy


def run_one(
    args: argparse.Namespace,
    measure: str,
    engine: str,
    mode: str,
    history: int,
    redis: tuple[str, int] | None,
) -> dict[str, Any]:
    if args.quiet_wait:
        busy = wait_quiet(args)
        if busy >= args.quiet:
            print(f"    not quiet: {busy:.2f} cores busy", file=sys.stderr, flush=True)
    try:
        url, redis_pid = redis if redis and engine == "redis" else (None, 0)
        with Server(history, url, args.server_cpu, args.pythonpath) as server:
            if history:
                probe_history(server)
            with profiled(args, server, f"{measure}-{engine}-{mode}-{history}"):
                result = load(args, server, measure, mode, history, redis_pid)
            if os.fstat(server.log.fileno()).st_size:
                result["server_log"] = server.log_tail(1)
            return dict(result)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}


def median_of(results: list[dict[str, Any]], key: Any) -> float | None:
    values = [key(r) for r in results if "error" not in r]
    return statistics.median(values) if values else None


def error_of(results: list[dict[str, Any]]) -> str:
    return next((r["error"] for r in results if "error" in r), "")


def wrong(results: list[dict[str, Any]]) -> str:
    """What the clients' checks found, over every repeat."""
    bad = sum(r.get("mismatches", 0) for r in results if "error" not in r)
    if not bad:
        return "0"
    why = next(r["why"] for r in results if r.get("why"))
    return f"{bad} ({why})"


def round_median(key: str) -> Any:
    return lambda r: statistics.median(r[key])


def first_round(key: str) -> Any:
    return lambda r: r[key][0]


def peak_rss(r: dict[str, Any]) -> float:
    return float(max(r["rss_hwm"], r["rss_sampled"]))


def markdown(head: list[str], rows: list[list[str]], names: int) -> list[str]:
    """A markdown table, the first ``names`` columns left-aligned."""
    align = ["---" if i < names else "---:" for i in range(len(head))]
    return [f"| {' | '.join(row)} |" for row in [head, align, *rows]]


def fanout_table(args: argparse.Namespace, runs: dict[tuple[str, ...], list[Any]]) -> list[str]:
    head = ["engine", "protocol", "history", "first round (s)", "time (s)", "deliveries/s"]
    head += ["vs off", "server CPU (s)", "deliveries per CPU s", "vs off", "Redis CPU (s)"]
    head += ["others", "wrong"]
    rows, notes = [], []
    deliveries = args.n * args.messages
    for engine in args.engines:
        medians: dict[tuple[str, int], tuple[float, float]] = {}
        for mode in args.fanout_modes:
            for history in (0, args.history):
                results = runs[("fanout", engine, mode, str(history))]
                row = [engine, LABELS[mode], str(history or "off")]
                t = median_of(results, round_median("rounds"))
                cpu = median_of(results, round_median("server_cpu"))
                if t is None or cpu is None:
                    rows.append(row + ["-"] * (len(head) - 4) + [f"error: {error_of(results)}"])
                    continue
                medians[(mode, history)] = t, cpu
                off = medians.get((mode, 0))
                redis = median_of(results, round_median("redis_cpu")) or 0
                row += [f"{median_of(results, first_round('rounds')):.3f}", f"{t:.3f}"]
                row += [f"{deliveries / t:,.0f}", f"{off[0] / t:.0%}" if off and history else "-"]
                row += [f"{cpu:.3f}", f"{deliveries / cpu:,.0f}"]
                row += [f"{off[1] / cpu:.0%}" if off and history else "-"]
                row += [f"{redis:.3f}" if engine == "redis" else "-"]
                row += [f"{median_of(results, round_median('others')):.2f}", wrong(results)]
                rows.append(row)
        plain, enveloped = medians.get(("ws", 0)), medians.get(("envelope", args.history))
        if plain and enveloped:
            notes.append(
                f"{engine}: WebSocket with the envelope and history against plain WebSocket"
                f" without: {plain[0] / enveloped[0]:.0%} of its deliveries/s,"
                f" {plain[1] / enveloped[1]:.0%} of its deliveries per CPU second"
            )
    title = (
        f"Fan-out: {args.n:,} subscribers, {args.messages} messages of {args.size} bytes;"
        f" median of {args.repeats} runs (each the median of {args.rounds} rounds)"
    )
    return [title, "", *markdown(head, rows, 3), "", *notes]


def storm_table(args: argparse.Namespace, runs: dict[tuple[str, ...], list[Any]]) -> list[str]:
    head = ["engine", "protocol", "all connected (s)", "half caught up (s)", "all caught up (s)"]
    head += ["messages/s", "server CPU (s)", "Redis CPU (s)", "RSS before (MiB)"]
    head += ["peak RSS (MiB)", "peak - before", "others", "wrong"]
    rows = []
    for engine in args.engines:
        for mode in args.storm_modes:
            results = runs[("storm", engine, mode, str(args.history))]
            row = [engine, LABELS[mode]]
            t = median_of(results, lambda r: r["time"])
            if t is None:
                rows.append(row + ["-"] * (len(head) - 3) + [f"error: {error_of(results)}"])
                continue
            redis = median_of(results, lambda r: r["redis_cpu"]) or 0
            row += [f"{median_of(results, lambda r: r['connected']):.3f}"]
            row += [f"{median_of(results, lambda r: r['median_client']):.3f}", f"{t:.3f}"]
            row += [f"{args.storm_n * args.behind / t:,.0f}"]
            row += [f"{median_of(results, lambda r: r['server_cpu']):.3f}"]
            row += [f"{redis:.3f}" if engine == "redis" else "-"]
            row += [f"{median_of(results, lambda r: r['rss_before'] / 1024):.1f}"]
            row += [f"{median_of(results, lambda r: peak_rss(r) / 1024):.1f}"]
            growth = median_of(results, lambda r: (peak_rss(r) - r["rss_before"]) / 1024)
            row += [f"+{growth:.1f}", f"{median_of(results, lambda r: r['others']):.2f}"]
            rows.append(row + [wrong(results)])
    title = (
        f"Reconnect storm: {args.storm_n:,} clients, each {args.behind:,} messages behind"
        f" (history {args.history}), all reconnecting at once; median of {args.repeats} runs"
    )
    return [title, "", *markdown(head, rows, 2)]


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--measures", default="fanout,storm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--history", type=int, default=1000, help="messages of history (on)")
    parser.add_argument("--n", type=int, default=5000, help="fan-out subscribers")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--fanout-modes", default=",".join(FANOUT_MODES))
    parser.add_argument("--storm-n", type=int, default=1000, help="storm clients")
    parser.add_argument("--warmup", type=int, default=10, help="messages read before leaving")
    parser.add_argument("--behind", type=int, default=1000)
    parser.add_argument("--storm-modes", default=",".join(STORM_MODES))
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="per wait, seconds")
    add_quiet_arguments(parser)
    parser.add_argument(
        "--pythonpath", default=str(ROOT), help="the server's trio_push from this tree"
    )
    parser.add_argument("--json", help="also write every run's results to this file")
    parser.add_argument("--profile", help="py-spy each run's server; raw profiles in this folder")
    args = parser.parse_args()
    args.engines = args.engines.split(",")
    args.fanout_modes = args.fanout_modes.split(",")
    args.storm_modes = args.storm_modes.split(",")
    measures = args.measures.split(",")
    os.sched_setaffinity(0, {args.load_cpu})

    plan = []
    for _ in range(args.repeats):
        for engine in args.engines:
            if "fanout" in measures:
                for mode in args.fanout_modes:
                    plan += [("fanout", engine, mode, h) for h in (0, args.history)]
            if "storm" in measures:
                plan += [("storm", engine, mode, args.history) for mode in args.storm_modes]
    runs: dict[tuple[str, ...], list[Any]] = {}
    with contextlib.ExitStack() as stack:
        redis = (
            stack.enter_context(redis_server(args.load_cpu)) if "redis" in args.engines else None
        )
        for i, (measure, engine, mode, history) in enumerate(plan, 1):
            print(
                f"... {i}/{len(plan)} {measure} {engine} {mode} history={history}",
                file=sys.stderr,
                flush=True,
            )
            for _ in range(args.retries + 1):
                result = run_one(args, measure, engine, mode, history, redis)
                if "error" in result:
                    print(f"    error: {result['error']}", file=sys.stderr, flush=True)
                    break
                if disturbance(result) <= args.max_others:
                    break
                print(
                    f"    disturbed ({disturbance(result):.2f} cores of other work): again",
                    file=sys.stderr,
                    flush=True,
                )
            runs.setdefault((measure, engine, mode, str(history)), []).append(result)

    print()
    if "fanout" in measures:
        print("\n".join(fanout_table(args, runs)))
        print()
    if "storm" in measures:
        print("\n".join(storm_table(args, runs)))
    if args.profile:
        for path in sorted(Path(args.profile).glob("*.txt")):
            print()
            print("\n".join(profile_top(path)))
    if args.json:
        Path(args.json).write_text(
            json.dumps([{"run": "/".join(k), "results": v} for k, v in runs.items()], indent=1)
        )


if __name__ == "__main__":
    main()
