"""The app of :mod:`sqreen.integrations.django.auth`: its receivers, connected at ready."""

from __future__ import annotations

from django.apps import AppConfig


class SqreenAuthConfig(AppConfig):  # type: ignore[misc]
    name = "sqreen.integrations.django.auth"
    label = "sqreen_auth"
    verbose_name = "Sqreen: Django's logins"

    def ready(self) -> None:
        from django.apps import apps
        from django.core.exceptions import ImproperlyConfigured

        if not apps.is_installed("django.contrib.auth"):
            raise ImproperlyConfigured(
                f"{self.name} tracks django.contrib.auth's logins: add "
                '"django.contrib.auth" to INSTALLED_APPS'
            )
        from django.contrib.auth.models import update_last_login
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

        from .. import checks  # noqa: F401  (the middleware's check: without it, nothing is tracked)
        from .receivers import failed, logged_in, logged_out

        # Before django.contrib.auth's own receiver, which sets last_login: a login refused
        # (Blocked) must not touch it, whatever the order of INSTALLED_APPS.
        was_connected = user_logged_in.disconnect(
            update_last_login, dispatch_uid="update_last_login"
        )
        user_logged_in.connect(logged_in, dispatch_uid="sqreen.auth.logged_in")
        if was_connected:
            user_logged_in.connect(update_last_login, dispatch_uid="update_last_login")
        user_login_failed.connect(failed, dispatch_uid="sqreen.auth.failed")
        user_logged_out.connect(logged_out, dispatch_uid="sqreen.auth.logged_out")
