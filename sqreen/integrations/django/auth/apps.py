"""The app of :mod:`sqreen.integrations.django.auth`: its receivers, connected at ready."""

from __future__ import annotations

from django.apps import AppConfig


class SqreenAuthConfig(AppConfig):  # type: ignore[misc]
    name = "sqreen.integrations.django.auth"
    label = "sqreen_auth"
    verbose_name = "Sqreen: Django's logins"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

        from .. import checks  # noqa: F401  (the middleware's check: without it, nothing is tracked)
        from .receivers import failed, logged_in, logged_out

        user_logged_in.connect(logged_in, dispatch_uid="sqreen.auth.logged_in")
        user_login_failed.connect(failed, dispatch_uid="sqreen.auth.failed")
        user_logged_out.connect(logged_out, dispatch_uid="sqreen.auth.logged_out")
