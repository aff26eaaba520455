"""An authentication backend that refuses a blocked user before any password is checked.

::

    AUTHENTICATION_BACKENDS = [
        "sqreen.integrations.django.auth.backends.BlockedUsersBackend",  # first
        "django.contrib.auth.backends.ModelBackend",
    ]

Where ``authenticate()`` succeeds and the login is then refused without a signal (the
admin's form for a user who is not staff, an inactive user, a view of the app's that checks
a password without logging in), a blocked user's right password would be answered as that
code answers it, and a wrong one 403: telling an attacker which guess was right. Listed
first, this backend raises :class:`sqreen.Blocked` (answered 403 by the middleware) for a
blocked user whatever the password; it never authenticates anyone itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend

from .receivers import handle_of

__all__ = ["BlockedUsersBackend"]


class BlockedUsersBackend(BaseBackend):  # type: ignore[misc]
    """Refuses (:class:`sqreen.Blocked`) the logins of users the collector blocks; grants no
    permission (Django's ``BaseBackend``: the others' answers stand)."""

    async def aauthenticate(self, request: Any, username: Any = None, **credentials: Any) -> None:
        """For ``aauthenticate()`` (Django 5.0+): the same check, in memory, on the loop."""
        return self.authenticate(request, username, **credentials)

    def authenticate(self, request: Any, username: Any = None, **credentials: Any) -> None:
        handle = handle_of(request)
        if handle is None:
            return None
        if username is None:
            username = credentials.get(get_user_model().USERNAME_FIELD, credentials.get("email"))
        if username not in (None, ""):
            handle.client.refuse_if_blocked({"username": str(username)}, handle)
        return None

    def get_user(self, user_id: Any) -> None:
        return None

    async def aget_user(self, user_id: Any) -> None:
        return None
