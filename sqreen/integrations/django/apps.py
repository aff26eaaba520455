"""The optional Django app: ``"sqreen.integrations.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class SqreenConfig(AppConfig):  # type: ignore[misc]
    name = "sqreen.integrations.django"
    label = "sqreen"
    verbose_name = "Sqreen"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system check)
