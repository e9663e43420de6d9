"""The ``trio-push module:attr`` command."""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import inspect
import logging
import os
import shutil
import ssl
import sys
import tempfile
from typing import Any

import trio

from ._asgi import LifespanFailed
from ._context import Options
from ._metrics import (
    FOLDER_ENV,
    MISSING,
    FolderCollector,
    MetricsPortError,
    serve_metrics,
    stop_metrics,
)
from ._proxy import TrustedProxies
from ._pubsub import PubSub
from ._redis import RedisPubSub
from ._server import Server
from ._workers import START_FAILED_EXIT, serve_as_worker, supervise


class CLIError(Exception):
    """A problem worth one line to the user, not a traceback."""


def load_app(spec: str) -> Any:
    """Import ``module:attr``; a class is instantiated with no arguments."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"expected module:attr (e.g. app:Listen), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CLIError(f"cannot import module {module_name!r}: no such module") from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    if inspect.isclass(obj):
        obj = obj()
    return obj


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # The flags' defaults are the server's own.
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="trio-push",
        description="Serve a push-style app (env['rack.upgrade']) over HTTP, WebSocket and SSE.",
    )
    parser.add_argument("app", help="module:attr of the app (a class is instantiated)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9292, help="port (default 9292)")
    parser.add_argument("--root", help="folder of static files")
    parser.add_argument(
        "--interface",
        default="auto",
        choices=["auto", "push", "wsgi", "asgi"],
        help="push-style app(env), WSGI app(environ, start_response) or ASGI 3 app"
        " (scope, receive, send) (default: detect)",
    )
    parser.add_argument(
        "--asgi-loop",
        default="asyncio",
        choices=["asyncio", "trio"],
        help="where an ASGI app runs: an asyncio loop (uvloop if installed) in a thread of its"
        " own, or the server's Trio run, for anyio-only apps (default asyncio)",
    )
    parser.add_argument(
        "--root-path",
        default="",
        metavar="PATH",
        help="ASGI root_path: the prefix a proxy in front strips from the path (default none)",
    )
    parser.add_argument("--certfile", help="TLS certificate chain (PEM): serve https and wss")
    parser.add_argument("--keyfile", help="TLS private key (PEM), with --certfile")
    parser.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="accept WebSocket/SSE only from this Origin (repeat for more; default: any)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); more than 1 needs --redis",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="pub/sub through Redis, to reach every process and machine: redis://host:port/db,"
        " rediss:// for TLS, unix:///path, redis+sentinel://host:port,host:port/service,"
        " redis+cluster://host:port,host:port (rediss+... for TLS)",
    )
    parser.add_argument(
        "--redis-heartbeat",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often each process renews its subscriber counts in Redis (default 5)",
    )
    # Internal: this process is one of --workers N (SO_REUSEPORT, parent watch).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    # The server's options that have a flag, with the server's defaults.
    for flag, kind, default, metavar, text in (
        ("--threads", int, defaults.threads, None, "worker threads for plain callables"),
        (
            "--drain-timeout",
            float,
            defaults.drain_timeout,
            None,
            "seconds a graceful shutdown waits for clients",
        ),
        (
            "--drain-spread",
            float,
            defaults.drain_spread,
            "SECONDS",
            "a graceful shutdown closes push clients in batches across this window",
        ),
        (
            "--max-connections",
            int,
            defaults.max_connections,
            "N",
            "open connections past which a new one gets 503",
        ),
        (
            "--ping-interval",
            float,
            defaults.ping_interval,
            "SECONDS",
            "an idle WebSocket gets a ping this often",
        ),
        (
            "--max-message-size",
            int,
            defaults.protocol.max_message_size,
            "BYTES",
            "largest incoming WebSocket message; larger ones close 1009",
        ),
        (
            "--max-queue-messages",
            int,
            defaults.protocol.max_queue_messages,
            "N",
            "messages a push client's queue holds while its socket refuses them",
        ),
        (
            "--max-queue-bytes",
            int,
            defaults.protocol.max_queue_bytes,
            "BYTES",
            "bytes a push client's queue holds while its socket refuses them",
        ),
        (
            "--h2-max-streams",
            int,
            defaults.protocol.h2_max_concurrent_streams,
            "N",
            "streams one HTTP/2 connection may have open at once",
        ),
        (
            "--h2-max-header-list-size",
            int,
            defaults.protocol.h2_max_header_list_size,
            "BYTES",
            "largest HTTP/2 request header list, decoded",
        ),
        (
            "--h2-max-frame-size",
            int,
            defaults.protocol.h2_max_frame_size,
            "BYTES",
            "largest HTTP/2 frame a client may send (16384 to 16777215)",
        ),
    ):
        shown = "%(default)d" if kind is int else "%(default)g"
        parser.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default {shown})"
        )
    parser.add_argument(
        "--overflow",
        choices=["close", "drop", "resync"],
        default=defaults.protocol.overflow,
        help="past a queue bound: close the client (1008), drop the write, or (channels with"
        " history) read on from history once it drains (default %(default)s)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="every channel keeps its last N messages, for clients that resume (default 0: none)",
    )
    parser.add_argument(
        "--history-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="every channel keeps the messages of the last SECONDS (default: no time bound)",
    )
    parser.add_argument(
        "--compression",
        action="store_true",
        help="offer permessage-deflate to WebSocket clients (default off)",
    )
    parser.add_argument(
        "--no-http2",
        action="store_true",
        help="speak only HTTP/1.1: no h2 in TLS's ALPN, no cleartext HTTP/2 (default: both on)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart when a .py file under the current folder changes (needs watchfiles)",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="no log line per request or push connection"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics on this port, on a listener of its own"
        " (needs trio-push[metrics]; default: none)",
    )
    parser.add_argument(
        "--health-path",
        metavar="PATH",
        help="answer liveness at PATH and readiness at PATH/ready, before the app (default: none)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default info)",
    )
    _add_deployment_flags(parser, defaults)
    return parser.parse_args(argv)


def _add_deployment_flags(parser: argparse.ArgumentParser, defaults: Options) -> None:
    """Behind a proxy, on a Unix socket, on an inherited socket."""
    parser.add_argument(
        "--uds",
        metavar="PATH",
        help="listen on this Unix socket instead of --host/--port (a stale socket file is"
        " replaced; mode 0666; removed at exit)",
    )
    parser.add_argument(
        "--fd",
        type=int,
        metavar="N",
        help="serve on the inherited listening socket N instead of --host/--port (systemd"
        " socket activation: 3)",
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client's address and scheme from X-Forwarded-For/-Proto or Forwarded,"
        " from the peers in --forwarded-allow-ips (default off)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        default=os.environ.get("FORWARDED_ALLOW_IPS", defaults.forwarded_allow_ips),
        help="comma-separated addresses and networks trusted with proxy headers; * for any,"
        " unix for a Unix socket's peer (default $FORWARDED_ALLOW_IPS, else %(default)s)",
    )


def _deployment_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Server arguments of :func:`_add_deployment_flags`' flags, checked."""
    if args.uds is not None and args.fd is not None:
        raise CLIError("--uds and --fd are two ways to listen: give one")
    if args.workers > 1 and (args.uds is not None or args.fd is not None):
        raise CLIError("--workers cannot share --uds or --fd yet: run one process per socket")
    if args.fd is not None and args.fd < 0:
        raise CLIError("--fd must be a file descriptor number (0 or more)")
    if args.proxy_headers:
        try:
            TrustedProxies(args.forwarded_allow_ips)
        except ValueError as exc:
            raise CLIError(f"--{exc}".replace("_", "-", 2)) from None
    return {
        "uds": args.uds,
        "fd": args.fd,
        "proxy_headers": args.proxy_headers,
        "forwarded_allow_ips": args.forwarded_allow_ips,
    }


def _reload(argv: list[str]) -> None:
    try:
        import watchfiles
    except ImportError:
        raise CLIError("--reload needs watchfiles: pip install 'trio-push[reload]'") from None
    argv = [a for a in argv if a != "--reload"]
    logging.getLogger("trio_push").info("watching %s for changes", os.getcwd())
    watchfiles.run_process(
        os.getcwd(),
        target=main,
        args=(argv,),
        watch_filter=watchfiles.PythonFilter(),
        callback=lambda changes: logging.getLogger("trio_push").info(
            "%d change(s) detected: restarting", len(changes)
        ),
    )


def _pubsub_engine(args: argparse.Namespace) -> PubSub | None:
    if args.workers < 1:
        raise CLIError("--workers must be at least 1")
    if args.redis is None:
        if args.workers > 1:
            raise CLIError(
                f"--workers {args.workers} needs --redis URL: without it a publish would"
                " reach the clients of one worker only"
            )
        return None
    try:
        return RedisPubSub(args.redis, heartbeat=_heartbeat(args.redis_heartbeat))
    except ValueError as exc:
        raise CLIError(f"--redis: {exc}") from None


def _heartbeat(seconds: float) -> float:
    if not seconds > 0:
        raise CLIError("--redis-heartbeat must be above 0")
    return seconds


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.certfile is None and args.keyfile is None:
        return None
    if args.certfile is None:
        raise CLIError("--keyfile needs --certfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"cannot load TLS certificate {args.certfile!r}: {exc}") from None
    return context


def _check_health_and_metrics(args: argparse.Namespace) -> None:
    if args.metrics_port is not None:
        if importlib.util.find_spec("prometheus_client") is None:
            raise CLIError(f"--metrics-port: {MISSING}")
        if not 0 <= args.metrics_port <= 65535:
            raise CLIError("--metrics-port must be from 0 to 65535")
    if args.health_path is not None and not (
        args.health_path.startswith("/") and len(args.health_path) > 1
    ):
        raise CLIError("--health-path must start with / (e.g. /health)")


def _supervise(argv: list[str], args: argparse.Namespace) -> int:
    """``--workers N``: the supervisor; with ``--metrics-port`` it serves
    the metrics of every worker (the snapshots they write in a folder of
    its own: see _metrics.py)."""
    stop_timeout = args.drain_spread + args.drain_timeout + 5
    if args.metrics_port is None:
        return supervise(argv, args.workers, args.host, args.port, stop_timeout)
    folder = tempfile.mkdtemp(prefix="trio-push-metrics-")
    try:
        collector = FolderCollector(folder)
        httpd, port = serve_metrics(args.metrics_port, args.host, collector)
        logging.getLogger("trio_push").info(
            "supervisor: metrics on http://%s:%d/metrics", args.host, port
        )
        try:
            return supervise(
                argv,
                args.workers,
                args.host,
                args.port,
                stop_timeout,
                env={FOLDER_ENV: folder},
                on_exit=collector.retire,
            )
        finally:
            stop_metrics(httpd)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _pad_level(record: logging.LogRecord) -> bool:
    record.pad = " " * max(1, 9 - len(record.levelname))
    return True


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # The same shape as uvicorn's lines: "INFO:     message".
    # With several processes, each line says which one.
    pid = "[%(process)d] " if args.workers > 1 or args.worker else ""
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(levelname)s:%(pad)s{pid}%(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_pad_level)
    if args.no_access_log:
        logging.getLogger("trio_push.access").setLevel(logging.WARNING)
    try:
        if args.reload:
            _reload(argv)
            return
        if args.root is not None and not os.path.isdir(args.root):
            raise CLIError(f"--root {args.root!r} is not a folder")
        if args.history < 0 or (args.history_ttl is not None and args.history_ttl <= 0):
            raise CLIError("--history must be at least 0 and --history-ttl above 0")
        if not 16384 <= args.h2_max_frame_size <= 16777215:
            raise CLIError("--h2-max-frame-size must be from 16384 to 16777215")
        if args.h2_max_streams < 1 or args.h2_max_header_list_size < 1:
            raise CLIError("--h2-max-streams and --h2-max-header-list-size must be at least 1")
        if args.drain_spread < 0:
            raise CLIError("--drain-spread must be at least 0")
        pubsub = _pubsub_engine(args)
        deployment = _deployment_options(args)
        _check_health_and_metrics(args)
        if args.workers > 1 and not args.worker:
            sys.exit(_supervise(argv, args))
        app = load_app(args.app)
        server = Server(
            app,
            args.port,
            host=args.host,
            root=args.root,
            threads=args.threads,
            interface=args.interface,
            asgi_loop=args.asgi_loop,
            root_path=args.root_path,
            ssl_context=_ssl_context(args),
            allow_origins=tuple(args.allow_origin) if args.allow_origin else None,
            drain_timeout=args.drain_timeout,
            drain_spread=args.drain_spread,
            max_connections=args.max_connections,
            ping_interval=args.ping_interval,
            max_message_size=args.max_message_size,
            max_queue_messages=args.max_queue_messages,
            max_queue_bytes=args.max_queue_bytes,
            overflow=args.overflow,
            history=args.history,
            history_ttl=args.history_ttl,
            compression=args.compression,
            http2=not args.no_http2,
            h2_max_concurrent_streams=args.h2_max_streams,
            h2_max_header_list_size=args.h2_max_header_list_size,
            h2_max_frame_size=args.h2_max_frame_size,
            pubsub=pubsub,
            reuse_port=args.worker,
            **deployment,
            metrics_port=args.metrics_port,
            metrics_dir=os.environ.get(FOLDER_ENV) if args.worker else None,
            health_path=args.health_path,
        )
        if args.worker:
            trio.run(serve_as_worker, server, Server.serve_until_signalled)
        else:
            trio.run(server.serve_until_signalled)
    except CLIError as exc:
        sys.exit(f"trio-push: {exc}")
    except LifespanFailed as exc:
        logging.getLogger("trio_push").error("ASGI lifespan startup failed: %s", exc)
        sys.exit(START_FAILED_EXIT)
    except MetricsPortError as exc:
        sys.exit(f"trio-push: {exc.strerror}")
    except OSError as exc:
        # The listeners name the socket in their errors.
        if args.uds is not None and exc.filename == args.uds:
            sys.exit(f"trio-push: --uds {args.uds}: {exc.strerror}")
        if args.fd is not None and exc.filename == f"fd {args.fd}":
            sys.exit(f"trio-push: --fd {args.fd}: {exc.strerror}")
        if exc.errno == errno.EADDRINUSE:
            sys.exit(f"trio-push: port {args.port} on {args.host} is already in use")
        raise
    except KeyboardInterrupt:
        pass
