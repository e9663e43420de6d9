"""The Redis pub/sub engine: RESP over Trio sockets, parsed by hiredis.

Two connections per server and Redis, a link (:class:`_Link`): one
subscribes (``SUBSCRIBE`` / ``PSUBSCRIBE`` for the channels and patterns its
clients use, and nothing else), one publishes (``PUBLISH``, pipelined). On a
Redis Cluster (``redis+cluster://``) there is a link per master, found from
the cluster's map (``_redis_cluster.py``), and each channel goes on the link
of its slot's master with sharded pub/sub (``SSUBSCRIBE`` / ``SPUBLISH``).
A publish is delivered to this server's own clients through Redis too, like
everyone else's: every subscriber gets each message exactly once, in the
order Redis saw it.

Channel history lives in Redis, per channel: a stream ``tp:s:{channel}``
of its recent messages, with ids ``ms-offset``, and a hash
``tp:m:{channel}`` with its epoch (``e``), last offset (``o``) and last
publish time (``m``). A publish on a channel with history is one Lua
script (:data:`PUBLISH_SCRIPT`) that gives the message the next offset,
adds it to the stream, trims it and publishes it with a header that carries
its position; reads (a client's history load, or this server filling what
its subscriber connection missed) are another (:data:`READ_SCRIPT`). Both go
on the publisher connection, in its one queue, so that a read reaches Redis
after the subscriptions made before it are in place: whatever is published
after the read is delivered live.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import secrets
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import trio

import sansio_push as sp

from ._glob import glob_to_regex, is_pattern
from ._history import (
    EPOCH,
    META_TTL,
    TRIMMED,
    UNAVAILABLE,
    History,
    Position,
    Published,
    PublishError,
    rules_from,
)
from ._loop import Loop
from ._pubsub import Cursor, Engine, Subscriber, Subscriptions, Topic
from ._reason import reason as _reason
from ._redis_cluster import (
    ClusterURL,
    Node,
    SlotMap,
    UnkeyableChannel,
    history_key,
    key_slot,
    redirect,
)
from ._sentinel import SCHEMES as SENTINEL_SCHEMES
from ._sentinel import SentinelAddress

log = logging.getLogger("trio_push.redis")

_RECEIVE_SIZE = 65536
# Channels per SUBSCRIBE command when resubscribing.
_BATCH = 512
# A connection up this long (seconds) had no trouble reconnecting.
_HEALTHY = 5.0
# What starts a message published on a channel with history: then its
# position (``epoch:ms-offset``) and a newline, then the message.
HEADER = b"\x00tp\x01"
# Live messages of one channel held while history fills a gap before them
# (also while the publisher connection is back to send the read): past this
# many, or these many bytes, the gap is given up (``unavailable``) and they
# go on.
_HOLD_MAX = 100_000
_HOLD_MAX_BYTES = 64 * 1024 * 1024
# Errors of a cluster node that does not serve a channel's slot (now).
_CLUSTER_ERRORS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
# Replay entries made into messages between two checkpoints of the loop.
_PARSE_CHUNK = 1000

#: How both scripts start: the channel's epoch ``e``, top offset ``o`` and
#: the offset ``f`` its epoch goes on from. No meta: a new epoch, from 0.
#: A meta written while this Redis had another replication id (``r``): it
#: was written on another master, which may have got further than what
#: reached this one (replication is asynchronous; a failover promoted this
#: one), so offsets above ``o`` may be known for other messages: a new epoch
#: goes on from ``o`` (``f``), and the old one (``p``) is its parent: its
#: positions up to ``f`` are the new epoch's too. A meta without ``r``
#: (written before it was kept) takes this Redis's: an upgrade is no failover.
EPOCH_LUA = r"""
local meta, stream = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local info = redis.call('INFO', 'replication')
local at = string.find(info, 'master_replid:', 1, true) + 14
local r = string.sub(info, at, string.find(info, '\r', at, true) - 1)
local e = redis.call('HGET', meta, 'e')
local o = tonumber(redis.call('HGET', meta, 'o') or '0')
local f = tonumber(redis.call('HGET', meta, 'f') or '0')
if not e then
  e, o, f = string.format('%x%05x', tonumber(t[1]), tonumber(t[2])), 0, 0
  redis.call('DEL', stream, meta)
  redis.call('HSET', meta, 'e', e, 'o', '0', 'm', '0', 'r', r)
else
  local was = redis.call('HGET', meta, 'r')
  if not was then
    redis.call('HSET', meta, 'r', r)
  elseif was ~= r then
    local p = e
    e, f = string.format('%x%05x', tonumber(t[1]), tonumber(t[2])), o
    redis.call('HSET', meta, 'e', e, 'p', p, 'f', string.format('%d', o), 'r', r)
  end
end
"""

#: Publish on a channel with history. KEYS: meta, stream. ARGV: channel,
#: message, size (0: none), ttl in ms (0: none), the stream's and the
#: meta's expiry in ms, how (``PUBLISH``, or ``SPUBLISH`` on a cluster), and
#: '1' to also ``PUBLISH`` it (a cluster that serves patterns). Returns
#: epoch, offset, ms, receivers. The offset is written only once the entry
#: is in the stream, so offsets have no hole.
PUBLISH_SCRIPT = (
    EPOCH_LUA
    + r"""
local m = now
local last = tonumber(redis.call('HGET', meta, 'm') or '0')
if last > m then m = last end
o = o + 1
local ms, off = string.format('%d', m), string.format('%d', o)
local id = ms .. '-' .. off
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[2])
else
  redis.call('XADD', stream, id, 'd', ARGV[2])
end
redis.call('HSET', meta, 'e', e, 'o', off, 'm', ms)
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', m - ttl))
end
redis.call('PEXPIRE', stream, ARGV[5])
redis.call('PEXPIRE', meta, ARGV[6])
local body = '\0tp\1' .. e .. ':' .. id .. '\n' .. ARGV[2]
local n = redis.call(ARGV[7], ARGV[1], body)
if ARGV[8] == '1' then redis.call('PUBLISH', ARGV[1], body) end
return {e, off, ms, n}
"""
)

#: Read a channel's history. KEYS: meta, stream. ARGV: the epoch, ms and
#: offset to read after (epoch '': only the top), '1' to read the current
#: epoch from its start if the epoch is another, size, ttl in ms, the meta's
#: expiry in ms. Creates the meta (a new epoch) if there is none. Returns
#: epoch, top offset, top ms, the entries after the position that the
#: history still holds (its last ``size``, of the last ``ttl``), newest
#: first, the offset the epoch goes on from, and its parent epoch ('': none;
#: a position of the parent up to that offset is read as one of the epoch).
READ_SCRIPT = (
    EPOCH_LUA
    + r"""
redis.call('PEXPIRE', meta, ARGV[7])
local m = redis.call('HGET', meta, 'm') or '0'
local p = redis.call('HGET', meta, 'p') or ''
local entries = {}
local n, start, after = 0, '-', 0
if ARGV[1] == e or (p ~= '' and ARGV[1] == p and tonumber(ARGV[3]) <= f) then
  n = o - tonumber(ARGV[3])
  start = '(' .. ARGV[2] .. '-' .. ARGV[3]
  after = tonumber(ARGV[2])
elseif ARGV[1] ~= '' and ARGV[4] == '1' then
  n = o - f
end
if n > 0 then
  local size, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
  if size > 0 and n > size then n = size end
  if ttl > 0 and after < now - ttl then start = string.format('%d', now - ttl) .. '-0' end
  entries = redis.call('XREVRANGE', stream, '+', start, 'COUNT', n)
end
return {e, string.format('%d', o), m, entries, string.format('%d', f), p}
"""
)


def _sha(script: str) -> bytes:
    return hashlib.sha1(script.encode()).hexdigest().encode()


_PUBLISH_SHA = _sha(PUBLISH_SCRIPT)
_READ_SHA = _sha(READ_SCRIPT)

# -- counting subscribers across processes (see docs/pubsub.md) --
#: Live processes: each engine's id, scored by the Redis time (ms) until
#: which its counts hold. The hash tag ``{tp}`` keeps every key of the
#: counts in one slot, so that one script reads them all on a cluster too.
PROCS_KEY = b"{tp}:procs"
#: Prefixes of an engine's counts: hashes of channel (or pattern) -> clients.
EXACT_PREFIX = b"{tp}:c:"
PATTERN_PREFIX = b"{tp}:cp:"
#: Counts are written this long (seconds) after the first change of a
#: burst, all at once: a thousand joins are one write.
COUNT_INTERVAL = 0.05
#: A process's counts hold this many heartbeats past its last one.
HEARTBEAT_LIFETIMES = 3

#: An engine's heartbeat. KEYS: procs, its exact and pattern hashes. ARGV:
#: its id, the counts' lifetime in ms. Also drops the dead from procs.
HEARTBEAT_SCRIPT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
"""

#: The clients of every live process on a channel. KEYS: procs. ARGV: the
#: channel, the exact and the pattern prefixes. Returns the exact
#: subscribers, and each pattern with its subscribers (summed over the
#: processes) for the caller to match.
COUNT_SCRIPT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n, sums = 0, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local c = redis.call('HGET', ARGV[2] .. id, ARGV[1])
  if c then n = n + tonumber(c) end
  local p = redis.call('HGETALL', ARGV[3] .. id)
  for i = 1, #p, 2 do sums[p[i]] = (sums[p[i]] or 0) + tonumber(p[i + 1]) end
end
local patterns = {}
for k, v in pairs(sums) do
  patterns[#patterns + 1] = k
  patterns[#patterns + 1] = v
end
return {n, patterns}
"""
_glob_regex = functools.lru_cache(maxsize=1024)(glob_to_regex)


@functools.lru_cache(maxsize=65536)
def _slot(channel: str) -> int:
    """A channel's cluster slot (CRC16 in Python: worth keeping)."""
    return key_slot(_encode(channel))


@functools.lru_cache(maxsize=65536)
def _history_keys(channel: str, cluster: bool) -> tuple[bytes, bytes]:
    name = _encode(channel)
    return history_key(b"m", name, cluster), history_key(b"s", name, cluster)


# Positions whose ms or offset Lua's numbers (doubles) cannot hold exactly.
_TOO_BIG = 2**53
# Reads of a channel whose rules changed since it was subscribed.
_ANY_HISTORY = History(ttl=META_TTL)


class _Lost(Exception):
    """The connection to Redis is gone (the reason is the message)."""


def command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


#: Sent first on a publisher connection when channels keep history (and
#: again after a NOSCRIPT); nobody waits for their replies.
SCRIPT_LOADS = tuple(command(b"SCRIPT", b"LOAD", x.encode()) for x in (PUBLISH_SCRIPT, READ_SCRIPT))


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``redis://`` or ``rediss://[[user]:password@]host[:port][/db]`` ->
    host, port, user, password; for ``unix:///path``, the path and port 0.

    The database number is accepted and ignored: Redis pub/sub channels are
    shared by all databases. Raises ``ValueError`` for anything else.
    """
    address = RedisAddress.from_url(url)
    return address.path or address.host, address.port, address.user, address.password


#: ``ssl_cert_reqs`` values (redis-py's names) -> what the ssl module checks.
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class RedisAddress:
    """Where a Redis is and how to reach it, from its URL: ``redis://``
    (TCP), ``rediss://`` (TLS, with redis-py's query options ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (``required``, the
    default, ``optional``, ``none``) and ``ssl_check_hostname`` (``true``
    unless ``ssl_cert_reqs`` is ``none``)), or ``unix:///path?db=N``."""

    __slots__ = ("host", "port", "user", "password", "path", "tls")

    def __init__(
        self,
        host: str,
        port: int,
        user: str | None = None,
        password: str | None = None,
        path: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.path = path
        self.tls = tls

    def __str__(self) -> str:
        where = self.path or f"{self.host}:{self.port}"
        return f"{'rediss' if self.tls else 'redis'} {where}"

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            db = query.get("db", [""])[0]
            if not parts.path or (db and not db.isdigit()):
                raise ValueError(f"expected a unix:///path[?db=N] URL, got {url!r}")
            return cls("", 0, user, password, path=parts.path)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"expected a redis://host:port/db URL, got {url!r}")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"bad database number in {url!r}")
        tls = _tls_context(url, query) if parts.scheme == "rediss" else None
        return cls(parts.hostname or "127.0.0.1", port, user, password, tls=tls)

    async def connect(self) -> trio.abc.Stream:
        """A stream to this Redis, its TLS handshake done (so that a
        certificate it does not trust fails here, with the reason)."""
        if self.path is not None:
            stream: trio.abc.Stream = await trio.open_unix_socket(self.path)
        else:
            stream = await trio.open_tcp_stream(self.host, self.port)
        if self.tls is not None:
            tls = trio.SSLStream(stream, self.tls, server_hostname=self.host)
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tls)
                raise
            stream = tls
        return stream


#: What the engine connects through: one Redis, or the master Sentinel names.
Address = RedisAddress | SentinelAddress


def _tls_context(url: str, query: dict[str, list[str]]) -> ssl.SSLContext:
    def option(name: str) -> str | None:
        return query.get(name, [None])[-1]

    reqs = (option("ssl_cert_reqs") or "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, in {url!r}")
    context = ssl.create_default_context(cafile=option("ssl_ca_certs"))
    check = option("ssl_check_hostname")
    context.check_hostname = reqs != "none" and (check or "true").lower() in ("true", "1", "yes")
    context.verify_mode = _CERT_REQS[reqs]
    certfile = option("ssl_certfile")
    if certfile:
        context.load_cert_chain(certfile, option("ssl_keyfile"))
    return context


@functools.lru_cache(maxsize=256)
def _history_args(history: History) -> tuple[bytes, bytes, bytes, bytes]:
    """size, ttl in ms, the stream's and the meta's expiry in ms."""
    ttl = int(history.ttl * 1000) if history.ttl is not None else 0
    meta = max(int(META_TTL * 1000), ttl)
    return b"%d" % history.size, b"%d" % ttl, b"%d" % (ttl or meta), b"%d" % meta


class _Waiter:
    __slots__ = ("event", "result", "error", "position")

    def __init__(self, position: Position | None = None) -> None:
        self.event = trio.Event()
        self.result: int = 0
        self.error: str | None = None
        #: On a channel with history: settled with the reply.
        self.position = position


class _CountQuery:
    """A cluster count, until Redis answered it."""

    __slots__ = ("event", "reply", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Any = None
        self.error: str | None = None


class _Aside:
    """The reply to a command that nobody waits for (a SCRIPT LOAD, the
    ASKING before a redirected command, a publish's copy for patterns)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


_SCRIPT_LOAD = _Aside("SCRIPT LOAD")
_ASKING = _Aside("ASKING")
_COPY = _Aside("PUBLISH (the copy for patterns)")


class _Track:
    """A channel with history that this server subscribes to, as its live
    messages come from Redis: pub/sub loses what is published while the
    subscriber connection is down, and what follows shows it (an offset that
    is not the next one), so the engine reads the rest from history before it
    lets them on. Event loop thread only."""

    __slots__ = ("topic", "last", "known", "held", "held_bytes", "fill", "sent", "again", "loads")

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        #: The position of the last message handed to the topic's log.
        self.last: Position | None = None
        #: The channel's top when a load last read it (where the live
        #: messages go on from while none has come yet).
        self.known: Position | None = None
        #: Live messages held while history fills a gap before them.
        self.held: list[Published] | None = None
        self.held_bytes = 0
        #: That read, while it is not answered; ``sent``: it is queued.
        self.fill: _Read | None = None
        self.sent = False
        #: The subscriber reconnected while that read was out: read again
        #: once it is answered.
        self.again = False
        #: Subscriptions whose load is in flight: they start where it says.
        self.loads: set[Cursor] = set()

    def ref(self) -> Position | None:
        """Where the next live message should follow on."""
        return self.last if self.last is not None else self.known


class _Read:
    """A history read: a subscription's load (``cursor``), or a fill of what
    the live messages of ``track`` missed after ``since``."""

    __slots__ = ("track", "cursor", "since", "retried", "done")

    def __init__(self, track: _Track, cursor: Cursor | None, since: Position | None) -> None:
        self.track = track
        self.cursor = cursor
        self.since = since
        self.retried = False
        self.done = False


# Who waits for a reply of a publisher connection (see _Link.queue).
_Pending = _Waiter | Position | _Read | _Aside | None


class _SubCommand:
    """A command sent on the subscriber connection, until Redis answered it."""

    __slots__ = ("verb", "channels", "left")

    def __init__(self, verb: bytes, channels: list[str]) -> None:
        self.verb = verb
        self.channels = channels
        # Replies still due: one per channel (PING: one), or one error for all.
        self.left = len(channels) or 1


class RedisPubSub(Engine):
    """Pub/sub through Redis, for several processes and machines.

    ``publish(channel, message)`` never blocks and returns:

    - ``True`` (a channel without history): the message was handed to the
      live connection to Redis (or is queued for it); it reaches every
      subscriber, here and elsewhere, once.
    - a :class:`Position` (a channel with history): the same, and the
      position Redis gives it is filled in when Redis answers
      (``await position.wait()``; if the connection breaks first it never
      is: ``position.error`` says why).
    - ``False``: it was not published: Redis is unreachable (or, while
      reconnecting, not reachable yet, or this server has not resubscribed
      yet), or ``max_pending`` messages are already waiting. Nothing is
      retried later: the caller decides.

    If the connection breaks while accepted messages are still unconfirmed,
    they are counted in :attr:`unconfirmed` and logged as possibly lost.
    :meth:`publish_confirmed` waits for Redis's reply instead, and raises
    :class:`PublishError` when there is none.

    Both connections reconnect with exponential backoff (``backoff_min`` to
    ``backoff_max`` seconds, with jitter), the subscriber resubscribes every
    channel and pattern in use (publishes are refused until Redis has
    acknowledged them all: they would miss this server's own subscribers),
    and each transition is logged on ``trio_push.redis``. The subscriber
    connection pings Redis every ``health_interval`` seconds; a connection
    that answers nothing for that long is dropped and reopened.

    On a channel with history, what was published while the subscriber
    connection was down is read from history once it has resubscribed, and
    delivered before the live messages that follow; what history no longer
    holds reaches the clients as a gap (``on_gap``).

    A subscription Redis refuses (an ACL user's ``NOPERM``) is counted in
    :attr:`subscribe_errors`, logged, and dropped: its clients are
    unsubscribed from it and get ``on_subscribe_error(client, channel,
    reason)`` if their handler has it. Everything else goes on.

    Through Redis a message is its bytes only: it arrives as text if it is
    valid UTF-8, else as binary; SSE fields other than the data are not sent.

    On a Redis Cluster (``redis+cluster://host:port[,host:port...]``, Redis
    7) each master has its own two connections and each channel goes to its
    slot's master (``SSUBSCRIBE``, ``SPUBLISH``); ``MOVED``, ``ASK``, slot
    migrations and failovers are followed (docs/pubsub.md, "Cluster").

    A third connection keeps this engine's subscriber counts in Redis, renewed
    every ``heartbeat`` seconds, for :meth:`cluster_count` (the clients of
    every process on this Redis; see docs/pubsub.md, "Counting subscribers
    across processes"); ``heartbeat=None`` turns that off.

    ``history``, ``history_ttl`` and ``history_for`` are the history options
    of :class:`Options`, for an engine that publishes outside a server (a
    script, a management command): given the servers' rules, its publishes
    on a channel with history go into the history as theirs do. A server
    with history options of its own replaces them with its own.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        max_pending: int = 100_000,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
        connect_timeout: float = 5.0,
        health_interval: float = 10.0,
        heartbeat: float | None = 5.0,
        history: int = 0,
        history_ttl: float | None = None,
        history_for: Mapping[str, History | None] | None = None,
    ) -> None:
        self.url = url
        # A Redis Cluster (redis+cluster://): one link per master, found
        # from the seeds; else one link to the one Redis.
        clustered = url.startswith(("redis+cluster:", "rediss+cluster:"))
        self._cluster = ClusterURL(url) if clustered else None
        # The TLS of every node of a rediss+cluster:// URL.
        self._tls: ssl.SSLContext | None = None
        #: Where the Redis is (TCP, TLS, a Unix socket, the master Sentinel
        #: names; on a cluster, the first seed).
        self.address: Address
        if self._cluster is not None:
            (self.host, self.port), *_ = self._cluster.seeds
            self._user, self._password = self._cluster.user, self._cluster.password
            if self._cluster.tls:
                self._tls = _tls_context(url, self._cluster.query)
            self.address = self._node_address((self.host, self.port))
        elif urlsplit(url).scheme in SENTINEL_SCHEMES:
            # It authenticates each connection itself (to ask the master its ROLE).
            self.address = address = SentinelAddress.from_url(url, RedisAddress.from_url)
            where = f"{address.service}@{address.sentinels}"
            self.host, self.port, self._user, self._password = where, 0, None, None
        else:
            self.address = RedisAddress.from_url(url)
            self.host, self.port, self._user, self._password = parse_url(url)
        self.max_pending = max_pending
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.subscriptions = Subscriptions()
        #: Publishes accepted (queued for Redis), and refused (returned
        #: False) or failed in Redis, since start.
        self.published = 0
        self.failed = 0
        #: Publishes accepted but not confirmed when a connection broke.
        self.unconfirmed = 0
        #: Subscriptions (channels and patterns) that Redis refused.
        self.subscribe_errors = 0
        self._loop = Loop()
        # Guards every link's publisher queue (shared with other threads).
        self._lock = threading.Lock()
        cluster = self._cluster is not None
        self._verbs = (
            (b"SSUBSCRIBE", b"SUNSUBSCRIBE") if cluster else (b"SUBSCRIBE", b"UNSUBSCRIBE")
        )
        self._publish_verb = b"SPUBLISH" if cluster else b"PUBLISH"
        # Publishes go out as a classic PUBLISH too, for pattern subscribers.
        self._copies = self._cluster is not None and self._cluster.patterns
        # -- the links, by node (event loop thread; read by publish too) --
        self._links: dict[Node, _Link] = {}
        # The one link to a single Redis (None on a cluster).
        self._single = _Link(self, self.address) if self._cluster is None else None
        if self._single is not None:
            self._links[(self.host, self.port)] = self._single
        # -- the cluster's map (cluster only) --
        self._map: SlotMap | None = None
        self._refresh_asked = False
        self._refresh_lot = trio.lowlevel.ParkingLot()
        # Channels a node did not take (MOVED, CLUSTERDOWN): subscribed
        # again once the map is refreshed.
        self._unplaced: set[str] = set()
        # Commands redirected to a node that has no link yet.
        self._redirected: list[tuple[Node, list[tuple[bytes, _Pending]]]] = []
        self._nursery: trio.Nursery | None = None
        # A publish found no master for its slot (logged once a map).
        self._unmapped_logged = False
        # The last map query had no answer (logged once a streak).
        self._discover_failed = False
        # -- history (event loop thread only) --
        self._tracks: dict[str, _Track] = {}
        # Each connection's session while it runs: its cancel scope -> its name, its stream.
        self._sessions: dict[trio.CancelScope, tuple[str, trio.abc.Stream]] = {}
        self._moved = trio.Event()
        #: True while publishes are accepted: both connections to Redis are
        #: up and the subscriber has resubscribed (on a cluster: those of
        #: every master).
        self.connected = False
        self._init_counts(heartbeat)
        if history or history_ttl or history_for:
            self.history = rules_from(history, history_ttl, history_for)

    def __repr__(self) -> str:
        if self._cluster is not None:
            return f"<RedisPubSub cluster {','.join(f'{h}:{p}' for h, p in self._cluster.seeds)}>"
        return f"<RedisPubSub {self.address}>"

    @property
    def bus(self) -> object:
        if self._cluster is not None:
            return ("redis-cluster", tuple(self._cluster.seeds))
        return ("redis", self.host, self.port)

    def _node_address(self, node: Node) -> RedisAddress:
        return RedisAddress(node[0], node[1], self._user, self._password, tls=self._tls)

    # -- where a channel goes -------------------------------------------------

    def _link_of(self, channel: str) -> _Link | None:
        """The link a channel's subscription and publishes go on (on a
        cluster, that of its slot's master; None while that is unknown)."""
        smap = self._map
        if smap is None:
            return self._single
        owner = smap.owners[_slot(channel)]
        return self._links.get(owner) if owner is not None else None

    def _pattern_link(self) -> _Link | None:
        """The link pattern subscriptions go on: the one Redis; on a cluster
        that serves patterns, its first master (the cluster bus carries every
        classic PUBLISH to every node, so one node is enough)."""
        if self._cluster is None:
            return self._single
        smap = self._map
        if not self._copies or smap is None or not smap.masters:
            return None
        return self._links.get(smap.masters[0])

    def _placed(self, link: _Link) -> tuple[list[str], list[str]]:
        """The channels and patterns in use here that go on ``link``."""
        subs = self.subscriptions
        exact = [c for c in subs.exact if self._link_of(c) is link]
        return exact, list(subs.patterns) if self._pattern_link() is link else []

    def _batches(self, channels: list[str]) -> list[list[str]]:
        """Channels in commands of at most ``_BATCH``; on a cluster, each
        command's channels in one slot (SSUBSCRIBE refuses others)."""
        if self._cluster is None:
            return [channels[i : i + _BATCH] for i in range(0, len(channels), _BATCH)]
        slots: dict[int, list[str]] = {}
        for channel in channels:
            slots.setdefault(_slot(channel), []).append(channel)
        return [c[i : i + _BATCH] for c in slots.values() for i in range(0, len(c), _BATCH)]

    # -- the local side -------------------------------------------------------

    def _first_subscriber(self, channel: str) -> None:
        if not is_pattern(channel):
            if self.subscriptions.rules.get(channel) is not None and not self._keyable(channel):
                return  # refused by its history load (_load)
            self._send_sub(self._link_of(channel), self._verbs[0], [channel])
        elif self._cluster is not None and not self._copies:
            self._refuse(
                channel,
                "patterns are off on this Redis Cluster (sharded pub/sub cannot match"
                " them): add ?patterns=1 to the redis+cluster:// URL to serve them",
            )
        else:
            self._send_sub(self._pattern_link(), b"PSUBSCRIBE", [channel])

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        if self.subscriptions.remove(subscriber, channel):
            self._unsubscribed([channel])

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        gone = self.subscriptions.remove_all(subscriber)
        if gone:
            self._unsubscribed(gone)

    def _unsubscribed(self, gone: list[str]) -> None:
        """These channels and patterns have no subscriber here any more."""
        exact = [c for c in gone if not is_pattern(c)]
        patterns = [c for c in gone if is_pattern(c)]
        links: dict[_Link | None, list[str]] = {}
        for channel in exact:
            self._tracks.pop(channel, None)
            self._unplaced.discard(channel)
            links.setdefault(self._link_of(channel), []).append(channel)
        for link, channels in links.items():
            for batch in self._batches(channels):
                self._send_sub(link, self._verbs[1], batch)
        if patterns:
            self._send_sub(self._pattern_link(), b"PUNSUBSCRIBE", patterns)

    def _send_sub(self, link: _Link | None, verb: bytes, channels: list[str]) -> None:
        # While disconnected there is nothing to do: the subscriber sends
        # what is current when it connects.
        if link is not None:
            link.send_sub(verb, channels)

    def _refuse(self, channel: str, reason: str) -> None:
        """Drop a subscription Redis refused (or that cannot be made): its
        clients are unsubscribed and told (``on_subscribe_error``)."""
        subs = self.subscriptions
        topic = (subs.patterns if is_pattern(channel) else subs.exact).get(channel)
        subscribers = list(topic.cursors) if topic is not None else []
        self.subscribe_errors += 1
        log.error(
            "redis subscriber: %r refused (%s); %d client(s) unsubscribed from it",
            channel,
            reason,
            len(subscribers),
        )
        # Dropped here too, so that it is not sent again on reconnecting.
        for subscriber in subscribers:
            self.unsubscribe(subscriber, channel)
            subscriber.subscribe_refused(channel, reason)

    # -- publishing -----------------------------------------------------------

    def publish(self, channel: str, message: str | bytes | sp.Prepared) -> Position | bool:
        """Publish through Redis: True or, on a channel with history, a
        :class:`Position` if accepted; False if not (see the class)."""
        history = self.subscriptions.rules.get(channel)
        if history is None:
            name, payload = _encode(channel), _payload(message)
            copy = command(b"PUBLISH", name, payload) if self._copies else None
            return self._enqueue(channel, command(self._publish_verb, name, payload), None, copy)
        position = Position(channel)
        cmd = self._history_publish(channel, history, _payload(message))
        if cmd is None or not self._enqueue(channel, cmd, position):
            return False
        return position

    async def publish_confirmed(self, channel: str, message: str | bytes | sp.Prepared) -> int:
        """Publish and wait for Redis's reply: the number of Redis
        subscribers (server processes, not clients) it reached. Raises
        :class:`PublishError` if Redis is unreachable or the connection
        breaks first. Event loop thread only. (On a channel with history,
        ``publish`` and ``await position.wait()`` give the position.)"""
        history = self.subscriptions.rules.get(channel)
        name, payload = _encode(channel), _payload(message)
        copy = None
        if history is None:
            waiter = _Waiter()
            cmd: bytes | None = command(self._publish_verb, name, payload)
            copy = command(b"PUBLISH", name, payload) if self._copies else None
        else:
            waiter = _Waiter(Position(channel))
            cmd = self._history_publish(channel, history, payload)
        if cmd is None:
            raise PublishError(f"channel {channel!r} cannot keep history on a Redis Cluster")
        if not self._enqueue(channel, cmd, waiter, copy):
            raise PublishError(f"not connected to {self.address}")
        await waiter.event.wait()
        if waiter.error is not None:
            raise PublishError(waiter.error)
        return waiter.result

    def _history_publish(self, channel: str, history: History, payload: bytes) -> bytes | None:
        """The history script's call, or None (logged) if the channel cannot
        keep history here."""
        try:
            meta, stream = self._keys(channel)
        except UnkeyableChannel as exc:
            self.failed += 1
            log.error("redis: publish on %r refused: %s", channel, exc)
            return None
        size, ttl, stream_expiry, meta_expiry = _history_args(history)
        return command(
            b"EVALSHA",
            _PUBLISH_SHA,
            b"2",
            meta,
            stream,
            _encode(channel),
            payload,
            size,
            ttl,
            stream_expiry,
            meta_expiry,
            self._publish_verb,
            b"1" if self._copies else b"0",
        )

    def _keyable(self, channel: str) -> bool:
        try:
            self._keys(channel)
        except UnkeyableChannel:
            return False
        return True

    def _keys(self, channel: str) -> tuple[bytes, bytes]:
        """A channel's history keys (meta, stream), in the channel's slot."""
        return _history_keys(channel, self._cluster is not None)

    def _enqueue(
        self, channel: str, cmd: bytes, pending: _Pending, copy: bytes | None = None
    ) -> bool:
        """Queue a publish (or a history read) for the link of ``channel``,
        after ``copy`` (a cluster that serves patterns: the classic PUBLISH
        for them); False if it is not ready (or full)."""
        link = self._single or self._link_of(channel)
        if link is not None:
            return link.enqueue(cmd, pending, copy)
        if not isinstance(pending, _Read):
            with self._lock:
                self.failed += 1
                first, self._unmapped_logged = not self._unmapped_logged, True
            if first:
                log.warning(
                    "redis cluster: no master known for the slot of %r: publish() returns"
                    " False on such slots until the map has one",
                    channel,
                )
        return False

    # -- history --------------------------------------------------------------

    def _track(self, topic: Topic) -> _Track:
        track = self._tracks.get(topic.key)
        if track is None or track.topic is not topic:
            track = self._tracks[topic.key] = _Track(topic)
        return track

    def _current(self, track: _Track) -> bool:
        """Whether ``track`` is still that of a topic with subscribers here."""
        key = track.topic.key
        return self._tracks.get(key) is track and self.subscriptions.exact.get(key) is track.topic

    def _load(self, cursor: Cursor, since: Position | None) -> None:
        """Read where ``cursor`` starts (and with ``since``, what it missed);
        the subscriber is held until ``subscriptions.loaded``, called once
        whatever happens."""
        channel = cursor.topic.key
        try:
            self._keys(channel)
        except UnkeyableChannel as exc:
            self.subscriptions.loaded(cursor, since, [], None)
            self._refuse(channel, str(exc))
            return
        track = self._track(cursor.topic)
        read = _Read(track, cursor, since)
        track.loads.add(cursor)
        if not self._send_read(read):
            self._read_failed(read)

    def _send_read(self, read: _Read) -> bool:
        channel = read.track.topic.key
        history = self.subscriptions.rules.get(channel) or _ANY_HISTORY
        since = read.since
        after: tuple[bytes, ...] = (b"", b"0", b"0")
        if since is not None and since.epoch and since.ms < _TOO_BIG and since.offset < _TOO_BIG:
            after = (since.epoch.encode(), b"%d" % since.ms, b"%d" % since.offset)
        size, ttl, _, meta = _history_args(history)
        cmd = command(
            b"EVALSHA",
            _READ_SHA,
            b"2",
            *self._keys(channel),
            *after,
            b"1" if read.cursor is None else b"0",  # a fill reads a new epoch from its start
            size,
            ttl,
            meta,
        )
        return self._enqueue(channel, cmd, read)

    async def _read_replied(self, read: _Read, reply: Any) -> None:
        resent = False
        try:
            if isinstance(reply, Exception):
                if str(reply).startswith("NOSCRIPT") and not read.retried:
                    # Redis forgot the scripts (SCRIPT FLUSH, a failover):
                    # loaded again ahead of the next batch, with this read.
                    read.retried = True
                    link = self._link_of(read.track.topic.key)
                    if link is not None:
                        link.load_scripts = True
                    resent = self._send_read(read)
                    if resent:
                        return
                log.error("redis publisher: history read failed: %s", reply)
                self._read_failed(read)
                return
            channel = read.track.topic.key
            epoch = _decode(reply[0])
            top = Position(channel, epoch, int(reply[1]), int(reply[2]))
            base, parent, since = int(reply[4]), _decode(reply[5]), read.since
            if since is not None and since.epoch == parent and since.offset <= base:
                # Where the epoch goes on from its parent (a failover): the same history.
                read.since = Position(channel, epoch, since.offset, since.ms)
            raw = reply[3]
            entries: list[Published] = []
            for i in range(len(raw), 0, -_PARSE_CHUNK):
                if entries:
                    await trio.sleep(0)  # a long replay does not hold the loop
                entries += _entries(channel, epoch, raw[max(0, i - _PARSE_CHUNK) : i])
            if read.cursor is not None:
                self._loaded(read, top, entries)
            else:
                self._filled(read, top, entries, base)
        finally:
            if not (read.done or resent):
                self._read_failed(read)

    def _loaded(self, read: _Read, top: Position, entries: list[Published]) -> None:
        """A load's answer: where the subscription starts, what it missed."""
        read.done = True
        cursor, since, track = read.cursor, read.since, read.track
        assert cursor is not None
        track.loads.discard(cursor)
        known = track.known
        if known is None or known.epoch != top.epoch or known.offset < top.offset:
            track.known = top
        loaded = self.subscriptions.loaded
        if since is None:
            loaded(cursor, None, [], top)
        elif since.epoch != top.epoch or since.offset > top.offset:
            loaded(cursor, since, [], top, EPOCH)
        elif since.offset == top.offset:
            loaded(cursor, since, [], top)
        elif (
            not entries
            or _offset(entries[0]) != since.offset + 1
            or len(entries) != top.offset - since.offset
        ):
            loaded(cursor, since, [], top, TRIMMED)
        else:
            loaded(cursor, since, entries, top)

    def _read_failed(self, read: _Read) -> None:
        """No answer (Redis unreachable, the connection broke, an error): a
        load starts with nothing (a resume: the gap ``unavailable``); a fill
        gives up on what it was to bring."""
        if read.done:
            return
        read.done = True
        track, cursor, since = read.track, read.cursor, read.since
        if cursor is not None:
            track.loads.discard(cursor)
            reason = UNAVAILABLE if since is not None else None
            self.subscriptions.loaded(cursor, since, [], None, reason)
            return
        if track.fill is not read:
            return
        held = track.held or []
        track.held = track.fill = None
        track.sent = False
        first = next((p.position for p in held if p.position is not None), None)
        if first is None:
            # Nothing shows a gap yet: read again once Redis is back (on a
            # cluster without a master for it: once the map has one).
            link = self._link_of(track.topic.key)
            if link is not None:
                link.refill = True
        elif self._current(track):
            before = Position(first.channel, first.epoch, first.offset - 1, first.ms)
            self._tell_gap(track, UNAVAILABLE, before)
            track.last = before
        if self._current(track):
            for published in held:
                self._live(track, published)
            self._fill_again(track)

    def _live(self, track: _Track, published: Published) -> None:
        """A message from the subscriber connection, on a channel with history."""
        held = track.held
        if held is not None:
            held.append(published)
            track.held_bytes += len(published.message)
            if track.fill is not None and (
                len(held) > _HOLD_MAX or track.held_bytes > _HOLD_MAX_BYTES
            ):
                log.error(
                    "redis: %d live messages of %r wait for history; going on without it",
                    len(held),
                    track.topic.key,
                )
                self._read_failed(track.fill)
            return
        position = published.position
        if position is not None:
            ref = track.ref()
            if ref is not None and (
                position.epoch != ref.epoch or position.offset > ref.offset + 1
            ):
                # Pub/sub lost some (the subscriber reconnected), or the
                # history was lost: hold the live ones, read the rest first.
                self._fill(track, ref)
                track.held = [published]
                track.held_bytes = len(published.message)
                return
            last = track.last
            if last is not None and position.offset <= last.offset and position.epoch == last.epoch:
                return  # history brought it already
            track.last = position
        self.subscriptions.publish_to(track.topic, published)

    def _fill(self, track: _Track, since: Position) -> None:
        if track.held is None:
            track.held, track.held_bytes = [], 0
        read = track.fill = _Read(track, None, since)
        track.sent = self._send_read(read)  # else when Redis is ready again (_resumed)

    def _read_lost(self, read: _Read) -> None:
        """The publisher connection broke before ``read`` was answered: a
        load ends (the gap ``unavailable``); a fill is sent again once Redis
        is ready (the live messages wait)."""
        if read.cursor is None and read.track.fill is read and not read.done:
            read.track.sent = False
        else:
            self._read_failed(read)

    def _filled(self, read: _Read, top: Position, entries: list[Published], base: int) -> None:
        """A fill's answer: what the live messages missed after ``read.since``
        goes first (as much of it as history has), then the held ones.
        ``base``: the offset the epoch of ``top`` goes on from."""
        read.done = True
        track, since = read.track, read.since
        assert since is not None
        if track.fill is not read:
            return
        held = track.held or []
        track.held = track.fill = None
        track.sent = False
        if not self._current(track):
            return
        channel = track.topic.key
        told: set[Subscriber] = set()
        expected = since.offset + 1
        if top.epoch != since.epoch:
            told = self._tell_gap(track, EPOCH, Position(channel, top.epoch))
            expected = base + 1  # and the new epoch from its start, if history has it
        fresh = [p for p in entries if _offset(p) >= expected]
        first = _offset(fresh[0]) if fresh else top.offset + 1
        if first > expected:
            self._tell_gap(track, TRIMMED, Position(channel, top.epoch, first - 1), told)
        last = track.last
        for published in fresh:
            position = published.position
            assert position is not None
            if last is None or last.epoch != position.epoch or last.offset < position.offset:
                self.subscriptions.publish_to(track.topic, published)
                last = position
        if last is None or last.epoch != top.epoch or last.offset < top.offset:
            last = top
        track.last = last
        if fresh or first > expected or told:
            log.info(
                "redis: %r: %d missed messages read from history%s",
                channel,
                len(fresh),
                "" if first <= expected and not told else " (and a gap)",
            )
        for published in held:
            self._live(track, published)
        self._fill_again(track)

    def _fill_again(self, track: _Track) -> None:
        """A fill is over: if the subscriber reconnected meanwhile, read
        from where it got to (unless a new gap started a fill already)."""
        ref = track.ref()
        if track.again and track.fill is None and ref is not None:
            track.again = False
            self._fill(track, ref)

    def _tell_gap(
        self, track: _Track, reason: str, after: Position, told: Container[Subscriber] = ()
    ) -> set[Subscriber]:
        """The subscribers of ``track`` that had not got up to ``after``
        (the last position of the gap) will not get all of it: tell them.
        Not those whose load is in flight (it says where they start), nor
        those without a position, nor those told already."""
        topic = track.topic
        end = topic.base + len(topic.log)
        found: set[Subscriber] = set()
        for subscriber, cursor in list(topic.cursors.items()):
            last = cursor.last
            if subscriber in told or cursor in track.loads or last is None:
                continue
            if last.epoch == after.epoch and last.offset >= after.offset:
                continue
            if cursor.seam:
                if cursor.replay or cursor.pos < end:
                    continue  # where its history load ends, pull sees the gap and says so
                cursor.seam = False
            subscriber.gap(topic.key, reason)
            found.add(subscriber)
        return found

    # -- running --------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connections up until cancelled. Reports started once
        they have tried to connect (connected or not: publishes fail and
        reconnection goes on in the background)."""
        self._loop.enter()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._cluster is None:
                for link in list(self._links.values()):
                    await nursery.start(link.run)
            else:
                await nursery.start(self._watch_cluster)
            if self.heartbeat is not None:
                await nursery.start(self._keep_counts)
            if isinstance(self.address, SentinelAddress):
                nursery.start_soon(self.address.watch, self._master_moved, self.health_interval)
            task_status.started()

    def _master_moved(self, stale: Callable[[trio.abc.Stream], bool]) -> None:
        """Sentinel moved the master: the connections for which ``stale`` is
        true end, and reconnect to the new one (then the subscriber
        resubscribes and history fills, as after any reconnect)."""
        for scope, (name, stream) in list(self._sessions.items()):
            if stale(stream):
                log.warning("redis %s: the master moved; reconnecting to the new one", name)
                scope.cancel()
        # And those waiting to retry try now: the sooner every process is
        # subscribed to the new master, the less it misses.
        self._moved.set()
        self._moved = trio.Event()

    async def _backoff(self, delay: float) -> None:
        """Wait before connecting again (less if Sentinel moves the master meanwhile)."""
        with trio.move_on_after(delay * random.uniform(0.5, 1.0)):
            await self._moved.wait()

    async def _keep(
        self,
        name: str,
        session: Callable[[trio.abc.Stream, Callable[[], None]], Any],
        where: Callable[[], Address],
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        delay = self.backoff_min
        reported = False
        failures = 0
        while True:
            address = where()
            try:
                with trio.fail_after(self.connect_timeout):
                    stream = await address.connect()
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                failures += 1
                reason = "timed out" if isinstance(exc, trio.TooSlowError) else _reason(exc)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "redis %s: cannot connect to %s (%s); retrying",
                    name,
                    address,
                    reason,
                )
                if not reported:
                    reported = True
                    task_status.started()
                self._want_refresh()
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max)
                continue

            def up(failures: int = failures, address: Address = address) -> None:
                nonlocal reported
                log.info(
                    "redis %s: connected to %s%s",
                    name,
                    address,
                    f" after {failures} failed attempts" if failures else "",
                )
                self._update_connected()
                if not reported:
                    reported = True
                    task_status.started()

            failures = 0
            began = trio.current_time()
            try:
                with trio.CancelScope() as scope:
                    self._sessions[scope] = (name, stream)
                    await session(stream, up)
            except Exception as exc:
                log.warning("redis %s: connection lost (%s); reconnecting", name, _reason(exc))
            finally:
                self._sessions.pop(scope, None)
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
                self._update_connected()
            if not reported:
                reported = True
                task_status.started()
            self._want_refresh()
            # A connection that was up a while is retried at once (so is one
            # ended because the master moved); one that Redis drops as soon
            # as it is made (AUTH refused, too many clients) backs off like a
            # failed connect.
            if trio.current_time() - began >= _HEALTHY or scope.cancelled_caught:
                delay = self.backoff_min
            else:
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max)

    def _update_connected(self) -> None:
        links = list(self._links.values())
        covered = self._cluster is None or (self._map is not None and self._map.covered())
        self.connected = bool(links) and covered and all(link.ready() for link in links)

    def _resumed(self, link: _Link) -> None:
        """Called when either side of ``link`` is ready: if both are,
        publishes are accepted again, and how many were refused meanwhile is
        logged."""
        with self._lock:
            if not link.ready():
                return
            refused, link.failed_while_down = link.failed_while_down, 0
        self._update_connected()
        if refused:
            log.warning(
                "redis: %d publishes failed while Redis was unreachable or resubscribing", refused
            )
        self._refill_all(link)

    def _refill_all(self, link: _Link) -> None:
        """Both connections of ``link`` are ready: send the fills that waited
        for that, and after its subscriber reconnected, read what every
        channel with history on it published meanwhile (not waiting for its
        next publish)."""
        refill, link.refill = link.refill, False
        for track in list(self._tracks.values()):
            if not self._current(track) or self._link_of(track.topic.key) is not link:
                continue
            if track.fill is not None:
                if not track.sent:
                    track.sent = self._send_read(track.fill)
                else:
                    track.again = track.again or refill
                continue
            ref = track.ref()
            if refill and ref is not None:
                self._fill(track, ref)

    async def _handshake(self, stream: trio.abc.Stream, reader: Any) -> None:
        if self._password is None:
            return
        args = [b"AUTH"] + ([_encode(self._user)] if self._user else []) + [_encode(self._password)]
        await stream.send_all(command(*args))
        reply = await _read_reply(stream, reader, self.connect_timeout)
        if isinstance(reply, Exception):
            raise _Lost(f"AUTH refused: {reply}")

    def _deliver(self, name: bytes, data: bytes) -> None:
        """A message on a channel, from a subscriber connection."""
        channel = _decode(name)
        topic = self.subscriptions.exact.get(channel)
        if topic is not None:
            message, position = _unwrap(channel, data)
            if topic.history:
                self._live(self._track(topic), Published(message, channel, position))
            else:
                self.subscriptions.publish_to(topic, Published(message, channel))

    def _deliver_matched(self, pattern: bytes, name: bytes, data: bytes) -> None:
        """A message on a channel that a pattern matches."""
        subs = self.subscriptions
        topic = subs.patterns.get(_decode(pattern))
        if topic is not None:
            channel = _decode(name)
            message, position = _unwrap(channel, data)
            subs.publish_to(topic, Published(message, channel, position))

    # -- a Redis Cluster --------------------------------------------------------

    def _want_refresh(self) -> None:
        """Ask the cluster for its map again soon (a MOVED, a link down, a
        slot that left its node). Event loop thread only."""
        if self._cluster is not None:
            self._refresh_asked = True
            self._refresh_lot.unpark_all()

    async def _watch_cluster(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the cluster's map, and a link to each of its masters: asked
        again when something shows that it changed, until every slot has a
        master whose links are up, and every ``health_interval`` seconds."""
        delay = self.backoff_min
        reported = False
        while True:
            self._refresh_asked = False
            try:
                smap = await self._discover()
                if smap is not None:
                    await self._apply_map(smap)
            except Exception:
                # A bug of ours must not end the engine (and the server):
                # said, and asked again with the backoff.
                log.exception("redis cluster: internal error following the map")
                smap = None
            if not reported:
                reported = True
                task_status.started()
            # Unsettled (asked again with the backoff): a slot without a
            # master (a failover under way), channels a node refused, a link down.
            links = self._links.values()
            if (
                smap is None
                or not smap.covered()
                or self._unplaced
                or not all(link.ready() for link in links)
            ):
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_min
            with trio.move_on_after(self.health_interval):
                while not self._refresh_asked:
                    await self._refresh_lot.park()

    async def _discover(self) -> SlotMap | None:
        """The map, from the first node that gives one where every slot has
        a master (the masters known, those connected first, then the
        seeds); else the first map."""
        import hiredis

        assert self._cluster is not None
        # Those whose links are up first: a dead host costs connect_timeout.
        known = list(self._map.masters) if self._map is not None else []
        up = [n for n in known if (link := self._links.get(n)) is not None and link.ready()]
        nodes = up + [n for n in known if n not in up]
        nodes += [node for node in self._cluster.seeds if node not in nodes]
        found = None
        why: list[str] = []
        for node in nodes:
            address = self._node_address(node)
            try:
                with trio.fail_after(self.connect_timeout):
                    stream = await address.connect()
                    try:
                        reader = hiredis.Reader()
                        await self._handshake(stream, reader)
                        await stream.send_all(command(b"CLUSTER", b"SHARDS"))
                        reply = await _read_reply(stream, reader, self.connect_timeout)
                    finally:
                        await trio.aclose_forcefully(stream)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, _Lost) as exc:
                reason = "timed out" if isinstance(exc, trio.TooSlowError) else _reason(exc)
                why.append(f"{address}: {reason}")
                continue
            if isinstance(reply, Exception):
                hint = ""
                if "cluster support disabled" in str(reply) or "unknown subcommand" in str(reply):
                    hint = ": sharded pub/sub needs a Redis Cluster, 7.0 or later"
                why.append(f"{address}: CLUSTER SHARDS failed ({reply}){hint}")
                continue
            try:
                smap = SlotMap.from_shards(reply, tls=self._tls is not None)
            except (KeyError, TypeError, ValueError) as exc:
                why.append(f"{address}: CLUSTER SHARDS gave what is not a map ({exc!r})")
                continue
            if smap.covered():
                self._discover_failed = False
                return smap
            found = found or smap
        if found is None:
            # The first failure of a streak is a warning, the next ones debug.
            level = logging.DEBUG if self._discover_failed else logging.WARNING
            log.log(
                level, "redis cluster: no node gave the slots (%s); asking again", "; ".join(why)
            )
        self._discover_failed = found is None
        return found

    async def _apply_map(self, smap: SlotMap) -> None:
        """Follow a new map: links to new masters, channels whose slot moved
        subscribed where it is now (and filled from history), links to nodes
        that are no longer masters closed."""
        assert self._nursery is not None
        old, self._map = self._map, smap
        self._unmapped_logged = False
        fresh = []
        for node in smap.masters:
            if node not in self._links:
                link = self._links[node] = _Link(self, self._node_address(node))
                fresh.append(link)
        for link in fresh:
            await self._nursery.start(link.run)
        if old is not None and (self._unplaced or old.owners != smap.owners):
            self._rehome(old, smap, fresh)
        for node in [n for n in self._links if n not in smap.masters]:
            self._links.pop(node).scope.cancel()
        redirected, self._redirected = self._redirected, []
        for node, items in redirected:
            self._resend(node, items)
        self._update_connected()
        if old is None or old.owners != smap.owners:
            log.info(
                "redis cluster: %d masters (%s)%s",
                len(smap.masters),
                ", ".join(f"{h}:{p}" for h, p in smap.masters),
                "" if smap.covered() else "; some slots have no master",
            )

    def _rehome(self, old: SlotMap, new: SlotMap, fresh: list[_Link]) -> None:
        """Channels whose slot has another master now (or that a node did
        not take): unsubscribed from the old, subscribed on the new (a fresh
        link subscribes and fills all its channels as it connects), and on a
        channel with history, filled from where its live messages got to."""
        unplaced, self._unplaced = self._unplaced, set()
        leaving: dict[_Link, list[str]] = {}
        coming: dict[_Link, list[str]] = {}
        for channel in self.subscriptions.exact:
            slot = _slot(channel)
            before, after = old.owners[slot], new.owners[slot]
            if before == after and channel not in unplaced:
                continue
            source = self._links.get(before) if before is not None else None
            if source is not None and before != after and channel not in unplaced:
                leaving.setdefault(source, []).append(channel)
            target = self._links.get(after) if after is not None else None
            if target is not None and target not in fresh:
                coming.setdefault(target, []).append(channel)
        for link, channels in leaving.items():
            for batch in self._batches(channels):
                link.send_sub(self._verbs[1], batch)
        for link, channels in coming.items():
            for batch in self._batches(channels):
                link.send_sub(self._verbs[0], batch)
            plain = 0
            for channel in channels:
                track = self._tracks.get(channel)
                if track is None or not self._current(track):
                    plain += 1
                    continue
                ref = track.ref()
                if track.fill is not None:
                    track.again = True
                elif ref is not None:
                    self._fill(track, ref)
            if plain:
                # Nothing can tell what they missed, nor bring it back: say it.
                log.warning(
                    "redis cluster: %d channels now subscribed on %s (their slot moved);"
                    " %d of them keep no history: what was published on those between the"
                    " move and now did not reach this server's clients",
                    len(channels),
                    link.address,
                    plain,
                )
            else:
                log.info(
                    "redis cluster: %d channels now subscribed on %s (their slot moved);"
                    " what they missed meanwhile is read from history",
                    len(channels),
                    link.address,
                )
        before_link = self._links.get(old.masters[0]) if old.masters else None
        after_link = self._pattern_link()
        patterns = list(self.subscriptions.patterns)
        if self._copies and patterns and before_link is not after_link:
            self._send_sub(before_link, b"PUNSUBSCRIBE", patterns)
            if after_link not in fresh:
                self._send_sub(after_link, b"PSUBSCRIBE", patterns)

    def _unplace(self, channels: list[str], reason: str) -> None:
        """A node did not take these subscriptions (its slot moved, the
        cluster is down): subscribed again once the map is refreshed."""
        wanted = [c for c in channels if c in self.subscriptions.exact]
        self._unplaced.update(wanted)
        log.info(
            "redis cluster: %d channels to subscribe again once the slots are known (%s)",
            len(wanted),
            reason,
        )
        self._want_refresh()

    def _redirect(self, cmd: bytes, pending: _Pending, reason: str) -> bool:
        """A ``MOVED`` or ``ASK`` reply: the command did not run; it goes to
        the node named (after ``ASKING`` for an ``ASK``). False if
        ``reason`` is no redirection."""
        target = redirect(reason)
        if target is None:
            return False
        kind, _, node = target
        items: list[tuple[bytes, _Pending]] = [(cmd, pending)]
        if kind == "ASK":
            items.insert(0, (command(b"ASKING"), _ASKING))
        else:
            self._want_refresh()
        if node in self._links:
            self._resend(node, items)
        else:
            self._redirected.append((node, items))
            self._want_refresh()
        return True

    def _resend(self, node: Node, items: list[tuple[bytes, _Pending]]) -> None:
        link = self._links.get(node)
        if link is not None and link.resend(items):
            return
        *_, (_, pending) = items
        if isinstance(pending, _Read):
            self._read_lost(pending)
            return
        self.failed += 1
        log.error("redis cluster: a publish redirected to %s:%d failed: not connected", *node)
        _fail(pending, f"redirected to {node[0]}:{node[1]}, which is not connected")

    # -- counting subscribers across processes ----------------------------------------

    def _init_counts(self, heartbeat: float | None) -> None:
        #: Seconds between this engine's heartbeats (None: it writes no
        #: counts and :meth:`cluster_count` is refused); its counts hold
        #: ``HEARTBEAT_LIFETIMES`` heartbeats past its last.
        self.heartbeat = heartbeat
        #: This engine's name in Redis (host:pid:random), set by :meth:`run`.
        self.process_id: str | None = None
        self._count_keys = (PROCS_KEY, b"", b"")
        # Channels and patterns whose count changed since the last write.
        self._count_dirty: set[str] = set()
        self._count_lot = trio.lowlevel.ParkingLot()
        self._count_out = bytearray()
        self._count_send_lot = trio.lowlevel.ParkingLot()
        # One per command sent on the counter connection: who waits for its reply.
        self._count_waiting: deque[_CountQuery | None] = deque()
        self._count_up = False
        if heartbeat is not None:
            self.subscriptions.changed = self._count_changed

    def _count_changed(self, channel: str) -> None:
        if not self._count_dirty:
            self._count_lot.unpark_all()
        self._count_dirty.add(channel)

    async def cluster_count(self, channel: str) -> int:
        """How many clients of every live process on this Redis a publish on
        ``channel`` reaches: each process's exact subscribers plus those of
        each pattern that matches (a client on both counts twice, as it
        receives the message twice). Event loop thread only. Raises
        ``ConnectionError`` when the counter connection to Redis is down or
        breaks first, ``RuntimeError`` if ``heartbeat`` is None."""
        if self.heartbeat is None:
            raise RuntimeError("cluster counts are off: this RedisPubSub has heartbeat=None")
        if not self._count_up:
            raise ConnectionError(f"not connected to {self.address}")
        query = _CountQuery()
        args = (_encode(channel), EXACT_PREFIX, PATTERN_PREFIX)
        self._count_send([command(b"EVAL", COUNT_SCRIPT.encode(), b"1", PROCS_KEY, *args)], query)
        with trio.move_on_after(self.health_interval):
            await query.event.wait()
        if not query.event.is_set():
            raise ConnectionError(f"no answer from Redis in {self.health_interval} s")
        if query.error is not None:
            raise ConnectionError(query.error)
        exact, patterns = query.reply
        encoded = _encode(channel)
        matched = sum(
            int(n)
            for p, n in zip(patterns[::2], patterns[1::2], strict=True)
            if channel and _glob_regex(_decode(p)).fullmatch(encoded) is not None
        )
        return int(exact) + matched

    def _count_send(self, commands: list[bytes], query: _CountQuery | None = None) -> None:
        """Queue commands on the counter connection; ``query`` waits for the last's reply."""
        self._count_out += b"".join(commands)
        self._count_waiting.extend([None] * (len(commands) - 1))
        self._count_waiting.append(query)
        self._count_send_lot.unpark_all()

    async def _keep_counts(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        name = _encode(self.process_id)
        self._count_keys = (PROCS_KEY, EXACT_PREFIX + name, PATTERN_PREFIX + name)
        await self._keep(
            "counter", self._counter_session, self._counts_address, task_status=task_status
        )

    def _counts_address(self) -> Address:
        """Where the counts are: the one Redis, or the master of their slot."""
        smap = self._map
        owner = smap.owners[key_slot(PROCS_KEY)] if smap is not None else None
        return self._node_address(owner) if owner is not None else self.address

    def _count_commands(self, counts: dict[str, int]) -> list[bytes]:
        """HSET what is above 0 and HDEL what is 0, in each hash, then the heartbeat."""
        _, exact_key, pattern_key = self._count_keys
        commands = []
        for key, patterns in ((exact_key, False), (pattern_key, True)):
            chosen = [c for c in counts if is_pattern(c) == patterns]
            gone = [_encode(c) for c in chosen if not counts[c]]
            kept = [x for c in chosen if counts[c] for x in (_encode(c), b"%d" % counts[c])]
            for i in range(0, len(gone), _BATCH):
                commands.append(command(b"HDEL", key, *gone[i : i + _BATCH]))
            for i in range(0, len(kept), 2 * _BATCH):
                commands.append(command(b"HSET", key, *kept[i : i + 2 * _BATCH]))
        assert self.heartbeat is not None
        lifetime = b"%d" % int(self.heartbeat * HEARTBEAT_LIFETIMES * 1000)
        script = HEARTBEAT_SCRIPT.encode()
        name = _encode(self.process_id or "")
        commands.append(command(b"EVAL", script, b"3", *self._count_keys, name, lifetime))
        return commands

    async def _counter_session(self, stream: trio.abc.Stream, up: Callable[[], None]) -> None:
        import hiredis

        reader = hiredis.Reader()
        with trio.fail_after(self.connect_timeout):
            await self._handshake(stream, reader)
        # Everything, in place of what an earlier connection may have left.
        subs = self.subscriptions
        self._count_dirty.clear()
        tables = (subs.exact, subs.patterns)
        counts = {key: len(t.cursors) for table in tables for key, t in table.items()}
        self._count_send(
            [command(b"MULTI"), command(b"DEL", *self._count_keys[1:])]
            + self._count_commands(counts)
            + [command(b"EXEC")]
        )
        self._count_up = True
        up()
        try:
            await _until_lost(
                lambda: self._count_writer(stream),
                self._count_beat,
                lambda: self._count_reader(stream, reader),
            )
        finally:
            self._count_up = False
            waiting = list(self._count_waiting)
            self._count_waiting.clear()
            self._count_out.clear()
            for query in waiting:
                if query is not None:
                    query.error = "the connection to Redis broke before it answered"
                    query.event.set()
            await self._forget_counts(stream, reader, len(waiting))

    async def _forget_counts(self, stream: trio.abc.Stream, reader: Any, unread: int) -> None:
        """This engine stops (or its connection broke): its counts go now,
        not a lifetime later (after a break, the next connection writes
        them again). ``unread``: replies still due before those."""
        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
            try:
                forget = command(b"ZREM", PROCS_KEY, _encode(self.process_id or ""))
                await stream.send_all(command(b"DEL", *self._count_keys[1:]) + forget)
                for _ in range(unread + 2):
                    await _read_reply(stream, reader, 0.5)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, _Lost):
                pass

    async def _count_writer(self, stream: trio.abc.Stream) -> None:
        while True:
            if not self._count_out:
                await self._count_send_lot.park()
                continue
            data = bytes(self._count_out)
            self._count_out.clear()
            await stream.send_all(data)

    async def _count_beat(self) -> None:
        """Write the counts that changed, a burst at a time, with a heartbeat;
        a heartbeat alone when nothing changed for ``heartbeat`` seconds."""
        assert self.heartbeat is not None
        subs = self.subscriptions
        while True:
            with trio.move_on_after(self.heartbeat):
                while not self._count_dirty:
                    await self._count_lot.park()
                await trio.sleep(COUNT_INTERVAL)
            dirty, self._count_dirty = self._count_dirty, set()
            counts = {}
            for channel in dirty:
                topic = (subs.patterns if is_pattern(channel) else subs.exact).get(channel)
                counts[channel] = len(topic.cursors) if topic is not None else 0
            self._count_send(self._count_commands(counts))

    async def _count_reader(self, stream: trio.abc.Stream, reader: Any) -> None:
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _Lost("closed by Redis")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                query = self._count_waiting.popleft() if self._count_waiting else None
                if isinstance(reply, Exception) and redirect(str(reply)) is not None:
                    # The counts' slot has another master: written again there.
                    self._want_refresh()
                    raise _Lost(f"the counts moved ({reply})")
                if isinstance(reply, Exception):
                    log.error("redis counter: %s", reply)
                    if query is not None:
                        query.error = str(reply)
                if query is not None:
                    query.reply = reply
                    query.event.set()


class _Link:
    """One Redis node's two connections: the subscriber (``SUBSCRIBE``, on a
    cluster ``SSUBSCRIBE``, and ``PSUBSCRIBE`` for patterns, and nothing
    else) and the publisher (publishes and history reads, pipelined). A
    single Redis is one link; a cluster is one per master. Each matches its
    own replies to its own commands, in order."""

    def __init__(self, engine: RedisPubSub, address: Address) -> None:
        self.engine = engine
        self.address = address
        #: Cancelled when the node is no longer a master.
        self.scope = trio.CancelScope()
        # -- publisher state (the queue is the engine lock's) --
        self.pub_up = False
        # A command, and who waits for its reply: nobody (a PUBLISH), a
        # publish_confirmed, a history publish's position, a history read.
        self.queue: deque[tuple[bytes, _Pending]] = deque()
        self.wake_pending = False
        self.pub_lot = trio.lowlevel.ParkingLot()
        # Sent, not answered yet, and who waits for each reply; on a
        # cluster with the command, so that a redirected one (MOVED, ASK)
        # can be sent again.
        self.in_flight: deque[tuple[bytes, _Pending]] = deque()
        # The scripts are (re)loaded ahead of the next batch.
        self.load_scripts = False
        self.failed_while_down = 0
        self.pub_replies = 0
        # -- subscriber state (event loop thread only) --
        self.sub_up = False
        self.sub_out = bytearray()
        self.sub_commands: deque[_SubCommand] = deque()
        self.sub_lot = trio.lowlevel.ParkingLot()
        self.sub_epoch = 0
        self.sub_sent = 0
        self.sub_acked = 0
        self.ack_lot = trio.lowlevel.ParkingLot()
        # Up, and every subscription re-sent on connecting acknowledged
        # (``sub_acked`` reached ``ready_at``). Publishes are refused
        # until then: Redis would deliver them to none of our subscribers.
        self.sub_ready = False
        self.ready_at = 0
        self.pong = True
        #: The subscriber reconnected: fill every channel with history on
        #: this link once both connections are ready.
        self.refill = False

    def ready(self) -> bool:
        return self.pub_up and self.sub_ready

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep both connections up until cancelled (or :attr:`scope` is);
        started once both have tried to connect."""
        engine = self.engine
        with self.scope:
            async with trio.open_nursery() as nursery:
                for name, session in (
                    ("subscriber", self.subscriber_session),
                    ("publisher", self.publisher_session),
                ):
                    await nursery.start(engine._keep, name, session, lambda: self.address)
                task_status.started()

    # -- publishing -----------------------------------------------------------

    def enqueue(self, cmd: bytes, pending: _Pending, copy: bytes | None = None) -> bool:
        """Queue a publish (after its ``copy`` for patterns, if any) or a
        history read for the publisher connection; False if it is not
        ready. A history read is not a publish: it is not counted as one,
        and the queue bound does not refuse it."""
        engine = self.engine
        read = isinstance(pending, _Read)
        with engine._lock:
            ready = self.pub_up and self.sub_ready
            queue = self.queue
            if ready and (read or len(queue) + len(self.in_flight) < engine.max_pending):
                if not read:
                    engine.published += 1
                if copy is not None:
                    queue.append((copy, _COPY))
                queue.append((cmd, pending))
                if not self.wake_pending:
                    self._wake()
                return True
            if read:
                return False
            engine.failed += 1
            first = False
            if not ready:
                self.failed_while_down += 1
                first = self.failed_while_down == 1
        if first:
            log.warning(
                "redis unreachable: publish() returns False until it is back and resubscribed"
            )
        elif ready:
            log.warning(
                "redis publish queue full (%d): publish() returned False", engine.max_pending
            )
        return False

    def resend(self, items: list[tuple[bytes, _Pending]]) -> bool:
        """Queue commands that another node redirected here (counted when
        they were first queued); False if this link is not ready."""
        with self.engine._lock:
            if not self.ready():
                return False
            self.queue.extend(items)
            if not self.wake_pending:
                self._wake()
        return True

    def _wake(self) -> None:
        """Under the lock: the writer has something to send."""
        self.wake_pending = True
        self.engine._loop.call(self.pub_lot.unpark_all)

    async def publisher_session(self, stream: trio.abc.Stream, up: Callable[[], None]) -> None:
        import hiredis

        engine = self.engine
        reader = hiredis.Reader()
        with trio.fail_after(engine.connect_timeout):
            await engine._handshake(stream, reader)
        # A new connection may reach a Redis that never saw our scripts.
        self.load_scripts = bool(engine.subscriptions.rules)
        with engine._lock:
            self.pub_up = True
        engine._resumed(self)
        up()
        try:
            await _until_lost(
                lambda: self._pub_writer(stream),
                self._pub_watchdog,
                lambda: self._pub_reader(stream, reader),
            )
        finally:
            with engine._lock:
                self.pub_up = False
                lost = [p for _, p in self.in_flight] + [p for _, p in self.queue]
                self.in_flight.clear()
                self.queue.clear()
                self.wake_pending = False
            reads = [p for p in lost if isinstance(p, _Read)]
            publishes = [p for p in lost if not isinstance(p, (_Read, _Aside))]
            if publishes:
                engine.unconfirmed += len(publishes)
                log.error(
                    "redis publisher: %d publishes unconfirmed when the connection broke;"
                    " they may not have been delivered",
                    len(publishes),
                )
            error = "the connection to Redis broke before it confirmed"
            for pending in publishes:
                _fail(pending, error)
            for read in reads:
                engine._read_lost(read)

    async def _pub_writer(self, stream: trio.abc.Stream) -> None:
        lock = self.engine._lock
        # The commands sent are kept until answered on a cluster only (where
        # a MOVED or an ASK sends one again): a 64 KiB publish is let go once sent.
        keep = self.engine._cluster is not None
        while True:
            with lock:
                if not self.queue:
                    self.wake_pending = False
                    batch = None
                else:
                    batch = list(self.queue)
                    self.queue.clear()
                    if self.load_scripts:
                        self.load_scripts = False
                        batch[:0] = [(cmd, _SCRIPT_LOAD) for cmd in SCRIPT_LOADS]
                    if keep:
                        self.in_flight.extend(batch)
                    else:
                        self.in_flight.extend((b"", pending) for _, pending in batch)
            if batch is None:
                await self.pub_lot.park()
                continue
            # A subscription made before this publish must be in place at
            # Redis before it, so a client sees what is published right
            # after it subscribed (the two go on different connections; on
            # a cluster that serves patterns, theirs are on another link).
            await self.subscribed()
            patterns = self.engine._pattern_link() if self.engine._copies else None
            if patterns is not None and patterns is not self:
                await patterns.subscribed()
            await stream.send_all(b"".join(cmd for cmd, _ in batch))

    async def subscribed(self) -> None:
        """Until what this link's subscriber sent so far is answered (or
        that connection is gone)."""
        epoch, target = self.sub_epoch, self.sub_sent
        while self.sub_up and self.sub_epoch == epoch and self.sub_acked < target:
            await self.ack_lot.park()

    async def _pub_watchdog(self) -> None:
        # Replies that stop coming mean a dead peer, even if TCP has not noticed.
        interval = self.engine.health_interval
        last = self.pub_replies
        while True:
            await trio.sleep(interval)
            if self.in_flight and self.pub_replies == last:
                raise _Lost(f"no reply from Redis in {interval} s")
            last = self.pub_replies

    async def _pub_reader(self, stream: trio.abc.Stream, reader: Any) -> None:
        engine = self.engine
        cluster = engine._cluster is not None
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _Lost("closed by Redis")
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                self.pub_replies += 1
                with engine._lock:
                    cmd, pending = self.in_flight.popleft() if self.in_flight else (b"", None)
                if (
                    isinstance(reply, Exception)
                    and cluster
                    and engine._redirect(cmd, pending, str(reply))
                ):
                    continue
                if isinstance(pending, _Read):
                    await engine._read_replied(pending, reply)
                elif isinstance(pending, _Aside):
                    if isinstance(reply, Exception):
                        log.error("redis publisher: %s failed: %s", pending.what, reply)
                elif isinstance(reply, Exception):
                    engine.failed += 1
                    if str(reply).startswith("NOSCRIPT"):
                        self.load_scripts = True  # ahead of the next batch
                    hint = ""
                    if not cluster and str(reply).startswith("MOVED"):
                        hint = " (a Redis Cluster node: use a redis+cluster:// URL)"
                    log.error("redis publisher: publish failed: %s%s", reply, hint)
                    _fail(pending, str(reply))
                else:
                    _confirm(pending, reply)

    # -- subscribing ----------------------------------------------------------

    def send_sub(self, verb: bytes, channels: list[str]) -> None:
        # While disconnected there is nothing to do: the subscriber sends
        # what is current when it connects.
        if not self.sub_up:
            return
        self.sub_out += command(verb, *map(_encode, channels))
        self.sub_commands.append(_SubCommand(verb, channels))
        self.sub_sent += len(channels)
        self.sub_lot.unpark_all()

    async def subscriber_session(self, stream: trio.abc.Stream, up: Callable[[], None]) -> None:
        import hiredis

        engine = self.engine
        reader = hiredis.Reader()
        with trio.fail_after(engine.connect_timeout):
            await engine._handshake(stream, reader)
        self.sub_out = bytearray()
        self.sub_commands.clear()
        self.sub_epoch += 1
        self.sub_sent = self.sub_acked = 0
        self.sub_up = True
        self.pong = True
        # What was published while we were not subscribed is read from
        # history once resubscribed (_refill_all).
        self.refill = True
        try:
            # Resubscribe to everything in use, synchronously with going
            # up: later changes are sent as they happen.
            exact, patterns = engine._placed(self)
            for batch in engine._batches(exact):
                self.send_sub(engine._verbs[0], batch)
            for i in range(0, len(patterns), _BATCH):
                self.send_sub(b"PSUBSCRIBE", patterns[i : i + _BATCH])
            self.ready_at = self.sub_sent
            self.check_ready()  # at once if there was nothing to resubscribe
            up()
            if exact or patterns:
                log.info(
                    "redis subscriber: subscribed to %d channels and %d patterns",
                    len(exact),
                    len(patterns),
                )
            await _until_lost(
                lambda: self._sub_writer(stream),
                self._sub_health,
                lambda: self._sub_reader(stream, reader),
            )
        finally:
            self.sub_up = False
            with engine._lock:
                self.sub_ready = False
            self.sub_out = bytearray()
            self.ack_lot.unpark_all()

    async def _sub_writer(self, stream: trio.abc.Stream) -> None:
        while True:
            if not self.sub_out:
                await self.sub_lot.park()
                continue
            data, self.sub_out = bytes(self.sub_out), bytearray()
            await stream.send_all(data)

    async def _sub_health(self) -> None:
        interval = self.engine.health_interval
        while True:
            await trio.sleep(interval)
            if not self.pong:
                raise _Lost(f"no answer to PING in {interval} s")
            self.pong = False
            self.send_sub(b"PING", [])

    async def _sub_reader(self, stream: trio.abc.Stream, reader: Any) -> None:
        engine = self.engine
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _Lost("closed by Redis")
            self.pong = True
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                if isinstance(reply, Exception):
                    self._sub_error(str(reply))
                    continue
                # PING outside subscribed mode: a plain PONG, not an array.
                kind = reply[0] if isinstance(reply, list) else reply
                if kind == b"message" or kind == b"smessage":
                    engine._deliver(reply[1], reply[2])
                elif kind == b"pmessage":
                    engine._deliver_matched(reply[1], reply[2], reply[3])
                elif kind == b"sunsubscribe" and not self._unsubscribing(reply[1]):
                    # Not ours: the channel's slot left this node (Redis 7
                    # tells its shard channels' subscribers so).
                    engine._unplace([_decode(reply[1])], f"its slot left {self.address}")
                else:
                    self._sub_replied(1)

    def _unsubscribing(self, name: bytes) -> bool:
        """Whether the oldest command in flight unsubscribes from ``name``."""
        cmd = self.sub_commands[0] if self.sub_commands else None
        return cmd is not None and cmd.verb == b"SUNSUBSCRIBE" and _decode(name) in cmd.channels

    def _sub_replied(self, n: int) -> None:
        """``n`` replies to the oldest command in flight. Those to a
        subscription command are what the publisher waits for: the
        subscription is in place at Redis, or refused."""
        cmd = self.sub_commands[0]
        cmd.left -= n
        if not cmd.left:
            self.sub_commands.popleft()
        if cmd.channels:
            self.sub_acked += n
            if self.sub_acked >= self.sub_sent:
                self.ack_lot.unpark_all()
            self.check_ready()

    def _sub_error(self, reason: str) -> None:
        """An error reply: the whole of the oldest command in flight failed."""
        cmd = self.sub_commands[0]
        engine = self.engine
        subs = engine.subscriptions
        table = subs.patterns if cmd.verb == b"PSUBSCRIBE" else subs.exact
        cluster_error = reason.split(" ", 1)[0] in _CLUSTER_ERRORS
        if cmd.verb == b"SSUBSCRIBE" and cluster_error:
            engine._unplace(cmd.channels, reason)
        elif cmd.verb == b"SUNSUBSCRIBE" and cluster_error:
            pass  # that node does not serve the slot (any more): nothing to leave there
        elif cmd.verb not in (b"SUBSCRIBE", b"SSUBSCRIBE", b"PSUBSCRIBE"):
            log.error("redis subscriber: %s failed: %s", cmd.verb.decode(), reason)
        elif len(cmd.channels) > 1:
            # Redis refuses a command whole for any channel it refuses (a
            # resubscription sends many): ask for each on its own to learn
            # which, and count them in the resubscription.
            for channel in cmd.channels:
                if channel in table:
                    self.send_sub(cmd.verb, [channel])
            self.ready_at = self.sub_sent
        else:
            (channel,) = cmd.channels
            engine._refuse(channel, reason)
        self._sub_replied(cmd.left)

    def check_ready(self) -> None:
        if self.sub_ready or self.sub_acked < self.ready_at:
            return
        with self.engine._lock:
            self.sub_ready = True
        self.engine._resumed(self)


def _fail(pending: _Pending, error: str) -> None:
    """A publish that Redis did not confirm."""
    if isinstance(pending, Position):
        pending.settle(None, error=error)
    elif isinstance(pending, _Waiter):
        if pending.position is not None:
            pending.position.settle(None, error=error)
        pending.error = error
        pending.event.set()


def _confirm(pending: _Pending, reply: Any) -> None:
    """Redis's reply to a publish: the receivers, or the history script's
    epoch, offset, ms and receivers."""
    if isinstance(reply, list):
        epoch, offset, ms, receivers = reply
        position = pending.position if isinstance(pending, _Waiter) else pending
        if isinstance(position, Position):
            position.settle(_decode(epoch), int(offset), int(ms))
        reply = receivers
    if isinstance(pending, _Waiter):
        pending.result = int(reply)
        pending.event.set()


def _unwrap(channel: str, data: bytes) -> tuple[str | bytes, Position | None]:
    """A message from the subscriber connection, and its position if the
    history script's header says it."""
    if data.startswith(HEADER):
        end = data.find(b"\n", len(HEADER), len(HEADER) + 64)
        if end > 0:
            try:
                position = Position.parse(channel, data[len(HEADER) : end].decode("ascii"))
            except ValueError:
                pass
            else:
                return _message(data[end + 1 :]), position
    return _message(data), None


def _entries(channel: str, epoch: str, raw: list[Any]) -> list[Published]:
    """Stream entries (newest first, as XREVRANGE gives them) as messages,
    oldest first."""
    out = []
    for entry_id, fields in reversed(raw):
        ms, _, offset = entry_id.partition(b"-")
        data = fields[1] if len(fields) > 1 else b""  # ["d", message]
        position = Position(channel, epoch, int(offset), int(ms))
        out.append(Published(_message(data), channel, position))
    return out


def _offset(published: Published) -> int:
    position = published.position
    assert position is not None
    return position.offset


def _payload(message: str | bytes | sp.Prepared) -> bytes:
    if isinstance(message, sp.Prepared):
        message = message.message
    return message.encode("utf-8") if isinstance(message, str) else bytes(message)


def _message(data: bytes) -> str | bytes:
    """Text if it is UTF-8, else binary."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


async def _read_reply(stream: trio.abc.Stream, reader: Any, timeout: float) -> Any:
    with trio.fail_after(timeout):
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _Lost("closed by Redis")
            reader.feed(data)


async def _until_lost(*tasks: Callable[[], Awaitable[Any]]) -> None:
    """Run the tasks of one connection until one of them ends; raise _Lost
    with why (a task's error is the connection's end, not the server's)."""
    reason = "closed"
    async with trio.open_nursery() as nursery:

        async def guarded(task: Callable[[], Awaitable[Any]]) -> None:
            nonlocal reason
            try:
                await task()
            except (_Lost, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                reason = _reason(exc)
            except Exception as exc:
                log.exception("redis: internal error, reconnecting")
                reason = _reason(exc)
            nursery.cancel_scope.cancel()

        for task in tasks:
            nursery.start_soon(guarded, task)
    raise _Lost(reason)
