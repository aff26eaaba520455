"""Settings of the Django example: the sqreen middleware goes first.

Configured by ``SQREEN`` below or ``SQREEN_*`` environment variables (``SQREEN_ENDPOINT``,
``SQREEN_TOKEN``...); with neither, events go to ``./sqreen-events.jsonl``.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DATABASES: dict[str, object] = {}  # the toy user store lives in memory (see views.py)
USE_TZ = True

MIDDLEWARE = [
    "sqreen.integrations.django.SqreenMiddleware",  # first: it answers 403 to blocked users
    "django.middleware.common.CommonMiddleware",
]
INSTALLED_APPS = ["sqreen.integrations.django"]  # optional: `manage.py check` checks the order
SQREEN: dict[str, object] = {}  # e.g. {"endpoint": "http://127.0.0.1:8000", "token": "..."}
