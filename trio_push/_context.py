"""What a connection may use of its server: :class:`Context`, and :class:`Options`.

A connection (its HTTP loop, its push session, its client) never sees the
:class:`~trio_push.Server`: the server hands each one the same
:class:`Context`, which holds the few parts of it they use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

import sansio_push as sp

from ._history import History
from ._loop import Loop
from ._metrics import Counters
from ._poller import ReadPoller
from ._proxy import TrustedProxies
from ._pubsub import PubSub


@dataclass(frozen=True)
class Options:
    """Server options (all times in seconds).

    - ``threads``: 0 runs plain (non-async) apps and callbacks on the event
      loop; N > 0 runs them in a pool of N worker threads.
    - ``idle_timeout``: an HTTP keep-alive connection idle this long is closed.
    - ``header_timeout``: a request head must be complete this long after its
      first byte (slowloris); a request body that sends nothing for this
      long is abandoned too (the connection is closed).
    - ``pong_timeout``: a WebSocket that has not answered a ping this long
      after it was queued is aborted (a half-open peer).
    - ``max_connections``: past this many open connections, a new one is
      answered 503 and closed.
    - ``allow_origins``: if set, WebSocket and SSE requests whose ``Origin``
      is not in it get 403 (requests without ``Origin`` are not browsers'
      cross-site requests and pass).
    - ``slow_callback``: a plain callable that holds the event loop longer
      than this is logged (once per callable).
    - ``write_timeout``: a socket that takes no bytes this long is aborted.
    - ``close_timeout``: how long to wait for the peer's close frame, and for
      ``on_close`` when the server is cancelled.
    - ``ping_interval``: an idle WebSocket gets a ping this often.
    - ``sse_keepalive``: an idle SSE stream gets a comment line this often.
    - ``drain_timeout``: graceful shutdown waits this long for clients to
      take their close before aborting them.
    - ``drain_spread``: a graceful shutdown gives its push connections
      ``on_shutdown`` and their close in batches spread over this many
      seconds instead of all at once (0, the default: all at once), so that
      their clients do not all reconnect in the same second; the drain then
      lasts up to ``drain_spread + drain_timeout``.
    - ``tune_gc``: when the server starts, if the app left Python's default
      garbage collector thresholds, raise them (see :func:`tune_gc`): with
      thousands of long-lived connections the default ones make the
      collector walk every connection's objects many times a second.
    - ``history``, ``history_ttl``: every channel keeps its last
      ``history`` messages and/or those of the last ``history_ttl`` seconds
      (0 and None, the defaults: no history), so that clients can resume
      (docs/pubsub.md, "History and resume").
    - ``history_for``: glob pattern -> :class:`trio_push.History` (or None
      for none), for the channels it matches; the first match wins over
      ``history`` and ``history_ttl``.
    - ``protocol``: the protocol core's limits (:class:`sansio_push.Config`).
    - ``proxy_headers``: take the client's address and scheme from
      ``X-Forwarded-For``/``X-Forwarded-Proto`` or ``Forwarded``, when the
      peer is in ``forwarded_allow_ips`` (addresses and networks, comma
      separated or a sequence; ``*``: any peer; ``unix``: a peer on a Unix
      socket). docs/deployment.md, "Proxies".
    - ``metrics_port``: serve Prometheus metrics on this port (of the
      server's host), on a listener of its own; None (the default): none.
      Needs prometheus-client (``trio-push[metrics]``; docs/deployment.md,
      "Metrics").
    - ``health_path``: answer ``GET health_path`` (liveness) and
      ``health_path + "/ready"`` (readiness: 503 while draining or while
      Redis is down) before the app; None (the default): no such routes.
    """

    threads: int = 0
    idle_timeout: float = 5.0
    header_timeout: float = 10.0
    pong_timeout: float = 20.0
    max_connections: int = 10000
    allow_origins: tuple[str, ...] | None = None
    slow_callback: float = 0.25
    write_timeout: float = 30.0
    close_timeout: float = 5.0
    ping_interval: float = 20.0
    sse_keepalive: float = 15.0
    drain_timeout: float = 10.0
    drain_spread: float = 0.0
    tune_gc: bool = True
    history: int = 0
    history_ttl: float | None = None
    history_for: Mapping[str, History | None] = field(default_factory=dict)
    protocol: sp.Config = field(default_factory=sp.Config)
    proxy_headers: bool = False
    forwarded_allow_ips: str | tuple[str, ...] = "127.0.0.1"
    metrics_port: int | None = None
    health_path: str | None = None


class ASGIServer(Protocol):
    """What the request loop sees of an ASGI adapter (``_asgi.ASGIAdapter``)."""

    def serves(self, target: Any) -> bool: ...

    async def answer(self, loop: Any, env: dict[str, Any]) -> Any: ...


class Flushable(Protocol):
    """What the server's flusher flushes: a push session, or an HTTP/2
    connection (the frames its streams made)."""

    @property
    def peer(self) -> str: ...

    def flush(self) -> None: ...

    def end(self) -> None: ...


class Session(Flushable, Protocol):
    """A push session, as the server's timer, flusher and shutdown see it."""

    def tick(self, now: float) -> None: ...


class Context:
    """The part of a server its connections use.

    Made by the server; ``nursery`` and ``flush_soon`` are set once it
    serves, ``stopping`` and ``close_deadline`` change during a graceful
    shutdown. Event loop thread only (``loop`` is how other threads get
    there).
    """

    __slots__ = (
        "options",
        "loop",
        "pubsub",
        "limiter",
        "dispatch",
        "wsgi",
        "asgi",
        "environ",
        "nursery",
        "flush_soon",
        "sessions",
        "closing",
        "close_deadline",
        "stopping",
        "proxy",
        "counters",
        "now",
        "poller",
    )

    def __init__(
        self,
        options: Options,
        pubsub: PubSub,
        limiter: trio.CapacityLimiter | None,
        dispatch: Callable[[dict[str, Any]], Callable[..., Any]],
        *,
        wsgi: bool,
        environ: dict[str, Any],
        asgi: ASGIServer | None = None,
    ) -> None:
        self.options = options
        #: The server's thread, and the way onto it from other threads.
        self.loop = Loop()
        self.pubsub = pubsub
        #: Worker threads for plain callables, or None (threads=0).
        self.limiter = limiter
        #: The callable that answers a request's env.
        self.dispatch = dispatch
        #: Whether the app reads the body itself, as a WSGI app does.
        self.wsgi = wsgi
        #: The ASGI adapter (``_asgi.ASGIAdapter``) when the app is an ASGI app.
        self.asgi = asgi
        #: What the server adds to every request's environ.
        self.environ = environ
        #: Where connections' helper tasks run (the server's connection nursery).
        self.nursery: trio.Nursery | None = None
        #: ``flush_soon(session)``: the server's flusher sends what ``session``
        #: has queued, in the next turn of the loop.
        self.flush_soon: Callable[[Flushable], None] | None = None
        #: The push sessions open (the timer ticks them).
        self.sessions: set[Session] = set()
        #: The on_close calls under way, shielded, and their deadline: none
        #: until a shutdown's drain is over, then close_timeout from there.
        self.closing: set[trio.CancelScope] = set()
        self.close_deadline = float("inf")
        #: True once a graceful shutdown has begun.
        self.stopping = False
        #: With ``proxy_headers``: who may say who the client is.
        self.proxy = TrustedProxies(options.forwarded_allow_ips) if options.proxy_headers else None
        #: What the metrics count (plain ints; see _metrics.py).
        self.counters = Counters()
        #: The run's clock: ``trio.current_time``, or once the server runs
        #: (:meth:`read_clock`) the clock's own method, two calls fewer.
        self.now: Callable[[], float] = trio.current_time
        #: Where push connections on plain TCP wait to read (Linux), or None.
        self.poller = ReadPoller() if ReadPoller.available() else None

    def read_clock(self) -> None:
        """Read the run's clock directly from now on (four times a request);
        called in the run."""
        self.now = self.counters.now = trio.lowlevel.current_clock().current_time
