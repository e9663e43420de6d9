"""Reaching the master that Redis Sentinel names: ``redis+sentinel://`` URLs.

A :class:`SentinelAddress` is used as the engine uses a
:class:`~trio_push._redis.RedisAddress`: ``connect()`` gives a stream to
Redis, ``str()`` names it in the logs. Each ``connect()`` finds the master
again: it asks every sentinel at once ``SENTINEL MASTER``, and tries the
masters they name, the most recent configuration first (the highest
``config-epoch``: a sentinel that missed a switch still names the old
master): it connects, authenticates, and asks the node its ``ROLE``; a node
that is not a master (an old master come back as a replica) is not used.
When none gives a master, ``connect()`` raises an ``OSError`` that says what
each answered, and the engine retries with its backoff, as for a Redis that
is down.

:meth:`SentinelAddress.watch` keeps a connection subscribed to
``+switch-master`` on one sentinel (the next one when it goes): when the
service's master moves, the engine's connections that are not on the new
master end, and reconnect through ``connect()``.

This module knows nothing of the engine: it is given how to make a node's
address from a URL (``RedisAddress.from_url``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from ._reason import reason

log = logging.getLogger("trio_push.redis")

#: URL schemes of a service behind Sentinel (TCP, TLS).
SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
SENTINEL_PORT = 26379
_RECEIVE_SIZE = 65536
#: Seconds between two rounds of the watcher when no sentinel answers.
_WATCH_RETRY = 0.5
#: What the sentinel URL's query may say besides the node's TLS options.
_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_timeout")


class Node(Protocol):
    """How to reach one Redis or sentinel (a ``RedisAddress``)."""

    async def connect(self) -> trio.abc.Stream: ...


#: What the watcher calls when the master moved: with ``stale(stream)``.
Moved = Callable[[Callable[[trio.abc.Stream], bool]], None]


class NoMaster(OSError):
    """No sentinel named a master that says it is one (the message says why)."""


class SentinelAddress:
    """The master of ``service`` as the sentinels at ``sentinels`` know it.

    ``user`` and ``password`` are the master's (``AUTH`` on each connection
    to it); ``sentinel_user`` and ``sentinel_password`` the sentinels'.
    ``timeout``: seconds for each sentinel (and each master it names) to
    answer, so that one that does not answer does not hold the rest."""

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        node_from_url: Callable[[str], Node],
        *,
        tls: bool = False,
        query: str = "",
        user: str | None = None,
        password: str | None = None,
        sentinel_user: str | None = None,
        sentinel_password: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.sentinels = sentinels
        self.service = service
        self.user, self.password = user, password
        self.sentinel_user, self.sentinel_password = sentinel_user, sentinel_password
        self.timeout = timeout
        #: Where the last connection to the master went (None: none yet).
        self.master: tuple[str, int] | None = None
        # The configuration epoch of the sentinel that named it.
        self._epoch = 0
        self._scheme = "rediss" if tls else "redis"
        self._query = query
        self._node_from_url = node_from_url
        self._nodes: dict[tuple[str, int], Node] = {}
        # The sentinel asked first: the last one that gave a master.
        self._first = 0
        # The master each stream that connect() gave is connected to.
        self._masters: weakref.WeakKeyDictionary[trio.abc.Stream, tuple[str, int]] = (
            weakref.WeakKeyDictionary()
        )
        for where in sentinels:
            self._node(where)  # a bad port or TLS option fails here, not on connecting

    def __str__(self) -> str:
        """The service, and the master it was last found at (else the sentinels)."""
        if self.master is not None:
            return f"{self._scheme}+sentinel {self.service} at {_where(self.master)}"
        where = ",".join(_where(s) for s in self.sentinels)
        return f"{self._scheme}+sentinel {self.service} via {where}"

    @classmethod
    def from_url(cls, url: str, node_from_url: Callable[[str], Node]) -> SentinelAddress:
        """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
        (``rediss+sentinel://`` for TLS to the sentinels and the master, with
        the ``rediss://`` query options). Query options: ``sentinel_username``,
        ``sentinel_password`` (the sentinels' credentials, when they have
        some), ``sentinel_timeout`` (seconds, default 1). Raises ``ValueError``."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"expected a redis+sentinel:// URL, got {url!r}")
        auth, _, hosts = parts.netloc.rpartition("@")
        user, _, password = auth.partition(":")
        sentinels = [_host_port(url, h) for h in hosts.split(",")] if hosts else []
        if not sentinels:
            raise ValueError(f"no sentinel in {url!r} (redis+sentinel://host:port,.../service)")
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise ValueError(f"no service name in {url!r} (redis+sentinel://host:port/service)")
        if db and not db.isdigit():
            raise ValueError(f"bad database number in {url!r}")
        query = parse_qs(parts.query)

        def option(name: str) -> str | None:
            return query.get(name, [None])[-1]

        try:
            timeout = float(option("sentinel_timeout") or 1.0)
        except ValueError:
            timeout = 0.0
        if not timeout > 0:
            raise ValueError(f"sentinel_timeout must be a number of seconds above 0, in {url!r}")
        return cls(
            sentinels,
            unquote(service),
            node_from_url,
            tls=SCHEMES[parts.scheme] == "rediss",
            query="&".join(p for p in parts.query.split("&") if not p.startswith(_OPTIONS)),
            user=unquote(user) or None,
            password=unquote(password) if auth and ":" in auth else None,
            sentinel_user=option("sentinel_username"),
            sentinel_password=option("sentinel_password"),
            timeout=timeout,
        )

    def _node(self, where: tuple[str, int]) -> Node:
        node = self._nodes.get(where)
        if node is None:
            host = f"[{where[0]}]" if ":" in where[0] else where[0]
            url = f"{self._scheme}://{host}:{where[1]}/?{self._query}"
            node = self._nodes[where] = self._node_from_url(url)
        return node

    def _order(self) -> list[int]:
        n = len(self.sentinels)
        return [(self._first + i) % n for i in range(n)]

    # -- finding the master ---------------------------------------------------

    async def connect(self) -> trio.abc.Stream:
        """A stream to the master, authenticated (the engine sends no
        ``AUTH`` of its own), its ``ROLE`` checked. Raises :class:`NoMaster`
        (an ``OSError``) saying what each sentinel answered."""
        answers: list[tuple[int, int, tuple[str, int]]] = []
        failed: list[tuple[int, str]] = []

        async def ask(rank: int, i: int) -> None:
            where = _where(self.sentinels[i])
            try:
                named = await self._ask(self.sentinels[i])
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, _Refused) as exc:
                failed.append((rank, f"sentinel {where}: {_why(exc)}"))
                return
            if named is None:
                failed.append((rank, f"sentinel {where} does not know {self.service!r}"))
            else:
                # The most recent configuration first; between equals, the usual order.
                answers.append((-named[0], rank, named[1]))

        # All at once: one that does not answer costs ``timeout``, not more.
        order = self._order()
        async with trio.open_nursery() as nursery:
            for rank, i in enumerate(order):
                nursery.start_soon(ask, rank, i)
        reasons = [text for _, text in sorted(failed)]
        tried: set[tuple[str, int]] = set()
        for epoch, rank, master in sorted(answers):
            sentinel = self.sentinels[order[rank]]
            if master in tried:
                continue
            tried.add(master)
            try:
                stream = await self._open_master(master)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, _Refused) as exc:
                reasons.append(
                    f"master {_where(master)} (from sentinel {_where(sentinel)}): {_why(exc)}"
                )
                continue
            if reasons:
                log.info(
                    "redis sentinel %s named the master of %r, after: %s",
                    _where(sentinel),
                    self.service,
                    "; ".join(reasons),
                )
            self._first, self._epoch = order[rank], -epoch
            self._masters[stream] = self.master = master
            return stream
        raise NoMaster("; ".join(reasons))

    async def _ask(self, sentinel: tuple[str, int]) -> tuple[int, tuple[str, int]] | None:
        """The configuration epoch and the master's address that ``sentinel``
        gives (None: it does not know the service)."""
        with trio.fail_after(self.timeout):
            stream = await self._open_sentinel(sentinel)
            async with stream:
                return _master(await _call(stream, self._get_master))

    @property
    def _get_master(self) -> bytes:
        return _command(b"SENTINEL", b"MASTER", self.service)

    async def _open_sentinel(self, sentinel: tuple[str, int]) -> trio.abc.Stream:
        stream = await self._node(sentinel).connect()
        auth = _auth(self.sentinel_user, self.sentinel_password)
        if auth:
            try:
                await _checked(stream, auth, "the sentinel refused AUTH")
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return stream

    async def _open_master(self, master: tuple[str, int]) -> trio.abc.Stream:
        with trio.fail_after(self.timeout):
            stream = await self._node(master).connect()
            try:
                auth = _auth(self.user, self.password)
                if auth:
                    await _checked(stream, auth, "AUTH refused")
                role = await _call(stream, _command(b"ROLE"))
                if isinstance(role, Exception):
                    raise _Refused(f"ROLE failed: {role}")
                if role[0] != b"master":
                    raise _Refused(f"it is a {role[0].decode()}, not a master")
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return stream

    # -- following a failover --------------------------------------------------

    async def watch(self, moved: Moved, health_interval: float) -> None:
        """Until cancelled: listen to ``+switch-master`` on a sentinel (the
        next one when it goes). When this service's master moves, call
        ``moved(stale)``: ``stale(stream)`` is true for a stream from
        :meth:`connect` that is not on the new master. Also on each new
        subscription, with what that sentinel names (a switch may have
        happened while no sentinel was watched)."""
        failed_rounds = 0
        while True:
            for i in self._order():
                try:
                    await self._watch_on(i, moved, health_interval)
                except (OSError, trio.BrokenResourceError, trio.TooSlowError, _Refused) as exc:
                    level = logging.WARNING if failed_rounds == 0 else logging.DEBUG
                    where = _where(self.sentinels[i])
                    log.log(level, "redis sentinel %s: not watched (%s)", where, _why(exc))
                else:
                    failed_rounds = 0
            failed_rounds += 1
            await trio.sleep(_WATCH_RETRY)

    async def _watch_on(self, i: int, moved: Moved, health_interval: float) -> None:
        with trio.fail_after(self.timeout):
            stream = await self._open_sentinel(self.sentinels[i])
        async with stream:
            reader = _reader()
            with trio.fail_after(self.timeout):
                await stream.send_all(self._get_master)
                named = _master(await _reply(stream, reader))
                await stream.send_all(_command(b"SUBSCRIBE", b"+switch-master"))
                await _reply(stream, reader)
            where = _where(self.sentinels[i])
            log.info("redis sentinel %s: watching %r for +switch-master", where, self.service)
            if named is not None and named[0] >= self._epoch:
                self._moved_to(named[1], moved)  # (one that missed a switch is not heeded)
            while True:
                with trio.move_on_after(health_interval) as idle:
                    message = await _reply(stream, reader)
                if idle.cancelled_caught:
                    # Quiet for a while: a PING must be answered within the next interval.
                    await stream.send_all(_command(b"PING"))
                    with trio.fail_after(health_interval):
                        message = await _reply(stream, reader)
                if isinstance(message, list) and message[:2] == [b"message", b"+switch-master"]:
                    name, _old_host, _old_port, host, port = message[2].decode().split()
                    if name == self.service:
                        log.warning("redis sentinel %s: %r moved to %s:%s", where, name, host, port)
                        self._first = i  # it knows the new master: asked first
                        self._moved_to((host, int(port)), moved)

    def _moved_to(self, master: tuple[str, int], moved: Moved) -> None:
        masters = self._masters
        moved(lambda stream: masters.get(stream, master) != master)


class _Refused(Exception):
    """A node answered, but not with what was needed (the message says what)."""


def _master(reply: Any) -> tuple[int, tuple[str, int]] | None:
    """The configuration epoch and the master's address in a reply to
    ``SENTINEL MASTER`` (None: the sentinel does not know the service)."""
    if isinstance(reply, Exception):
        if "No such master" in str(reply):
            return None
        if str(reply).startswith(("NOAUTH", "NOPERM", "WRONGPASS")):
            raise _Refused(f"{reply} (the sentinel's own: sentinel_password=, sentinel_username=)")
        raise _Refused(f"not a sentinel? {reply}")
    fields = dict(zip(reply[::2], reply[1::2], strict=False))
    address = (fields[b"ip"].decode(), int(fields[b"port"]))
    return int(fields.get(b"config-epoch", b"0")), address


def _host_port(url: str, text: str) -> tuple[str, int]:
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port or SENTINEL_PORT
    except ValueError:
        raise ValueError(f"bad port {text!r} in {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"bad sentinel address {text!r} in {url!r}")
    return parts.hostname, port


def _where(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: BaseException) -> str:
    return "no answer in time" if isinstance(exc, trio.TooSlowError) else reason(exc)


def _command(*args: str | bytes) -> bytes:
    import hiredis

    # (hiredis's stub says a 1-tuple: it means a tuple of any length.)
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def _auth(user: str | None, password: str | None) -> bytes:
    if password is None:
        return b""
    return _command(b"AUTH", *([user] if user else []), password)


def _reader() -> Any:
    import hiredis

    return hiredis.Reader()


async def _reply(stream: trio.abc.Stream, reader: Any) -> Any:
    while (reply := reader.gets()) is False:
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            raise _Refused("closed the connection")
        reader.feed(data)
    return reply


async def _call(stream: trio.abc.Stream, cmd: bytes) -> Any:
    """Send one command, read its reply (an error reply is returned, not raised)."""
    await stream.send_all(cmd)
    return await _reply(stream, _reader())


async def _checked(stream: trio.abc.Stream, cmd: bytes, refused: str) -> None:
    reply = await _call(stream, cmd)
    if isinstance(reply, Exception):
        raise _Refused(f"{refused}: {reply}")
