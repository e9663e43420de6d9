"""The WSGI application: `trio-push pushsite.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")

application = get_wsgi_application()
