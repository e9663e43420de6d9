"""trio-push: a push server for Python, on Trio.

An app sees ``env['rack.upgrade?']`` (``'websocket'`` or ``'sse'``), accepts
by setting ``env['rack.upgrade'] = handler``, and the server does the network
work: the handler's ``on_open``, ``on_message``, ``on_drained``,
``on_shutdown`` and ``on_close`` get a :class:`Client` whose ``write(msg)``
pushes to the browser.
"""

from sansio_push import Config

from ._asgi import ASGIPush, LifespanFailed
from ._asgi_app import ClientDisconnected
from ._client import Client
from ._context import Options
from ._history import History, Position
from ._js import JS_HELPER, js_helper_app
from ._pubsub import MemoryPubSub, PubSub
from ._redis import PublishError, RedisPubSub
from ._router import Router
from ._server import Server, publish, serve, subscriber_count, subscriber_count_async
from ._static import StaticFiles

__all__ = [
    "ASGIPush",
    "Client",
    "ClientDisconnected",
    "Config",
    "History",
    "JS_HELPER",
    "LifespanFailed",
    "MemoryPubSub",
    "Options",
    "Position",
    "PubSub",
    "PublishError",
    "RedisPubSub",
    "Router",
    "Server",
    "StaticFiles",
    "js_helper_app",
    "publish",
    "serve",
    "subscriber_count",
    "subscriber_count_async",
]
