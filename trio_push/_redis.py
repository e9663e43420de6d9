"""The Redis pub/sub engine: RESP over Trio sockets, parsed by hiredis.

Two connections per server: one subscribes (``SUBSCRIBE`` / ``PSUBSCRIBE``
for the channels and patterns its clients use, and nothing else), one
publishes (``PUBLISH``, pipelined). A publish is delivered to this server's
own clients through Redis too, like everyone else's: every subscriber gets
each message exactly once, in the order Redis saw it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

import sansio_push as sp

from ._glob import is_pattern
from ._history import HistoryRules, Position, Published, PublishError
from ._loop import Loop
from ._pubsub import Cursor, Subscriber, Subscriptions, detached, start_subscription

log = logging.getLogger("trio_push.redis")

_RECEIVE_SIZE = 65536
# Channels per SUBSCRIBE command when resubscribing.
_BATCH = 512
# A connection up this long (seconds) had no trouble reconnecting.
_HEALTHY = 5.0


class _Lost(Exception):
    """The connection to Redis is gone (the reason is the message)."""


def command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``redis://[[user]:password@]host[:port][/db]`` -> host, port, user, password.

    The database number is accepted and ignored: Redis pub/sub channels are
    shared by all databases. Raises ``ValueError`` for anything else.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"expected a redis://host:port/db URL, got {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"bad database number in {url!r}")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname or "127.0.0.1", port, user, password


class _Waiter:
    __slots__ = ("event", "result", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: int = 0
        self.error: str | None = None


class _SubCommand:
    """A command sent on the subscriber connection, until Redis answered it."""

    __slots__ = ("verb", "channels", "left")

    def __init__(self, verb: bytes, channels: list[str]) -> None:
        self.verb = verb
        self.channels = channels
        # Replies still due: one per channel (PING: one), or one error for all.
        self.left = len(channels) or 1


class RedisPubSub:
    """Pub/sub through Redis, for several processes and machines.

    ``publish(channel, message)`` never blocks and returns a bool:

    - ``True``: the message was handed to the live connection to Redis (or is
      queued for it); it reaches every subscriber, here and elsewhere, once.
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

    A subscription Redis refuses (an ACL user's ``NOPERM``) is counted in
    :attr:`subscribe_errors`, logged, and dropped: its clients are
    unsubscribed from it and get ``on_subscribe_error(client, channel,
    reason)`` if their handler has it. Everything else goes on.

    Through Redis a message is its bytes only: it arrives as text if it is
    valid UTF-8, else as binary; SSE fields other than the data are not sent.
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
    ) -> None:
        self.url = url
        self.host, self.port, self._user, self._password = parse_url(url)
        self.max_pending = max_pending
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.subscriptions = Subscriptions()
        #: Publishes refused (returned False) since start.
        self.failed = 0
        #: Publishes accepted but not confirmed when a connection broke.
        self.unconfirmed = 0
        #: Subscriptions (channels and patterns) that Redis refused.
        self.subscribe_errors = 0
        self._loop = Loop()
        # -- publisher state (the queue is shared with other threads) --
        self._lock = threading.Lock()
        self._pub_up = False
        self._queue: deque[tuple[bytes, _Waiter | None]] = deque()
        self._wake_pending = False
        self._pub_lot = trio.lowlevel.ParkingLot()
        self._in_flight: deque[_Waiter | None] = deque()
        self._failed_while_down = 0
        self._pub_replies = 0
        # -- subscriber state (event loop thread only) --
        self._sub_up = False
        self._sub_out = bytearray()
        self._sub_commands: deque[_SubCommand] = deque()
        self._sub_lot = trio.lowlevel.ParkingLot()
        self._sub_epoch = 0
        self._sub_sent = 0
        self._sub_acked = 0
        self._ack_lot = trio.lowlevel.ParkingLot()
        # Up, and every subscription re-sent on connecting acknowledged
        # (``_sub_acked`` reached ``_ready_at``). Publishes are refused
        # until then: Redis would deliver them to none of our subscribers.
        self._sub_ready = False
        self._ready_at = 0
        self._pong = True
        #: True while publishes are accepted: both connections to Redis are
        #: up and the subscriber has resubscribed.
        self.connected = False

    def __repr__(self) -> str:
        return f"<RedisPubSub {self.host}:{self.port}>"

    @property
    def bus(self) -> object:
        return ("redis", self.host, self.port)

    # -- the local side -------------------------------------------------------

    @property
    def history(self) -> HistoryRules:
        """Which channels keep history (set by the server from its options)."""
        return self.subscriptions.rules

    @history.setter
    def history(self, rules: HistoryRules) -> None:
        self.subscriptions.rules = rules

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        since: Position | None = None,
        envelope: bool = False,
    ) -> None:
        cursor = start_subscription(self.subscriptions, subscriber, channel, since, envelope)
        if cursor is None:
            return
        if len(cursor.topic.cursors) == 1:
            self._send_sub(b"PSUBSCRIBE" if is_pattern(channel) else b"SUBSCRIBE", [channel])
        if cursor.topic.history:
            self._load(cursor, since)

    def resync(self, subscriber: Subscriber) -> None:
        for cursor, since in detached(subscriber):
            self._load(cursor, since)

    def _load(self, cursor: Cursor, since: Position | None) -> None:
        raise NotImplementedError("history through Redis")

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        if self.subscriptions.remove(subscriber, channel):
            self._send_sub(b"PUNSUBSCRIBE" if is_pattern(channel) else b"UNSUBSCRIBE", [channel])

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        gone = self.subscriptions.remove_all(subscriber)
        if gone:
            exact = [c for c in gone if not is_pattern(c)]
            patterns = [c for c in gone if is_pattern(c)]
            if exact:
                self._send_sub(b"UNSUBSCRIBE", exact)
            if patterns:
                self._send_sub(b"PUNSUBSCRIBE", patterns)

    def count(self, channel: str) -> int:
        """Clients of this process that a publish on ``channel`` reaches."""
        return self.subscriptions.count(channel)

    def _send_sub(self, verb: bytes, channels: list[str]) -> None:
        # While disconnected there is nothing to do: the subscriber sends
        # what is current when it connects.
        if not self._sub_up:
            return
        self._sub_out += command(verb, *map(_encode, channels))
        self._sub_commands.append(_SubCommand(verb, channels))
        self._sub_sent += len(channels)
        self._sub_lot.unpark_all()

    # -- publishing -----------------------------------------------------------

    def publish(self, channel: str, message: str | bytes | sp.Prepared) -> bool:
        """Publish through Redis; True if accepted, False if not (see the class)."""
        cmd = command(b"PUBLISH", _encode(channel), _payload(message))
        return self._enqueue(cmd, None)

    async def publish_confirmed(self, channel: str, message: str | bytes | sp.Prepared) -> int:
        """Publish and wait for Redis's reply: the number of Redis
        subscribers (server processes, not clients) it reached. Raises
        :class:`PublishError` if Redis is unreachable or the connection
        breaks first. Event loop thread only."""
        waiter = _Waiter()
        if not self._enqueue(command(b"PUBLISH", _encode(channel), _payload(message)), waiter):
            raise PublishError(f"not connected to Redis at {self.host}:{self.port}")
        await waiter.event.wait()
        if waiter.error is not None:
            raise PublishError(waiter.error)
        return waiter.result

    def _enqueue(self, cmd: bytes, waiter: _Waiter | None) -> bool:
        with self._lock:
            ready = self._pub_up and self._sub_ready
            if not ready or len(self._queue) + len(self._in_flight) >= self.max_pending:
                self.failed += 1
                if not ready:
                    self._failed_while_down += 1
                    first = self._failed_while_down == 1
                else:
                    first = False
                queue_full = ready
            else:
                self._queue.append((cmd, waiter))
                wake = not self._wake_pending
                self._wake_pending = True
                if wake:
                    self._wake_writer()
                return True
        if first:
            log.warning(
                "redis unreachable: publish() returns False until it is back and resubscribed"
            )
        elif queue_full:
            log.warning("redis publish queue full (%d): publish() returned False", self.max_pending)
        return False

    def _wake_writer(self) -> None:
        self._loop.call(self._pub_lot.unpark_all)

    # -- running --------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep both connections up until cancelled. Reports started once
        both have tried to connect (connected or not: publishes fail and
        reconnection goes on in the background)."""
        self._loop.enter()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._keep, "subscriber", self._subscriber_session)
            await nursery.start(self._keep, "publisher", self._publisher_session)
            task_status.started()

    async def _keep(
        self,
        name: str,
        session: Callable[[trio.SocketStream, Callable[[], None]], Any],
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        delay = self.backoff_min
        reported = False
        failures = 0
        while True:
            try:
                with trio.fail_after(self.connect_timeout):
                    stream = await trio.open_tcp_stream(self.host, self.port)
            except (OSError, trio.TooSlowError) as exc:
                failures += 1
                reason = "timed out" if isinstance(exc, trio.TooSlowError) else _reason(exc)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "redis %s: cannot connect to %s:%d (%s); retrying",
                    name,
                    self.host,
                    self.port,
                    reason,
                )
                if not reported:
                    reported = True
                    task_status.started()
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
                continue

            def up(failures: int = failures) -> None:
                nonlocal reported
                log.info(
                    "redis %s: connected to %s:%d%s",
                    name,
                    self.host,
                    self.port,
                    f" after {failures} failed attempts" if failures else "",
                )
                self._update_connected()
                if not reported:
                    reported = True
                    task_status.started()

            failures = 0
            began = trio.current_time()
            try:
                await session(stream, up)
            except Exception as exc:
                log.warning("redis %s: connection lost (%s); reconnecting", name, _reason(exc))
            finally:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
                self._update_connected()
            if not reported:
                reported = True
                task_status.started()
            # A connection that was up a while is retried at once; one that
            # Redis drops as soon as it is made (AUTH refused, too many
            # clients) backs off like a failed connect.
            if trio.current_time() - began >= _HEALTHY:
                delay = self.backoff_min
            else:
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)

    def _update_connected(self) -> None:
        self.connected = self._pub_up and self._sub_ready

    def _resumed(self) -> None:
        """Called when either side is ready: if both are, publishes are
        accepted again, and how many were refused meanwhile is logged."""
        with self._lock:
            if not (self._pub_up and self._sub_ready):
                return
            refused, self._failed_while_down = self._failed_while_down, 0
        self._update_connected()
        if refused:
            log.warning(
                "redis: %d publishes failed while Redis was unreachable or resubscribing", refused
            )

    async def _handshake(self, stream: trio.SocketStream, reader: Any) -> None:
        if self._password is None:
            return
        args = [b"AUTH"] + ([_encode(self._user)] if self._user else []) + [_encode(self._password)]
        await stream.send_all(command(*args))
        reply = await _read_reply(stream, reader, self.connect_timeout)
        if isinstance(reply, Exception):
            raise _Lost(f"AUTH refused: {reply}")

    # -- the subscriber connection --------------------------------------------------

    async def _subscriber_session(self, stream: trio.SocketStream, up: Callable[[], None]) -> None:
        import hiredis

        reader = hiredis.Reader()
        with trio.fail_after(self.connect_timeout):
            await self._handshake(stream, reader)
        subs = self.subscriptions
        self._sub_out = bytearray()
        self._sub_commands.clear()
        self._sub_epoch += 1
        self._sub_sent = self._sub_acked = 0
        self._sub_up = True
        self._pong = True
        try:
            # Resubscribe to everything in use, synchronously with going
            # up: later changes are sent as they happen.
            for verb, names in (
                (b"SUBSCRIBE", list(subs.exact)),
                (b"PSUBSCRIBE", list(subs.patterns)),
            ):
                for i in range(0, len(names), _BATCH):
                    self._send_sub(verb, names[i : i + _BATCH])
            self._ready_at = self._sub_sent
            self._check_ready()  # at once if there was nothing to resubscribe
            up()
            if subs.exact or subs.patterns:
                log.info(
                    "redis subscriber: subscribed to %d channels and %d patterns",
                    len(subs.exact),
                    len(subs.patterns),
                )
            await _until_lost(
                lambda: self._sub_writer(stream),
                self._sub_health,
                lambda: self._sub_reader(stream, reader),
            )
        finally:
            self._sub_up = False
            with self._lock:
                self._sub_ready = False
            self._sub_out = bytearray()
            self._ack_lot.unpark_all()

    async def _sub_writer(self, stream: trio.SocketStream) -> None:
        while True:
            if not self._sub_out:
                await self._sub_lot.park()
                continue
            data, self._sub_out = bytes(self._sub_out), bytearray()
            await stream.send_all(data)

    async def _sub_health(self) -> None:
        while True:
            await trio.sleep(self.health_interval)
            if not self._pong:
                raise _Lost(f"no answer to PING in {self.health_interval} s")
            self._pong = False
            self._send_sub(b"PING", [])

    async def _sub_reader(self, stream: trio.SocketStream, reader: Any) -> None:
        subs = self.subscriptions
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _Lost("closed by Redis")
            self._pong = True
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
                if kind == b"message":
                    channel = _decode(reply[1])
                    topic = subs.exact.get(channel)
                    if topic is not None:
                        subs.publish_to(topic, Published(_message(reply[2]), channel))
                elif kind == b"pmessage":
                    topic = subs.patterns.get(_decode(reply[1]))
                    if topic is not None:
                        published = Published(_message(reply[3]), _decode(reply[2]))
                        subs.publish_to(topic, published)
                else:
                    self._sub_replied(1)

    def _sub_replied(self, n: int) -> None:
        """``n`` replies to the oldest command in flight. Those to a
        subscription command are what the publisher waits for: the
        subscription is in place at Redis, or refused."""
        cmd = self._sub_commands[0]
        cmd.left -= n
        if not cmd.left:
            self._sub_commands.popleft()
        if cmd.channels:
            self._sub_acked += n
            if self._sub_acked >= self._sub_sent:
                self._ack_lot.unpark_all()
            self._check_ready()

    def _sub_error(self, reason: str) -> None:
        """An error reply: the whole of the oldest command in flight failed."""
        cmd = self._sub_commands[0]
        subs = self.subscriptions
        table = subs.patterns if cmd.verb == b"PSUBSCRIBE" else subs.exact
        if cmd.verb not in (b"SUBSCRIBE", b"PSUBSCRIBE"):
            log.error("redis subscriber: %s failed: %s", cmd.verb.decode(), reason)
        elif len(cmd.channels) > 1:
            # Redis refuses a command whole for any channel it refuses (a
            # resubscription sends many): ask for each on its own to learn
            # which, and count them in the resubscription.
            for channel in cmd.channels:
                if channel in table:
                    self._send_sub(cmd.verb, [channel])
            self._ready_at = self._sub_sent
        else:
            (channel,) = cmd.channels
            topic = table.get(channel)
            subscribers = list(topic.cursors) if topic is not None else []
            self.subscribe_errors += 1
            log.error(
                "redis subscriber: Redis refused %s %r (%s); %d client(s) unsubscribed from it",
                cmd.verb.decode(),
                channel,
                reason,
                len(subscribers),
            )
            # Dropped here too, so that it is not sent again on reconnecting.
            for subscriber in subscribers:
                subs.remove(subscriber, channel)
                subscriber.subscribe_refused(channel, reason)
        self._sub_replied(cmd.left)

    def _check_ready(self) -> None:
        if self._sub_ready or self._sub_acked < self._ready_at:
            return
        with self._lock:
            self._sub_ready = True
        self._resumed()

    # -- the publisher connection --------------------------------------------------

    async def _publisher_session(self, stream: trio.SocketStream, up: Callable[[], None]) -> None:
        import hiredis

        reader = hiredis.Reader()
        with trio.fail_after(self.connect_timeout):
            await self._handshake(stream, reader)
        with self._lock:
            self._pub_up = True
        self._resumed()
        up()
        try:
            await _until_lost(
                lambda: self._pub_writer(stream),
                self._pub_watchdog,
                lambda: self._pub_reader(stream, reader),
            )
        finally:
            with self._lock:
                self._pub_up = False
                lost = list(self._in_flight) + [w for _, w in self._queue]
                self._in_flight.clear()
                self._queue.clear()
                self._wake_pending = False
            if lost:
                self.unconfirmed += len(lost)
                log.error(
                    "redis publisher: %d publishes unconfirmed when the connection broke;"
                    " they may not have been delivered",
                    len(lost),
                )
            for waiter in lost:
                if waiter is not None:
                    waiter.error = "the connection to Redis broke before it confirmed"
                    waiter.event.set()

    async def _pub_writer(self, stream: trio.SocketStream) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._wake_pending = False
                    batch = None
                else:
                    batch = list(self._queue)
                    self._queue.clear()
                    self._in_flight.extend(w for _, w in batch)
            if batch is None:
                await self._pub_lot.park()
                continue
            # A subscription made before this publish must be in place at
            # Redis before it, so a client sees what is published right
            # after it subscribed (the two go on different connections).
            epoch, target = self._sub_epoch, self._sub_sent
            while self._sub_up and self._sub_epoch == epoch and self._sub_acked < target:
                await self._ack_lot.park()
            await stream.send_all(b"".join(cmd for cmd, _ in batch))

    async def _pub_watchdog(self) -> None:
        # Replies that stop coming mean a dead peer, even if TCP has not noticed.
        last = self._pub_replies
        while True:
            await trio.sleep(self.health_interval)
            if self._in_flight and self._pub_replies == last:
                raise _Lost(f"no reply from Redis in {self.health_interval} s")
            last = self._pub_replies

    async def _pub_reader(self, stream: trio.SocketStream, reader: Any) -> None:
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise _Lost("closed by Redis")
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                self._pub_replies += 1
                with self._lock:
                    waiter = self._in_flight.popleft() if self._in_flight else None
                if isinstance(reply, Exception):
                    self.failed += 1
                    log.error("redis publisher: PUBLISH failed: %s", reply)
                    if waiter is not None:
                        waiter.error = str(reply)
                        waiter.event.set()
                elif waiter is not None:
                    waiter.result = int(reply)
                    waiter.event.set()


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


async def _read_reply(stream: trio.SocketStream, reader: Any, timeout: float) -> Any:
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


def _reason(exc: BaseException) -> str:
    # trio wraps the OSError that says what happened (Connection refused...).
    while exc.__cause__ is not None and isinstance(exc, (OSError, trio.BrokenResourceError)):
        exc = exc.__cause__
    group = getattr(exc, "exceptions", None)  # an ExceptionGroup (3.10: the backport's)
    if group:
        exc = group[-1]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
