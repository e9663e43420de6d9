"""What RedisPubSub needs to know of a Redis Cluster: which of the 16384
slots a channel or key is in (CRC16 with hash tags, as Redis computes it),
which master serves each slot (from ``CLUSTER SHARDS``), the
``redis+cluster://`` URL, and history keys that live in their channel's slot.

No I/O here: the engine (``_redis.py``) asks the nodes and follows the map.
"""

from __future__ import annotations

import binascii
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SLOTS = 16384

#: Where a node is: host, port.
Node = tuple[str, int]


def hash_tag(key: bytes) -> bytes | None:
    """The part of ``key`` that Redis hashes when it is not the whole key:
    between the first ``{`` and the first ``}`` after it, if not empty."""
    start = key.find(b"{")
    if start < 0:
        return None
    end = key.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def key_slot(key: bytes) -> int:
    """The cluster slot of a key or a shard channel."""
    tag = hash_tag(key)
    # Redis's CRC16 is CRC-CCITT (XMODEM): binascii's, in C.
    return binascii.crc_hqx(key if tag is None else tag, 0) % SLOTS


class UnkeyableChannel(ValueError):
    """A channel whose history keys cannot be in its own slot."""


def history_key(kind: bytes, channel: bytes, cluster: bool) -> bytes:
    """A channel's history key (``kind``: ``m`` its meta, ``s`` its stream),
    in the channel's slot: ``tp:<kind>:{channel}`` when the channel has no
    ``}``; ``tp:<kind>:<channel>:t`` when it has a hash tag of its own (the
    key then hashes by that tag, like the channel). A channel with a ``}``
    but no hash tag hashes whole, and no key hashes like it: on a single
    Redis its keys are ``tp:<kind>:{channel}``, on a cluster it is refused
    (``UnkeyableChannel``). The three forms never give the same key."""
    if b"}" not in channel:
        return b"tp:%b:{%b}" % (kind, channel)
    if hash_tag(channel) is not None:
        return b"tp:%b:%b:t" % (kind, channel)
    if cluster:
        raise UnkeyableChannel(
            f"channel {channel.decode('utf-8', 'replace')!r} cannot keep history on a Redis"
            " Cluster: it has a '}' but no {hash tag}, so no key hashes to its slot"
            " (name it without '}', or with a {tag})"
        )
    return b"tp:%b:{%b}" % (kind, channel)


#: The query options of ``rediss://`` (redis-py's names), for ``rediss+cluster://`` too.
TLS_OPTIONS = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}


class ClusterURL:
    """``redis+cluster://[[user]:password@]host:port[,host:port...][?patterns=1]``
    (``rediss+cluster://`` over TLS, with ``rediss://``'s options): the seed
    nodes (any nodes of the cluster), the credentials every node takes,
    whether patterns are served (see docs/pubsub.md, "Cluster"), and the
    query (for the TLS options)."""

    __slots__ = ("seeds", "user", "password", "patterns", "tls", "query")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis+cluster", "rediss+cluster"):
            raise ValueError(
                f"expected a redis+cluster://host:port[,host:port...] URL, got {url!r}"
            )
        self.tls = parts.scheme == "rediss+cluster"
        netloc = parts.netloc
        auth, _, hosts = netloc.rpartition("@")
        user, _, password = auth.partition(":")
        self.user = unquote(user) or None
        self.password = unquote(password) or None
        self.seeds: list[Node] = []
        for seed in hosts.split(","):
            host, _, port = seed.rpartition(":") if ":" in seed else (seed, "", "6379")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bad node {seed!r} in {url!r} (expected host:port)")
            self.seeds.append((host.strip("[]"), int(port)))
        self.query = query = parse_qs(parts.query)
        unknown = set(query) - {"patterns"} - (TLS_OPTIONS if self.tls else set())
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} in {url!r}")
        flag = query.get("patterns", ["0"])[-1].lower()
        if flag not in ("0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"patterns must be 1 or 0 in {url!r}")
        self.patterns = flag in ("1", "true", "yes")


class SlotMap:
    """Which master serves each slot, from a ``CLUSTER SHARDS`` reply: per
    shard, its online master (the one with the highest replication offset
    if the shard shows two, as it can during a failover). Slots whose
    master is not online have none (``None``)."""

    __slots__ = ("owners", "masters")

    def __init__(self, owners: list[Node | None]) -> None:
        self.owners = owners
        #: Every master that serves a slot, in a stable order.
        self.masters = sorted({node for node in owners if node is not None})

    @classmethod
    def from_shards(cls, reply: Any, tls: bool = False) -> SlotMap:
        """The map; with ``tls``, the nodes' TLS ports."""
        port = b"tls-port" if tls else b"port"
        owners: list[Node | None] = [None] * SLOTS
        for shard in reply:
            fields = _fields(shard)
            best: tuple[int, Node] | None = None
            for raw in fields.get(b"nodes", []):
                node = _fields(raw)
                online = node.get(b"health") == b"online" and port in node
                if node.get(b"role") != b"master" or not online:
                    continue
                host = (node.get(b"ip") or node.get(b"endpoint") or b"127.0.0.1").decode()
                offset = int(node.get(b"replication-offset", 0))
                if best is None or offset > best[0]:
                    best = (offset, (host, int(node[port])))
            if best is None:
                continue
            bounds = [int(x) for x in fields.get(b"slots", [])]
            for start, end in zip(bounds[::2], bounds[1::2], strict=True):
                owners[start : end + 1] = [best[1]] * (end - start + 1)
        return cls(owners)

    def covered(self) -> bool:
        """Whether every slot has an online master."""
        return None not in self.owners


def _fields(flat: Any) -> dict[bytes, Any]:
    """A RESP2 map (a flat list of names and values) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def redirect(reason: str) -> tuple[str, int, Node] | None:
    """A ``MOVED`` or ``ASK`` error -> its kind, slot and target node; else None."""
    kind, _, rest = reason.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    host, _, port = where.rpartition(":")
    if not slot.isdigit() or not port.isdigit():
        return None
    return kind, int(slot), (host or "127.0.0.1", int(port))
