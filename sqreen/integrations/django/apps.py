"""The optional Django app: ``"sqreen.integrations.django"`` in ``INSTALLED_APPS``.

It applies ``settings.SQREEN`` as soon as Django is set up, so that the processes that build
no middleware (management commands, ``manage.py shell``, Celery workers) track with it too,
and not with the defaults (the middleware, built later, finds it applied: one client). A wrong
``SQREEN`` does not fail the set-up (``manage.py check`` must still run, to say what is
wrong): it is a warning here, the system check's error, and the middleware's at its start.

It registers the system check, and gives Django's ``HttpRequest`` a ``sqreen`` attribute
for requests the middleware did not see (a view tested with ``RequestFactory``): the handle
without a request, which tracks as :func:`sqreen.track` does (no request data) and whose
``identify()`` binds nothing (see :mod:`sqreen._requestless`). The middleware's handle is
assigned to each request it serves, which wins over the attribute. The attribute is a
non-data descriptor on the class, so it is there for every app of the process: it is not
added when ``HttpRequest`` already has a ``sqreen`` attribute of someone else's.
"""

from __future__ import annotations

import logging

from django.apps import AppConfig

logger = logging.getLogger("sqreen")


class SqreenConfig(AppConfig):  # type: ignore[misc]
    name = "sqreen.integrations.django"
    label = "sqreen"
    verbose_name = "Sqreen"

    def ready(self) -> None:
        from django.core.exceptions import ImproperlyConfigured
        from django.http import HttpRequest

        from ..._config import ConfigError
        from ..._requestless import HandleAttribute
        from . import checks  # noqa: F401  (registers the system check)
        from ._middleware import apply_settings

        if not hasattr(HttpRequest, "sqreen"):
            HttpRequest.sqreen = HandleAttribute()
        try:
            apply_settings()
        except (ImproperlyConfigured, ConfigError) as exc:
            # The check reports it, the middleware raises it; a process without either
            # (a Celery worker) tracks by the environment, and says so.
            from django.conf import settings

            what = (
                "the Django settings are" if hasattr(settings, "SQREEN") else "the configuration is"
            )
            logger.warning("sqreen: %s not applied: %s", what, exc)
