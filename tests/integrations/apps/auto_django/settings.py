"""A Django project written for Sqreen's agent: ``sqreen.start()`` in its settings, no
middleware of sqreen's listed (``AUTO_TEST_EXPLICIT=1``: listed by hand, second)."""

from __future__ import annotations

import os

import sqreen

sqreen.start()

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integrations.apps.auto_django.urls"
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
if os.environ.get("AUTO_TEST_EXPLICIT") == "1":
    MIDDLEWARE.append("sqreen.integrations.django.SqreenMiddleware")
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING_CONFIG = None
