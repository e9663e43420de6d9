"""Settings of the Django example: no database, one app (notes), CSRF on.

Everything a deployment would change comes from the environment.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = ["notes"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

ROOT_URLCONF = "pushsite.urls"
WSGI_APPLICATION = "pushsite.wsgi.application"
ASGI_APPLICATION = "pushsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.csrf"]},
    }
]

# No models: the notes live in the server's memory, the CSRF token in a cookie.
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# Where `manage.py publish` reaches the servers: the URL given to `trio-push --redis`.
PUSH_REDIS_URL = os.environ.get("PUSH_REDIS_URL", "redis://127.0.0.1:6379/0")
# The servers' --history N (0: none), for manage.py publish.
PUSH_HISTORY = int(os.environ.get("PUSH_HISTORY", "0"))
