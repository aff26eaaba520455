"""A Django project run by ``manage.py`` only (no server): its commands build no middleware,
so ``settings.SQREEN`` must be applied by the sqreen app when Django is set up.

``SQREEN_TEST_RECEIVER``: the collector's URL; ``SQREEN_TEST_BAD=1``: a wrong option."""

from __future__ import annotations

import os

SECRET_KEY = "tests-only"
DEBUG = False
MIDDLEWARE = ["sqreen.integrations.django.SqreenMiddleware"]
INSTALLED_APPS = [
    "sqreen.integrations.django",
    "tests.integrations.apps.django_command_site.tracker",
]
DATABASES: dict[str, object] = {}
USE_TZ = True
SQREEN: dict[str, object] = {
    "endpoint": os.environ.get("SQREEN_TEST_RECEIVER", "http://127.0.0.1:9"),
    "app_name": "shop-commands",
    "spool": False,
}
if os.environ.get("SQREEN_TEST_BAD") == "1":
    SQREEN["flush_interval"] = "soon"
