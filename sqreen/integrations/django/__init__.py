"""Django integration: one middleware, then ``request.sqreen`` in every view.

::

    # settings.py
    MIDDLEWARE = ["sqreen.integrations.django.SqreenMiddleware", *MIDDLEWARE]  # first
    INSTALLED_APPS = [..., "sqreen.integrations.django"]  # optional: adds the system check
    SQREEN = {"endpoint": "http://127.0.0.1:8000", "token": "..."}  # or SQREEN_* env

    # views.py
    def login(request):
        request.sqreen.auth_track(True, username="alice")

See :class:`SqreenMiddleware`. With the app installed, ``manage.py check`` warns
(``sqreen.W001``) unless the middleware is first. With ``django.contrib.auth``'s own login
views, install :mod:`sqreen.integrations.django.auth` instead of calling ``auth_track``.

.. versionadded:: 0.1
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without Django installed
    raise ImportError(
        "sqreen.integrations.django needs Django: install with pip install 'sqreen-sdk[django]'"
    ) from exc

from ._middleware import SqreenMiddleware
from .checks import check_middleware

__all__ = ["SqreenMiddleware", "check_middleware"]
