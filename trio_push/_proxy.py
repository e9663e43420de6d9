"""``--proxy-headers``: the client's address and scheme from a trusted proxy.

Behind a proxy, the peer of every connection is the proxy; the client it
speaks for is in ``X-Forwarded-For`` / ``X-Forwarded-Proto`` or in RFC 7239
``Forwarded``. Any client can send those headers, so they are read only
when the peer is a trusted hop (``forwarded_allow_ips``), and then as a
chain: each proxy appends the address it got the request from, so the
client is the right-most address that is not itself a trusted proxy
(walking from the right, as uvicorn and werkzeug's ProxyFix do); what is
left of it may be the client's own invention and is never looked at.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are read if the request has
either; ``Forwarded`` only if it has neither (nginx and HAProxy set the
``X-Forwarded-`` ones and pass on a ``Forwarded`` the client sent as it is:
preferring it would let any client choose its address). docs/deployment.md, "Proxies", says the same
for users.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

#: The literal in ``forwarded_allow_ips`` that trusts a peer on a Unix socket.
UNIX = "unix"
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which peers may say who the client is, and :meth:`apply`, which
    reads what they say into a request's environ."""

    __slots__ = ("everyone", "unix", "networks")

    def __init__(self, allow: str | Iterable[str]) -> None:
        items = allow.split(",") if isinstance(allow, str) else allow
        names = {item.strip() for item in items} - {""}
        #: ``*``: every peer is a trusted hop.
        self.everyone = "*" in names
        #: ``unix``: a peer on a Unix socket is a trusted hop.
        self.unix = UNIX in names
        networks: list[Network] = []
        for name in names - {"*", UNIX}:
            try:
                networks.append(ipaddress.ip_network(name, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {name!r} is not an address, a network, '*' or 'unix'"
                ) from None
        self.networks = tuple(networks)

    def trusts(self, address: str | None) -> bool:
        """Whether a hop at ``address`` (None: a Unix socket's peer) is trusted."""
        if self.everyone:
            return True
        if address is None:
            return self.unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def apply(self, env: dict[str, Any]) -> None:
        """From a trusted peer, set ``REMOTE_ADDR``, ``REMOTE_PORT`` and
        ``wsgi.url_scheme`` to what its headers say; from any other, leave
        ``env`` as it is."""
        if not self.trusts(env.get("REMOTE_ADDR")):
            return
        forwarded_for = env.get("HTTP_X_FORWARDED_FOR")
        forwarded_proto = env.get("HTTP_X_FORWARDED_PROTO")
        if forwarded_for is not None or forwarded_proto is not None:
            chain, proto = _x_forwarded(forwarded_for or "", forwarded_proto or "")
        else:
            chain, proto = _forwarded(env.get("HTTP_FORWARDED", ""))
        if chain:
            host, port, hop_proto = chain[self._client_index([hop[0] for hop in chain])]
            env["REMOTE_ADDR"] = host
            env["REMOTE_PORT"] = port or "0"
            proto = hop_proto or proto
        scheme = _SCHEMES.get(proto.lower())
        if scheme is not None:
            env["wsgi.url_scheme"] = scheme

    def _client_index(self, hosts: list[str]) -> int:
        """The client's place in a chain of hops: the right-most one that is
        not a trusted proxy; the left-most if they all are (or with ``*``)."""
        if not self.everyone:
            for index in range(len(hosts) - 1, 0, -1):
                if not self.trusts(hosts[index]):
                    return index
        return 0


#: The hops of a chain, client first: host, port (if given), proto (if given).
Chain = list[tuple[str, str | None, str | None]]


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _x_forwarded(forwarded_for: str, forwarded_proto: str) -> tuple[Chain, str]:
    """The hops of ``X-Forwarded-For`` (an address, with a port for some
    proxies: ``192.0.2.1:4711``); with as many ``X-Forwarded-Proto``
    values, each hop's own (proxies that append), else the right-most one
    (the one the nearest proxy set) for all."""
    hosts = _split(forwarded_for)
    protos = _split(forwarded_proto)
    if len(protos) == len(hosts):
        chain = [(*_host_port(host), proto) for host, proto in zip(hosts, protos, strict=True)]
        return chain, ""
    return [(*_host_port(host), None) for host in hosts], protos[-1] if protos else ""


def _forwarded(value: str) -> tuple[Chain, str]:
    """The hops of a ``Forwarded`` header (RFC 7239): each element's ``for=``
    and ``proto=``; and, if no element has a ``for=``, the last ``proto=``."""
    chain: Chain = []
    last_proto = ""
    for element in value.split(","):
        host: tuple[str, str | None] | None = None
        proto = None
        for pair in element.split(";"):
            name, _, text = pair.partition("=")
            name = name.strip().lower()
            text = text.strip().strip('"')
            if name == "for" and text:
                host = _host_port(text)
            elif name == "proto" and text:
                proto = last_proto = text
        if host is not None:
            chain.append((*host, proto))
    return chain, "" if chain else last_proto


def _host_port(node: str) -> tuple[str, str | None]:
    """``192.0.2.1:8080``, ``[2001:db8::1]:8080``, ``unknown``, ``_hidden``:
    the host (IPv6 without its brackets) and the port, if numeric."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, port if port.isdigit() else None
