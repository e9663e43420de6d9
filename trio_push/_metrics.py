"""Metrics: plain counts on the hot paths, Prometheus families at scrape time.

Whatever runs per message or per request only adds to an int of
:class:`Counters` (one per server, on its ``Context``); nothing of
prometheus-client runs there. A scrape of ``--metrics-port`` (served by
prometheus-client's own HTTP server, on a thread of its own) turns a
*snapshot* of those ints (a small dict, see :func:`snapshot`) into metric
families (:func:`families`).

Under ``--workers`` every worker writes its snapshot to a file, every
:data:`FLUSH_PERIOD` seconds and when it stops, in a folder its supervisor
owns (:func:`write_snapshots`); the supervisor serves the port, its scrape
the sum of the files (:class:`FolderCollector`). A worker that exits is
*retired*: its counters stay in the totals, its gauges leave them.

prometheus-client is an optional extra (``trio-push[metrics]``), imported
only when metrics are served. This module imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

import trio

#: Seconds between two snapshots a ``--workers`` worker writes: how stale
#: the supervisor's scrape may be.
FLUSH_PERIOD = 1.0
#: Set by the supervisor for its workers: the folder of their snapshots.
FOLDER_ENV = "TRIO_PUSH_METRICS_DIR"
#: The request duration histogram's bucket bounds (prometheus-client's default).
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: What a snapshot's gauges are (a retired worker's leave the totals).
GAUGES = frozenset(("open", "redis_up"))
MISSING = "metrics need prometheus-client: pip install 'trio-push[metrics]'"

Snapshot = dict[str, Any]


class MetricsPortError(OSError):
    """The metrics port could not be listened on (``strerror`` says which
    and why)."""


class Counters:
    """A server's counts, in plain ints (event loop thread; read by the
    scrape's thread, which needs no lock to read an int)."""

    __slots__ = (
        "websocket_open",
        "sse_open",
        "upgraded_open",
        "messages_out",
        "messages_in",
        "bytes_out",
        "bytes_in",
        "callback_errors",
        "overflows",
        "gaps",
        "responses",
        "durations",
        "duration_sum",
        "now",
    )

    def __init__(self) -> None:
        #: Push sessions open, by protocol (HTTP/2 streams included).
        self.websocket_open = 0
        self.sse_open = 0
        #: Of those, the ones that are a whole HTTP/1.1 connection.
        self.upgraded_open = 0
        self.messages_out = 0
        self.messages_in = 0
        #: Bytes the push sessions' sockets took; payload bytes received.
        self.bytes_out = 0
        self.bytes_in = 0
        self.callback_errors = 0
        #: Overflow policy -> times applied (rare: a dict is fine).
        self.overflows: dict[str, int] = {}
        #: Gap reason -> gaps told.
        self.gaps: dict[str, int] = {}
        #: Responses by status class: index 1 is 1xx ... 5 is 5xx.
        self.responses = [0] * 6
        #: Request durations: one count per bucket of BOUNDS, then +Inf.
        self.durations = [0] * (len(BOUNDS) + 1)
        self.duration_sum = 0.0
        #: The run's clock (Context.read_clock).
        self.now: Callable[[], float] = trio.current_time

    def response(self, status: int, started: float | None = None) -> None:
        """A response with ``status``; with ``started``, the request's
        duration (from then to now) goes to the histogram."""
        kind = status // 100
        self.responses[kind if 0 <= kind < 6 else 0 if kind < 0 else 5] += 1
        if started is not None:
            seconds = self.now() - started
            self.durations[bisect_left(BOUNDS, seconds)] += 1
            self.duration_sum += seconds

    def overflow(self, policy: str, n: int = 1) -> None:
        self.overflows[policy] = self.overflows.get(policy, 0) + n

    def gap(self, reason: str) -> None:
        self.gaps[reason] = self.gaps.get(reason, 0) + 1


def snapshot(counters: Counters, acceptor: Any, pubsub: Any) -> Snapshot:
    """A server's counts now: its :class:`Counters`, its acceptor's
    (``admitted``, ``accepted``, ``refused``) and its pub/sub engine's
    (``published``, ``failed``, ``connected`` if it has a connection, and
    its subscriptions' ``replays``), as plain JSON-able values."""
    c = counters
    subscriptions = getattr(pubsub, "subscriptions", None)
    snap: Snapshot = {
        "open": {
            "http": acceptor.admitted - c.upgraded_open,
            "websocket": c.websocket_open,
            "sse": c.sse_open,
        },
        "accepted": acceptor.accepted,
        "refused": acceptor.refused,
        "responses": {f"{i}xx": n for i, n in enumerate(c.responses) if i},
        "durations": list(c.durations),
        "duration_sum": c.duration_sum,
        "messages_out": c.messages_out,
        "messages_in": c.messages_in,
        "bytes_out": c.bytes_out,
        "bytes_in": c.bytes_in,
        "overflows": dict(c.overflows),
        "callback_errors": c.callback_errors,
        "publishes": getattr(pubsub, "published", 0),
        "publish_failures": getattr(pubsub, "failed", 0),
        "replays": getattr(subscriptions, "replays", 0),
        "replayed": getattr(subscriptions, "replayed", 0),
        "gaps": dict(c.gaps),
    }
    connected = getattr(pubsub, "connected", None)
    if connected is not None:
        snap["redis_up"] = int(connected)
    return snap


def merge(total: Snapshot, more: Snapshot, *, gauges: bool = True) -> Snapshot:
    """Add ``more`` into ``total`` (numbers, lists and dicts of them), its
    gauges too unless ``gauges`` is False; returns ``total``."""
    for key, value in more.items():
        if not gauges and key in GAUGES:
            continue
        have = total.get(key)
        if isinstance(value, dict):
            total[key] = merge(dict(have or {}), value)
        elif isinstance(value, list):
            total[key] = [a + b for a, b in zip(have, value, strict=True)] if have else list(value)
        else:
            total[key] = (have or 0) + value
    return total


def families(snap: Snapshot) -> Iterator[Any]:
    """The Prometheus metric families of a snapshot (docs/deployment.md,
    "Metrics", has the table)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    def counter(name: str, doc: str, key: str) -> Any:
        return CounterMetricFamily(f"trio_push_{name}", doc, value=snap.get(key, 0))

    def by_label(kind: Any, name: str, doc: str, label: str, values: dict[str, Any]) -> Any:
        family = kind(f"trio_push_{name}", doc, labels=[label])
        for value_label, value in sorted(values.items()):
            family.add_metric([value_label], value)
        return family

    yield by_label(
        GaugeMetricFamily,
        "connections_open",
        "Open connections: HTTP (HTTP/2 ones included), and push sessions by protocol"
        " (HTTP/2 streams included)",
        "protocol",
        snap.get("open", {}),
    )
    yield counter("connections_accepted", "Connections accepted", "accepted")
    yield counter("connections_refused", "Connections answered 503 past max_connections", "refused")
    yield by_label(
        CounterMetricFamily,
        "http_responses",
        "HTTP responses, by status class",
        "status_class",
        snap.get("responses", {}),
    )
    durations = snap.get("durations", [0] * (len(BOUNDS) + 1))
    buckets = []
    cumulative = 0
    for bound, n in zip((*map(str, BOUNDS), "+Inf"), durations, strict=True):
        cumulative += n
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily(
        "trio_push_http_request_duration_seconds",
        "Time from a request's head to the end of its answer",
        buckets=buckets,
        sum_value=snap.get("duration_sum", 0.0),
    )
    yield counter("messages_sent", "Push messages queued to clients", "messages_out")
    yield counter("messages_received", "WebSocket messages received", "messages_in")
    yield counter(
        "bytes_sent", "Bytes the push sessions' sockets took (framing included)", "bytes_out"
    )
    yield counter("bytes_received", "Payload bytes of the WebSocket messages received", "bytes_in")
    yield by_label(
        CounterMetricFamily,
        "overflows",
        "Send-queue overflows, by the policy applied",
        "policy",
        # Every policy from the start: a rate() needs the zero before the first.
        {"close": 0, "drop": 0, "resync": 0, **snap.get("overflows", {})},
    )
    yield counter(
        "callback_errors", "Exceptions raised by the app's push callbacks", "callback_errors"
    )
    yield counter("publishes", "Publishes the pub/sub engine accepted", "publishes")
    yield counter("publish_failures", "Publishes the pub/sub engine refused", "publish_failures")
    yield counter("history_replays", "Resumes from a position read from history", "replays")
    yield counter("history_replayed_messages", "Messages replayed from history", "replayed")
    yield by_label(
        CounterMetricFamily,
        "history_gaps",
        "Gaps told to clients (on_gap), by reason",
        "reason",
        snap.get("gaps", {}),
    )
    if "redis_up" in snap:
        yield GaugeMetricFamily(
            "trio_push_redis_up",
            "Processes whose Redis engine is connected (1 for one process that is)",
            value=snap["redis_up"],
        )


class SnapshotCollector:
    """A prometheus-client collector of what ``take()`` returns."""

    def __init__(self, take: Callable[[], Snapshot]) -> None:
        self._take = take

    def collect(self) -> Iterator[Any]:
        return families(self._take())


class FolderCollector:
    """The supervisor's: the sum of the snapshots its workers write in
    ``folder`` (one ``<pid>.json`` each), and of the counters of those
    that have exited (:meth:`retire`)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._retired: Snapshot = {}
        self._lock = threading.Lock()

    def _read(self, pid: int) -> Snapshot | None:
        try:
            with open(os.path.join(self.folder, f"{pid}.json")) as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return None

    def total(self) -> Snapshot:
        with self._lock:
            total = merge({}, self._retired)
            for name in os.listdir(self.folder):
                stem, _, ext = name.partition(".")
                if ext == "json" and stem.isdigit():
                    snap = self._read(int(stem))
                    if snap is not None:
                        merge(total, snap)
            return total

    def retire(self, pid: int) -> None:
        """Worker ``pid`` has exited: its last counts stay, its gauges go."""
        with self._lock:
            snap = self._read(pid)
            if snap is not None:
                merge(self._retired, snap, gauges=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.folder, f"{pid}.json"))

    def collect(self) -> Iterator[Any]:
        return families(self.total())


def write_snapshot(folder: str, snap: Snapshot) -> None:
    """Write this process's snapshot where its supervisor reads it (whole:
    written aside, then renamed)."""
    path = os.path.join(folder, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(snap, f)
    os.replace(path + ".tmp", path)


async def write_snapshots(folder: str, take: Callable[[], Snapshot]) -> None:
    """A worker's: write ``take()`` every FLUSH_PERIOD seconds, until cancelled."""
    while True:
        write_snapshot(folder, take())
        await trio.sleep(FLUSH_PERIOD)


def serve_metrics(port: int, host: str, collector: Any) -> tuple[Any, int]:
    """Serve ``collector``'s metrics on ``host:port`` with prometheus-client's
    HTTP server (a thread of its own); the server (``shutdown()`` stops it)
    and the port it is bound to. Raises ImportError (:data:`MISSING`)
    without prometheus-client, :class:`MetricsPortError` if the port is
    taken."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise ImportError(MISSING) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        httpd, _ = start_http_server(port, host, registry)
    except OSError as exc:
        raise MetricsPortError(
            exc.errno, f"metrics port {port} on {host}: {exc.strerror}"
        ) from None
    return httpd, int(httpd.server_port)


def stop_metrics(httpd: Any) -> None:
    httpd.shutdown()
    httpd.server_close()
