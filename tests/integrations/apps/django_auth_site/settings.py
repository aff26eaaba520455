"""Settings of the Django site with real logins (``django.contrib.auth``'s views)."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_KEY = os.environ.get("SQREEN_TEST_SECRET_KEY", "tests-only")
SECRET_KEY_FALLBACKS = os.environ.get("SQREEN_TEST_SECRET_FALLBACKS", "").split()
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
if os.environ.get("SQREEN_TEST_REMOTE_USER"):  # logins by a header, after the session's
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
        "tests.integrations.apps.django_auth_site.urls.HeaderRemoteUser",
    )
# The per-site cache: ``last``, as Django's docs show it; ``before-auth``, answering before
# AuthenticationMiddleware (the docs only ask it to come after what changes Vary).
SITE_CACHE = os.environ.get("SQREEN_TEST_SITE_CACHE")
if SITE_CACHE:
    MIDDLEWARE.insert(1, "django.middleware.cache.UpdateCacheMiddleware")
    FETCH = "django.middleware.cache.FetchFromCacheMiddleware"
    if SITE_CACHE == "before-auth":
        MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.csrf.CsrfViewMiddleware"), FETCH)
    else:
        MIDDLEWARE.append(FETCH)
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CACHE_MIDDLEWARE_SECONDS = 600
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "sqreen.integrations.django",
    "sqreen.integrations.django.auth",
]
# Django REST framework's API (api.py, under /drf/): users by token or by password, checked
# for blocks. Only for its tests (SQREEN_TEST_DRF): the others' sites boot without it.
if os.environ.get("SQREEN_TEST_DRF"):
    INSTALLED_APPS += ["rest_framework", "rest_framework.authtoken"]
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "sqreen.integrations.drf.NotBlocked",
        "rest_framework.permissions.IsAuthenticated",
    ],
}
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
    "django.contrib.auth.backends.RemoteUserBackend",
]
if os.environ.get("SQREEN_TEST_EMAIL_LOGIN"):  # logins by username or e-mail, a common style
    AUTHENTICATION_BACKENDS[1] = "tests.integrations.apps.django_auth_site.urls.EmailOrUsername"
LOGIN_REDIRECT_URL = "/private/"
LOGIN_URL = "/accounts/login/"
# Fast hashing: the tests log in a dozen times.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
LOGGING_CONFIG = None
