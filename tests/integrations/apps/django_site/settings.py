"""Settings of the Django test site (see :mod:`tests.integrations.apps.common`)."""

from __future__ import annotations

from tests.integrations.apps import common

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integrations.apps.django_site.urls"
MIDDLEWARE = ["sqreen.integrations.django.SqreenMiddleware"]
INSTALLED_APPS = ["sqreen.integrations.django"]
SQREEN: dict[str, object] = {"trusted_proxies": []} if common.UNTRUSTED else {}
DATABASES: dict[str, object] = {}
USE_TZ = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024
LOGGING_CONFIG = None
