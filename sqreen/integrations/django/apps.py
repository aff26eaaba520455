"""The optional Django app: ``"sqreen.integrations.django"`` in ``INSTALLED_APPS``.

It registers the system check, and gives Django's ``HttpRequest`` a ``sqreen`` attribute
for requests the middleware did not see (a view tested with ``RequestFactory``): the handle
without a request, which tracks as :func:`sqreen.track` does (no request data) and whose
``identify()`` binds nothing (see :mod:`sqreen._requestless`). The middleware's handle is
assigned to each request it serves, which wins over the attribute. The attribute is a
non-data descriptor on the class, so it is there for every app of the process: it is not
added when ``HttpRequest`` already has a ``sqreen`` attribute of someone else's.
"""

from __future__ import annotations

from django.apps import AppConfig


class SqreenConfig(AppConfig):  # type: ignore[misc]
    name = "sqreen.integrations.django"
    label = "sqreen"
    verbose_name = "Sqreen"

    def ready(self) -> None:
        from django.http import HttpRequest

        from ..._requestless import HandleAttribute
        from . import checks  # noqa: F401  (registers the system check)

        if not hasattr(HttpRequest, "sqreen"):
            HttpRequest.sqreen = HandleAttribute()
