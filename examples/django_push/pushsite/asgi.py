"""The ASGI application: `trio-push pushsite.asgi:application`.

Django's own ASGI application, wrapped so that a view can accept push as under
WSGI (notes/push.py), and WebSocket requests to /live reach the same handler.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")

django_application = get_asgi_application()

from notes import push, views  # noqa: E402 - Django is set up first

application = push.asgi(django_application, push.websockets({"/live": views.updates}))
