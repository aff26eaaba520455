"""Settings of the Django site with real logins (``django.contrib.auth``'s views)."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integrations.apps.django_auth_site.urls"
WSGI_APPLICATION = "tests.integrations.apps.django_auth_site.wsgi.application"
MIDDLEWARE = [
    "sqreen.integrations.django.SqreenMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if os.environ.get("SQREEN_TEST_NO_AUSER"):  # Django before 5.0: request.user only
    MIDDLEWARE.append("tests.integrations.apps.django_auth_site.urls.before_auser")
if os.environ.get("SQREEN_TEST_SITE_CACHE"):  # the per-site cache, as Django's docs order it
    MIDDLEWARE.insert(1, "django.middleware.cache.UpdateCacheMiddleware")
    MIDDLEWARE.append("django.middleware.cache.FetchFromCacheMiddleware")
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CACHE_MIDDLEWARE_SECONDS = 600
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "sqreen.integrations.django",
    "sqreen.integrations.django.auth",
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["SQREEN_TEST_DB"]}
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).parent / "templates"],
    }
]
AUTHENTICATION_BACKENDS = [
    "sqreen.integrations.django.auth.backends.BlockedUsersBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_REDIRECT_URL = "/private/"
LOGIN_URL = "/accounts/login/"
# Fast hashing: the tests log in a dozen times.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
LOGGING_CONFIG = None
