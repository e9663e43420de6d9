"""The server: listeners, connections, graceful shutdown."""

from __future__ import annotations

import gc
import logging
import random
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, cast

import trio

import sansio_push as sp

from ._asgi import ASGIAdapter, is_asgi
from ._calls import app_callable
from ._connection import Connection
from ._context import Context, Flushable, Options
from ._history import Position, rules_from
from ._listen import Acceptor, addresses, describe, open_listeners, port_of
from ._loop import watch_signals
from ._metrics import (
    Snapshot,
    SnapshotCollector,
    serve_metrics,
    snapshot,
    stop_metrics,
    write_snapshot,
    write_snapshots,
)
from ._pubsub import MemoryPubSub, PubSub
from ._router import Router
from ._static import StaticFiles
from ._transport import Transport
from ._wsgi import WSGIAdapter, is_wsgi

log = logging.getLogger("trio_push")

#: The kinds of app a server runs (``interface``).
INTERFACES = ("auto", "push", "wsgi", "asgi")

#: Worker threads for a WSGI app when ``threads`` is 0.
WSGI_THREADS = 8

#: A paced drain (``drain_spread``) shuts down a batch of push connections this often.
DRAIN_BATCH_PERIOD = 0.1

_NOT_FOUND = (404, [("content-type", "text/plain; charset=utf-8")], b"Not Found\n")


class Server:
    """A trio-push server for one app.

    From async code, ``await server.serve()`` (or ``nursery.start(server.serve)``,
    which reports the server once it listens). From a script that is not async,
    ``server.start()`` runs it on a thread of its own and returns once it
    listens, and ``server.stop()`` stops it gracefully.

    It listens on ``host:port``, or instead on the Unix socket ``uds`` (a
    path), or on the inherited listening socket ``fd`` (a file descriptor):
    see docs/deployment.md, "Unix sockets and inherited sockets".
    ``interface`` is ``'auto'`` (detect), ``'push'``, ``'wsgi'`` or
    ``'asgi'``; an ASGI app runs on ``asgi_loop`` (``'asyncio'``: an asyncio
    loop in a thread of its own; ``'trio'``: this server's run), with
    ``root_path`` as its scopes' (docs/asgi.md).
    ``metrics_dir`` is for ``--workers`` (the CLI sets it): the worker
    writes its metrics there for its supervisor's scrape instead of serving
    ``metrics_port`` (docs/deployment.md, "Metrics").
    """

    def __init__(
        self,
        app: Any,
        port: int = 9292,
        *,
        host: str | None = "127.0.0.1",
        root: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        options: Options | None = None,
        pubsub: PubSub | None = None,
        reuse_port: bool = False,
        background: Callable[[], Awaitable[Any]] | None = None,
        interface: str = "auto",
        asgi_loop: str = "asyncio",
        root_path: str = "",
        uds: str | None = None,
        fd: int | None = None,
        metrics_dir: str | None = None,
        **option_values: Any,
    ) -> None:
        options = options or Options()
        protocol_fields = sp.Config.__dataclass_fields__
        proto = {k: option_values.pop(k) for k in list(option_values) if k in protocol_fields}
        if ssl_context is not None:
            proto.setdefault("scheme", "https")
        if proto:
            options = replace(options, protocol=replace(options.protocol, **proto))
        if ssl_context is not None:
            # HTTP/2 first, for the clients that speak it (docs/http2.md).
            http2 = options.protocol.http2
            ssl_context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
        if option_values:
            options = replace(options, **option_values)
        self.options = options
        self.app = app
        self.router = app if isinstance(app, Router) else None
        self.limiter = trio.CapacityLimiter(options.threads) if options.threads > 0 else None
        if interface not in INTERFACES:
            raise ValueError(f"interface must be one of {', '.join(INTERFACES)}, not {interface!r}")
        self.interface = "push" if self.router is not None else interface
        if self.interface == "auto":
            self.interface = "asgi" if is_asgi(app) else "wsgi" if is_wsgi(app) else "push"
        self._app_fn: Callable[..., Any] | None
        #: The ASGI adapter, when the app is an ASGI app (``interface='asgi'``).
        self.asgi: ASGIAdapter | None = None
        if self.router is not None:
            self._app_fn = None
        elif self.interface == "asgi":
            self.asgi = ASGIAdapter(app, asgi_loop, root_path)
            # What dispatch answers for the app: the request loop hands the
            # request to the adapter when it sees it (it is never called).
            self._app_fn = cast(Callable[..., Any], self.asgi)
        elif self.interface == "wsgi":
            wsgi_limiter = self.limiter or trio.CapacityLimiter(WSGI_THREADS)
            self._app_fn = WSGIAdapter(app, wsgi_limiter)
        else:
            self._app_fn = app_callable(app)
        self.static = StaticFiles(root) if root is not None else None
        self.host = host
        self.requested_port = port
        if uds is not None and fd is not None:
            raise ValueError("uds and fd are two ways to listen: give one")
        #: Listen on this Unix socket instead of ``host:port``.
        self.uds = uds
        #: Serve on this inherited listening socket instead of ``host:port``.
        self.fd = fd
        self.ssl_context = ssl_context
        self.background = background if background is not None else getattr(app, "background", None)
        #: The pub/sub engine: :class:`MemoryPubSub` unless given (``RedisPubSub``).
        self.pubsub: PubSub = pubsub if pubsub is not None else MemoryPubSub()
        rules = rules_from(options.history, options.history_ttl, options.history_for)
        if rules:
            self.pubsub.history = rules
        #: Listen with SO_REUSEPORT, to share the port with other processes.
        self.reuse_port = reuse_port
        environ: dict[str, Any] = {"trio_push.server": self}
        if reuse_port:
            # One of several processes on the port (--workers): the same app
            # object may be running in another process (PEP 3333).
            environ["wsgi.multiprocess"] = True
        # All that the connections see of the server.
        dispatch = self.dispatch
        if options.health_path is None and self.router is None and self.static is None:
            # Every request goes to the app: no path to look at first.
            assert self._app_fn is not None
            dispatch = _only(self._app_fn)
        self._context = context = Context(
            options,
            self.pubsub,
            self.limiter,
            dispatch,
            wsgi=self.interface == "wsgi",
            environ=environ,
            asgi=self.asgi,
        )
        context.flush_soon = self._flush_soon
        #: The event loop it serves on, for other threads (see _loop.Loop).
        self.loop = context.loop
        self.ports: list[int] = []
        #: The push sessions open.
        self.push_connections = context.sessions
        self.connections: set[Connection] = set()
        self._acceptor = Acceptor(options.max_connections, self._connect)
        # What every Connection calls once it has ended: one bound method
        # for all of them (made for each, it would cost each 64 bytes).
        self._ended_callback = self._ended
        # Push sessions with something queued from outside their own
        # tasks, for the flusher (see PushSession.flush).
        self._to_flush: list[Flushable] = []
        self._flush_lot = trio.lowlevel.ParkingLot()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._drain_scope: trio.CancelScope | None = None
        #: Under ``--workers``: the folder this worker writes its metrics
        #: to, for the supervisor's scrape (instead of ``metrics_port``).
        self.metrics_dir = metrics_dir
        #: The port metrics are served on (``metrics_port``, once bound).
        self.metrics_port: int | None = None

    @property
    def port(self) -> int:
        """The first port listened on (useful with port 0)."""
        return self.ports[0]

    @property
    def stopping(self) -> bool:
        """True once a graceful shutdown has begun."""
        return self._context.stopping

    @property
    def thread_id(self) -> int | None:
        """The thread it serves on; None until it serves."""
        return self.loop.thread_id

    @property
    def token(self) -> trio.lowlevel.TrioToken | None:
        """The Trio token of the run it serves in; None until it serves."""
        return self.loop.token

    # -- dispatch -----------------------------------------------------------

    def dispatch(self, env: dict[str, Any]) -> Callable[..., Any]:
        """The callable that answers this request."""
        health = self.options.health_path
        if health is not None and env["PATH_INFO"].startswith(health):
            rest = env["PATH_INFO"][len(health) :]
            if rest == "":
                return _alive
            if rest == "/ready":
                return self._ready
        if self.router is not None:
            target = self.router.match(env)
            if target is not None:
                return app_callable(target)
        elif self.static is None:
            assert self._app_fn is not None
            return self._app_fn
        if self.static is not None:
            path = self.static.find(env)
            if path is not None:
                static = self.static

                async def serve_file(env: dict[str, Any]) -> Any:
                    return await static.serve(env, path)

                return serve_file
        if self._app_fn is not None:
            return self._app_fn
        return _not_found

    def _ready(self, env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Readiness: 503 while a graceful stop drains, or while the
        pub/sub engine's connection (Redis) is down; else 200."""
        if self.stopping:
            return _health(503, "draining")
        if getattr(self.pubsub, "connected", True) is False:
            return _health(503, "redis down")
        return _health(200, "ready")

    def metrics_snapshot(self) -> Snapshot:
        """What the metrics count now (see _metrics.snapshot)."""
        return snapshot(self._context.counters, self._acceptor, self.pubsub)

    # -- running ------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled or stopped.

        Reports this server to ``nursery.start`` once every listener is bound.
        On cancellation or :meth:`stop` the shutdown is graceful: stop
        accepting, let in-flight requests finish, ``on_shutdown`` for every
        push client, close 1001 (SSE: end of stream), wait up to
        ``drain_timeout`` for them to go, then abort what is left; ``on_close``
        runs for every push client.

        An ASGI app's lifespan starts before the server listens (raising
        :class:`~trio_push._asgi.LifespanFailed` if the app says it failed) and shuts down
        once the connections are gone.
        """
        if self.asgi is None:
            await self._listen_and_serve(task_status)
            return
        self.loop.enter()
        error = None
        async with trio.open_nursery() as nursery:
            try:
                await self.asgi.start(self._context, nursery)
                try:
                    await self._listen_and_serve(task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        options = self.options
                        await self.asgi.stop(options.drain_timeout, options.close_timeout)
            except OSError as exc:  # LifespanFailed, or a port in use
                # Raised below, outside the nursery (see serve_until_signalled).
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _listen_and_serve(self, task_status: Any) -> None:
        listeners = await open_listeners(
            self.requested_port,
            self.host,
            reuse_port=self.reuse_port,
            ssl_context=self.ssl_context,
            uds=self.uds,
            fd=self.fd,
        )
        self.ports = [p for listener in listeners if (p := port_of(listener)) is not None]
        metrics = None
        if self.options.metrics_port is not None and self.metrics_dir is None:
            try:
                metrics, self.metrics_port = serve_metrics(
                    self.options.metrics_port,
                    self.host or "0.0.0.0",
                    SnapshotCollector(self.metrics_snapshot),
                )
            except BaseException:
                for listener in listeners:
                    await listener.aclose()
                raise
        try:
            await self._serve(listeners, task_status)
        finally:
            if metrics is not None:
                stop_metrics(metrics)
            if self.metrics_dir is not None:
                write_snapshot(self.metrics_dir, self.metrics_snapshot())

    async def _serve(self, listeners: list[Any], task_status: Any) -> None:
        if self.options.tune_gc:
            tune_gc()
        self.loop.enter()
        self._context.read_clock()
        self._stop_event = trio.Event()
        self._empty = trio.Event()
        self._empty.set()
        async with trio.open_nursery() as nursery:
            conn_nursery, conn_scope = await nursery.start(_shielded_nursery)
            #: Where connections and their helper tasks run.
            self.conn_nursery: trio.Nursery = conn_nursery
            self._context.nursery = conn_nursery
            # The engine outlives the connections (on_close may unsubscribe or
            # publish); it is cancelled with them, after the drain.
            await conn_nursery.start(self.pubsub.run)
            accept_scope = trio.CancelScope()
            nursery.start_soon(self._acceptor.run, listeners, conn_nursery, accept_scope)
            conn_nursery.start_soon(self._tick)
            conn_nursery.start_soon(self._reap)
            conn_nursery.start_soon(self._flush)
            if self.background is not None:
                conn_nursery.start_soon(self._run_background)
            if self.metrics_dir is not None:
                conn_nursery.start_soon(write_snapshots, self.metrics_dir, self.metrics_snapshot)
            shown_host = None if self.fd is not None else self.host or "0.0.0.0"
            log.info(
                "trio-push listening on %s",
                ", ".join(describe(listener, _scheme(self), shown_host) for listener in listeners),
            )
            task_status.started(self)
            _running.add(self)
            try:
                await self._stop_event.wait()
            finally:
                _running.discard(self)
                with trio.CancelScope(shield=True):
                    accept_scope.cancel()
                    # Before any push client is told to go (and reconnects);
                    # once the accepting tasks have their cancellation (closing
                    # a socket they wait on would be an error in them).
                    self._acceptor.stop_listening(listeners, conn_nursery)
                    await self._shutdown()
                    conn_scope.cancel()
                nursery.cancel_scope.cancel()

    async def serve_until_signalled(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """:meth:`serve`, stopping on SIGINT or SIGTERM: the first one stops
        gracefully, another one stops at once. Main thread only."""
        error: OSError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, lambda: self.stopping, self.stop, self.abort)
            try:
                await self.serve(task_status=task_status)
            except OSError as exc:
                # Raised below, outside the nursery: inside it, it would come
                # out wrapped in an ExceptionGroup (a port in use would show a
                # traceback where the CLI prints one line).
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _tick(self) -> None:
        """One timer for every push connection: keepalives, pong and close
        deadlines. One task instead of a timer per connection, and it acts
        while a connection's writer is stuck in a send."""
        o = self.options
        period = min(o.ping_interval, o.sse_keepalive, o.pong_timeout, o.close_timeout) / 4
        period = min(max(period, 0.01), 1.0)
        while True:
            await trio.sleep(period)
            self._tick_all(trio.current_time())

    def _tick_all(self, now: float) -> None:
        # Not in _tick's loop: its loop variable would keep the last
        # session alive while it sleeps, closed or not.
        for session in list(self.push_connections):
            session.tick(now)

    async def _reap(self) -> None:
        """One timer for every HTTP/1.1 connection's wait for a request
        (``idle_timeout``, ``header_timeout``): one past its deadline is
        ended within an eighth of the shorter of the two."""
        o = self.options
        period = min(max(min(o.idle_timeout, o.header_timeout) / 8, 0.005), 1.0)
        while True:
            await trio.sleep(period)
            self._reap_all(trio.current_time())

    def _reap_all(self, now: float) -> None:
        # Not in _reap's loop: its loop variable would keep the last
        # connection alive while it sleeps.
        for conn in self.connections:
            conn.expire(now)

    def _flush_soon(self, session: Flushable) -> None:
        """Have the flusher send what ``session`` has queued."""
        self._to_flush.append(session)
        if len(self._to_flush) == 1:
            self._flush_lot.unpark_all()

    async def _flush(self) -> None:
        """One task flushes every session that something was queued on from
        outside its own tasks, in the next turn of the event loop: a burst
        of publishes leaves in one send per session, and a session needs a
        writer task of its own only while the socket does not take what it
        has."""
        while True:
            if not self._to_flush:
                await self._flush_lot.park()
            self._flush_batch()
            await trio.lowlevel.checkpoint()

    def _flush_batch(self) -> None:
        # Not in _flush's loop: its locals would keep the last batch of
        # sessions alive while it waits for the next, closed or not.
        batch, self._to_flush = self._to_flush, []
        for session in batch:
            try:
                session.flush()
            except Exception:
                log.exception("%s: internal error while sending, closing", session.peer)
                session.end()

    async def _run_background(self) -> None:
        assert self.background is not None
        try:
            await self.background()
        except Exception:
            log.exception("error in the app's background task")

    def _connect(self, stream: Any) -> Coroutine[Any, Any, None]:
        """What the task of a new connection runs: its :meth:`Connection.run`.
        Returned, not awaited in a coroutine of ours: each idle connection
        would keep that coroutine's frame."""
        sock = (
            stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket
        )
        try:
            peer, local = addresses(sock, tls=isinstance(stream, trio.SSLStream))
        except OSError:
            self._acceptor.release()
            return trio.aclose_forcefully(stream)
        core = sp.ServerConnection(self.options.protocol, client=peer, server=local)
        transport = Transport(stream, sock, peer, self.options.write_timeout)
        conn = Connection(self._context, transport, self._ended_callback)
        self.connections.add(conn)
        self._empty = trio.Event() if self._empty.is_set() else self._empty
        return conn.run(core)

    def _ended(self, conn: Connection) -> None:
        """``conn`` has ended (its transport closed)."""
        self._acceptor.release()
        self.connections.discard(conn)
        if not self.connections:
            self._empty.set()

    async def _shutdown(self) -> None:
        self._context.stopping = True
        log.info(
            "shutting down: %d connections (%d push)",
            len(self.connections),
            len(self.push_connections),
        )
        spread = self.options.drain_spread
        with trio.move_on_after(spread + self.options.drain_timeout) as self._drain_scope:
            if spread > 0:
                await self._shutdown_paced(spread)
            else:
                for conn in list(self.connections):
                    conn.shutdown()
            await self._empty.wait()
        context = self._context
        context.close_deadline = trio.current_time() + self.options.close_timeout
        for scope in context.closing:
            scope.deadline = context.close_deadline
        if self.connections:
            skipped = sum(conn.drain_expired() for conn in list(self.connections))
            log.warning(
                "%d connections did not close in time; aborting them (on_close still runs"
                " for each)%s",
                len(self.connections),
                f"; {skipped} of them never got to run on_shutdown" if skipped else "",
            )

    async def _shutdown_paced(self, spread: float) -> None:
        """``drain_spread``: connections without push clients shut down now;
        those with some (an HTTP/2 connection's push streams go together) in
        random order, a batch every ``DRAIN_BATCH_PERIOD`` across ``spread``
        seconds, the last batch starting one period before its end."""
        push: list[Connection] = []
        for conn in list(self.connections):
            if _has_push(conn):
                push.append(conn)
            else:
                conn.shutdown()
        random.shuffle(push)
        batches = max(1, min(len(push), round(spread / DRAIN_BATCH_PERIOD)))
        log.info(
            "paced drain: %d push connections in %d batches over %g s",
            len(push),
            batches,
            spread,
        )
        start = trio.current_time()
        for i in range(batches):
            await trio.sleep_until(start + spread * i / batches)
            for conn in push[i * len(push) // batches : (i + 1) * len(push) // batches]:
                if conn in self.connections:
                    conn.shutdown()

    def abort(self) -> None:
        """Stop now: end a graceful shutdown's drain early. Event loop thread only."""
        self.stop()
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    def stop(self) -> None:
        """Stop gracefully. Safe from any thread; returns at once."""
        if self.loop.thread_id is not None:
            self.loop.call(self._stop_event.set)

    # -- for scripts that are not async -----------------------------------------

    def run(self) -> None:
        """Serve on this thread until stopped (blocks)."""
        trio.run(self._run_reporting)

    async def _run_reporting(self) -> None:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self.serve)
            except BaseException as exc:
                self._start_error = exc
                raise
            finally:
                self._started.set()

    def start(self) -> None:
        """Run the server on a thread of its own; return once it listens.

        Raises what stopped it from listening (a port in use, say).
        """
        self._thread = threading.Thread(target=self._thread_main, name="trio-push", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def _thread_main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported to start() or logged
            if not self._started.is_set() or self._start_error is None:
                self._start_error = exc
            self._started.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a server started with :meth:`start` to end."""
        if self._thread is not None:
            self._thread.join(timeout)


def _only(app_fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Callable[..., Any]]:
    """The dispatch of a server whose every request goes to ``app_fn``."""

    def dispatch(env: dict[str, Any]) -> Callable[..., Any]:
        return app_fn

    return dispatch


async def _shielded_nursery(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    # Connections live here, shielded from the cancellation that starts a
    # graceful shutdown; serve() cancels this scope when the drain is over.
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


#: Python's default collector thresholds, which :func:`tune_gc` replaces.
_DEFAULT_GC_THRESHOLD = (700, 10, 10)
#: What it replaces them with (measured in bench/: see bench/RESULTS.md).
TUNED_GC_THRESHOLD = (100_000, 50, 10)


def tune_gc() -> None:
    """Make Python's cyclic garbage collector fit a server of many
    long-lived connections (``Options.tune_gc``, on by default).

    Each connection keeps a hundred or so objects alive; the default
    thresholds run a collection every 700 allocations, and the objects that
    live across a few of them (a connection's state between two messages)
    soon cost a full collection, which walks every object of every
    connection: 0.4 s at 5,000 connections, once per burst of messages. So:
    ``gc.freeze()`` (what was loaded at start-up is never walked again), and
    thresholds of 100,000 / 50 / 10 instead of 700 / 10 / 10, unless the app
    set its own (then they are left alone). Cyclic garbage still gets
    collected, later and in fewer passes: at most about 100,000 objects wait.
    """
    if gc.get_threshold() == _DEFAULT_GC_THRESHOLD:
        gc.set_threshold(*TUNED_GC_THRESHOLD)
        gc.freeze()


#: Servers serving in this process, for :func:`publish`.
_running: set[Server] = set()


def publish(channel: str, message: str | bytes) -> Position | bool:
    """Publish ``message`` on ``channel`` through the pub/sub engine of every
    server running in this process (once per engine bus: servers sharing a
    Redis publish it once). Safe from any task and any thread; never blocks.
    The message is encoded once.

    Returns False if none is running or one refused it (Redis unreachable:
    see :class:`RedisPubSub`); else, on a channel with history, the
    message's :class:`Position` (of the first engine), else True.
    """
    prepared = sp.prepare(message)
    ok: Position | bool = False
    buses: set[Any] = set()
    for server in list(_running):
        engine = server.pubsub
        bus = getattr(engine, "bus", engine)
        if bus in buses:
            continue
        buses.add(bus)
        result = engine.publish(channel, prepared)
        if not result:
            return False
        if not isinstance(ok, Position):
            ok = result
    return ok


def subscriber_count(channel: str, cluster: bool = False) -> int:
    """How many clients of the servers running in this process a publish on
    ``channel`` reaches (exact and pattern subscriptions; a client counts
    once). Clients of other processes are not counted. Any thread.

    With ``cluster=True``, the clients of every process and machine sharing
    the engine's Redis (see "Counting subscribers across processes" in
    docs/pubsub.md; in-process, those of this process). That waits for
    Redis's answer, so it blocks the calling thread, and on a server's event
    loop it raises ``RuntimeError``: there, ``await``
    :func:`subscriber_count_async` instead. ``ConnectionError`` if Redis
    does not answer."""
    if cluster:
        return sum(_cluster_count_from_thread(s, channel) for s in _by_bus())
    total = 0
    for server in list(_running):
        try:
            total += server.loop.call_and_wait(server.pubsub.count, channel)
        except trio.RunFinishedError:
            continue
    return total


async def subscriber_count_async(channel: str, cluster: bool = False) -> int:
    """:func:`subscriber_count` for ``async`` code, on a server's event loop
    or any other Trio run: with ``cluster=True`` it waits for Redis without
    blocking the loop."""
    if not cluster:
        return await trio.to_thread.run_sync(subscriber_count, channel)
    total = 0
    for server in _by_bus():
        if server.loop.thread_id == threading.get_ident():
            total += await _cluster_count(server.pubsub, channel)
        else:
            total += await trio.to_thread.run_sync(_cluster_count_from_thread, server, channel)
    return total


def _by_bus() -> list[Server]:
    """A running server per engine bus (servers sharing a Redis count it once)."""
    servers: dict[Any, Server] = {}
    for server in list(_running):
        servers.setdefault(getattr(server.pubsub, "bus", server.pubsub), server)
    return list(servers.values())


async def _cluster_count(engine: PubSub, channel: str) -> int:
    count = getattr(engine, "cluster_count", None)
    if count is None:  # an engine of the app's own, without cluster counts
        return engine.count(channel)
    return int(await count(channel))


def _cluster_count_from_thread(server: Server, channel: str) -> int:
    if server.loop.thread_id == threading.get_ident():
        raise RuntimeError(
            "subscriber_count(cluster=True) on the event loop would block it:"
            " await subscriber_count_async(channel, cluster=True)"
        )
    try:
        return trio.from_thread.run(
            _cluster_count, server.pubsub, channel, trio_token=server.loop.token
        )
    except trio.RunFinishedError:
        return 0


def _health(status: int, text: str) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")]
    return status, headers, f"{text}\n".encode()


def _alive(env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Liveness: the process serves."""
    return _health(200, "ok")


def _has_push(conn: Connection) -> bool:
    """Whether ``conn`` carries push clients (a paced drain spreads those)."""
    if conn.session is not None:
        return True
    return conn.h2 is not None and any(sink.session is not None for sink in conn.h2.sinks.values())


def _not_found(env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    return _NOT_FOUND


def _scheme(server: Server) -> str:
    return "https" if server.ssl_context is not None else "http"


async def serve(
    app: Any,
    port: int = 9292,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve ``app`` on ``port`` until cancelled: ``trio.run(serve, app, 9292)``.

    With ``await nursery.start(serve, app, 0)`` it returns the listening
    :class:`Server` (``server.port`` is the bound port). Keyword arguments are
    those of :class:`Server`. Run as the main task of ``trio.run`` on the
    main thread, it also stops on SIGINT/SIGTERM as the CLI does (gracefully,
    then at once on a second signal).
    """
    server = Server(app, port, **kwargs)
    if _is_main_task() and threading.current_thread() is threading.main_thread():
        await server.serve_until_signalled(task_status=task_status)
    else:
        await server.serve(task_status=task_status)


def _is_main_task() -> bool:
    nursery = trio.lowlevel.current_task().parent_nursery
    return nursery is not None and nursery.parent_task is trio.lowlevel.current_root_task()
