"""The Redis engine over TLS (``rediss://``, certificates from trustme, Debian's
redis-server with ``--tls-port``) and over a Unix socket (``unix://``): the
same pub/sub as over TCP, and a certificate it cannot trust refused with a
clear reason."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

import trio_push
from tests.helpers.procs import free_port
from tests.helpers.pubsub import RedisServer, Subscribe, connect_clients, start
from tests.helpers.server import wait_for
from trio_push._redis import RedisAddress

BIG = "x" * 65536


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a TLS port (and its plain one, for the test's own
    commands), and the file of the CA that signed its certificate."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls_port = free_port()
    options = ["--tls-port", str(tls_port), "--tls-auth-clients", "no"]
    options += ["--tls-cert-file", str(tmp_path / "cert.pem")]
    options += ["--tls-key-file", str(tmp_path / "key.pem")]
    options += ["--tls-ca-cert-file", str(tmp_path / "ca.pem")]
    with RedisServer(*options) as redis:
        yield redis, tls_port, tmp_path / "ca.pem"


async def publish_and_receive(nursery: trio.Nursery, pubsub: trio_push.RedisPubSub) -> None:
    server = await start(nursery, Subscribe("r"), pubsub=pubsub)
    clients = await connect_clients(nursery, server.port, 2, "websocket")
    clients += await connect_clients(nursery, server.port, 1, "sse")
    await wait_for(lambda: pubsub.connected)
    sent = ["one", BIG, *(f"m{i}" for i in range(1000))]
    for message in sent:
        assert trio_push.publish("r", message)
    for client in clients:
        assert await client.wait_messages(len(sent)) == sent


async def test_pub_sub_through_tls(
    nursery: trio.Nursery, tls_redis: tuple[RedisServer, int, Path]
) -> None:
    redis, tls_port, ca = tls_redis
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
    pubsub = trio_push.RedisPubSub(url, backoff_max=0.2)
    await publish_and_receive(nursery, pubsub)
    assert redis.numsub("r") == 1  # one subscriber connection, over TLS
    assert str(pubsub.address) == f"rediss 127.0.0.1:{tls_port}"


async def test_a_certificate_signed_by_another_ca_is_refused_with_the_reason(
    nursery: trio.Nursery,
    tls_redis: tuple[RedisServer, int, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, tls_port, _ = tls_redis
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    pubsub = trio_push.RedisPubSub(f"rediss://127.0.0.1:{tls_port}?ssl_ca_certs={other}")
    caplog.set_level(logging.WARNING, "trio_push")
    await start(nursery, Subscribe("r"), pubsub=pubsub)
    await wait_for(lambda: "certificate verify failed" in caplog.text)
    assert f"cannot connect to rediss 127.0.0.1:{tls_port}" in caplog.text
    assert not pubsub.connected
    assert trio_push.publish("r", "nobody hears this") is False


def test_tls_and_unix_urls() -> None:
    address = RedisAddress.from_url("rediss://me:pw@h:6380/2?ssl_cert_reqs=none")
    assert (address.host, address.port, address.user, address.password) == ("h", 6380, "me", "pw")
    assert address.tls is not None and not address.tls.check_hostname
    assert RedisAddress.from_url("rediss://h").tls.check_hostname  # type: ignore[union-attr]
    unix = RedisAddress.from_url("unix:///run/redis.sock?db=3")
    assert (unix.path, unix.tls, str(unix)) == ("/run/redis.sock", None, "redis /run/redis.sock")
    for bad in ("unix://", "unix:///x?db=a", "rediss://h?ssl_cert_reqs=maybe", "redis+x://h"):
        with pytest.raises(ValueError):
            RedisAddress.from_url(bad)


async def test_pub_sub_through_a_unix_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    with RedisServer("--unixsocket", str(path), "--unixsocketperm", "700") as redis:
        pubsub = trio_push.RedisPubSub(f"unix://{path}?db=0", backoff_max=0.2)
        await publish_and_receive(nursery, pubsub)
        assert redis.numsub("r") == 1
