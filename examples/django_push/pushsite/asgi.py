"""The ASGI application: `trio-push pushsite.asgi:application --interface asgi`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")

application = get_asgi_application()
