"""`python manage.py publish CHANNEL MESSAGE`: publish from outside the server.

A management command runs in its own process, so `trio_push.publish` (which
reaches the servers of the calling process) cannot reach the push server's
clients from here. Through Redis it can: the servers run with `--redis URL`,
and this command publishes on the same Redis with trio-push's own engine,
waiting for Redis's reply so that it can say how many servers got it.
"""

import trio
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

import trio_push


async def publish(url: str, channel: str, message: str, history: int = 0) -> int:
    """Connect, publish once, wait for Redis's answer, disconnect: the number
    of server processes that received it. ``history``: the servers'
    ``--history``, so that the message is kept in the channel's history."""
    engine = trio_push.RedisPubSub(url, heartbeat=None, history=history)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        try:
            return await engine.publish_confirmed(channel, message)
        except trio_push.PublishError as exc:
            error = exc
        finally:
            nursery.cancel_scope.cancel()
    raise CommandError(f"not published: {error}")


class Command(BaseCommand):
    help = "Publish MESSAGE on CHANNEL to every trio-push server sharing the Redis."

    def add_arguments(self, parser):
        parser.add_argument("channel")
        parser.add_argument("message")
        parser.add_argument(
            "--redis",
            default=settings.PUSH_REDIS_URL,
            help="the Redis URL the servers run with (default: settings.PUSH_REDIS_URL)",
        )
        parser.add_argument(
            "--history",
            type=int,
            default=settings.PUSH_HISTORY,
            help="the servers' --history N, so that history keeps the message"
            " (default: settings.PUSH_HISTORY)",
        )

    def handle(self, *args, channel, message, redis, history, **options):
        servers = trio.run(publish, redis, channel, message, history)
        if servers == 0:
            self.stderr.write(
                f"published, but no server listens to {channel!r} on {redis}"
                " (is trio-push running with --redis, and is a client subscribed?)"
            )
        else:
            self.stdout.write(f"published to {servers} server process(es)")
